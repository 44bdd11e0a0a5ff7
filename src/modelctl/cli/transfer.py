"""Commands that move the registry in and out: export, import, migrate."""

from typing import Annotated

import typer

from modelctl.cli import _common
from modelctl.cli._common import JsonOpt, WhereOpt


def register(app: typer.Typer) -> None:
    app.command("export")(export)
    app.command("import")(import_)
    app.command("migrate")(migrate)


def migrate(
    ctx: typer.Context,
    to: Annotated[
        str, typer.Option("--to", help="The database to copy into: postgresql://… or a path.")
    ],
    as_json: JsonOpt = False,
) -> None:
    """Copy this registry, its usage ledger and profiles into another database (SQLite to
    PostgreSQL, or back): all of it, or nothing. Then point MODELCTL_DATABASE at it."""
    from modelctl.config import SETTINGS
    from modelctl.record.errors import ConfigError
    from modelctl.store.copy import copy_store
    from modelctl.store.database import open_store

    try:
        target_location = SETTINGS["database"].parse(to)
    except ValueError as exc:
        raise ConfigError(f"--to: {exc}") from None
    source = _common.state(ctx).registry.store
    target = open_store(target_location)
    try:
        counts = copy_store(source, target)
    finally:
        target.close()
    if as_json:
        _common.emit_json({"from": source.path, "to": target.path, **counts})
        return
    _common.say(
        f"copied {counts['models']:,} models, {counts['groups']:,} groups, "
        f"{counts['usage']:,} usage rows, {counts['profiles']:,} profiles and "
        f"{counts['state']:,} saved states from {source.path} to {target.path}"
    )
    _common.say(
        f"use it: export MODELCTL_DATABASE=… (that URL; keep a password in the environment, "
        f"or in ~/.pgpass, not in a settings file): {target.path}"
    )


def export(
    ctx: typer.Context,
    path: Annotated[
        str | None, typer.Argument(help="File to write (atomically); standard output if omitted.")
    ] = None,
    where: WhereOpt = None,
) -> None:
    """Export the registry (models, tags, aliases, groups, metadata) as JSON."""
    from modelctl.registry import transfer
    from modelctl.registry.query import parse_where

    clauses = [parse_where(w) for w in where or []]
    query = clauses[0] if len(clauses) == 1 else {"$and": clauses} if clauses else None
    registry = _common.state(ctx).registry
    if path is None or path == "-":
        _common.emit_json(registry.export_data(query))
        return
    data = transfer.export_file(registry, path, query)
    _common.say(f"exported {len(data['models'])} models and {len(data['groups'])} groups to {path}")


def import_(
    ctx: typer.Context,
    path: Annotated[str, typer.Argument(help="An export file, or - for standard input.")],
    replace: Annotated[
        bool, typer.Option("--replace", help="Empty the registry first (else: merge).")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check and report; write nothing.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import an export file: all of it, or (on any error) none of it."""
    from modelctl.registry import transfer

    report = transfer.import_file(
        _common.state(ctx).registry, path, replace=replace, dry_run=dry_run
    )
    if as_json:
        _common.emit_json(report.to_dict())
        return
    verb = "would import" if dry_run else "imported"
    _common.say(
        f"{verb} {len(report.added) + len(report.updated)} models "
        f"({len(report.added)} new, {len(report.updated)} updated) and {len(report.groups)} groups"
        + (" into an emptied registry" if replace else "")
    )
