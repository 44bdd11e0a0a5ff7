"""The OpenAI-compatible API, `/v1`: chat/completions, completions, embeddings, models.

The request's `model` picks any registered model (an alias or a backend's name works too); it
loads on demand, within the budget. Fields the OpenAI API has and a runtime does not use are
accepted and ignored, as OpenAI-compatible servers do.
"""

import base64
import calendar
import json
import struct
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from modelctl.backends._http import Relayed, usage_only
from modelctl.record.errors import InvalidRequest, ModelctlError
from modelctl.record.model import GENERATION_OPTIONS
from modelctl.record.units import parse_duration, parse_field
from modelctl.server.document import (
    INTEGER,
    NUMBER,
    OPTIONAL_STRING,
    STRING,
    OpenAIError,
    errors,
    event_stream,
    obj,
    returns,
)
from modelctl.server.errors import body, classify
from modelctl.server.state import chained, client_name, state, usable, while_connected

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"], responses=errors(OpenAIError))

# The answers, as the OpenAPI document gives them (OpenAI's shapes; other fields may come too)
_ERROR = obj(("error",), error=obj(
    ("message", "type", "param", "code"), message=STRING, type=STRING, param=OPTIONAL_STRING,
    code=STRING,
))  # fmt: skip
_USAGE = obj((), prompt_tokens=INTEGER, completion_tokens=INTEGER, total_tokens=INTEGER)
_DELTA = {"role": STRING, "content": OPTIONAL_STRING, "tool_calls": {"type": "array"}}
_FINISH = {"finish_reason": OPTIONAL_STRING}


def _answer(kind: str, choice: dict[str, Any]) -> dict[str, Any]:
    return obj(
        ("id", "object", "created", "model", "choices"), id=STRING, object={"const": kind},
        created=INTEGER, model=STRING, choices={"type": "array", "items": choice},
        usage={"anyOf": [_USAGE, {"type": "null"}]},
    )  # fmt: skip


CHAT_ANSWER = _answer(
    "chat.completion",
    obj(("index", "message"), index=INTEGER, message=obj(("role",), **_DELTA), **_FINISH),
)
CHAT_CHUNK = _answer(
    "chat.completion.chunk",
    obj(("index", "delta"), index=INTEGER, delta=obj((), **_DELTA), **_FINISH),
)
TEXT_ANSWER = _answer(
    "text_completion", obj(("index", "text"), index=INTEGER, text=STRING, **_FINISH)
)
_VECTOR = {"anyOf": [{"type": "array", "items": NUMBER}, STRING]}  # floats, or base64
EMBEDDINGS = obj(
    ("object", "data", "model"), object={"const": "list"}, model=STRING, usage=_USAGE,
    data={"type": "array", "items": obj(("index", "embedding"), index=INTEGER, embedding=_VECTOR)},
)  # fmt: skip
LISTING = obj(
    ("id", "object", "created", "owned_by"), id=STRING, object={"const": "model"},
    created=INTEGER, owned_by=STRING,
)  # fmt: skip
LISTINGS = obj(
    ("object", "data"), object={"const": "list"}, data={"type": "array", "items": LISTING}
)


