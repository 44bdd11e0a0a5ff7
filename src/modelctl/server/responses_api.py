"""OpenAI's Responses API, `POST /v1/responses`, over every model modelctl serves.

Newer OpenAI clients (the SDK's `client.responses`, agents built on it) ask for a response, not a
chat completion. The input (a string, or messages and function-call items), the instructions,
sampling, `max_output_tokens`, tools and `text.format` become a chat request to the model; its
answer comes back as a response object: output items (an assistant message of `output_text`
parts, function calls), a status (`incomplete` when it ran out of `max_output_tokens`) and the
usage. `stream: true` answers in the Responses API's server-sent events, each with its
`sequence_number`: response.created, response.in_progress, response.output_item.added,
response.content_part.added, response.output_text.delta, response.output_text.done,
response.content_part.done, response.output_item.done, then response.completed (or
response.incomplete); an error mid-stream is an `error` event. modelctl keeps no responses:
`previous_response_id` is refused in words (send the whole conversation as input), and
`store` is answered false.
"""

import json
import secrets
import time
from collections.abc import AsyncIterator
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from modelctl.record.errors import InvalidRequest, ModelctlError
from modelctl.server.document import (
    INTEGER,
    STRING,
    OpenAIError,
    errors,
    event_stream,
    obj,
    returns,
)
from modelctl.server.errors import body, classify
from modelctl.server.state import chained, client_name, state, while_connected

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["openai"], responses=errors(OpenAIError))

RESPONSE = obj(
    ("id", "object", "created_at", "status", "model", "output", "usage"),
    id=STRING, object={"const": "response"}, created_at=INTEGER, status=STRING, model=STRING,
    output={"type": "array", "items": obj(("type",), type=STRING)},
    usage=obj(("input_tokens", "output_tokens", "total_tokens"), input_tokens=INTEGER,
              output_tokens=INTEGER, total_tokens=INTEGER),
)  # fmt: skip
_STREAM = event_stream(obj(("type",), type=STRING))  # each event names its type


class TextFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = Field(None, max_length=512)
    schema_: dict[str, Any] | None = Field(None, alias="schema")


class TextOptions(BaseModel):
    model_config = ConfigDict(extra="allow")

    format: TextFormat | None = None


class FunctionTool(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["function"]
    name: str = Field(min_length=1, max_length=512)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class ResponsesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=512)
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    stream: bool = False
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | dict[str, Any] | None = None
    text: TextOptions | None = None
    previous_response_id: str | None = None
    store: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = Field(None, max_length=512)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise InvalidRequest("input: a message's content must be text or a list of parts")
    parts = []
    for part in content:
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in ("input_text", "output_text", "text"):
            raise InvalidRequest(
                f"input: {kind} parts are not supported here", hint="send input_text parts"
            )
        parts.append(str(part.get("text") or ""))
    return "".join(parts)


def _chat(payload: ResponsesRequest) -> list[dict[str, Any]]:
    """The input as chat messages (OpenAI's chat shapes, which every runtime takes)."""
    messages: list[dict[str, Any]] = []
    if payload.instructions:
        messages.append({"role": "system", "content": payload.instructions})
    if isinstance(payload.input, str):
        return [*messages, {"role": "user", "content": payload.input}]
    for item in payload.input:
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role not in ("user", "assistant", "system", "developer"):
                raise InvalidRequest(f"input: a message's role must be user, assistant, system "
                                     f"or developer, not {str(role)[:40]!r}")  # fmt: skip
            role = "system" if role == "developer" else role
            messages.append({"role": role, "content": _content_text(item.get("content"))})
        elif kind == "function_call":
            call = {"id": str(item.get("call_id") or ""), "type": "function",
                    "function": {"name": str(item.get("name") or ""),
                                 "arguments": str(item.get("arguments") or "{}")}}  # fmt: skip
            if messages and messages[-1]["role"] == "assistant" and "tool_calls" in messages[-1]:
                messages[-1]["tool_calls"].append(call)
            else:
                messages.append({"role": "assistant", "content": "", "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "tool_call_id": str(item.get("call_id") or ""),
                             "content": str(item.get("output") or "")})  # fmt: skip
        else:
            raise InvalidRequest(
                f"input: {str(kind)[:40]} items are not supported here",
                hint="messages, function_call and function_call_output items are",
            )
    return messages


