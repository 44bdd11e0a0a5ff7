"""The management API, `/api/v1`: every operation of the library over HTTP.

Model ids hold `/` and `:` (`Qwen/Qwen2.5-0.5B-Instruct`, `llama3.2:3b`): they go in paths as
they are (`/api/v1/models/Qwen/Qwen2.5-0.5B-Instruct`); actions on a model take it in the body.
"""

import asyncio
import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from modelctl import __version__
from modelctl.record.errors import InvalidRequest
from modelctl.record.kinds import Capability, Purpose, SizeClass, Task
from modelctl.record.model import Model
from modelctl.record.units import parse_bytes, parse_duration, parse_field
from modelctl.server.document import (
    INTEGER,
    NUMBER,
    STRING,
    ManagementError,
    errors,
    event_stream,
    link,
    obj,
    returns,
)
from modelctl.server.jobs import InstallJob
from modelctl.server.state import ServerState, state
from modelctl.store.ledger import series_step

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["management"], responses=errors(ManagementError))

ModelPath = Annotated[str, "a model id, alias or reference; `/` and `:` as they are"]
MAX_OFFSET = 10**9  # SQLite's integers end at 2**63: a larger offset was a 500
LATEST = 10**11  # unix seconds (the year 5138): a bound for times, so a huge one is a 422

UnixTime = Annotated[float | None, Query(ge=0, le=LATEST, description="unix seconds")]


def _ctl(request: Request) -> ServerState:
    return state(request)


def _model_id(ctl: ServerState, model: str | None) -> str | None:
    """The id a `model` parameter names (an alias, a reference), or None for every model."""
    return ctl.resolve(model) if model else None


def _record(ctl: ServerState, ref: str) -> dict[str, Any]:
    record = ctl.manager.registry.store.get(ctl.resolve(ref))
    assert record is not None
    return record


Change = Literal["added", "updated", "deleted", "forgotten", "imported", "synced"]


def _changed(ctl: ServerState, model: str | None, change: Change) -> None:
    """`ServerState.changed`, with the kinds of change this API makes."""
    ctl.changed(model, change)


# ---------------------------------------------------------------------- the registry


_PAGE = obj(
    ("models", "count", "total", "offset", "limit"),
    models={"type": "array", "items": {"$ref": "#/components/schemas/Model"}},
    count={**INTEGER, "description": "models in this page"},
    total={**INTEGER, "description": "models that match, in every page"},
    offset=INTEGER,
    limit={"type": ["integer", "null"]},
)


@router.get("/models", **returns(200, _PAGE))
def list_models(
    request: Request,
    where: Annotated[
        list[str] | None, Query(description="`context_length>=8k`, `tags~prod`; repeatable")
    ] = None,
    backend: list[str] | None = Query(None),
    task: Task | None = None,
    capability: Capability | None = None,
    size: SizeClass | None = None,
    purpose: Purpose | None = None,
    tag: Annotated[list[str] | None, Query(description="all of these tags")] = None,
    group: str | None = None,
    installed: bool | None = None,
    local: bool | None = None,
    q: Annotated[
        str | None,
        Query(max_length=200, description="text in the id, name, family or description; any case"),
    ] = None,
    fits: Annotated[
        bool | None,
        Query(description="fits this machine's memory budget (false: does not); no size fits"),
    ] = None,
    order_by: str | None = Query(None, description="a field; `-field` for descending"),
    limit: int | None = Query(None, ge=0, le=100_000),
    offset: int = Query(0, ge=0, le=MAX_OFFSET, description="skip this many first"),
) -> JSONResponse:
    """Models matching the filters and `where` expressions (the query language), a page of
    them with `limit` and `offset`; `total` counts every match, `count` this page's."""
    from modelctl.registry import query as language

    manager = _ctl(request).manager
    clauses = [language.parse_where(w) for w in where or ()]
    if q:
        clauses.append(language.search(q))
    if fits is not None:
        clauses.append(language.fits(manager.scheduler.budget, fit=fits))
    query = None if not clauses else clauses[0] if len(clauses) == 1 else {"$and": clauses}
    given = {
        "backend": backend, "task": task and task.value, "size": size and size.value,
        "capability": capability and capability.value, "purpose": purpose and purpose.value,
        "tags": tag, "group": group, "installed": installed, "local": local,
    }  # fmt: skip
    registry = manager.registry
    total = registry.count(query, **given)
    records = (  # a page past the end is not read: a search that finds nothing reads once
        registry.records(query, order_by=order_by, limit=limit, offset=offset, **given)
        if offset < total and limit != 0
        else []
    )
    return JSONResponse(
        {"models": records, "count": len(records), "total": total, "offset": offset,
         "limit": limit}
    )  # fmt: skip


