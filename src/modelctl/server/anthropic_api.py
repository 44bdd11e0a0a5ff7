"""The Anthropic Messages API, `/v1/messages`, over every model modelctl serves.

Tools written for Claude (the official `anthropic` SDK, and what is built on it) use any model
here, local or remote, as Ollama and LM Studio let them: a message's content blocks (text,
tool use, tool results), a system prompt, sampling, stop sequences and tools become a chat
request to the model, and its answer comes back as Anthropic writes it: content blocks, a stop
reason, usage in input and output tokens. `stream: true` answers in Anthropic's server-sent
events: message_start, content_block_start, ping, content_block_delta (text_delta,
input_json_delta), content_block_stop, message_delta (the stop reason and the usage),
message_stop; an error mid-stream is an `error` event. Errors are Anthropic's shape:
`{"type": "error", "error": {"type", "message"}}` (server/errors.py).
"""

import json
import secrets
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from modelctl.record.errors import InvalidRequest, ModelctlError
from modelctl.server.document import (
    INTEGER,
    STRING,
    AnthropicError,
    errors,
    event_stream,
    obj,
    returns,
)
from modelctl.server.errors import body, classify
from modelctl.server.state import chained, client_name, state, while_connected

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["anthropic"], responses=errors(AnthropicError))

# The answers, as the OpenAPI document gives them (Anthropic's shapes)
_USAGE = obj(("input_tokens", "output_tokens"), input_tokens=INTEGER, output_tokens=INTEGER)
_BLOCK = obj(("type",), type=STRING, text=STRING, id=STRING, name=STRING,
             input={"type": "object"})  # fmt: skip
MESSAGE = obj(
    ("id", "type", "role", "model", "content", "stop_reason", "usage"),
    id=STRING, type={"const": "message"}, role={"const": "assistant"}, model=STRING,
    content={"type": "array", "items": _BLOCK}, stop_reason={"type": ["string", "null"]},
    stop_sequence={"type": ["string", "null"]}, usage=_USAGE,
)  # fmt: skip
_EVENT = obj(("type",), type=STRING)
_STREAM = event_stream(obj(("type",), type=STRING))  # each event names its type
# OpenAI's finish reasons → Anthropic's stop reasons
_STOPS = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use",
          "content_filter": "refusal"}  # fmt: skip


class Block(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "tool_use", "tool_result", "image", "document", "thinking"]
    text: str | None = None
    id: str | None = Field(None, max_length=512)
    name: str | None = Field(None, max_length=512)
    input: dict[str, Any] | None = None
    tool_use_id: str | None = Field(None, max_length=512)
    content: str | list[dict[str, Any]] | None = None
    is_error: bool | None = None


class Turn(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["user", "assistant"]
    content: str | list[Block]


class SystemText(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text"] = "text"
    text: str


class ToolSpec(BaseModel):
    model_config = ConfigDict(extra="allow")

    name: str = Field(min_length=1, max_length=512)
    description: str | None = None
    input_schema: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})


class ToolChoice(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["auto", "any", "tool", "none"]
    name: str | None = Field(None, max_length=512)


class MessagesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=512)
    max_tokens: int = Field(ge=1, description="required, as Anthropic requires it")
    messages: list[Turn] = Field(min_length=1)
    system: str | list[SystemText] | None = None
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, ge=0, le=1)
    top_k: int | None = Field(None, ge=0)
    stop_sequences: list[str] | None = Field(None, max_length=16)
    stream: bool = False
    tools: list[ToolSpec] | None = None
    tool_choice: ToolChoice | None = None
    metadata: dict[str, Any] | None = None