def _options(payload: ResponsesRequest) -> dict[str, Any]:
    if payload.previous_response_id:
        raise InvalidRequest(
            "previous_response_id: modelctl keeps no responses",
            hint="send the whole conversation as input",
        )
    options: dict[str, Any] = {"stream": payload.stream}
    if payload.max_output_tokens is not None:
        options["max_tokens"] = payload.max_output_tokens
    for name in ("temperature", "top_p"):
        if getattr(payload, name) is not None:
            options[name] = getattr(payload, name)
    if payload.tools:
        options["tools"] = [
            {"type": "function", "function": {"name": t.name, "description": t.description or "",
                                              "parameters": t.parameters or {"type": "object"}}}
            for t in payload.tools
        ]  # fmt: skip
    choice = payload.tool_choice
    if isinstance(choice, str):
        options["tool_choice"] = choice
    elif isinstance(choice, dict) and choice.get("type") == "function" and choice.get("name"):
        options["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    fmt = payload.text.format if payload.text else None
    if fmt is not None and fmt.type == "json_schema":
        schema = {"name": fmt.name or "answer", "schema": fmt.schema_ or {"type": "object"}}
        options["response_format"] = {"type": "json_schema", "json_schema": schema}
    elif fmt is not None and fmt.type == "json_object":
        options["response_format"] = {"type": "json_object"}
    return options


def _id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


class _Response:
    """One response being made: its fields, its output items, its usage."""

    def __init__(self, payload: ResponsesRequest) -> None:
        self.payload = payload
        self.id, self.created = _id("resp_"), int(time.time())
        self.output: list[dict[str, Any]] = []
        self.usage = {"input_tokens": 0, "output_tokens": 0}
        self.finish: str | None = None

    def counted(self, usage: dict[str, Any] | None) -> None:
        if usage:
            self.usage = {"input_tokens": int(usage.get("prompt_tokens") or 0),
                          "output_tokens": int(usage.get("completion_tokens") or 0)}  # fmt: skip

    def status(self) -> str:
        return "incomplete" if self.finish == "length" else "completed"

    def to_dict(self, status: str | None = None) -> dict[str, Any]:
        p = self.payload
        status = status or self.status()
        incomplete = {"reason": "max_output_tokens"} if status == "incomplete" else None
        tokens = {**self.usage, "total_tokens": sum(self.usage.values()),
                  "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens_details": {"reasoning_tokens": 0}}  # fmt: skip
        fmt = (
            p.text.format.model_dump(by_alias=True, exclude_none=True)
            if p.text and p.text.format
            else {"type": "text"}
        )
        return {
            "id": self.id, "object": "response", "created_at": self.created, "status": status,
            "error": None, "incomplete_details": incomplete, "instructions": p.instructions,
            "max_output_tokens": p.max_output_tokens, "model": p.model,
            "output": self.output if status != "in_progress" else [],
            "parallel_tool_calls": True, "previous_response_id": None,
            "reasoning": {"effort": None, "summary": None}, "store": False,
            "temperature": p.temperature, "text": {"format": fmt},
            "tool_choice": p.tool_choice or "auto",
            "tools": [t.model_dump(exclude_none=True) for t in p.tools or ()],
            "top_p": p.top_p, "truncation": "disabled",
            "usage": tokens if status != "in_progress" else None,
            "user": p.user, "metadata": p.metadata or {},
        }  # fmt: skip


def _message(text: str, status: str) -> dict[str, Any]:
    return {"type": "message", "id": _id("msg_"), "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": []}]}  # fmt: skip


def _call(call: dict[str, Any]) -> dict[str, Any]:
    function = call.get("function") or {}
    return {"type": "function_call", "id": _id("fc_"), "call_id": call.get("id") or _id("call_"),
            "name": function.get("name") or "", "arguments": function.get("arguments") or "{}",
            "status": "completed"}  # fmt: skip


