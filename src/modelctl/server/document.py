"""What the OpenAPI document says that FastAPI cannot read off the routes: each API's error
body, the streams (server-sent events, newline-delimited JSON) and what each of their items
holds, answers built by hand, and the links from an operation's answer to the next ones.

Documentation only: nothing here checks an answer at run time (tests/reliability/
test_r3_openapi.py checks them against the document).
"""

from typing import Any, Literal

from pydantic import BaseModel

__all__ = [
    "INTEGER",
    "NUMBER",
    "OPTIONAL_STRING",
    "STRING",
    "ManagementError",
    "OllamaError",
    "OpenAIError",
    "errors",
    "event_stream",
    "json_lines",
    "link",
    "obj",
    "returns",
]

STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
NUMBER: dict[str, Any] = {"type": "number"}
OPTIONAL_STRING: dict[str, Any] = {"type": ["string", "null"]}


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIError(BaseModel):
    """An error on `/v1`, as OpenAI's clients read it."""

    error: OpenAIErrorDetail


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    """An error on Anthropic's `/v1/messages`."""

    type: Literal["error"]
    error: AnthropicErrorDetail


class OllamaError(BaseModel):
    """An error on Ollama's `/api`."""

    error: str


class ManagementErrorDetail(BaseModel):
    code: str
    message: str
    hint: str | None


class ManagementError(BaseModel):
    """An error on the management API, `/api/v1`."""

    error: ManagementErrorDetail


def errors(body: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """A router's error answers: every 4xx and 5xx has `body`'s shape (server/errors.py)."""
    return {
        "4XX": {"model": body, "description": "Bad input: the message says what to fix"},
        "5XX": {
            "model": body,
            "description": "A backend or the machine failed (502, 503), or a bug in modelctl (500)",
        },
    }


def obj(required: tuple[str, ...] = (), **properties: dict[str, Any]) -> dict[str, Any]:
    """A JSON object schema: these properties (`required` of them always there), others allowed."""
    schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return schema


def event_stream(data: dict[str, Any], *, done: bool = False) -> dict[str, Any]:
    """`text/event-stream` content whose events carry JSON matching `data` (and, with `done`,
    a last `[DONE]` as OpenAI ends its streams)."""
    payload: dict[str, Any] = {
        "type": "string", "contentMediaType": "application/json", "contentSchema": data,
    }  # fmt: skip
    if done:
        payload = {"anyOf": [{"const": "[DONE]"}, payload]}
    event = obj(("data",), event=STRING, data=payload)
    return {"text/event-stream": {"itemSchema": event}}


def json_lines(line: dict[str, Any]) -> dict[str, Any]:
    """`application/x-ndjson` content (Ollama's streams): each line matches `line`."""
    return {"application/x-ndjson": {"itemSchema": line}}


def returns(
    status: int,
    answer: Any,
    *,
    streams: dict[str, Any] | None = None,
    links: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Route decorator arguments for an answer built by hand: its JSON `answer` (a type or a
    schema), the `streams` it may be instead, and `links` to the operations that can follow."""
    response: dict[str, Any] = {}
    if isinstance(answer, dict):
        response["content"] = {"application/json": {"schema": answer}}
    elif answer is not None:
        response["model"] = answer
    if streams:
        response.setdefault("content", {}).update(streams)
    if links:
        response["links"] = links
    return {"response_model": None, "responses": {status: response}}


def link(
    method: str,
    path: str,
    description: str,
    *,
    body: dict[str, Any] | None = None,
    **parameters: str,
) -> dict[str, Any]:
    """A link to the operation `method path`; `parameters` name where each value comes from
    (`path_ref="$response.body#/id"` is the path parameter `ref`), `body` the request body's
    fields that come from this answer."""
    pointer = path.replace("~", "~0").replace("/", "~1")
    found: dict[str, Any] = {
        "operationRef": f"#/paths/{pointer}/{method}",
        "description": description,
    }
    if parameters:
        found["parameters"] = {
            name.replace("_", ".", 1): value for name, value in parameters.items()
        }
    if body:
        found["requestBody"] = body
    return found
