"""What every command shares: options declared once, the session state, output, errors."""

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from modelctl.record.errors import ModelctlError

if TYPE_CHECKING:
    from rich.console import Console

    from modelctl.config import Settings
    from modelctl.manager import ModelManager
    from modelctl.registry import Registry

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
WhereOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--where",
        "-w",
        help="Filter expression, e.g. 'context_length>=8k', 'tags~prod', 'custom.owner=bob'. "
        "Repeat to combine.",
    ),
]

# Exit codes: 0 ok, 1 failed, 2 bad input, 3 not found, 4 conflict, 5 registry unusable,
# 70 internal error (a bug), 130 interrupted.
EXIT_INTERNAL = 70


@dataclass
class State:
    """Per-invocation state: the --home given, and the manager opened from it on first use."""

    home: Path | None = None
    _manager: "ModelManager | None" = field(default=None, repr=False)

    @property
    def manager(self) -> "ModelManager":
        if self._manager is None:
            from modelctl.config import Settings
            from modelctl.manager import ModelManager

            self._manager = ModelManager(settings=Settings.load(home=self.home))
        return self._manager

    @property
    def settings(self) -> "Settings":
        return self.manager.settings

    @property
    def registry(self) -> "Registry":
        return self.manager.registry

    def close(self) -> None:
        if self._manager is not None:
            self._manager.close()


def state(ctx: typer.Context) -> State:
    root = ctx.find_root()
    if not isinstance(root.obj, State):
        root.obj = State()
    return root.obj


_console: "dict[bool, Console]" = {}


def console(stderr: bool = False) -> "Console":
    """Rich loads only when something is drawn for a person."""
    if stderr not in _console:
        from rich.console import Console

        made = Console(stderr=stderr, highlight=False)
        if not made.is_terminal:  # piped: no terminal width to fit, so do not squeeze columns
            made = Console(stderr=stderr, highlight=False, width=240)
        _console[stderr] = made
    return _console[stderr]


def emit_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")


def emit_json_records(texts: list[str]) -> None:
    """A JSON array of stored records, one per line, written as stored (no re-encoding)."""
    out = sys.stdout
    if not texts:
        out.write("[]\n")
        return
    out.write("[\n")
    out.write(",\n".join(texts))
    out.write("\n]\n")


def say(message: str) -> None:
    """A line for a person, on standard error so that standard output stays data."""
    console(stderr=True).print(message)


def report_error(exc: BaseException) -> int:
    """Print one line for an error and return the exit code it means."""
    if isinstance(exc, ModelctlError):
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        sys.stderr.write("interrupted\n")
        return 130
    if os.environ.get("MODELCTL_DEBUG"):
        raise exc
    sys.stderr.write(
        f"internal error: {type(exc).__name__}: {exc} "
        "(a bug in modelctl; run again with MODELCTL_DEBUG=1 for the traceback and report it)\n"
    )
    return EXIT_INTERNAL


def confirm(question: str, yes: bool) -> None:
    """Ask before a destructive step; without a terminal, `--yes` is required."""
    if yes:
        return
    if not sys.stdin.isatty():
        raise ModelctlError(f"{question} needs confirmation", hint="pass --yes")
    if not typer.confirm(question, default=False):
        raise typer.Exit(1)


def parse_assignments(pairs: list[str], what: str) -> dict[str, Any]:
    """KEY=VALUE pairs; a VALUE that is valid JSON is read as JSON, otherwise as text."""
    from modelctl.record.errors import InvalidModel

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InvalidModel(f"{what} {pair!r} must be KEY=VALUE")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out
