"""What the installed backends declare about references (prefixes, providers, forms, which are
local), for tests of the layers below the backends, which are told it as the manager tells them."""

from modelctl.backends import schemes
from modelctl.backends._loader import load_backends
from modelctl.config import Settings

SCHEMES = schemes(b.kind() for b in load_backends(Settings.load(env={})).values())
