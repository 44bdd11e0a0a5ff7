"""Response shapes, field by field: each response of the OpenAI-, Ollama- and
Anthropic-compatible APIs, from a real server (`modelctl serve`'s app on a loopback port) and
the tiny GGUF model, validated against a JSON Schema of that API's documented shape.

The schemas are written by hand from each API's public documentation (the page is named above
each one), not generated from modelctl's code or its OpenAPI document. Each lists as `required`
the fields the documentation says are always present, with their types and constant values;
additional properties are allowed everywhere, as servers may add fields of their own."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest

from modelctl.manager import ModelManager
from tests.live import running

HELLO = [{"role": "user", "content": "hello"}]
CHAT = {"model": "tiny", "messages": HELLO, "max_tokens": 3}  # OpenAI
OLLAMA_CHAT = {"model": "tiny", "messages": HELLO, "options": {"num_predict": 3}}
OLLAMA_GENERATE = {"model": "tiny", "prompt": "Once", "options": {"num_predict": 3}}
MESSAGE = {"model": "tiny", "max_tokens": 3, "messages": HELLO}  # Anthropic
TIMEOUT = 120


@pytest.fixture
def url(tiny_manager: ModelManager) -> Iterator[str]:
    with running(tiny_manager) as base:
        yield base


def departures(schema: dict[str, Any], instance: Any) -> list[str]:
    """Each way `instance` departs from `schema`, with the path where it does."""
    validator = jsonschema_rs.validator_for(schema, validate_formats=True)
    return [
        f"  at /{'/'.join(map(str, e.instance_path))}: {e.message}"
        for e in validator.iter_errors(instance)
    ]


def conforms(schema: dict[str, Any], instance: Any, what: str) -> None:
    """Every way `instance` departs from `schema`, each with its path, in one failure."""
    errors = departures(schema, instance)
    assert not errors, (
        f"{what}: not the documented shape:\n"
        + "\n".join(errors)
        + f"\n{what} was: {json.dumps(instance)[:2000]}"
    )


def each(schema: dict[str, Any]) -> dict[str, Any]:
    """A list (of stream chunks or lines) each of whose items has the shape `schema`."""
    return {"type": "array", "items": schema}


# Small building blocks shared by the schemas below.
STRING: dict[str, Any] = {"type": "string"}
INTEGER: dict[str, Any] = {"type": "integer"}
COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
NUMBERS: dict[str, Any] = {"type": "array", "items": {"type": "number"}, "minItems": 1}


def obj(required: dict[str, Any], optional: dict[str, Any] | None = None) -> dict[str, Any]:
    """An object that must have the `required` fields and may have the `optional` ones (each of
    the given shape when present), and any other field."""
    return {
        "type": "object",
        "required": list(required),
        "properties": {**required, **(optional or {})},
        "additionalProperties": True,
    }


def const(value: Any) -> dict[str, Any]:
    return {"const": value}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


# ================================================================================== OpenAI

# OpenAI API reference: Chat Completions, The chat completion object (`usage`: the
# CompletionUsage object, "Usage statistics for the completion request").
OPENAI_USAGE = obj({"prompt_tokens": COUNT, "completion_tokens": COUNT, "total_tokens": COUNT})
OPENAI_FINISH_REASON = {"enum": ["stop", "length", "tool_calls", "content_filter", "function_call"]}

# OpenAI API reference: Chat Completions, The chat completion object. `message.content` and
# `message.refusal` ("string or null") and `logprobs` ("object or null") are always there, null
# when there is none (`required` in OpenAI's published OpenAPI description, openai-openapi).
OPENAI_CHAT_COMPLETION = obj(
    {
        "id": STRING,
        "object": const("chat.completion"),
        "created": INTEGER,
        "model": STRING,
        "choices": {
            "type": "array",
            "minItems": 1,
            "items": obj(
                {
                    "index": INTEGER,
                    "message": obj(
                        {
                            "role": const("assistant"),
                            "content": nullable(STRING),
                            "refusal": nullable(STRING),
                        },
                        {"tool_calls": {"type": "array"}},
                    ),
                    "finish_reason": OPENAI_FINISH_REASON,
                    "logprobs": nullable({"type": "object"}),
                }
            ),
        },
        "usage": OPENAI_USAGE,
    },
    {"system_fingerprint": nullable(STRING), "service_tier": nullable(STRING)},
)

# OpenAI API reference: Chat Completions, The chat completion chunk object ("Represents a
# streamed chunk of a chat completion response returned by the model").
OPENAI_CHAT_CHUNK = obj(
    {
        "id": STRING,
        "object": const("chat.completion.chunk"),
        "created": INTEGER,
        "model": STRING,
        "choices": {
            "type": "array",
            "items": obj(
                {
                    "index": INTEGER,
                    "delta": obj(
                        {},
                        {
                            "role": {"enum": ["developer", "system", "user", "assistant", "tool"]},
                            "content": nullable(STRING),
                            "refusal": nullable(STRING),
                            "tool_calls": {"type": "array"},
                        },
                    ),
                    "finish_reason": nullable(OPENAI_FINISH_REASON),
                },
                {"logprobs": nullable({"type": "object"})},
            ),
        },
    },
    {
        "system_fingerprint": nullable(STRING),
        "service_tier": nullable(STRING),
        "usage": nullable(OPENAI_USAGE),
    },
)

# OpenAI API reference: Chat Completions, The chat completion chunk object, `usage`: "An optional
# field that will only be present when you set `stream_options: {"include_usage": true}` in
# your request": without it, no chunk has one.
OPENAI_CHUNK_WITHOUT_USAGE = {"allOf": [OPENAI_CHAT_CHUNK, {"properties": {"usage": False}}]}

# OpenAI API reference: Chat Completions, Create chat completion, `stream_options.include_usage`:
# "an additional chunk will be streamed before the data: [DONE] message. The usage field on this
# chunk shows the token usage statistics for the entire request, and the choices field will
# always be an empty array. All other chunks will also include a usage field, but with a null
# value."
OPENAI_CHUNK_BEFORE_USAGE = {
    "allOf": [OPENAI_CHAT_CHUNK, obj({"choices": {"minItems": 1}, "usage": {"type": "null"}})]
}
OPENAI_USAGE_CHUNK = {
    "allOf": [OPENAI_CHAT_CHUNK, obj({"choices": {"maxItems": 0}, "usage": OPENAI_USAGE})]
}

# OpenAI API reference: Completions (legacy), The completion object.
OPENAI_COMPLETION = obj(
    {
        "id": STRING,
        "object": const("text_completion"),
        "created": INTEGER,
        "model": STRING,
        "choices": {
            "type": "array",
            "minItems": 1,
            "items": obj(
                {
                    "text": STRING,
                    "index": INTEGER,
                    "logprobs": nullable({"type": "object"}),
                    "finish_reason": {"enum": ["stop", "length", "content_filter"]},
                }
            ),
        },
    },
    {"usage": OPENAI_USAGE, "system_fingerprint": nullable(STRING)},
)

# OpenAI API reference: Embeddings, Create embeddings (the response: a list of embedding
# objects) and The embedding object (`encoding_format: "float"`: a list of floats).
OPENAI_EMBEDDINGS = obj(
    {
        "object": const("list"),
        "data": {
            "type": "array",
            "minItems": 1,
            "items": obj({"object": const("embedding"), "embedding": NUMBERS, "index": INTEGER}),
        },
        "model": STRING,
        "usage": obj({"prompt_tokens": COUNT, "total_tokens": COUNT}),
    }
)

# OpenAI API reference: Models, List models (a list of model objects) and The model object.
OPENAI_MODELS = obj(
    {
        "object": const("list"),
        "data": {
            "type": "array",
            "minItems": 1,
            "items": obj(
                {"id": STRING, "object": const("model"), "created": INTEGER, "owned_by": STRING}
            ),
        },
    }
)

# OpenAI API reference: Introduction / Error codes, and the Error object of OpenAI's published
# OpenAPI description (openai/openai-openapi): `{"error": {message, type, param, code}}`, with
# `param` and `code` strings or null.
OPENAI_ERROR = obj(
    {
        "error": obj(
            {
                "message": STRING,
                "type": STRING,
                "param": nullable(STRING),
                "code": nullable(STRING),
            }
        )
    }
)


def sse_data(text: str) -> list[str]:
    """The `data:` payloads of an OpenAI server-sent event stream, in order."""
    return [line[len("data: ") :] for line in text.splitlines() if line.startswith("data: ")]


def test_openai_chat_completion(url: str) -> None:
    answer = httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    conforms(OPENAI_CHAT_COMPLETION, answer.json(), "POST /v1/chat/completions")


def test_openai_chat_stream_chunks(url: str) -> None:
    """Chat Completions, streaming: "data-only server-sent events", ended by `data: [DONE]`."""
    streamed = httpx.post(
        f"{url}/v1/chat/completions", json={**CHAT, "stream": True}, timeout=TIMEOUT
    )
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["content-type"].startswith("text/event-stream")
    *chunks, done = sse_data(streamed.text)
    assert done == "[DONE]" and chunks
    conforms(
        each(OPENAI_CHUNK_WITHOUT_USAGE),
        [json.loads(chunk) for chunk in chunks],
        "the stream (no stream_options)",
    )
    assert json.loads(chunks[-1])["choices"][0]["finish_reason"] == "length"


def test_openai_chat_stream_with_include_usage(url: str) -> None:
    with_usage = httpx.post(
        f"{url}/v1/chat/completions",
        json={**CHAT, "stream": True, "stream_options": {"include_usage": True}},
        timeout=TIMEOUT,
    )
    assert with_usage.status_code == 200, with_usage.text
    *chunks, done = sse_data(with_usage.text)
    assert done == "[DONE]" and len(chunks) >= 2
    *before, last = (json.loads(chunk) for chunk in chunks)
    conforms(each(OPENAI_CHUNK_BEFORE_USAGE), before, "the chunks before the usage chunk")
    conforms(OPENAI_USAGE_CHUNK, last, "include_usage stream, last chunk")
    usage = last["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_openai_completion(url: str) -> None:
    answer = httpx.post(
        f"{url}/v1/completions",
        json={"model": "tiny", "prompt": "Once", "max_tokens": 3},
        timeout=TIMEOUT,
    )
    assert answer.status_code == 200, answer.text
    conforms(OPENAI_COMPLETION, answer.json(), "POST /v1/completions")


def test_openai_embeddings(url: str) -> None:
    vectors = httpx.post(
        f"{url}/v1/embeddings",
        json={"model": "tiny", "input": ["a cat", "stocks fell"], "encoding_format": "float"},
        timeout=TIMEOUT,
    )
    assert vectors.status_code == 200, vectors.text
    conforms(OPENAI_EMBEDDINGS, vectors.json(), "POST /v1/embeddings")
    assert [item["index"] for item in vectors.json()["data"]] == [0, 1]


def test_openai_models(url: str) -> None:
    models = httpx.get(f"{url}/v1/models", timeout=TIMEOUT)
    assert models.status_code == 200, models.text
    conforms(OPENAI_MODELS, models.json(), "GET /v1/models")
    assert "tiny" in {model["id"] for model in models.json()["data"]}


def test_openai_error_for_an_unknown_model(url: str) -> None:
    """OpenAI answers a model it does not have with 404 (code `model_not_found`)."""
    missing = httpx.post(
        f"{url}/v1/chat/completions", json={**CHAT, "model": "nope"}, timeout=TIMEOUT
    )
    assert missing.status_code == 404, missing.text
    conforms(OPENAI_ERROR, missing.json(), "the error for an unknown model")


# ================================================================================== Ollama

# Ollama docs/api.md: List Local Models (`details`), Show Model Information and List Running
# Models, which give the same details object.
OLLAMA_DETAILS = obj(
    {
        "parent_model": STRING,
        "format": STRING,
        "family": STRING,
        "families": nullable({"type": "array", "items": STRING}),
        "parameter_size": STRING,
        "quantization_level": STRING,
    }
)
DIGEST = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
TIMESTAMP = {"type": "string", "format": "date-time"}

# Ollama docs/api.md: List Local Models (`GET /api/tags`), "A single JSON object will be
# returned."
OLLAMA_TAGS = obj(
    {
        "models": {
            "type": "array",
            "minItems": 1,
            "items": obj(
                {
                    "name": STRING,
                    "model": STRING,
                    "modified_at": TIMESTAMP,
                    "size": COUNT,
                    "digest": DIGEST,
                    "details": OLLAMA_DETAILS,
                }
            ),
        }
    }
)

# Ollama docs/api.md: Show Model Information (`POST /api/show`).
OLLAMA_SHOW = obj(
    {
        "modelfile": STRING,
        "parameters": STRING,
        "template": STRING,
        "details": OLLAMA_DETAILS,
        "model_info": {"type": "object"},
    },
    {"capabilities": {"type": "array", "items": STRING}, "license": STRING, "system": STRING},
)

# Ollama docs/api.md: List Running Models (`GET /api/ps`).
OLLAMA_PS = obj(
    {
        "models": {
            "type": "array",
            "minItems": 1,
            "items": obj(
                {
                    "name": STRING,
                    "model": STRING,
                    "size": COUNT,
                    "digest": DIGEST,
                    "details": OLLAMA_DETAILS,
                    "expires_at": TIMESTAMP,
                    "size_vram": COUNT,
                }
            ),
        }
    }
)

# Ollama docs/api.md: Generate a chat completion and Generate a completion, the final response
# ("The final response in the stream also includes additional data about the generation";
# `done_reason`, as in the examples of both).
OLLAMA_FINAL_STATS = {
    "done": const(True),
    "done_reason": STRING,
    "total_duration": COUNT,
    "load_duration": COUNT,
    "prompt_eval_count": COUNT,
    "prompt_eval_duration": COUNT,
    "eval_count": COUNT,
    "eval_duration": COUNT,
}

# Ollama docs/api.md: Generate a chat completion (`POST /api/chat`), a message of the stream.
OLLAMA_CHAT_MESSAGE = obj(
    {"role": const("assistant"), "content": STRING},
    {"images": nullable({"type": "array"}), "tool_calls": {"type": "array"}},
)
OLLAMA_CHAT_PART = obj(
    {"model": STRING, "created_at": TIMESTAMP, "message": OLLAMA_CHAT_MESSAGE, "done": const(False)}
)
# Ollama docs/api.md: Generate a chat completion, the final response (and the one response of
# "stream": false).
OLLAMA_CHAT_FINAL = obj(
    {"model": STRING, "created_at": TIMESTAMP, "message": OLLAMA_CHAT_MESSAGE, **OLLAMA_FINAL_STATS}
)

# Ollama docs/api.md: Generate a completion (`POST /api/generate`), a response of the stream.
OLLAMA_GENERATE_PART = obj(
    {"model": STRING, "created_at": TIMESTAMP, "response": STRING, "done": const(False)}
)
# Ollama docs/api.md: Generate a completion, the final response (`context`: deprecated, may be
# absent).
OLLAMA_GENERATE_FINAL = obj(
    {"model": STRING, "created_at": TIMESTAMP, "response": STRING, **OLLAMA_FINAL_STATS},
    {"context": {"type": "array", "items": INTEGER}},
)

# Ollama docs/api.md: Generate Embeddings (`POST /api/embed`). Its "Multiple input" example
# response has `model` and `embeddings` only; its single-input example adds the durations and
# `prompt_eval_count`.
OLLAMA_EMBED = obj(
    {"model": STRING, "embeddings": {"type": "array", "minItems": 1, "items": NUMBERS}},
    {"total_duration": COUNT, "load_duration": COUNT, "prompt_eval_count": COUNT},
)

# Ollama docs/api.md: Generate Embedding (`POST /api/embeddings`, "superseded by /api/embed").
OLLAMA_EMBEDDING = obj({"embedding": NUMBERS})

# Ollama docs/api.md: Version (`GET /api/version`).
OLLAMA_VERSION = obj({"version": STRING})

# Ollama docs/api.md: Errors ("Errors are returned in the `application/json` format ... with
# an `error` property").
OLLAMA_ERROR = obj({"error": STRING})


def ndjson(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_ollama_tags(url: str) -> None:
    tags = httpx.get(f"{url}/api/tags", timeout=TIMEOUT)
    assert tags.status_code == 200, tags.text
    conforms(OLLAMA_TAGS, tags.json(), "GET /api/tags")


def test_ollama_show(url: str) -> None:
    shown = httpx.post(f"{url}/api/show", json={"model": "tiny"}, timeout=TIMEOUT)
    assert shown.status_code == 200, shown.text
    conforms(OLLAMA_SHOW, shown.json(), "POST /api/show")


def test_ollama_ps(url: str) -> None:
    loaded = httpx.post(
        f"{url}/api/generate",
        json={"model": "tiny", "prompt": "Once", "stream": False, "options": {"num_predict": 1}},
        timeout=TIMEOUT,
    )
    assert loaded.status_code == 200, loaded.text
    running_models = httpx.get(f"{url}/api/ps", timeout=TIMEOUT)
    assert running_models.status_code == 200, running_models.text
    conforms(OLLAMA_PS, running_models.json(), "GET /api/ps")


def test_ollama_version(url: str) -> None:
    version = httpx.get(f"{url}/api/version", timeout=TIMEOUT)
    assert version.status_code == 200, version.text
    conforms(OLLAMA_VERSION, version.json(), "GET /api/version")


def test_ollama_chat(url: str) -> None:
    answer = httpx.post(f"{url}/api/chat", json={**OLLAMA_CHAT, "stream": False}, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    conforms(OLLAMA_CHAT_FINAL, answer.json(), "POST /api/chat")


def test_ollama_chat_stream_lines(url: str) -> None:
    streamed = httpx.post(f"{url}/api/chat", json=OLLAMA_CHAT, timeout=TIMEOUT)  # the default
    assert streamed.status_code == 200, streamed.text
    *parts, final = ndjson(streamed.text)
    conforms(each(OLLAMA_CHAT_PART), parts, "the /api/chat stream's lines before the last")
    conforms(OLLAMA_CHAT_FINAL, final, "/api/chat stream, last line")


def test_ollama_generate(url: str) -> None:
    answer = httpx.post(
        f"{url}/api/generate", json={**OLLAMA_GENERATE, "stream": False}, timeout=TIMEOUT
    )
    assert answer.status_code == 200, answer.text
    conforms(OLLAMA_GENERATE_FINAL, answer.json(), "POST /api/generate")


def test_ollama_generate_stream_lines(url: str) -> None:
    streamed = httpx.post(f"{url}/api/generate", json=OLLAMA_GENERATE, timeout=TIMEOUT)
    assert streamed.status_code == 200, streamed.text
    *parts, final = ndjson(streamed.text)
    conforms(each(OLLAMA_GENERATE_PART), parts, "the /api/generate stream's lines before the last")
    conforms(OLLAMA_GENERATE_FINAL, final, "/api/generate stream, last line")


def test_ollama_embed(url: str) -> None:
    embed = httpx.post(
        f"{url}/api/embed", json={"model": "tiny", "input": ["a cat", "stocks fell"]},
        timeout=TIMEOUT,
    )  # fmt: skip
    assert embed.status_code == 200, embed.text
    conforms(OLLAMA_EMBED, embed.json(), "POST /api/embed")
    assert len(embed.json()["embeddings"]) == 2


def test_ollama_embeddings(url: str) -> None:
    old = httpx.post(
        f"{url}/api/embeddings", json={"model": "tiny", "prompt": "a cat"}, timeout=TIMEOUT
    )
    assert old.status_code == 200, old.text
    conforms(OLLAMA_EMBEDDING, old.json(), "POST /api/embeddings")


def test_ollama_error_for_an_unknown_model(url: str) -> None:
    """Ollama answers a model it does not have with 404 ("model 'nope' not found")."""
    missing = httpx.post(
        f"{url}/api/chat", json={**OLLAMA_CHAT, "model": "nope", "stream": False}, timeout=TIMEOUT
    )
    assert missing.status_code == 404, missing.text
    conforms(OLLAMA_ERROR, missing.json(), "the error for an unknown model")


# =============================================================================== Anthropic

ANTHROPIC_STOP_REASON = {
    "enum": ["end_turn", "max_tokens", "stop_sequence", "tool_use", "pause_turn", "refusal"]
}
# Anthropic API reference: Messages, Create a Message, the response's `content`: "an array of
# content blocks, each of which has a type"; a text block is `{"type": "text", "text": ...}`.
ANTHROPIC_TEXT_BLOCK = obj({"type": const("text"), "text": STRING})
ANTHROPIC_BLOCK = {
    "allOf": [
        obj({"type": STRING}),
        {"if": obj({"type": const("text")}), "then": ANTHROPIC_TEXT_BLOCK},
    ]
}
ANTHROPIC_USAGE = obj({"input_tokens": COUNT, "output_tokens": COUNT})

# Anthropic API reference: Messages, Create a Message, the Message object ("stop_reason ... In
# non-streaming mode this value is always non-null").
ANTHROPIC_MESSAGE = obj(
    {
        "id": STRING,
        "type": const("message"),
        "role": const("assistant"),
        "content": {"type": "array", "items": ANTHROPIC_BLOCK},
        "model": STRING,
        "stop_reason": ANTHROPIC_STOP_REASON,
        "stop_sequence": nullable(STRING),
        "usage": ANTHROPIC_USAGE,
    }
)

# Anthropic docs: Streaming Messages, "Event types" and "Raw HTTP Stream response": the data of
# each event, by the event's name.
ANTHROPIC_EVENTS: dict[str, dict[str, Any]] = {
    # "message_start: contains a Message object with empty content"; stop_reason is null there.
    "message_start": obj(
        {
            "type": const("message_start"),
            "message": obj(
                {
                    "id": STRING,
                    "type": const("message"),
                    "role": const("assistant"),
                    "content": {"type": "array", "maxItems": 0},
                    "model": STRING,
                    "stop_reason": {"type": "null"},
                    "stop_sequence": {"type": "null"},
                    "usage": ANTHROPIC_USAGE,
                }
            ),
        }
    ),
    "content_block_start": obj(
        {
            "type": const("content_block_start"),
            "index": COUNT,
            "content_block": {
                "allOf": [
                    ANTHROPIC_BLOCK,
                    {"if": obj({"type": const("text")}), "then": obj({"text": const("")})},
                ]
            },
        }
    ),
    "ping": obj({"type": const("ping")}),
    "content_block_delta": obj(
        {
            "type": const("content_block_delta"),
            "index": COUNT,
            "delta": obj({"type": const("text_delta"), "text": STRING}),
        }
    ),
    "content_block_stop": obj({"type": const("content_block_stop"), "index": COUNT}),
    # "message_delta: indicating top-level changes to the final Message object"; its usage
    # counts are cumulative.
    "message_delta": obj(
        {
            "type": const("message_delta"),
            "delta": obj({"stop_reason": ANTHROPIC_STOP_REASON, "stop_sequence": nullable(STRING)}),
            "usage": obj({"output_tokens": COUNT}),
        }
    ),
    "message_stop": obj({"type": const("message_stop")}),
}
# Anthropic docs: Streaming Messages, "Event types": message_start, then each content block
# (content_block_start, one or more content_block_delta, content_block_stop), then one or more
# message_delta, then a final message_stop; "ping events" may be "dispersed throughout".
ANTHROPIC_EVENT_ORDER = re.compile(
    r"(ping )*message_start (ping )*"
    r"(content_block_start (ping )*(content_block_delta (ping )*)+content_block_stop (ping )*)*"
    r"(message_delta (ping )*)+message_stop "
)

# Anthropic API reference: Errors ("Errors are always returned as JSON, with a top-level error
# object that always includes a type and message value"; 404 is `not_found_error`).
ANTHROPIC_ERROR = obj(
    {"type": const("error"), "error": obj({"type": const("not_found_error"), "message": STRING})}
)


def server_sent_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Each event of a server-sent event stream as (its `event:` name, its `data:` JSON)."""
    events = []
    for block in re.split(r"\r?\n\r?\n", text.strip()):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        assert set(fields) >= {"event", "data"}, f"an event without an event or data line: {block}"
        events.append((fields["event"], json.loads(fields["data"])))
    return events