class ModelRecord(Model):
    """A model's record as the API answers it, with its groups."""

    groups: list[str] = Field(default_factory=list)


_ID = "$response.body#/id"
_NAMED = "$response.body#/model"
_TAG = "$response.body#/tags/0"
_MODEL = {
    "GetModel": link("get", "/api/v1/models/{ref}", "the model's record", path_ref=_ID),
    "UpdateModel": link("patch", "/api/v1/models/{ref}", "change it", path_ref=_ID),
    "DeleteModel": link("delete", "/api/v1/models/{ref}", "delete it", path_ref=_ID),
    "Tagged": link("get", "/api/v1/models", "models with its first tag", query_tag=_TAG),
    "Capabilities": link("get", "/api/v1/capabilities/{ref}", "what it can do", path_ref=_ID),
    "Fit": link("get", "/api/v1/compatibility/{ref}", "will it fit here", path_ref=_ID),
    "OpenAIModel": link("get", "/v1/models/{model}", "as OpenAI lists it", path_model=_ID),
    "OllamaShow": link("post", "/api/show", "as Ollama shows it", body={"model": _ID}),
    "Usage": link("post", "/api/v1/usage", "a call it served elsewhere", body={"model": _ID}),
}
_CHANGED = _MODEL | {
    "ByAlias": link("get", "/api/v1/models/{ref}", "by its first alias",
                    path_ref="$response.body#/aliases/0"),
    "Grouped": link("get", "/api/v1/models", "models in its first group",
                    query_group="$response.body#/groups/0"),
}  # fmt: skip
_RECORD_BODY = {"$ref": "#/components/schemas/Model"}


@router.post(
    "/models",
    status_code=201,
    openapi_extra={"requestBody": {"content": {"application/json": {"schema": _RECORD_BODY}}}},
    **returns(201, Model, links=_MODEL),
)
def add_model(record: dict[str, Any], request: Request, replace: bool = False) -> dict[str, Any]:
    """Register a model record (`replace=true` overwrites one with the same id)."""
    ctl = _ctl(request)
    model = ctl.manager.add_model(record, replace=replace)
    _changed(ctl, model.id, "added")
    return model.to_dict()


class ModelChanges(BaseModel):
    """What to change; lists are added to or removed from, `custom` and `defaults` merged
    (a null value removes that key)."""

    model_config = ConfigDict(extra="forbid")

    add_tags: list[str] = Field(default_factory=list)
    remove_tags: list[str] = Field(default_factory=list)
    add_aliases: list[str] = Field(default_factory=list)
    remove_aliases: list[str] = Field(default_factory=list)
    add_groups: list[str] = Field(default_factory=list)
    remove_groups: list[str] = Field(default_factory=list)
    custom: dict[str, Any] = Field(default_factory=dict)
    defaults: dict[str, Any] = Field(default_factory=dict)
    fields: dict[str, Any] = Field(
        default_factory=dict, description="other record fields: description, pricing, …"
    )


@router.get("/logs/{ref:path}")
def logs(ref: str, request: Request, lines: int = Query(100, ge=0, le=10_000)) -> dict[str, Any]:
    """The last lines of a model's worker log: its runtime's output, each start and exit."""
    return state(request).manager.logs(ref, lines)


@router.get("/models/{ref:path}", **returns(200, ModelRecord))
def get_model(ref: ModelPath, request: Request) -> dict[str, Any]:
    """One model's record, with its groups."""
    ctl = _ctl(request)
    record = _record(ctl, ref)
    return record | {"groups": ctl.manager.registry.groups_of(record["id"])}


