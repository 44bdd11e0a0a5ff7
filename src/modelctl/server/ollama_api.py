"""The Ollama-compatible API, `/api`: tags, show, chat, generate, embed, embeddings, ps, pull,
delete, copy, create, blobs, version; push is refused with Ollama's error shape, and why.

Ollama's clients and the apps built on them (Open WebUI, …) talk to modelctl as to an Ollama
daemon: the same bodies, newline-delimited JSON streams (streaming is the default), durations in
nanoseconds, and `{"error": "…"}` on failure. Every registered model is listed, local or remote.
"""

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Literal

from anyio import to_thread
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from modelctl import __version__
from modelctl.record.errors import InvalidRequest, ModelctlError
from modelctl.record.model import check_options
from modelctl.record.units import format_parameters, parse_duration, parse_field
from modelctl.server.document import (
    INTEGER,
    NUMBER,
    STRING,
    OllamaError,
    errors,
    json_lines,
    obj,
    returns,
)
from modelctl.server.state import (
    ServerState,
    chained,
    client_name,
    state,
    usable,
    while_connected,
)

__all__ = ["router"]

router = APIRouter(prefix="/api", tags=["ollama"], responses=errors(OllamaError))

NDJSON = "application/x-ndjson"
# Ollama's option names → the OpenAI-shaped ones every runtime takes
OPTION_NAMES = {
    "temperature": "temperature", "top_p": "top_p", "top_k": "top_k", "num_predict": "max_tokens",
    "stop": "stop", "seed": "seed", "repeat_penalty": "repeat_penalty", "min_p": "min_p",
    "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty",
}  # fmt: skip


# The answers, as the OpenAPI document gives them (Ollama's shapes; other fields may come too)
_ERROR = obj(("error",), error=STRING)
_BOOLEAN = {"type": "boolean"}
_DONE = {
    "done": _BOOLEAN, "done_reason": STRING, "total_duration": INTEGER,
    "load_duration": INTEGER, "prompt_eval_count": INTEGER, "eval_count": INTEGER,
}  # fmt: skip
_TOOL_CALLS = {"type": "array", "items": obj(("function",), function=obj(("name",), name=STRING))}
CHAT_LINE = obj(
    ("model", "created_at", "message", "done"), model=STRING, created_at=STRING,
    message=obj(("role", "content"), role=STRING, content=STRING, tool_calls=_TOOL_CALLS),
    **_DONE,
)  # fmt: skip
GENERATE_LINE = obj(
    ("model", "created_at", "response", "done"), model=STRING, created_at=STRING,
    response=STRING, **_DONE,
)  # fmt: skip
_VECTOR = {"type": "array", "items": NUMBER}
EMBEDDINGS = obj(
    ("model", "embeddings"), model=STRING, embeddings={"type": "array", "items": _VECTOR}
)
_DETAILS = obj(
    ("format", "family", "parameter_size", "quantization_level"), format=STRING,
    family=STRING, parameter_size=STRING, quantization_level=STRING,
)  # fmt: skip
LISTED = obj(
    ("name", "model", "modified_at", "size", "digest", "details"), name=STRING, model=STRING,
    modified_at=STRING, size=INTEGER, digest=STRING, details=_DETAILS,
)  # fmt: skip
_LISTED_ALL = obj(("models",), models={"type": "array", "items": LISTED})
_STATUS = obj(("status",), status=STRING)
PULL_LINE = obj(("status",), status=STRING, digest=STRING, total=INTEGER, completed=INTEGER)


class _Request(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=512)
    options: dict[str, Any] | None = None
    keep_alive: float | str | None = None