class ToolFunction(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(max_length=512)
    arguments: str = ""  # JSON, as the model wrote it


class ToolCall(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str | None = None
    type: Literal["function"] = "function"
    function: ToolFunction


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[dict[str, Any]] | None = None
    tool_calls: list[ToolCall] | None = None


MAX_CHOICES = 8  # `n`: each choice is a generation of its own, one after another


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    include_usage: bool = Field(
        False, description="a last chunk before [DONE] with the usage, and no choices"
    )


class Sampling(BaseModel):
    """What chat and text completions share."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=512)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    max_tokens: int | None = Field(None, ge=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    n: int | None = Field(
        None, ge=1, le=MAX_CHOICES,
        description=f"choices, at most {MAX_CHOICES}: generated one after another",
    )  # fmt: skip
    logprobs: bool | int | None = Field(
        None, description="chat: true for each token's log probability; text: how many of the "
        "likeliest tokens to give (0 to 5); a llama.cpp model is loaded again to keep them",
    )  # fmt: skip
    top_logprobs: int | None = Field(None, ge=0, le=20)
    user: str | None = None
    # beyond OpenAI's fields, as llama.cpp's and vLLM's servers take them
    top_k: int | None = Field(None, ge=0)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, ge=0)
    keep_alive: float | str | None = Field(None, description="how long the model stays loaded")

    def options(self) -> dict[str, Any]:
        fields = GENERATION_OPTIONS | {"stream", "logprobs", "top_logprobs"}
        given = self.model_dump(exclude_none=True, include=fields)
        if given.get("logprobs") is False:
            del given["logprobs"]
        if self.keep_alive is not None:
            given["keep_alive"] = parse_field(parse_duration, self.keep_alive, "keep_alive")
        return given


class FunctionSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=512)
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=dict, description="a JSON schema")


class Tool(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["function"] = "function"
    function: FunctionSpec


class FunctionName(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=512)


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["function"] = "function"
    function: FunctionName


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class ChatRequest(Sampling):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    tools: list[Tool] | None = None
    tool_choice: Literal["none", "auto", "required"] | ToolChoice | None = None
    response_format: ResponseFormat | None = None


class CompletionRequest(Sampling):
    prompt: str | list[str]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=512)
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None


def _messages(request: ChatRequest) -> list[dict[str, Any]]:
    out = []
    for message in request.messages:
        data = message.model_dump(exclude_none=True)
        if data["role"] == "developer":  # OpenAI's newer name; chat templates know "system"
            data["role"] = "system"
        out.append(data)
    return out


@router.post(
    "/chat/completions",
    **returns(200, CHAT_ANSWER, streams=event_stream({"anyOf": [CHAT_CHUNK, _ERROR]}, done=True)),
)
async def chat_completions(payload: ChatRequest, request: Request) -> Response:
    """A chat completion; `stream: true` answers in server-sent events."""
    options = payload.options()
    if payload.max_completion_tokens is not None:
        options.setdefault("max_tokens", payload.max_completion_tokens)
    options |= payload.model_dump(
        include={"tools", "tool_choice", "response_format"}, exclude_none=True
    )
    return await _answer(request, "chat", payload, _messages(payload), options)


@router.post(
    "/completions",
    **returns(200, TEXT_ANSWER, streams=event_stream({"anyOf": [TEXT_ANSWER, _ERROR]}, done=True)),
)
async def completions(payload: CompletionRequest, request: Request) -> Response:
    """A text completion (no chat template)."""
    prompt = payload.prompt
    if isinstance(prompt, list):
        if len(prompt) != 1:
            raise InvalidRequest("prompt: one prompt per request", hint="send them one by one")
        prompt = prompt[0]
    return await _answer(request, "complete", payload, prompt, payload.options())


async def _answer(
    request: Request, kind: str, asked: Sampling, payload: Any, options: dict[str, Any]
) -> Response:
    ctl = state(request)
    model_id = ctl.resolve(asked.model)
    method = ctl.manager.achat if kind == "chat" else ctl.manager.acomplete
    client = client_name(request, asked.user)
    usage = _Usage(kind) if asked.stream_options and asked.stream_options.include_usage else None
    if (asked.n or 1) > 1:
        return await _choices(request, asked.n or 1, method, payload, model_id, client, options,
                              usage)  # fmt: skip
    # a stream from a worker or another OpenAI-compatible server is relayed as its bytes
    answer = await while_connected(
        request, method(payload, model_id, client=client, relay=True, usage_chunk=True, **options)
    )
    if not options.get("stream"):
        return JSONResponse(_documented(answer))
    first = await anext(answer, None)  # the model answers here: a failure is still an HTTP error
    return StreamingResponse(_events(first, answer, usage), media_type="text/event-stream")


def _documented(answer: Any) -> Any:
    """A chat answer with the fields OpenAI documents as always there (a message's `refusal`,
    null here: no runtime refuses in words of its own)."""
    if isinstance(answer, dict):
        for choice in answer.get("choices") or ():
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                message.setdefault("refusal", None)
    return answer


def _nth(options: dict[str, Any], index: int) -> dict[str, Any]:
    """The options of choice `index`: a seed given goes up by one a choice (the same seed
    would give the same choice `n` times)."""
    if index and isinstance(options.get("seed"), int):
        return {**options, "seed": options["seed"] + index}
    return options


async def _choices(
    request: Request, n: int, method: Any, payload: Any, model_id: str, client: str | None,
    options: dict[str, Any], usage: "_Usage | None",
) -> Response:  # fmt: skip
    """`n` choices: `n` generations, one after another, as one answer (or one stream) whose
    choices carry their index; the usage counts the prompt once, as OpenAI counts it."""

    async def one(index: int) -> Any:
        asked = method(payload, model_id, client=client, usage_chunk=True, **_nth(options, index))
        return await while_connected(request, asked)

    if not options.get("stream"):
        answers = [await one(index) for index in range(n)]
        choices = [
            {**choice, "index": index}
            for index, answer in enumerate(answers)
            for choice in answer.get("choices") or ()
        ]
        counts = [answer.get("usage") or {} for answer in answers]
        prompt = int(counts[0].get("prompt_tokens") or 0)
        completion = sum(int(c.get("completion_tokens") or 0) for c in counts)
        total = {"prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}  # fmt: skip
        return JSONResponse(_documented({**answers[0], "choices": choices, "usage": total}))

    first_stream = await one(0)
    first = await anext(first_stream, None)  # a failure of the first is still an HTTP error

    # one stream, as OpenAI sends `n` choices: the first one's id, each choice its index
    head = {
        k: first[k] for k in ("id", "created", "model") if isinstance(first, dict) and k in first
    }

    def same(chunk: Any, index: int) -> Any:
        if not isinstance(chunk, dict):
            return chunk
        chunk = {**chunk, **head}
        if chunk.get("choices"):
            chunk["choices"] = [{**c, "index": index} for c in chunk["choices"]]
        if "usage" in chunk:  # each choice's own: added up, sent once at the end
            if usage is not None and chunk["usage"]:
                usage.add(chunk["usage"])
            del chunk["usage"]
        return chunk

    async def chunks() -> AsyncIterator[Any]:
        stream = first_stream
        for index in range(n):
            if index:
                stream = await one(index)
            try:
                async for chunk in stream:
                    if usage_only(chunk):
                        same(chunk, index)
                        continue
                    yield same(chunk, index)
            finally:
                await stream.aclose()

    if usage_only(first):
        same(first, 0)
        first = None
    return StreamingResponse(_events(same(first, 0), chunks(), usage),
                             media_type="text/event-stream")  # fmt: skip


class _Usage:
    """`stream_options.include_usage`: the usage a stream's runtime reported (llama.cpp's
    last chunk, a provider's), else its chunks that said something counted as tokens; sent
    as one last chunk with no choices, as OpenAI sends it."""

    def __init__(self, kind: str) -> None:
        self.object = "chat.completion.chunk" if kind == "chat" else "text_completion"
        self.reported: dict[str, Any] | None = None
        self.summed = False  # `n` choices' usage, added up (see `add`)
        self.sent = False  # the runtime's own usage chunk was passed on
        self.counted = 0
        self.head: dict[str, Any] = {}

    def see(self, chunk: Any) -> None:
        if type(chunk) is Relayed:
            reported, said = chunk.usage, chunk.says_something
            if not self.head:
                self.head = chunk.event  # the first only: the rest are not decoded
        elif isinstance(chunk, dict):
            reported = chunk.get("usage")
            said = any(
                c.get("text") or (c.get("delta") or {}).get("content")
                for c in chunk.get("choices") or ()
            )
            self.head = self.head or chunk
        else:
            return
        if reported and not self.summed:
            self.reported = reported
        self.counted += bool(said)

    def add(self, reported: dict[str, Any]) -> None:
        """One of `n` choices' usage: their completions add up, their prompt is one."""
        if self.reported is None or not self.summed:
            self.reported = {"prompt_tokens": int(reported.get("prompt_tokens") or 0),
                             "completion_tokens": 0}  # fmt: skip
            self.summed = True
        self.reported["completion_tokens"] += int(reported.get("completion_tokens") or 0)

    def chunk(self) -> str:
        usage = self.reported or {"prompt_tokens": 0, "completion_tokens": self.counted}
        prompt = int(usage.get("prompt_tokens") or 0)  # a runtime's usage may lack either
        completion = int(usage.get("completion_tokens") or 0)
        usage = {**usage, "prompt_tokens": prompt, "completion_tokens": completion,
                 "total_tokens": prompt + completion}  # fmt: skip
        last = {key: self.head.get(key) for key in ("id", "created", "model")}
        last |= {"object": self.object, "choices": [], "usage": usage}
        return f"data: {json.dumps(last, separators=(',', ':'))}\n\n"


async def _events(
    first: Any, chunks: AsyncIterator[Any], usage: _Usage | None = None
) -> AsyncIterator[str | bytes]:
    """Server-sent events as OpenAI streams them; an error mid-stream is one last event."""
    dumps = json.dumps
    try:
        async for chunk in chained(first, chunks):
            if usage is None:
                if not usage_only(chunk):  # the usage chunk goes to a client that asks
                    yield _event(chunk)
                continue
            usage.see(chunk)
            if usage_only(chunk):  # the runtime's own, documented last chunk
                usage.sent = True
                yield _event(chunk)
            else:
                yield _event(_null_usage(chunk))
        if usage is not None and not usage.sent:
            yield usage.chunk()
    except ModelctlError as exc:
        status, code = classify(exc)
        yield f"data: {dumps(body('/v1/', status, code, exc.message, exc.hint))}\n\n"
    finally:
        await chunks.aclose()  # the model is released even when the client left early
    yield "data: [DONE]\n\n"


def _null_usage(chunk: Any) -> Any:
    """Every chunk but the last of a stream asked for its usage says `"usage": null`."""
    if type(chunk) is Relayed:
        return chunk.with_null_usage()
    if isinstance(chunk, dict) and "usage" not in chunk:
        return {**chunk, "usage": None}
    return chunk


def _event(chunk: Any) -> str | bytes:
    if type(chunk) is Relayed:  # as its server sent it: nothing decoded or encoded again
        return b"data: " + chunk.data + b"\n\n"
    return f"data: {json.dumps(chunk, separators=(',', ':'))}\n\n"


@router.post("/embeddings", **returns(200, EMBEDDINGS))
async def embeddings(payload: EmbeddingRequest, request: Request) -> JSONResponse:
    """Embeddings for a text or a list of texts (floats, or base64 of little-endian float32)."""
    ctl = state(request)
    model_id = ctl.resolve(payload.model)
    texts = [payload.input] if isinstance(payload.input, str) else payload.input
    if not texts:
        raise InvalidRequest("input: give at least one text")
    vectors = await while_connected(
        request, ctl.manager.aembed(texts, model_id, client=client_name(request, payload.user))
    )
    data = [
        {"object": "embedding", "index": i, "embedding": _encode(v, payload.encoding_format)}
        for i, v in enumerate(vectors)
    ]
    usage = {"prompt_tokens": 0, "total_tokens": 0}  # runtimes do not count embedding tokens
    return JSONResponse({"object": "list", "data": data, "model": model_id, "usage": usage})


def _encode(vector: list[float], encoding: str) -> list[float] | str:
    if encoding == "float":
        return vector
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


def _listing(record: dict[str, Any]) -> dict[str, Any]:
    created = record.get("created_at") or ""
    try:  # stored in UTC
        stamp = calendar.timegm(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        stamp = 0
    return {"id": record["id"], "object": "model", "created": stamp, "owned_by": record["backend"]}


@router.get("/models", **returns(200, LISTINGS))
def list_models(request: Request) -> JSONResponse:
    """Every model a request can name: installed ones and those served elsewhere."""
    data = [_listing(r) for r in usable(state(request))]
    return JSONResponse({"object": "list", "data": data})


@router.get("/models/{model:path}", **returns(200, LISTING))
def retrieve_model(model: str, request: Request) -> JSONResponse:
    """One model, by id, alias or reference (ids may hold `/` and `:`)."""
    ctl = state(request)
    return JSONResponse(_listing(ctl.manager.registry.store.get(ctl.resolve(model))))