@router.patch("/models/{ref:path}", **returns(200, ModelRecord, links=_CHANGED))
def update_model(ref: ModelPath, changes: ModelChanges, request: Request) -> dict[str, Any]:
    """Tags, aliases, groups, custom metadata, default parameters and fields, in one
    transaction: all of it, or (on any error) none of it."""
    ctl = _ctl(request)
    registry = ctl.manager.registry
    model_id = ctl.resolve(ref)
    with registry.store.transaction():
        if changes.add_tags:
            registry.tag(model_id, *changes.add_tags)
        if changes.remove_tags:
            registry.untag(model_id, *changes.remove_tags)
        # removing what the model does not have is nothing to do, as for tags (and another
        # model's alias stays that model's: it was removed from it)
        for alias in changes.remove_aliases:
            if registry.store.resolve_alias(alias) == model_id:
                registry.unalias(alias)
        for alias in changes.add_aliases:
            registry.alias(alias, model_id)
        for name in changes.add_groups:
            registry.group(name, model_id)
        for name in set(changes.remove_groups) & set(registry.groups_of(model_id)):
            registry.ungroup(name, model_id)
        for key, value in changes.custom.items():
            if value is None:
                registry.unset_custom(model_id, key)
            else:
                registry.set_custom(model_id, key, value)
        if changes.defaults:
            ctl.manager.update_model_parameters(model_id, **changes.defaults)
        if changes.fields:
            if "id" in changes.fields:
                raise InvalidRequest("fields.id: a model's id cannot change")
            registry.update(model_id, **changes.fields)
    if changes.model_dump(exclude_defaults=True):
        _changed(ctl, model_id, "updated")
    return get_model(model_id, request)


@router.delete(
    "/models/{ref:path}",
    **returns(
        200, obj(("model", "plan", "forgotten"), model=STRING, forgotten={"type": "boolean"}),
        links={"GetModel": link("get", "/api/v1/models/{ref}", "its record, if it stays",
                                path_ref=_NAMED)},
    ),
)  # fmt: skip
def delete_model(
    ref: ModelPath,
    request: Request,
    dry_run: bool = False,
    forget: bool = Query(False, description="also drop the record (else it stays, not installed)"),
) -> dict[str, Any]:
    """Delete a model's files through its backend (unloading it first), as a plan with
    `dry_run`; `forget` removes the record too (a model with no files: the record only)."""
    ctl = _ctl(request)
    model_id = ctl.resolve(ref)
    manager = ctl.manager
    record = manager.registry.store.get(model_id) or {}
    plan = None
    backend = manager.backends.get(record.get("backend") or "")
    if record.get("installed") and (backend is None or backend.kind().local):
        # files on this machine: unloaded, then deleted through the backend (which says if it
        # cannot)
        plan = manager.delete_model(model_id, dry_run=dry_run).to_dict()
    if forget and not dry_run:
        del manager.registry[model_id]
        _changed(ctl, model_id, "forgotten")
    elif plan is not None and not dry_run:
        _changed(ctl, model_id, "deleted")
    return {"model": model_id, "plan": plan, "forgotten": forget and not dry_run}


@router.get("/groups")
def groups(request: Request) -> dict[str, Any]:
    return _ctl(request).manager.registry.groups()


@router.get("/export")
def export(request: Request) -> dict[str, Any]:
    """The registry as an export document (secrets never included)."""
    return _ctl(request).manager.export_metadata()


class ImportRequest(BaseModel):
    document: dict[str, Any] | list[Any]
    replace: bool = False
    dry_run: bool = False


@router.post("/import")
def import_(payload: ImportRequest, request: Request) -> dict[str, Any]:
    """Import an export document: all of it or, on the first bad record, none of it."""
    ctl = _ctl(request)
    report = ctl.manager.import_metadata(
        payload.document, replace=payload.replace, dry_run=payload.dry_run
    )
    if not payload.dry_run:
        _changed(ctl, None, "imported")
    return report.to_dict()


# ---------------------------------------------------------------------- fit


@router.get("/system")
def system(request: Request) -> dict[str, Any]:
    """This machine: OS, CPU, RAM, GPUs with VRAM, disk."""
    return _ctl(request).manager.system_info().to_dict()


