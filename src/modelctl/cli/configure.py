"""`modelctl config`: the effective settings, where each came from, and changing them."""

from pathlib import Path
from typing import Annotated

import typer

from modelctl.cli import _common
from modelctl.cli._common import JsonOpt
from modelctl.record.errors import ConfigError

config_app = typer.Typer(
    help="Show and change settings (defaults < global file < project file < environment).",
    invoke_without_command=True,
)

GlobalOpt = Annotated[
    bool,
    typer.Option("--global", help="Write the global file, not the project's modelctl.toml."),
]


def register(app: typer.Typer) -> None:
    app.add_typer(config_app, name="config")


@config_app.callback()
def config_show(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show every setting, its value and its source."""
    if ctx.invoked_subcommand is not None:
        return
    settings = _common.state(ctx).settings
    shown = settings.to_dict()
    if as_json:
        _common.emit_json(
            {
                "settings": shown,
                "files": {k: str(v) if v else None for k, v in settings.files.items()},
            }
        )
        return
    from rich.table import Table

    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("SETTING", "VALUE", "SOURCE"):
        table.add_column(column)
    for key, item in shown.items():
        value = item["value"]
        text = ", ".join(value) if isinstance(value, list) else "-" if value is None else str(value)
        table.add_row(key, text, item["source"])
    _common.console().print(table)


@config_app.command("get")
def config_get(ctx: typer.Context, key: Annotated[str, typer.Argument()]) -> None:
    """Print one setting's effective value."""
    settings = _common.state(ctx).settings
    if key not in settings.values:
        raise ConfigError(f"unknown setting {key!r}", hint=f"known: {', '.join(settings.values)}")
    value = settings.shown(key)
    typer.echo("\n".join(value) if isinstance(value, list) else "" if value is None else value)


def _file(ctx: typer.Context, use_global: bool):

    from modelctl.config import PROJECT_FILE

    settings = _common.state(ctx).settings
    if use_global:
        return settings.files["global"]
    return settings.files["project"] or Path.cwd() / PROJECT_FILE


@config_app.command("set")
def config_set(
    ctx: typer.Context,
    key: Annotated[str, typer.Argument()],
    value: Annotated[
        str, typer.Argument(help="For model_dirs, paths joined by the path separator.")
    ],
    use_global: GlobalOpt = False,
) -> None:
    """Set a setting in the project file (default) or the global file."""
    from modelctl.config import write_setting

    path = _file(ctx, use_global)
    write_setting(path, key, value)
    _common.say(f"set {key} in {path}")


@config_app.command("unset")
def config_unset(
    ctx: typer.Context, key: Annotated[str, typer.Argument()], use_global: GlobalOpt = False
) -> None:
    """Remove a setting from the project file (default) or the global file."""
    from modelctl.config import write_setting

    path = _file(ctx, use_global)
    write_setting(path, key, None)
    _common.say(f"removed {key} from {path}")
