"""The OpenAI-compatible wire: a handle whose requests pass through in OpenAI's own shapes,
shared by every backend whose server speaks it (OpenAI and compatible servers, LM Studio)."""

from __future__ import annotations

from typing import Any

from modelctl.backends import Handle
from modelctl.backends._http import AsyncHttp, Http

__all__ = ["OpenAIWireHandle"]


class OpenAIWireHandle(Handle):
    """A model behind an OpenAI-compatible API (`self.http`, `self.ahttp`, `self.name`, set by
    the subclass): requests and answers pass through in OpenAI's own shapes."""

    http: Http
    ahttp: AsyncHttp
    name: str  # the name the server knows the model by
    parallel = None  # the server queues its own requests

    def chat(self, messages: list[dict[str, Any]], *, stream: bool = False, **options: Any) -> Any:
        body = {"model": self.name, "messages": messages, "stream": stream, **options}
        if stream:
            return self.http.stream_sse("POST", "/chat/completions", body)
        return self.http.post("/chat/completions", body, answer=True)

    def complete(self, prompt: str, *, stream: bool = False, **options: Any) -> Any:
        body = {"model": self.name, "prompt": prompt, "stream": stream, **options}
        if stream:
            return self.http.stream_sse("POST", "/completions", body)
        return self.http.post("/completions", body, answer=True)

    def embed(self, inputs: list[str]) -> list[list[float]]:
        return _vectors(
            self.http.post("/embeddings", {"model": self.name, "input": inputs}, answer=True)
        )

    # The gateway's path: the same requests, awaited (no worker thread per request).

    relays = True  # `relay=True`: a stream's chunks come as the server's bytes (`Relayed`)
    gives_logprobs = True  # OpenAI's API gives them (a worker says whether its runtime does)

    async def achat(
        self,
        messages: list[dict[str, Any]],
        *,
        stream: bool = False,
        relay: bool = False,
        **options: Any,
    ) -> Any:
        body = {"model": self.name, "messages": messages, "stream": stream, **options}
        if stream:
            return self.ahttp.stream_sse("/chat/completions", body, relay=relay)
        return await self.ahttp.post("/chat/completions", body)

    async def acomplete(
        self, prompt: str, *, stream: bool = False, relay: bool = False, **options: Any
    ) -> Any:
        body = {"model": self.name, "prompt": prompt, "stream": stream, **options}
        if stream:
            return self.ahttp.stream_sse("/completions", body, relay=relay)
        return await self.ahttp.post("/completions", body)

    async def aembed(self, inputs: list[str]) -> list[list[float]]:
        return _vectors(await self.ahttp.post("/embeddings", {"model": self.name, "input": inputs}))


def _vectors(answer: Any) -> list[list[float]]:
    data = (answer or {}).get("data") or []
    return [item["embedding"] for item in sorted(data, key=lambda d: d.get("index", 0))]
