"""Anthropic: the models API (`/v1/models`) and the Messages API (`/v1/messages`), with
ANTHROPIC_API_KEY. Requests and answers are translated to and from OpenAI's shapes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from modelctl.backends import BackendError, BackendStatus, Handle, response
from modelctl.backends._http import HttpBackend
from modelctl.record.errors import InvalidRequest

if TYPE_CHECKING:
    from modelctl.record.model import Model

API_VERSION = "2023-06-01"


class AnthropicBackend(HttpBackend):
    name = "anthropic"
    url_setting = "anthropic_base_url"
    local = False
    runtimes = ("Anthropic Messages API",)
    providers = ("anthropic",)

    def headers(self) -> dict[str, str]:
        headers = {"anthropic-version": API_VERSION}
        if self.settings.anthropic_api_key:
            headers["x-api-key"] = self.settings.anthropic_api_key
        return headers

    def _list(self) -> list[dict[str, Any]]:
        if not self.settings.anthropic_api_key:
            raise BackendError("anthropic needs an API key", hint="set ANTHROPIC_API_KEY")
        models, after = [], None
        while True:  # the list is paged: has_more and last_id
            page = self.http.get("/v1/models?limit=100" + (f"&after_id={after}" if after else ""))
            models += page.get("data") or []
            if not page.get("has_more"):
                return models
            after = page.get("last_id")

    def status(self) -> BackendStatus:
        try:
            count = len(self._list())
        except BackendError as exc:
            return BackendStatus(self.name, False, url=self.url, error=exc.message, hint=exc.hint)
        return BackendStatus(self.name, True, url=self.url, models=count)

    def discover(self) -> list[Model]:
        from modelctl.record.model import Model

        return [
            Model.from_dict(
                {
                    "id": f"anthropic/{entry['id']}",
                    "name": entry.get("display_name"),
                    "backend": self.name,
                    "refs": {self.name: entry["id"]},
                    "tasks": ["chat", "code", "vision"],
                    "capabilities": ["chat", "streaming", "tools", "vision"],
                    "installed": True,
                },
                context=f"anthropic model {entry.get('id')!r}",
            )
            for entry in self._list()
        ]

    def server(self) -> tuple[str, str, str] | None:
        """Anthropic's OpenAI-compatible endpoint, when there is a key."""
        key = self.settings.anthropic_api_key
        host = self.url.rstrip("/")
        return (f"{host}/v1", host, key) if key else None

    def load(self, model: Model, **options: Any) -> Handle:
        """ "Loading" a Claude model checks the key and that the model is offered."""
        return AnthropicHandle(self, model)


_STOP = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
         "tool_use": "tool_calls", "refusal": "content_filter"}  # fmt: skip
DEFAULT_MAX_TOKENS = 4096  # the Messages API requires max_tokens; OpenAI's does not


