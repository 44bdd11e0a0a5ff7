"""`python -m modelctl`: the same as the `modelctl` command."""

from modelctl.cli import main

main()
