"""Commands over model records: list, show, add, forget."""

import json
import os
import sys
from typing import Annotated, Any

import typer

from modelctl.cli import _common, _render
from modelctl.cli._common import JsonOpt, WhereOpt, YesOpt
from modelctl.record import naming
from modelctl.record.errors import InvalidModel, InvalidQuery
from modelctl.record.kinds import Capability, Purpose, SizeClass, Status, Task

Many = list[str] | None


def register(app: typer.Typer) -> None:
    app.command("list")(list_models)
    app.command("show")(show)
    app.command("add")(add)
    app.command("forget")(forget)


def list_models(
    ctx: typer.Context,
    backend: Annotated[Many, typer.Option("--backend", "-b", help="Only these backends.")] = None,
    task: Annotated[list[Task] | None, typer.Option("--task", "-t", help="Has this task.")] = None,
    size: Annotated[list[SizeClass] | None, typer.Option("--size", "-s")] = None,
    tag: Annotated[Many, typer.Option("--tag", help="Has every one of these tags.")] = None,
    group: Annotated[Many, typer.Option("--group", "-g", help="In this group.")] = None,
    capability: Annotated[list[Capability] | None, typer.Option("--capability", "-c")] = None,
    purpose: Annotated[list[Purpose] | None, typer.Option("--purpose")] = None,
    status: Annotated[list[Status] | None, typer.Option("--status")] = None,
    installed: Annotated[
        bool | None, typer.Option("--installed/--not-installed", help="Installed or not.")
    ] = None,
    local: Annotated[
        bool | None, typer.Option("--local/--remote", help="Runs here, or is served elsewhere.")
    ] = None,
    where: WhereOpt = None,
    query: Annotated[
        str | None, typer.Option("--query", "-q", help='A JSON query: {"parameters": {"$lt": 8e9}}')
    ] = None,
    sort: Annotated[Many, typer.Option("--sort", help="Sort by field; -field descends.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", "-n", min=0)] = None,
    ids: Annotated[bool, typer.Option("--ids", help="Print only ids, one per line.")] = False,
    all_: Annotated[
        bool, typer.Option("--all", "-a", help="Add the catalog's models, and how each fits here.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List registered models; filters combine (all must hold)."""
    clauses: list[Any] = [*(where or [])]
    if query is not None:
        try:
            clauses.append(json.loads(query))
        except json.JSONDecodeError as exc:
            raise InvalidQuery(f"--query is not JSON: {exc.msg}") from None
    from modelctl.registry.query import parse_where

    parsed = [parse_where(c) if isinstance(c, str) else c for c in clauses]
    combined = parsed[0] if len(parsed) == 1 else {"$and": parsed} if parsed else None
    criteria = {
        "backend": backend,
        "task": task,
        "size": size,
        "tags": tag,
        "group": group,
        "capability": capability,
        "purpose": purpose,
        "status": status,
        "installed": installed,
        "local": local,
    }
    criteria = {k: [str(v) for v in c] if isinstance(c, list) else c for k, c in criteria.items()}
    registry = _common.state(ctx).registry
    if ids:
        chosen = registry.ids(combined, order_by=sort, limit=limit, **criteria)
        sys.stdout.write("".join(f"{i}\n" for i in chosen))
        return
    texts = registry.records_json(combined, order_by=sort, limit=limit, **criteria)
    if all_:
        from modelctl.cli.machine import list_all

        list_all(_common.state(ctx), [json.loads(t) for t in texts], as_json=as_json)
        return
    if as_json:
        _common.emit_json_records(texts)
        return
    records = [json.loads(t) for t in texts]
    if not records:
        total = registry.count()
        _common.say(
            "no models match these filters"
            if total
            else "the registry is empty: add a model "
            "with `modelctl add NAME` or import a file with `modelctl import FILE`"
        )
        return
    _common.console().print(_render.models_table(records))


def show(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Id, alias, backend:name or .gguf path.")],
    as_json: JsonOpt = False,
) -> None:
    """Show everything the registry holds about a model, and what it can do (with sources)."""
    manager = _common.state(ctx).manager
    registry = manager.registry
    record = registry[model].to_dict()
    groups = registry.groups_of(record["id"])
    detected = manager.detect_capabilities(record["id"])
    if as_json:
        _common.emit_json(record | {"groups": groups, "detected_capabilities": detected})
        return
    console = _common.console()
    console.print(_render.model_detail(record, groups))
    if detected:
        console.print("can:", highlight=False)
        for capability, sources in detected.items():
            console.print(f"  {capability:<11} {'; '.join(sources)}", highlight=False)


def add(
    ctx: typer.Context,
    ref: Annotated[
        str, typer.Argument(help="ollama:NAME, hf:ORG/REPO, openai/MODEL, a .gguf path, or a name.")
    ],
    model_id: Annotated[
        str | None, typer.Option("--id", help="Registry id (default: from REF).")
    ] = None,
    backend: Annotated[str | None, typer.Option("--backend", "-b")] = None,
    name: Annotated[str | None, typer.Option("--name", help="Display name.")] = None,
    refs: Annotated[Many, typer.Option("--ref", help="BACKEND=NAME the backend uses.")] = None,
    task: Annotated[list[Task] | None, typer.Option("--task", "-t")] = None,
    capability: Annotated[list[Capability] | None, typer.Option("--capability", "-c")] = None,
    parameters: Annotated[str | None, typer.Option("--parameters", "-p", help="8B, 494M")] = None,
    quantization: Annotated[str | None, typer.Option("--quantization", "--quant")] = None,
    context: Annotated[
        str | None, typer.Option("--context", help="Context length: 8192, 128k.")
    ] = None,
    max_output: Annotated[str | None, typer.Option("--max-output")] = None,
    file_size: Annotated[str | None, typer.Option("--file-size", help="4.7GB")] = None,
    download_size: Annotated[str | None, typer.Option("--download-size")] = None,
    location: Annotated[str | None, typer.Option("--location", help="Path or URL.")] = None,
    installed: Annotated[bool | None, typer.Option("--installed/--not-installed")] = None,
    min_memory: Annotated[str | None, typer.Option("--min-memory", help="6GB")] = None,
    purpose: Annotated[Purpose | None, typer.Option("--purpose")] = None,
    price_in: Annotated[
        float | None, typer.Option("--price-in", help="Per 1M input tokens.")
    ] = None,
    price_out: Annotated[
        float | None, typer.Option("--price-out", help="Per 1M output tokens.")
    ] = None,
    license_: Annotated[str | None, typer.Option("--license")] = None,
    description: Annotated[str | None, typer.Option("--description")] = None,
    tag: Annotated[Many, typer.Option("--tag")] = None,
    alias: Annotated[Many, typer.Option("--alias")] = None,
    custom: Annotated[Many, typer.Option("--set", help="Custom metadata KEY=VALUE.")] = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Overwrite a model with this id.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Register a model by hand. Parameters and quantization are read from the name if not given."""
    from modelctl.record.model import Model

    schemes = _common.state(ctx).manager.schemes
    record = draft_record(ref, backend=backend, model_id=model_id, schemes=schemes)
    given: dict[str, Any] = {
        "name": name,
        "tasks": [str(t) for t in task] if task else None,
        "capabilities": [str(c) for c in capability] if capability else None,
        "parameters": parameters,
        "quantization": quantization,
        "context_length": context,
        "max_output_tokens": max_output,
        "file_size": file_size,
        "download_size": download_size,
        "location": location,
        "installed": installed,
        "min_memory": min_memory,
        "purpose": str(purpose) if purpose else None,
        "license": license_,
        "description": description,
        "tags": tag,
        "aliases": alias,
    }
    record.update({k: v for k, v in given.items() if v is not None})
    if refs:
        record["refs"] = record.get("refs", {}) | _common.parse_assignments(refs, "--ref")
    if price_in is not None or price_out is not None:
        record["pricing"] = {"input": price_in or 0.0, "output": price_out or 0.0}
    if custom:
        record["custom"] = _common.parse_assignments(custom, "--set")
    model = _common.state(ctx).registry.add(Model.from_dict(record), replace=replace)
    if as_json:
        _common.emit_json(model.to_dict())
    else:
        _common.say(f"added [bold]{model.id}[/bold] ({model.backend})")


def draft_record(
    ref: str, *, backend: str | None, model_id: str | None, schemes: naming.Schemes
) -> dict[str, Any]:
    """What a reference says about a new model: backend, id, references, facts in its name."""
    parsed = naming.parse_ref(ref, schemes)
    chosen = backend or parsed.backend
    if chosen is None:
        names = ", ".join(sorted(set(schemes.prefixes.values())))
        raise InvalidModel(
            f"cannot tell which backend serves {ref!r}",
            field="backend",
            hint=f"pass --backend ({names}) or write BACKEND:NAME",
        )
    record: dict[str, Any] = {
        "id": model_id or naming.default_id(parsed),
        "backend": chosen,
        "refs": {chosen: parsed.name},
    }
    facts_from = parsed.name
    if parsed.is_path:
        path = os.path.abspath(os.path.expanduser(parsed.name))
        record["refs"] = {chosen: path}
        record["location"] = path
        facts_from = os.path.basename(path)
        if os.path.isfile(path):
            record["file_size"] = os.path.getsize(path)
            record["installed"] = True
    parameters = naming.parse_parameters_from_name(facts_from)
    if parameters:
        record["parameters"] = parameters
    quantization = naming.parse_quantization(facts_from)
    if quantization:
        record["quantization"] = quantization
    return record


def forget(
    ctx: typer.Context,
    refs: Annotated[list[str], typer.Argument(help="Models to remove from the registry.")],
    yes: YesOpt = False,
) -> None:
    """Remove models from the registry only; files and backends are not touched."""
    registry = _common.state(ctx).registry
    ids = [registry.resolve(r) for r in refs]
    _common.confirm(f"Forget {', '.join(ids)} (tags, aliases and metadata go with them)?", yes)
    with registry.store.transaction():
        for model_id in ids:
            del registry[model_id]
    _common.say(f"forgot {', '.join(ids)}")