class AnthropicHandle(Handle):
    """A Claude model through the Messages API, answering in OpenAI's shapes (chat only)."""

    device = "remote"
    parallel = None  # the API queues its own requests

    def __init__(self, backend: AnthropicBackend, model: Model) -> None:
        self.model_id = model.id
        self.name = model.ref_for(backend.name)
        offered = {m["id"] for m in backend._list()}
        if self.name not in offered:
            raise BackendError(
                f"anthropic does not offer {self.name!r}", hint="modelctl sync --backend anthropic"
            )
        self.http, self.ahttp = backend.http, backend.ahttp

    def request(self, messages: list[dict[str, Any]], stream: bool, options: dict[str, Any]):
        """The Messages API body for OpenAI-shaped messages and options."""
        system = [_text(m.get("content")) for m in messages if m.get("role") == "system"]
        turns = [
            {"role": m["role"], "content": _content(m.get("content"))}
            for m in messages
            if m.get("role") in ("user", "assistant")
        ]
        if not turns:
            raise InvalidRequest("a chat needs at least one user message")
        body: dict[str, Any] = {
            "model": self.name,
            "messages": turns,
            "max_tokens": options.get("max_tokens") or DEFAULT_MAX_TOKENS,
            "stream": stream,
        }
        if system:
            body["system"] = "\n\n".join(system)
        for key in ("temperature", "top_p", "top_k"):
            if options.get(key) is not None:
                body[key] = options[key]
        stop = options.get("stop")
        if stop:
            body["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
        return body

    def answer(self, message: dict[str, Any]) -> dict[str, Any]:
        blocks = message.get("content") or []
        text = "".join(b.get("text", "") for b in blocks if b.get("type") == "text")
        usage = message.get("usage") or {}
        counts = {"prompt_tokens": usage.get("input_tokens", 0),
                  "completion_tokens": usage.get("output_tokens", 0)}  # fmt: skip
        counts["total_tokens"] = counts["prompt_tokens"] + counts["completion_tokens"]
        choice = {"message": {"role": "assistant", "content": text},
                  "finish_reason": _STOP.get(message.get("stop_reason") or "", "stop")}  # fmt: skip
        return response(self.model_id, "chat.completion", choice, counts)

    def chunk(self, event: dict[str, Any], state: dict[str, int]) -> dict[str, Any] | None:
        """One Messages API stream event as an OpenAI chunk (None for events with no text)."""
        kind = event.get("type")
        if kind == "error":
            error = event.get("error") or {}
            raise BackendError(f"anthropic: {error.get('message') or error.get('type')}")
        if kind == "message_start":
            usage = (event.get("message") or {}).get("usage") or {}
            state["prompt_tokens"] = usage.get("input_tokens", 0)
        elif kind == "content_block_delta" and (event.get("delta") or {}).get("text"):
            delta = {"content": event["delta"]["text"]}
            choice = {"delta": delta, "finish_reason": None}
            return response(self.model_id, "chat.completion.chunk", choice)
        elif kind == "message_delta":
            state["completion_tokens"] = (event.get("usage") or {}).get("output_tokens", 0)
            reason = _STOP.get((event.get("delta") or {}).get("stop_reason") or "", "stop")
            usage = {**state, "total_tokens": sum(state.values())}
            return response(self.model_id, "chat.completion.chunk",
                            {"delta": {}, "finish_reason": reason}, usage)  # fmt: skip
        return None

    def chat(self, messages: list[dict[str, Any]], *, stream: bool = False, **options: Any) -> Any:
        body = self.request(messages, stream, options)
        if not stream:
            return self.answer(self.http.post("/v1/messages", body, answer=True))
        return self._stream(self.http.stream_sse("POST", "/v1/messages", body))

    def _stream(self, events: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        state: dict[str, int] = {}
        for event in events:
            chunk = self.chunk(event, state)
            if chunk is not None:
                yield chunk

    async def achat(
        self, messages: list[dict[str, Any]], *, stream: bool = False, **options: Any
    ) -> Any:
        body = self.request(messages, stream, options)
        if not stream:
            return self.answer(await self.ahttp.post("/v1/messages", body))
        return self._astream(self.ahttp.stream_sse("/v1/messages", body))

    async def _astream(self, events: AsyncIterator[dict[str, Any]]) -> AsyncIterator[Any]:
        state: dict[str, int] = {}
        async for event in events:
            chunk = self.chunk(event, state)
            if chunk is not None:
                yield chunk


def _text(content: Any) -> str:
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return content or ""


def _content(content: Any) -> Any:
    """OpenAI content (text, or parts) as Anthropic's: text parts and images by URL."""
    if not isinstance(content, list):
        return content or ""
    blocks = []
    for part in content:
        if part.get("type") == "text":
            blocks.append({"type": "text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            url = (part.get("image_url") or {}).get("url", "")
            blocks.append({"type": "image", "source": {"type": "url", "url": url}})
    return blocks