def _text(content: str | list[Any] | None) -> str:
    """The text of a block's content: a string, or its text blocks joined."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else getattr(part, "type", None)
        text = part.get("text") if isinstance(part, dict) else getattr(part, "text", None)
        if kind != "text":
            raise InvalidRequest(f"content: {kind} blocks are not supported here", hint="send text")
        parts.append(text or "")
    return "".join(parts)


def _chat(payload: MessagesRequest) -> list[dict[str, Any]]:
    """The request's turns as chat messages (OpenAI's shapes, which every runtime takes)."""
    messages: list[dict[str, Any]] = []
    if payload.system:
        system = payload.system if isinstance(payload.system, str) else _text(payload.system)
        messages.append({"role": "system", "content": system})
    for turn in payload.messages:
        if isinstance(turn.content, str):
            messages.append({"role": turn.role, "content": turn.content})
            continue
        texts, calls = [], []
        for block in turn.content:
            if block.type == "text":
                texts.append(block.text or "")
            elif block.type == "tool_use" and turn.role == "assistant":
                function = {"name": block.name or "", "arguments": json.dumps(block.input or {})}
                calls.append(
                    {"id": block.id or _id("toolu_"), "type": "function", "function": function}
                )
            elif block.type == "tool_result" and turn.role == "user":
                result = _text(block.content)
                result = f"error: {result}" if block.is_error else result
                messages.append(
                    {"role": "tool", "tool_call_id": block.tool_use_id or "", "content": result}
                )
            elif block.type == "thinking":
                continue  # a model's earlier thinking: not part of what it is asked
            else:
                raise InvalidRequest(
                    f"messages: a {turn.role} turn's {block.type} blocks are not supported here",
                    hint="text, tool_use (assistant) and tool_result (user) blocks are",
                )
        if texts or calls:
            message: dict[str, Any] = {"role": turn.role, "content": "".join(texts)}
            if calls:
                message["tool_calls"] = calls
            messages.append(message)
    return messages


def _options(payload: MessagesRequest) -> dict[str, Any]:
    options: dict[str, Any] = {"max_tokens": payload.max_tokens, "stream": payload.stream}
    for name in ("temperature", "top_p", "top_k"):
        value = getattr(payload, name)
        if value is not None:
            options[name] = value
    if payload.stop_sequences:
        options["stop"] = payload.stop_sequences
    if payload.tools:
        options["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description or "",
                                              "parameters": t.input_schema}}
            for t in payload.tools
        ]  # fmt: skip
    choice = payload.tool_choice
    if choice is not None:
        if choice.type == "tool":
            if not choice.name:
                raise InvalidRequest("tool_choice: name is required with type tool")
            options["tool_choice"] = {"type": "function", "function": {"name": choice.name}}
        else:
            options["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[
                choice.type
            ]
    return options


def _id(prefix: str = "msg_") -> str:
    return prefix + secrets.token_hex(12)


def _usage(usage: dict[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    return {
        "input_tokens": int(usage.get("prompt_tokens") or 0),
        "output_tokens": int(usage.get("completion_tokens") or 0),
    }


def _arguments(text: str | None) -> dict[str, Any]:
    try:
        value = json.loads(text or "{}")
    except ValueError:
        return {"arguments": text}
    return value if isinstance(value, dict) else {"value": value}


def _message(answer: dict[str, Any], model: str) -> dict[str, Any]:
    """An OpenAI-shaped chat answer, as Anthropic's message."""
    choice = (answer.get("choices") or [{}])[0]
    said = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if said.get("content"):
        content.append({"type": "text", "text": said["content"]})
    for call in said.get("tool_calls") or ():
        function = call.get("function") or {}
        content.append({"type": "tool_use", "id": call.get("id") or _id("toolu_"),
                        "name": function.get("name") or "",
                        "input": _arguments(function.get("arguments"))})  # fmt: skip
    return {
        "id": _id(), "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": _STOPS.get(choice.get("finish_reason") or "stop", "end_turn"),
        "stop_sequence": None, "usage": _usage(answer.get("usage")),
    }  # fmt: skip


@router.post("/messages", **returns(200, MESSAGE, streams=_STREAM))
async def messages(payload: MessagesRequest, request: Request) -> Response:
    """A message, as Anthropic's Messages API answers it; `stream: true` answers in its
    server-sent events."""
    ctl = state(request)
    model_id = ctl.resolve(payload.model)
    user = (payload.metadata or {}).get("user_id")
    client = client_name(request, user if isinstance(user, str) else None)
    asked = ctl.manager.achat(
        _chat(payload), model_id, client=client, usage_chunk=True, **_options(payload)
    )
    answer = await while_connected(request, asked)
    if not payload.stream:
        return JSONResponse(_message(answer, payload.model))
    first = await anext(answer, None)  # the model answers here: a failure is still an HTTP error
    return StreamingResponse(_events(payload.model, first, answer), media_type="text/event-stream")


def _sse(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"


async def _events(model: str, first: Any, chunks: AsyncIterator[Any]) -> AsyncIterator[str]:
    """A chat stream's chunks as Anthropic's events: text as one text block, tool calls as
    tool_use blocks (their arguments as input_json_delta), the stop reason and the usage at
    the end."""
    start = {"id": _id(), "type": "message", "role": "assistant", "model": model, "content": [],
             "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": 0, "output_tokens": 0}}  # fmt: skip
    yield _sse("message_start", {"message": start})
    yield _sse("ping", {})
    index = -1
    open_block: str | None = None  # "text", or a tool call's index in the chunks
    finish, usage = None, None

    def close() -> str:
        nonlocal open_block
        open_block = None
        return _sse("content_block_stop", {"index": index})

    try:
        async for chunk in chained(first, chunks):
            if not isinstance(chunk, dict):
                continue
            usage = chunk.get("usage") or usage
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                text = delta.get("content") or choice.get("text")
                if text:
                    if open_block != "text":
                        if open_block is not None:
                            yield close()
                        index += 1
                        open_block = "text"
                        block = {"type": "text", "text": ""}
                        yield _sse("content_block_start", {"index": index, "content_block": block})
                    said = {"type": "text_delta", "text": text}
                    yield _sse("content_block_delta", {"index": index, "delta": said})
                for call in delta.get("tool_calls") or ():
                    function = call.get("function") or {}
                    key = f"tool {call.get('index', 0)}"
                    if open_block != key:
                        if open_block is not None:
                            yield close()
                        index += 1
                        open_block = key
                        block = {"type": "tool_use", "id": call.get("id") or _id("toolu_"),
                                 "name": function.get("name") or "", "input": {}}  # fmt: skip
                        yield _sse("content_block_start", {"index": index, "content_block": block})
                    if function.get("arguments"):
                        delta_json = {"type": "input_json_delta",
                                      "partial_json": function["arguments"]}  # fmt: skip
                        yield _sse("content_block_delta", {"index": index, "delta": delta_json})
                finish = choice.get("finish_reason") or finish
        if open_block is not None:
            yield close()
        stop = {"stop_reason": _STOPS.get(finish or "stop", "end_turn"), "stop_sequence": None}
        yield _sse("message_delta", {"delta": stop, "usage": _usage(usage)})
        yield _sse("message_stop", {})
    except ModelctlError as exc:
        status, code = classify(exc)
        yield _sse("error", body("/v1/messages", status, code, exc.message, exc.hint))
    finally:
        await chunks.aclose()  # the model is released even when the client left early
