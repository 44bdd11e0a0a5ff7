"""The `modelctl` command: a thin root that composes one module per command group."""

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from modelctl import __version__
from modelctl.cli import (
    _common,
    configure,
    machine,
    models,
    organize,
    runtime,
    server,
    sources,
    transfer,
    usage,
)
from modelctl.record.errors import ModelctlError

__all__ = ["app", "main"]


class _Root(TyperGroup):
    """Turns a modelctl error anywhere below into one line and its exit code."""

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except ModelctlError as exc:
            raise typer.Exit(_common.report_error(exc)) from None


app = typer.Typer(
    name="modelctl",
    cls=_Root,
    help="One control plane for every AI model you use: see, fit, install, load, serve, measure.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"modelctl {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    home: Annotated[
        Path | None,
        typer.Option(
            "--home",
            help="Data folder (registry, models). Default: $MODELCTL_HOME, else the user data dir.",
            show_default=False,
        ),
    ] = None,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    state = _common.state(ctx)
    state.home = home
    ctx.call_on_close(state.close)


models.register(app)
organize.register(app)
transfer.register(app)
machine.register(app)
sources.register(app)
runtime.register(app)
server.register(app)
usage.register(app)
configure.register(app)


def main() -> None:
    """The console script: errors the commands did not expect print one line too."""
    try:
        app()
    except SystemExit:
        raise
    except BaseException as exc:
        sys.exit(_common.report_error(exc))