def test_anthropic_message(url: str) -> None:
    answer = httpx.post(f"{url}/v1/messages", json=MESSAGE, timeout=TIMEOUT)
    assert answer.status_code == 200, answer.text
    conforms(ANTHROPIC_MESSAGE, answer.json(), "POST /v1/messages")


def test_anthropic_stream_events(url: str) -> None:
    streamed = httpx.post(f"{url}/v1/messages", json={**MESSAGE, "stream": True}, timeout=TIMEOUT)
    assert streamed.status_code == 200, streamed.text
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = server_sent_events(streamed.text)
    errors = []
    for n, (name, data) in enumerate(events):
        assert data.get("type") == name, f"event {n} named {name!r} has data of type {data!r}"
        assert name in ANTHROPIC_EVENTS, f"event {n}: {name!r} is not a documented event"
        errors += [f"event {n} ({name}){e}" for e in departures(ANTHROPIC_EVENTS[name], data)]
    assert not errors, "the events: not their documented shapes:\n" + "\n".join(errors)
    order = "".join(f"{name} " for name, _ in events)
    assert ANTHROPIC_EVENT_ORDER.fullmatch(order), f"events out of the documented order: {order}"
    assert "content_block_start" in order


def test_anthropic_error_for_an_unknown_model(url: str) -> None:
    missing = httpx.post(f"{url}/v1/messages", json={**MESSAGE, "model": "nope"}, timeout=TIMEOUT)
    assert missing.status_code == 404, missing.text
    conforms(ANTHROPIC_ERROR, missing.json(), "the error for an unknown model")