@router.get("/compatibility/{ref:path}")
def compatibility(
    ref: ModelPath,
    request: Request,
    memory: str | None = Query(None, description="fit into this (8G, 16GB) instead of here"),
    context: int | None = Query(None, ge=1, le=10_000_000),
    quantization: str | None = None,
) -> dict[str, Any]:
    """Will a model (registered, in the catalog, or a GGUF path) fit: level, estimate, reason."""
    return (
        _ctl(request)
        .manager.check_compatibility(
            ref, _bytes(memory), context=context, quantization=quantization
        )
        .to_dict()
    )


@router.get("/recommend")
def recommend(
    request: Request,
    memory: str | None = None,
    priority: Literal["speed", "balanced", "quality"] = "balanced",
    task: Task = Task.CHAT,
    context: int | None = Query(None, ge=1, le=10_000_000),
) -> dict[str, Any]:
    """The best catalog model for a memory size (or this machine), priority and task."""
    return (
        _ctl(request)
        .manager.recommend_model(_bytes(memory), priority, task=task.value, context=context)
        .to_dict()
    )


def _bytes(text: str | None) -> int | None:
    return None if text is None else parse_field(parse_bytes, text, "memory")


@router.get("/capabilities/{ref:path}")
def capabilities(ref: ModelPath, request: Request, probe: bool = False) -> dict[str, Any]:
    """What a model can do, each capability with its sources (declared, metadata, name, and
    with `probe=true` real requests)."""
    ctl = _ctl(request)
    model_id = ctl.resolve(ref)
    found = ctl.manager.detect_capabilities(model_id, probe=probe)
    return {"model": model_id, "capabilities": found}


@router.post("/profiles/{ref:path}")
def run_profile(
    ref: ModelPath, request: Request, n: int = Query(10, ge=1, le=100)
) -> dict[str, Any]:
    """Measure a model here with n rounds of real requests; stored and returned."""
    ctl = _ctl(request)
    return ctl.manager.profile(ctl.resolve(ref), n)


@router.get("/profiles")
def profiles(request: Request, model: list[str] | None = Query(None)) -> dict[str, Any]:
    """The newest profile of each model (or of the given ones)."""
    return _ctl(request).manager.profiles(*(model or ()))


# ---------------------------------------------------------------------- backends


@router.get("/backends")
def backends(request: Request) -> list[dict[str, Any]]:
    """Every backend: reachable or not, version, model count, what to do when it is not, and
    what it is (`kind`: local or remote, what it can do, its runtimes)."""
    manager = _ctl(request).manager
    kinds = manager.backend_kinds()
    return [s.to_dict() | {"kind": kinds[s.name].to_dict()} for s in manager.check_backend_status()]


class SyncRequest(BaseModel):
    only: list[str] | None = Field(None, description="these backends (default: all)")


@router.post("/sync")
def sync(request: Request, payload: SyncRequest | None = None) -> dict[str, Any]:
    """Discover what each backend has, and bring the registry in step."""
    only = payload.only if payload else None
    ctl = _ctl(request)
    for name in only or ():
        ctl.manager.backend(name)  # an unknown name is a 404, not a silent no-op
    report = ctl.manager.sync(only=only)
    if report.added or report.updated or report.merged or report.missing:
        _changed(ctl, None, "synced")
    return report.to_dict()


# ---------------------------------------------------------------------- doctor


class DoctorFinding(BaseModel):
    """One check of `modelctl doctor`, with the step that fixes it."""

    area: str
    level: Literal["ok", "warn", "fail"]
    message: str
    step: str | None


class DoctorReport(BaseModel):
    findings: list[DoctorFinding]
    counts: dict[Literal["ok", "warn", "fail"], int]


@router.get("/doctor", **returns(200, DoctorReport))
def doctor(request: Request) -> dict[str, Any]:
    """Every check `modelctl doctor` makes (machine, registry, backends, keys, server), and how
    many findings are ok, warn and fail."""
    findings = _ctl(request).manager.doctor()
    levels = Counter(f.level for f in findings)
    return {
        "findings": [f.to_dict() for f in findings],
        "counts": {level: levels[level] for level in ("ok", "warn", "fail")},
    }