@router.post("/responses", **returns(200, RESPONSE, streams=_STREAM))
async def responses(payload: ResponsesRequest, request: Request) -> Response:
    """A response, as OpenAI's Responses API makes it; `stream: true` answers in its events."""
    ctl = state(request)
    model_id = ctl.resolve(payload.model)
    client = client_name(request, payload.user)
    asked = ctl.manager.achat(
        _chat(payload), model_id, client=client, usage_chunk=True, **_options(payload)
    )
    answer = await while_connected(request, asked)
    made = _Response(payload)
    if not payload.stream:
        choice = (answer.get("choices") or [{}])[0]
        said = choice.get("message") or {}
        made.finish = choice.get("finish_reason")
        if said.get("content") or not said.get("tool_calls"):
            made.output.append(_message(said.get("content") or "", made.status()))
        made.output += [_call(c) for c in said.get("tool_calls") or ()]
        made.counted(answer.get("usage"))
        return JSONResponse(made.to_dict())
    first = await anext(answer, None)  # the model answers here: a failure is still an HTTP error
    return StreamingResponse(_events(made, first, answer), media_type="text/event-stream")


async def _events(made: _Response, first: Any, chunks: AsyncIterator[Any]) -> AsyncIterator[str]:
    number = 0

    def event(name: str, data: dict[str, Any]) -> str:
        nonlocal number
        number += 1
        payload = {"type": name, **data, "sequence_number": number - 1}
        return f"event: {name}\ndata: {json.dumps(payload)}\n\n"

    yield event("response.created", {"response": made.to_dict("in_progress")})
    yield event("response.in_progress", {"response": made.to_dict("in_progress")})
    message: dict[str, Any] | None = None
    text = ""
    calls: dict[int, dict[str, Any]] = {}
    try:
        async for chunk in chained(first, chunks):
            if not isinstance(chunk, dict):
                continue
            made.counted(chunk.get("usage"))
            for choice in chunk.get("choices") or ():
                delta = choice.get("delta") or {}
                piece = delta.get("content")
                if piece:
                    if message is None:
                        message = _message("", "in_progress")
                        message["content"] = []
                        made.output.append(message)
                        at = {"output_index": len(made.output) - 1}
                        yield event("response.output_item.added", {**at, "item": message})
                        part = {"type": "output_text", "text": "", "annotations": []}
                        added = {**at, "item_id": message["id"], "content_index": 0, "part": part}
                        yield event("response.content_part.added", added)
                    text += piece
                    yield event("response.output_text.delta", {
                        "item_id": message["id"], "output_index": made.output.index(message),
                        "content_index": 0, "delta": piece, "logprobs": []})  # fmt: skip
                for call in delta.get("tool_calls") or ():
                    slot = calls.setdefault(int(call.get("index") or 0), {"function": {}})
                    slot["id"] = call.get("id") or slot.get("id")
                    function = call.get("function") or {}
                    slot["function"]["name"] = function.get("name") or slot["function"].get("name")
                    slot["function"]["arguments"] = (slot["function"].get("arguments") or "") + (
                        function.get("arguments") or ""
                    )
                made.finish = choice.get("finish_reason") or made.finish
        status = made.status()
        if message is not None:
            index = made.output.index(message)
            part = {"type": "output_text", "text": text, "annotations": []}
            at = {"item_id": message["id"], "output_index": index, "content_index": 0}
            yield event("response.output_text.done", {**at, "text": text, "logprobs": []})
            yield event("response.content_part.done", {**at, "part": part})
            message.update(status=status, content=[part])
            yield event("response.output_item.done", {"output_index": index, "item": message})
        for call in calls.values():
            item = _call(call)
            made.output.append(item)
            at = {"output_index": len(made.output) - 1}
            added = {**item, "arguments": "", "status": "in_progress"}
            yield event("response.output_item.added", {**at, "item": added})
            yield event("response.function_call_arguments.delta", {
                **at, "item_id": item["id"], "delta": item["arguments"]})  # fmt: skip
            yield event("response.function_call_arguments.done", {
                **at, "item_id": item["id"], "arguments": item["arguments"]})  # fmt: skip
            yield event("response.output_item.done", {**at, "item": item})
        done = "response.incomplete" if status == "incomplete" else "response.completed"
        yield event(done, {"response": made.to_dict()})
    except ModelctlError as exc:
        status_code, code = classify(exc)
        error = body("/v1/responses", status_code, code, exc.message, exc.hint)["error"]
        yield event("error", {"code": error["code"], "message": error["message"], "param": None})
    finally:
        await chunks.aclose()  # the model is released even when the client left early
