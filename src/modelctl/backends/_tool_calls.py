"""Tool calls for a local model: read from the text it wrote, or made sure of with a grammar.

A chat template that knows tools shows them to the model (llama-cpp-python renders them), and
the model answers a call in its family's markers. The common ones are read here:

    <tool_call>{"name": …, "arguments": {…}}</tool_call>      Hermes, Qwen 2.5 and 3, many more
    [TOOL_CALLS] [{"name": …, "arguments": {…}}, …]            Mistral (the marker is a control
                                                               token: often only the list)
    <|python_tag|>{"name": …, "parameters": {…}}               Llama 3.1 and later
    {"name": …, "parameters": {…}}                             Llama 3's bare JSON

Only the names of the tools the request offered count as calls; anything else stays text.
`tool_choice: "required"` is made sure of with a grammar: the answer is one call, JSON of one
of the tools' names and its parameters' schema (a named tool_choice, llama-cpp-python forces
itself). The calls come back in OpenAI's shape, as a whole answer or as a stream's chunks.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

__all__ = ["as_chunks", "parse", "required_format", "with_calls"]

_HERMES = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.S)
_MISTRAL = re.compile(r"\[TOOL_CALLS\]\s*(\[.*\])", re.S)
_PYTHON_TAG = re.compile(r"<\|python_tag\|>\s*(\{.*\})", re.S)


def _names(tools: list[dict[str, Any]]) -> set[str]:
    return {str((t.get("function") or {}).get("name")) for t in tools if isinstance(t, dict)}


def _call(found: Any, names: set[str]) -> dict[str, Any] | None:
    if not isinstance(found, dict) or found.get("name") not in names:
        return None
    arguments = found.get("arguments", found.get("parameters", {}))
    if isinstance(arguments, str):  # some write the arguments as a JSON string already
        text = arguments
    else:
        text = json.dumps(arguments if arguments is not None else {})
    return {"id": f"call_{secrets.token_hex(8)}", "type": "function",
            "function": {"name": found["name"], "arguments": text}}  # fmt: skip


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def parse(text: str, tools: list[dict[str, Any]]) -> tuple[str | None, list[dict[str, Any]]]:
    """(the text that is not a call, or None; the calls) of what a model wrote."""
    names = _names(tools)
    calls: list[dict[str, Any]] = []
    rest = text
    for match in _HERMES.finditer(text):
        call = _call(_json(match.group(1)), names)
        if call is not None:
            calls.append(call)
            rest = rest.replace(match.group(0), "")
    if not calls:
        for pattern in (_MISTRAL, _PYTHON_TAG):
            match = pattern.search(text)
            found = _json(match.group(1)) if match else None
            items = found if isinstance(found, list) else [found]
            made = [c for c in (_call(item, names) for item in items) if c is not None]
            if made:
                calls, rest = made, text[: match.start()] if match else text  # type: ignore[union-attr]
                break
    bare = text.strip()
    if not calls and bare.startswith(("{", "[")):  # Llama's JSON, or Mistral's list without
        # its [TOOL_CALLS] (a control token, which the text of an answer leaves out)
        found = _json(bare)
        items = found if isinstance(found, list) else [found]
        made = [c for c in (_call(item, names) for item in items) if c is not None]
        if made and len(made) == len(items):
            calls, rest = made, ""
    content = rest.strip() or None
    return (content if calls else text), calls


def required_format(tools: list[dict[str, Any]]) -> dict[str, Any]:
    """A `response_format` whose grammar admits one call of one of `tools`, nothing else."""
    choices = []
    for tool in tools:
        function = tool.get("function") or {}
        parameters = function.get("parameters") or {"type": "object"}
        choices.append({
            "type": "object",
            "properties": {"name": {"const": function.get("name")}, "arguments": parameters},
            "required": ["name", "arguments"],
        })  # fmt: skip
    schema = choices[0] if len(choices) == 1 else {"anyOf": choices}
    return {"type": "json_object", "schema": schema}


def with_calls(answer: dict[str, Any], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """A chat answer whose text holds calls, with them as `tool_calls` (finish: tool_calls)."""
    choices = []
    for choice in answer.get("choices") or ():
        message = dict(choice.get("message") or {})
        if message.get("tool_calls") or not isinstance(message.get("content"), str):
            choices.append(choice)
            continue
        content, calls = parse(message["content"], tools)
        if calls:
            message |= {"content": content, "tool_calls": calls}
            choice = {**choice, "message": message, "finish_reason": "tool_calls"}
        choices.append(choice)
    return {**answer, "choices": choices}


def as_chunks(answer: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A whole chat answer as a stream's chunks: the role, the text, each call, the finish,
    then the usage (as OpenAI ends a stream asked for it)."""
    head = {"id": answer.get("id"), "object": "chat.completion.chunk",
            "created": answer.get("created"), "model": answer.get("model")}  # fmt: skip

    def chunk(index: int, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return head | {"choices": [{"index": index, "delta": delta, "logprobs": None,
                                    "finish_reason": finish}]}  # fmt: skip

    for index, choice in enumerate(answer.get("choices") or ()):
        message = choice.get("message") or {}
        yield chunk(index, {"role": "assistant", "content": ""})
        if message.get("content"):
            yield chunk(index, {"content": message["content"]})
        for number, call in enumerate(message.get("tool_calls") or ()):
            yield chunk(index, {"tool_calls": [{"index": number, **call}]})
        yield chunk(index, {}, choice.get("finish_reason") or "stop")
    if answer.get("usage"):
        yield head | {"choices": [], "usage": answer["usage"]}