# ---------------------------------------------------------------------- installs


class InstallRequest(BaseModel):
    model: str = Field(min_length=1, max_length=512)
    backend: str | None = None
    quantization: str | None = None
    force: bool = False


_JOB = "$response.body#/id"
_FOLLOW = {
    "GetInstall": link("get", "/api/v1/installs/{job_id}", "the job", path_job_id=_JOB),
    "CancelInstall": link("delete", "/api/v1/installs/{job_id}", "cancel it", path_job_id=_JOB),
    "InstallEvents": link(
        "get", "/api/v1/installs/{job_id}/events", "its progress", path_job_id=_JOB
    ),
}


@router.post("/installs", status_code=202, **returns(202, InstallJob, links=_FOLLOW))
def start_install(payload: InstallRequest, request: Request) -> dict[str, Any]:
    """Start an install job; follow it at `/installs/{id}` or `/installs/{id}/events`."""
    options = payload.model_dump(exclude={"model"}, exclude_none=True)
    return _ctl(request).jobs.start(payload.model, **options).to_dict()


@router.get("/installs", **returns(200, list[InstallJob]))
def list_installs(request: Request) -> list[dict[str, Any]]:
    return [j.to_dict() for j in _ctl(request).jobs.list()]


@router.get("/installs/{job_id}", **returns(200, InstallJob))
def get_install(job_id: str, request: Request) -> dict[str, Any]:
    return _ctl(request).jobs.get(job_id).to_dict()


@router.delete("/installs/{job_id}", **returns(200, InstallJob))
def cancel_install(job_id: str, request: Request) -> dict[str, Any]:
    """Cancel a job; the download stops at its next progress report (resumable later)."""
    return _ctl(request).jobs.cancel(job_id).to_dict()


@router.get(
    "/installs/{job_id}/events",
    response_class=StreamingResponse,
    **returns(200, None, streams=event_stream(InstallJob.model_json_schema())),
)
def install_events(job_id: str, request: Request) -> StreamingResponse:
    """The job's progress as server-sent events, until it finishes."""
    ctl = _ctl(request)
    job = ctl.jobs.get(job_id)
    events = (_sse(e["state"], e) for e in ctl.jobs.follow(job))
    return StreamingResponse(events, media_type="text/event-stream")


def _sse(name: str, data: Any) -> str:
    return f"event: {name}\ndata: {json.dumps(data, default=str)}\n\n"


# ---------------------------------------------------------------------- loaded models


class LoadRequest(BaseModel):
    model: str = Field(min_length=1, max_length=512)
    keep_alive: float | str | None = Field(None, description="seconds or 5m, 1h; -1 forever")
    pin: bool | None = None
    priority: int | None = None
    context: int | None = Field(None, ge=16, le=10_000_000)
    gpu_layers: int | None = Field(None, ge=-1)

    def options(self) -> dict[str, Any]:
        given = self.model_dump(exclude={"model"}, exclude_none=True)
        if "keep_alive" in given:
            given["keep_alive"] = parse_field(parse_duration, given["keep_alive"], "keep_alive")
        return given


@router.get("/loaded")
def loaded(request: Request) -> dict[str, Any]:
    """Loaded models (size, device, expiry, requests in flight), memory used and the budget."""
    manager = _ctl(request).manager
    scheduler = manager.scheduler
    return {
        "models": manager.loaded(),
        "current": scheduler.current,
        "used": scheduler.used(),
        "budget": scheduler.budget,
        "max_loaded": scheduler.max_loaded,
    }


_SLOT = {
    "Unload": link("delete", "/api/v1/loaded/{ref}", "unload it", path_ref=_NAMED),
    "Logs": link("get", "/api/v1/logs/{ref}", "its worker's log", path_ref=_NAMED),
}


@router.post(
    "/loaded", **returns(200, obj(("model", "state"), model=STRING, state=STRING), links=_SLOT)
)
def load(payload: LoadRequest, request: Request) -> dict[str, Any]:
    """Load a model (waits until it is ready); pin, priority and keep-alive apply."""
    ctl = _ctl(request)
    return ctl.manager.load(ctl.resolve(payload.model), **payload.options())


