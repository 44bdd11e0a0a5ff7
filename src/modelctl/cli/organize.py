"""Commands that organize models: tag, untag, alias, set, group."""

from typing import Annotated

import typer

from modelctl.cli import _common
from modelctl.cli._common import JsonOpt, YesOpt

ModelArg = Annotated[str, typer.Argument(help="Id, alias, backend:name or .gguf path.")]

group_app = typer.Typer(help="Named groups of models.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("tag")(tag)
    app.command("untag")(untag)
    app.command("alias")(alias)
    app.command("set")(set_custom)
    app.add_typer(group_app, name="group")


def tag(
    ctx: typer.Context,
    model: ModelArg,
    tags: Annotated[list[str], typer.Argument(help="Tags to add.")],
    as_json: JsonOpt = False,
) -> None:
    """Add tags to a model."""
    updated = _common.state(ctx).registry.tag(model, *tags)
    _done(updated.id, updated.tags, "tags", as_json)


def untag(
    ctx: typer.Context,
    model: ModelArg,
    tags: Annotated[list[str], typer.Argument(help="Tags to remove.")],
    as_json: JsonOpt = False,
) -> None:
    """Remove tags from a model."""
    updated = _common.state(ctx).registry.untag(model, *tags)
    _done(updated.id, updated.tags, "tags", as_json)


def _done(model_id: str, values: object, what: str, as_json: bool) -> None:
    if as_json:
        _common.emit_json({"id": model_id, what: values})
    else:
        shown = ", ".join(values) if isinstance(values, list) else values
        _common.say(f"{model_id}: {what} {shown or '(none)'}")


def alias(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Argument(help="The alias.", show_default=False)] = None,
    model: Annotated[str | None, typer.Argument(help="The model it names.")] = None,
    remove: Annotated[bool, typer.Option("--rm", help="Remove the alias NAME.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """`alias NAME MODEL` sets an alias, `alias --rm NAME` removes one, `alias` lists them."""
    registry = _common.state(ctx).registry
    if remove:
        if name is None or model is not None:
            raise typer.BadParameter("--rm takes exactly one alias: modelctl alias --rm NAME")
        updated = registry.unalias(name)
        _common.say(f"removed alias {name} (was {updated.id})")
        return
    if name is not None:
        if model is None:
            raise typer.BadParameter("name the model too: modelctl alias NAME MODEL")
        updated = registry.alias(name, model)
        _done(updated.id, updated.aliases, "aliases", as_json)
        return
    aliases = registry.aliases()
    if as_json:
        _common.emit_json(aliases)
    elif not aliases:
        _common.say("no aliases: set one with `modelctl alias NAME MODEL`")
    else:
        width = max(map(len, aliases))
        typer.echo("\n".join(f"{a:<{width}}  {m}" for a, m in aliases.items()))


def set_custom(
    ctx: typer.Context,
    model: ModelArg,
    pairs: Annotated[
        list[str] | None, typer.Argument(help="KEY=VALUE; VALUE is read as JSON when it is JSON.")
    ] = None,
    unset: Annotated[list[str] | None, typer.Option("--unset", help="Remove KEY.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Set or remove custom metadata on a model."""
    registry = _common.state(ctx).registry
    if not pairs and not unset:
        raise typer.BadParameter("give KEY=VALUE pairs or --unset KEY")
    values = _common.parse_assignments(pairs or [], "metadata")
    with registry.store.transaction():
        updated = registry[model]
        for key, value in values.items():
            updated = registry.set_custom(updated.id, key, value)
        for key in unset or []:
            updated = registry.unset_custom(updated.id, key)
    _done(updated.id, updated.custom, "custom", as_json)


@group_app.command("list")
def group_list(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """List groups and their models."""
    groups = _common.state(ctx).registry.groups()
    if as_json:
        _common.emit_json(groups)
    elif not groups:
        _common.say("no groups: create one with `modelctl group add NAME MODEL...`")
    else:
        for name, group in groups.items():
            note = f"  ({group['description']})" if group["description"] else ""
            typer.echo(f"{name}{note}: {', '.join(group['models']) or '(empty)'}")


@group_app.command("add")
def group_add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Group name (created if new).")],
    models: Annotated[list[str] | None, typer.Argument(help="Models to add.")] = None,
    description: Annotated[str | None, typer.Option("--description", "-d")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Add models to a group, creating it if needed."""
    members = _common.state(ctx).registry.group(name, *(models or []), description=description)
    _done(name, members, "models", as_json)


@group_app.command("remove")
def group_remove(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Group name.")],
    models: Annotated[list[str], typer.Argument(help="Models to take out.")],
    as_json: JsonOpt = False,
) -> None:
    """Take models out of a group (the models stay registered)."""
    members = _common.state(ctx).registry.ungroup(name, *models)
    _done(name, members, "models", as_json)


@group_app.command("delete")
def group_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Group name.")],
    yes: YesOpt = False,
) -> None:
    """Delete a group (its models stay registered)."""
    registry = _common.state(ctx).registry
    _common.confirm(f"Delete group {name}?", yes)
    registry.delete_group(name)
    _common.say(f"deleted group {name}")