class ToolFunction(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(max_length=512)
    arguments: dict[str, Any] | str = Field(default_factory=dict)


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")

    function: ToolFunction


class Message(BaseModel):
    """A chat message as Ollama's API takes it (tool calls carry their arguments as an
    object)."""

    model_config = ConfigDict(extra="allow")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | None = ""
    images: list[str] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_name: str | None = None


class ChatRequest(_Request):
    messages: list[Message] = Field(default_factory=list)
    stream: bool = True
    format: str | dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None


class GenerateRequest(_Request):
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    stream: bool = True
    format: str | dict[str, Any] | None = None


class EmbedRequest(_Request):
    input: str | list[str]


class LegacyEmbedRequest(_Request):
    prompt: str


class ModelRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str | None = Field(None, min_length=1, max_length=512)
    name: str | None = Field(None, min_length=1, max_length=512, description="older clients")
    stream: bool = True

    def ref(self) -> str:
        if not (self.model or self.name):
            raise InvalidRequest("model: required")
        return self.model or self.name  # type: ignore[return-value]


def _options(payload: _Request, *, stream: bool) -> dict[str, Any]:
    given = payload.options or {}
    options: dict[str, Any] = {OPTION_NAMES[k]: v for k, v in given.items() if k in OPTION_NAMES}
    if "num_ctx" in given:
        options["context"] = given["num_ctx"]
    if payload.keep_alive is not None:
        options["keep_alive"] = parse_field(parse_duration, payload.keep_alive, "keep_alive")
    fmt = getattr(payload, "format", None)
    if fmt == "json":
        options["response_format"] = {"type": "json_object"}
    elif isinstance(fmt, dict):
        options["response_format"] = {"type": "json_object", "schema": fmt}
    if getattr(payload, "tools", None):
        options["tools"] = payload.tools  # type: ignore[attr-defined]
    options["stream"] = stream
    return options


def _now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _lifecycle_only(ctl: ServerState, model_id: str, options: dict[str, Any], kind: str) -> Any:
    """An empty prompt loads the model; with keep_alive 0 it unloads it (Ollama's convention)."""
    keep_alive = options.get("keep_alive")
    if keep_alive == 0:
        ctl.manager.unload(model_id)
        reason = "unload"
    else:
        load = {k: options[k] for k in ("keep_alive", "context") if k in options}
        ctl.manager.load(model_id, **load)
        reason = "load"
    done: dict[str, Any] = {"model": model_id, "created_at": _now(), "done": True}
    done["done_reason"] = reason
    if kind == "chat":
        done["message"] = {"role": "assistant", "content": ""}
    else:
        done["response"] = ""
    return JSONResponse(done)


@router.post("/chat", **returns(200, CHAT_LINE, streams=json_lines({"anyOf": [CHAT_LINE, _ERROR]})))
async def chat(payload: ChatRequest, request: Request) -> Response:
    """A chat turn; streams newline-delimited JSON unless `stream: false`."""
    ctl = state(request)
    model_id = ctl.resolve(payload.model)
    options = _options(payload, stream=payload.stream)
    if not payload.messages:
        return await to_thread.run_sync(_lifecycle_only, ctl, model_id, options, "chat")
    messages = [_message_in(m) for m in payload.messages]
    started = time.perf_counter_ns()
    answer = await while_connected(
        request,
        ctl.manager.achat(
            messages, model_id, client=client_name(request), usage_chunk=True, **options
        ),
    )
    return await _reply(answer, model_id, "chat", started, payload.stream)


@router.post(
    "/generate",
    **returns(200, GENERATE_LINE, streams=json_lines({"anyOf": [GENERATE_LINE, _ERROR]})),
)
async def generate(payload: GenerateRequest, request: Request) -> Response:
    """A completion: through the chat template, or as is with `raw: true`."""
    ctl = state(request)
    model_id = ctl.resolve(payload.model)
    options = _options(payload, stream=payload.stream)
    if not payload.prompt:
        return await to_thread.run_sync(_lifecycle_only, ctl, model_id, options, "generate")
    started = time.perf_counter_ns()
    client = client_name(request)
    if payload.raw:
        answer = await while_connected(
            request,
            ctl.manager.acomplete(
                payload.prompt, model_id, client=client, usage_chunk=True, **options
            ),
        )
        return await _reply(answer, model_id, "generate", started, payload.stream)
    messages = [{"role": "user", "content": payload.prompt}]
    if payload.system:
        messages.insert(0, {"role": "system", "content": payload.system})
    answer = await while_connected(
        request, ctl.manager.achat(messages, model_id, client=client, usage_chunk=True, **options)
    )
    return await _reply(answer, model_id, "generate", started, payload.stream)


def _message_in(message: Message) -> dict[str, Any]:
    """Ollama's message → OpenAI's (tool calls carry arguments as a JSON string there)."""
    data = message.model_dump(exclude_none=True)
    out = {k: v for k, v in data.items() if k in ("role", "content", "tool_calls", "name")}
    out.setdefault("content", "")
    for call in out.get("tool_calls") or ():
        function = call.get("function") or {}
        if isinstance(function.get("arguments"), dict):
            function["arguments"] = json.dumps(function["arguments"])
    return out


def _tool_calls_out(calls: list[dict[str, Any]] | None) -> list[dict[str, Any]] | None:
    if not calls:
        return None
    out = []
    for call in calls:
        function = dict(call.get("function") or {})
        arguments = function.get("arguments")
        if isinstance(arguments, str):
            try:
                function["arguments"] = json.loads(arguments or "{}")
            except json.JSONDecodeError:
                function["arguments"] = {}
        out.append({"function": function})
    return out


def _piece(chunk: dict[str, Any], kind: str) -> tuple[str, list[dict[str, Any]] | None, str | None]:
    """(text, tool calls, finish reason) of one OpenAI-shaped chunk or answer."""
    choice = (chunk.get("choices") or [{}])[0]
    finish = choice.get("finish_reason")
    if "delta" in choice:
        delta = choice["delta"] or {}
        return delta.get("content") or "", delta.get("tool_calls"), finish
    if "message" in choice:
        message = choice["message"] or {}
        return message.get("content") or "", message.get("tool_calls"), finish
    return choice.get("text") or "", None, finish


def _line(model_id: str, kind: str, text: str, calls: Any, done: bool) -> dict[str, Any]:
    line: dict[str, Any] = {"model": model_id, "created_at": _now()}
    if kind == "chat":
        message: dict[str, Any] = {"role": "assistant", "content": text}
        tool_calls = _tool_calls_out(calls)
        if tool_calls:
            message["tool_calls"] = tool_calls
        line["message"] = message
    else:
        line["response"] = text
    line["done"] = done
    return line


def _final(line: dict[str, Any], started: int, usage: dict[str, Any], finish: str | None) -> None:
    total = time.perf_counter_ns() - started
    line |= {
        "done_reason": "length" if finish == "length" else "stop",
        "total_duration": total,
        "load_duration": 0,
        "prompt_eval_count": int(usage.get("prompt_tokens") or 0),
        "prompt_eval_duration": 0,
        "eval_count": int(usage.get("completion_tokens") or 0),
        "eval_duration": total,
    }


async def _reply(answer: Any, model_id: str, kind: str, started: int, stream: bool) -> Response:
    if not stream:
        text, calls, finish = _piece(answer, kind)
        line = _line(model_id, kind, text, calls, True)
        _final(line, started, answer.get("usage") or {}, finish)
        return JSONResponse(line)
    first = await anext(answer, None)  # the model answers here: a failure is an HTTP error
    return StreamingResponse(_lines(first, answer, model_id, kind, started), media_type=NDJSON)


async def _lines(
    first: Any, chunks: AsyncIterator[Any], model_id: str, kind: str, started: int
) -> AsyncIterator[str]:
    count, finish, usage = 0, None, {}
    try:
        async for chunk in chained(first, chunks):
            text, calls, finished = _piece(chunk, kind)
            finish = finished or finish  # a last chunk with the usage alone has no choices
            usage = chunk.get("usage") or usage
            if text or calls:
                count += 1
                yield json.dumps(_line(model_id, kind, text, calls, False)) + "\n"
    except ModelctlError as exc:
        yield json.dumps({"error": exc.message}) + "\n"
        return
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
    line = _line(model_id, kind, "", None, True)
    _final(line, started, usage or {"completion_tokens": count}, finish)
    yield json.dumps(line) + "\n"


@router.post("/embed", **returns(200, EMBEDDINGS))
async def embed(payload: EmbedRequest, request: Request) -> JSONResponse:
    """Embeddings for one text or a list."""
    ctl = state(request)
    model_id = ctl.resolve(payload.model)
    texts = [payload.input] if isinstance(payload.input, str) else payload.input
    if not texts:
        raise InvalidRequest("input: give at least one text")
    started = time.perf_counter_ns()
    vectors = await while_connected(
        request, ctl.manager.aembed(texts, model_id, client=client_name(request))
    )
    total = time.perf_counter_ns() - started
    return JSONResponse(
        {"model": model_id, "embeddings": vectors, "total_duration": total, "load_duration": 0}
    )


@router.post("/embeddings", **returns(200, obj(("embedding",), embedding=_VECTOR)))
async def embeddings(payload: LegacyEmbedRequest, request: Request) -> JSONResponse:
    """The older endpoint: one prompt, one `embedding`."""
    ctl = state(request)
    model_id = ctl.resolve(payload.model)
    vectors = await while_connected(
        request, ctl.manager.aembed([payload.prompt], model_id, client=client_name(request))
    )
    return JSONResponse({"embedding": vectors[0]})


def _details(record: dict[str, Any], formats: dict[str, str | None]) -> dict[str, Any]:
    fmt = formats.get(record.get("backend") or "") or ""
    family = record.get("family") or ""
    params = record.get("parameters")
    return {
        "parent_model": record.get("base") or "",
        "format": fmt,
        "family": family,
        "families": [family] if family else None,
        "parameter_size": format_parameters(params) if params else "",
        "quantization_level": record.get("quantization") or "",
    }


def _formats(ctl: ServerState) -> dict[str, str | None]:
    """Each backend's model file format, as it declares it (gguf, safetensors, …)."""
    return {name: kind.model_format for name, kind in ctl.manager.backend_kinds().items()}


def _parameter(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value)


def _digest(record: dict[str, Any]) -> str:
    """A model's digest as Ollama gives it (hex, no prefix), unique and stable: its weights'
    sha256 where that is known, else a sha256 of what names its weights and its own settings.
    Clients key models by it: two models with one digest would be taken for one."""
    known = record.get("digest")
    if known and not record.get("base"):
        return str(known).removeprefix("sha256:")
    named = {k: record.get(k) for k in _DIGESTED}
    return hashlib.sha256(json.dumps(named, sort_keys=True, default=str).encode()).hexdigest()


_DIGESTED = (
    "id",
    "backend",
    "refs",
    "location",
    "digest",
    "file_size",
    "base",
    "defaults",
    "system",
)


def _listed(record: dict[str, Any], formats: dict[str, str | None]) -> dict[str, Any]:
    return {
        "name": record["id"],
        "model": record["id"],
        "modified_at": record.get("updated_at") or record.get("created_at") or _now(),
        "size": record.get("file_size") or 0,
        "digest": _digest(record),
        "details": _details(record, formats),
    }


@router.get("/tags", **returns(200, _LISTED_ALL))
def tags(request: Request) -> JSONResponse:
    """Every model a request can name: installed ones, and those served elsewhere."""
    ctl = state(request)
    formats = _formats(ctl)
    return JSONResponse({"models": [_listed(r, formats) for r in usable(ctl)]})


@router.get("/ps", **returns(200, _LISTED_ALL))
def ps(request: Request) -> JSONResponse:
    """Models loaded now, with size, VRAM and when they expire."""
    ctl = state(request)
    now = datetime.now(UTC)
    formats = _formats(ctl)
    models = []
    for slot in ctl.manager.loaded():
        if slot["state"] != "loaded":
            continue
        record = ctl.manager.registry.store.get(slot["model"]) or {"id": slot["model"]}
        expires = slot["expires_in"]
        until = now + timedelta(days=3650) if expires is None else now + timedelta(seconds=expires)
        models.append(
            _listed(record, formats)
            | {
                "size": slot["size"],
                "size_vram": slot["size"] if slot["device"] == "gpu" else 0,
                "expires_at": until.isoformat().replace("+00:00", "Z"),
                "context_length": (slot.get("options") or {}).get("context")
                or record.get("context_length"),
            }
        )
    return JSONResponse({"models": models})


_CAPABILITIES = {
    "chat": "completion", "completion": "completion", "embeddings": "embedding", "tools": "tools",
    "vision": "vision", "reasoning": "thinking",
}  # fmt: skip


@router.post(
    "/show",
    **returns(200, obj(
        ("modelfile", "parameters", "template", "details", "model_info", "capabilities"),
        modelfile=STRING, parameters=STRING, template=STRING, details=_DETAILS,
        model_info={"type": "object"}, capabilities={"type": "array", "items": STRING},
    )),
)  # fmt: skip
def show(payload: ModelRequest, request: Request) -> JSONResponse:
    """A model's details, parameters, template and capabilities."""
    ctl = state(request)
    record = ctl.manager.registry.store.get(ctl.resolve(payload.ref()))
    assert record is not None
    defaults = record.get("defaults") or {}
    names = {v: k for k, v in OPTION_NAMES.items()}
    parameters = "\n".join(
        f"{names.get(k, k)} {_parameter(item)}"
        for k, v in sorted(defaults.items())
        for item in (v if isinstance(v, list) else [v])
    )  # one line a value, as a Modelfile has them (`stop` once for each)
    info: dict[str, Any] = {}
    family = record.get("family")
    if family:
        info["general.architecture"] = family
    if record.get("parameters"):
        info["general.parameter_count"] = record["parameters"]
    if record.get("context_length") and family:
        info[f"{family}.context_length"] = record["context_length"]
    declared = record.get("capabilities") or ()
    capabilities = sorted({_CAPABILITIES[c] for c in declared if c in _CAPABILITIES})
    modelfile = f"# served by modelctl\nFROM {record.get('base') or record['id']}\n"
    if record.get("system"):
        modelfile += f'SYSTEM """{record["system"]}"""\n'
    modelfile += "".join(f"PARAMETER {line}\n" for line in parameters.splitlines())
    answer = {"system": record["system"]} if record.get("system") else {}
    return JSONResponse(
        answer
        | {
            "modelfile": modelfile,
            "parameters": parameters,
            "template": (record.get("custom") or {}).get("chat_template") or "",
            "details": _details(record, _formats(ctl)),
            "model_info": info,
            "capabilities": capabilities,
            "modified_at": record.get("updated_at") or _now(),
        }
    )


@router.post("/pull", **returns(200, PULL_LINE, streams=json_lines({"anyOf": [PULL_LINE, _ERROR]})))
def pull(payload: ModelRequest, request: Request) -> Response:
    """Install a model; streams progress lines as Ollama does unless `stream: false`."""
    ctl = state(request)
    job = ctl.jobs.start(payload.ref())
    if not payload.stream:
        ctl.jobs.wait(job)
        if job.state != "done":
            return JSONResponse({"error": job.error}, status_code=job.http_status or 500)
        return JSONResponse({"status": "success"})

    def lines() -> Iterator[str]:
        for event in ctl.jobs.follow(job):
            if event["state"] in ("failed", "cancelled"):
                yield json.dumps({"error": event["error"] or event["state"]}) + "\n"
                return
            line: dict[str, Any] = {"status": event["status"]}
            if event["total"]:
                line |= {"digest": event["model"], "total": event["total"]}
                line["completed"] = event["completed"] or 0
            yield json.dumps(line) + "\n"

    return StreamingResponse(lines(), media_type=NDJSON)


@router.delete("/delete", response_class=Response)  # 200 and no body, as Ollama answers
def delete(payload: ModelRequest, request: Request) -> Response:
    """Delete a model's files (it is unloaded first); the record stays, not installed."""
    ctl = state(request)
    model_id = ctl.resolve(payload.ref())
    ctl.manager.unload(model_id)
    ctl.manager.delete_model(model_id)
    ctl.changed(model_id, "deleted")
    return Response(status_code=200)


class CopyRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    source: str = Field(min_length=1, max_length=512)
    destination: str = Field(min_length=1, max_length=512)


@router.post("/copy", response_class=Response)  # 200 and no body, as Ollama answers
def copy(payload: CopyRequest, request: Request) -> Response:
    """A copy of a model under a new name, as `ollama cp` makes: a derived model (the same
    weights, a record of its own; deleting either leaves the other's weights alone)."""
    ctl = state(request)
    made = ctl.manager.derive(ctl.resolve(payload.source), payload.destination)
    ctl.changed(made.id, "added")
    return Response(status_code=200)


class CreateRequest(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    model: str | None = Field(None, min_length=1, max_length=512)
    name: str | None = Field(None, min_length=1, max_length=512, description="older clients")
    from_: str | None = Field(None, alias="from", min_length=1, max_length=512)
    system: str | None = Field(None, max_length=100_000)
    template: str | None = Field(None, max_length=100_000)
    parameters: dict[str, Any] | None = None
    modelfile: str | None = Field(None, max_length=200_000, description="older clients")
    files: dict[str, str] | None = None
    adapters: dict[str, str] | None = None
    quantize: str | None = None
    messages: list[dict[str, Any]] | None = None
    stream: bool = True


def _modelfile(text: str) -> dict[str, Any]:
    """FROM, SYSTEM, TEMPLATE and PARAMETER lines of a Modelfile (values in triple quotes may
    span lines); another instruction is refused by name."""
    found: dict[str, Any] = {"parameters": {}}
    lines = iter(text.splitlines())
    for line in lines:
        words = line.strip().split(None, 1)
        if not words or words[0].startswith("#"):
            continue
        instruction, value = words[0].upper(), (words[1] if len(words) > 1 else "").strip()
        if value.startswith('"""'):
            value = value[3:]
            while not value.endswith('"""'):
                more = next(lines, None)
                if more is None:
                    raise InvalidRequest(f'modelfile: {instruction}\'s """ is never closed')
                value += "\n" + more
            value = value[:-3]
        if instruction == "FROM":
            found["from"] = value
        elif instruction in ("SYSTEM", "TEMPLATE"):
            found[instruction.lower()] = value
        elif instruction == "PARAMETER":
            key, _, raw = value.partition(" ")
            try:
                parsed = json.loads(raw)
            except ValueError:
                parsed = raw.strip()
            if key == "stop":
                found["parameters"].setdefault("stop", []).append(str(parsed))
            else:
                found["parameters"][key] = parsed
        else:
            raise InvalidRequest(
                f"modelfile: {instruction} is not supported",
                hint="FROM an existing model, SYSTEM, TEMPLATE and PARAMETER are",
            )
    return found


@router.post("/create", **returns(200, _STATUS, streams=json_lines({"anyOf": [_STATUS, _ERROR]})))
def create(payload: CreateRequest, request: Request) -> Response:
    """A model made from an existing one, with its own system prompt, parameters and template
    (a derived model: the same weights under a new name); streams status lines unless
    `stream: false`."""
    ctl = state(request)
    name = payload.model or payload.name
    if not name:
        raise InvalidRequest("model: required")
    given = _modelfile(payload.modelfile) if payload.modelfile else {"parameters": {}}
    source = payload.from_ or given.get("from")
    for field, why in (
        ("adapters", "adapters are not supported"), ("quantize", "quantizing is not supported"),
        ("messages", "a model's stored messages are not supported"),
    ):  # fmt: skip
        if getattr(payload, field):
            raise InvalidRequest(f"{field}: {why}", hint="create FROM a model, or from a GGUF file")
    weights = _weights(ctl, payload.files) if payload.files else None
    if weights is not None and source:
        raise InvalidRequest("from and files: one or the other", hint="a model's weights come once")
    if weights is None and not source:
        raise InvalidRequest("from: required", hint="the model to create this one from")
    parameters = {**given["parameters"], **(payload.parameters or {})}
    context = parameters.pop("num_ctx", None)
    if context is not None and (not isinstance(context, int) or isinstance(context, bool)
                                or context < 1):  # fmt: skip
        raise InvalidRequest(
            f"parameters: num_ctx must be a whole number of tokens, not {context!r}"
        )
    unknown = sorted(set(parameters) - set(OPTION_NAMES))
    if unknown:
        raise InvalidRequest(
            f"parameters: {unknown[0]} is not supported",
            hint=", ".join(sorted({*OPTION_NAMES, "num_ctx"})),
        )
    defaults = {OPTION_NAMES[k]: v for k, v in parameters.items()}
    try:
        defaults = check_options(defaults)
    except ValueError as exc:
        raise InvalidRequest(f"parameters: {exc}") from None
    fields = {
        "system": payload.system or given.get("system"),
        "template": payload.template or given.get("template"),
        "defaults": defaults,
        "context": context,
    }
    if weights is not None:
        if context is not None:  # the file's own context is what a model of its own loads
            raise InvalidRequest(
                "parameters: num_ctx with files is not supported",
                hint=f"create {name} without it, then a model FROM {name} with num_ctx",
            )
        fields.pop("context")
        ctl.manager.create_from_weights(name, weights, **fields)
        ctl.changed(name, "added")
        weights.unlink(missing_ok=True)  # its bytes are the model's file now
        using = f"using the uploaded {weights.name.replace('-', ':', 1)}"
    else:
        assert source is not None
        ctl.manager.derive(ctl.resolve(source), name, **fields)
        ctl.changed(name, "added")
        using = f"using {source}'s weights"
    if not payload.stream:
        return JSONResponse({"status": "success"})
    steps = [{"status": using}, {"status": "writing manifest"}, {"status": "success"}]
    return StreamingResponse((json.dumps(step) + "\n" for step in steps), media_type=NDJSON)


_BLOB = re.compile(r"sha256:([0-9a-f]{64})")


def _blob(ctl: ServerState, digest: str) -> Path:
    """Where the blob `digest` (sha256:<64 hex>) is kept."""
    found = _BLOB.fullmatch(digest)
    if found is None:
        raise InvalidRequest(f"{digest[:80]!r} is not a digest", hint="sha256:<64 hex digits>")
    return ctl.manager.home / "blobs" / f"sha256-{found.group(1)}"


def _weights(ctl: ServerState, files: dict[str, str]) -> Path:
    """The one GGUF file `files` names (name: digest), uploaded already."""
    if len(files) != 1 or not next(iter(files)).lower().endswith(".gguf"):
        raise InvalidRequest(
            "files: one GGUF file is supported", hint='{"NAME.gguf": "sha256:…"}, uploaded first'
        )
    digest = next(iter(files.values()))
    blob = _blob(ctl, digest)
    if not blob.is_file():
        raise InvalidRequest(
            f"files: {digest} was not uploaded here", hint=f"POST /api/blobs/{digest} first"
        )
    return blob


@router.head("/blobs/{digest}", response_class=Response)
def blob_here(digest: str, request: Request) -> Response:
    """200 if the blob was uploaded here, 404 if not (Ollama's clients ask before uploading)."""
    return Response(status_code=200 if _blob(state(request), digest).is_file() else 404)


@router.post("/blobs/{digest}", status_code=201, response_class=Response)
async def blob_upload(digest: str, request: Request) -> Response:
    """A model's weights, uploaded for `/api/create` (its `files`): streamed to disk, checked
    against `digest`, kept under it only if they match. Any size: the space is checked first."""
    path = _blob(state(request), digest)
    if path.is_file():
        return Response(status_code=201)
    length = request.headers.get("content-length", "")
    await to_thread.run_sync(partial(path.parent.mkdir, parents=True, exist_ok=True))
    await to_thread.run_sync(_sweep, path.parent)
    # what it may take: the disk's free space but a reserve, so that the registry and the
    # logs can still be written (counted as it arrives: a chunked upload has no length)
    room = (await to_thread.run_sync(shutil.disk_usage, path.parent)).free - BLOB_RESERVE
    if length.isdigit() and int(length) > room:
        raise InvalidRequest(
            f"{int(length):,} bytes do not fit: {max(0, room):,} may be used",
            hint="free some disk (1 GiB stays free)",
        )
    part = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    hasher = hashlib.sha256()
    done = False
    handle = await to_thread.run_sync(part.open, "wb")
    written = 0
    try:
        async for chunk in request.stream():
            written += len(chunk)
            if written > room:
                raise InvalidRequest(
                    f"the upload passed the {max(0, room):,} bytes that may be used",
                    hint="free some disk (1 GiB stays free)",
                )
            if chunk:
                await to_thread.run_sync(_write, handle, hasher, chunk)
        await to_thread.run_sync(handle.close)
        if f"sha256:{hasher.hexdigest()}" != digest:
            raise InvalidRequest(
                f"digest mismatch: the bytes' sha256 is {hasher.hexdigest()}",
                hint="upload the file the digest was made from",
            )
        await to_thread.run_sync(os.replace, part, path)
        done = True
    finally:
        if not done:
            await to_thread.run_sync(handle.close)
            await to_thread.run_sync(partial(part.unlink, missing_ok=True))
    return Response(status_code=201)


BLOB_RESERVE = 1 << 30  # disk left free by an upload


def _sweep(folder: Path, age: float = 3600.0) -> None:
    """Uploads cut short an hour ago or more (a client or a server that died) go."""
    now = time.time()
    for part in folder.glob(".*.part"):
        with contextlib.suppress(OSError):
            if now - part.stat().st_mtime > age:
                part.unlink()


def _write(handle: Any, hasher: Any, chunk: bytes) -> None:
    hasher.update(chunk)
    handle.write(chunk)


@router.post("/push", status_code=501, **returns(501, _ERROR))
def push() -> JSONResponse:
    """Refused: modelctl installs models from their sources and pushes to no registry."""
    return JSONResponse(
        {
            "error": "modelctl does not push models to a registry: it installs them from their "
            "sources (Ollama, Hugging Face, files); push from Ollama itself"
        },
        status_code=501,
    )


@router.get("/version")
def version() -> dict[str, str]:
    return {"version": __version__}