@router.delete("/loaded")
def unload_all(request: Request) -> dict[str, Any]:
    return {"unloaded": _ctl(request).manager.unload(all=True)}


@router.post("/loaded/least-used")
def unload_least_used(request: Request) -> dict[str, Any]:
    """Unload the least recently used idle, unpinned model, if there is one."""
    unloaded = _ctl(request).manager.unload_least_used()
    return {"unloaded": [unloaded] if unloaded else []}


@router.delete("/loaded/{ref:path}")
def unload(ref: ModelPath, request: Request) -> dict[str, Any]:
    """Unload a model once its requests in flight finish."""
    ctl = _ctl(request)
    return {"unloaded": ctl.manager.unload(ctl.resolve(ref))}


@router.get("/current")
def current(request: Request) -> dict[str, Any]:
    return {"current": _ctl(request).manager.current()}


@router.put("/current")
def switch(payload: LoadRequest, request: Request) -> dict[str, Any]:
    """Switch: load if needed, and make it the current model."""
    ctl = _ctl(request)
    return ctl.manager.switch_model(ctl.resolve(payload.model), **payload.options())


@router.post("/state")
def save_state(request: Request) -> dict[str, Any]:
    """Save what is loaded and current now (restored on the server's next start)."""
    return _ctl(request).manager.scheduler.save()


# ---------------------------------------------------------------------- usage


MAX_TOKENS = 10**12  # in one call, at most


class UsageRecord(BaseModel):
    """A call made elsewhere, for the ledger."""

    model: str = Field(min_length=1, max_length=512)
    latency: float = Field(ge=0, le=86_400, description="seconds")
    # bounded: the ledger is SQLite, whose integers end at 2**63 (a larger one lost the batch
    # being written, and every read of the ledger failed with a 500 until then)
    tokens_in: int = Field(0, ge=0, le=MAX_TOKENS)
    tokens_out: int = Field(0, ge=0, le=MAX_TOKENS)
    ttft: float | None = Field(None, ge=0, le=86_400)
    ok: bool = True
    error: str | None = None
    kind: Literal["chat", "completion", "embedding", "other"] = "chat"
    client: str | None = None
    cost: float | None = Field(None, ge=0, le=1e12)


@router.post(
    "/usage",
    status_code=201,
    **returns(
        201, obj(("model", "cost", "at"), model=STRING, at=NUMBER),
        links={
            "Rows": link("get", "/api/v1/usage", "its rows", query_model=_NAMED),
            "Stats": link("get", "/api/v1/stats", "its figures", query_model=_NAMED),
        },
    ),
)  # fmt: skip
def record_usage(payload: UsageRecord, request: Request) -> dict[str, Any]:
    ctl = _ctl(request)
    data = payload.model_dump()
    model = ctl.resolve(data.pop("model"))
    usage = ctl.manager.record_usage(model, **data)
    return {"model": usage.model, "cost": usage.cost, "at": usage.at}


@router.get("/usage")
def usage_rows(
    request: Request,
    model: str | None = None,
    since: float | None = Query(None, description="unix seconds"),
    limit: int = Query(100, ge=1, le=10_000),
) -> list[dict[str, Any]]:
    """The most recent requests, newest first."""
    ctl = _ctl(request)
    return ctl.manager.usage.rows(ctl.resolve(model) if model else None, since=since, limit=limit)


@router.get("/stats")
def stats(
    request: Request,
    model: str | None = None,
    since: float | None = Query(None, description="unix seconds"),
) -> dict[str, Any]:
    """Per model and overall: requests, last use, latency avg/p50/p95, tokens/s, cost."""
    ctl = _ctl(request)
    return ctl.manager.usage_stats(ctl.resolve(model) if model else None, since=since)


class Point(BaseModel):
    """The requests of one span of a series, which starts at `at`."""

    at: float
    requests: int
    errors: int
    latency_p50_ms: float | None
    latency_p95_ms: float | None
    ttft_avg_ms: float | None
    tokens_per_second: float | None
    tokens_in: int
    tokens_out: int
    cost: float


class Series(BaseModel):
    since: float
    until: float
    step: float = Field(description="seconds each point spans")
    points: list[Point] = Field(description="spans that hold requests only, in time order")


@router.get("/usage/series", **returns(200, Series))
def usage_series(
    request: Request,
    since: UnixTime = None,
    until: UnixTime = None,
    step: Annotated[
        float | None,
        Query(gt=0, le=LATEST, description="seconds (default: a round step, 120 points at most)"),
    ] = None,
    model: str | None = None,
) -> dict[str, Any]:
    """Requests, errors, latency p50/p95, time to first token, speed, tokens and cost per
    `step` seconds from `since` (default: an hour ago) to `until` (default: now); at most
    2000 points (a smaller step is made larger)."""
    now = time.time()
    since = now - 3600 if since is None else since
    until = now if until is None else until
    if since >= until:
        raise InvalidRequest(
            f"since ({since:.0f}) must be before until ({until:.0f})",
            hint="unix seconds; since defaults to an hour ago, until to now",
        )
    ctl = _ctl(request)
    step = series_step(until - since, step)
    points = ctl.manager.usage.series(_model_id(ctl, model), since=since, until=until, step=step)
    return {"since": since, "until": until, "step": step, "points": points}


_CSV_HEADERS = {"Content-Disposition": 'attachment; filename="modelctl-usage.csv"'}
_CSV = {
    "response_class": StreamingResponse,
    "response_model": None,
    "responses": {
        200: {
            "description": "The ledger's rows, oldest first, under a header of its column names",
            "content": {"text/csv": {"schema": STRING}},
            "headers": {
                "Content-Disposition": {"description": "a file name to save it as",
                                        "schema": STRING},
            },
        }
    },
}  # fmt: skip


@router.get("/usage/export", **_CSV)
def usage_export(
    request: Request, since: UnixTime = None, model: str | None = None
) -> StreamingResponse:
    """Every request in the usage ledger (or one model's, since a time) as CSV: a download,
    written as it is read."""
    ctl = _ctl(request)
    text = ctl.manager.usage.export_csv(_model_id(ctl, model), since=since)
    return StreamingResponse(text, media_type="text/csv", headers=_CSV_HEADERS)


# ---------------------------------------------------------------------- events


@router.get(
    "/events",
    response_class=StreamingResponse,
    **returns(200, None, streams=event_stream({"type": "object"})),
)
async def events(
    request: Request, recent: bool = Query(True, description="replay recent events")
) -> StreamingResponse:
    """Scheduler events (loading, loaded, failed, switched, unloaded, evicted) and registry
    changes (model-changed: `model`, `change`) as server-sent events, as they happen."""
    bus = _ctl(request).manager.events
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue(maxsize=1000)
    backlog = list(bus.recent) if recent else []

    def offer(event: Any) -> None:
        # a reader that stopped reading loses events; it never stalls a load
        with contextlib.suppress(asyncio.QueueFull):
            inbox.put_nowait(event)

    def deliver(event: Any) -> None:  # on the thread that emits it
        with contextlib.suppress(RuntimeError):  # the server has stopped
            loop.call_soon_threadsafe(offer, event)

    unsubscribe = bus.on("*", deliver)

    async def stream() -> AsyncIterator[str]:
        # on the loop: a client that leaves ends it at once (a worker thread waiting for the
        # next event was held until the keep-alive, and 40 readers held every worker)
        try:
            for event in backlog:
                yield _sse(event.name, event.to_dict())
            while True:
                try:
                    event = await asyncio.wait_for(inbox.get(), 15)
                except TimeoutError:
                    yield ": keep-alive\n\n"
                    continue
                yield _sse(event.name, event.to_dict())
        finally:
            unsubscribe()

    return StreamingResponse(stream(), media_type="text/event-stream")


@router.get("/status")
def server_status(request: Request) -> Response:
    """The server: version, uptime, models restored at start (or why not)."""
    ctl = _ctl(request)
    return JSONResponse(
        {"version": __version__, "uptime": time.time() - ctl.started,
         "restore_failed": ctl.restored, "home": str(ctl.manager.home)}
    )  # fmt: skip
