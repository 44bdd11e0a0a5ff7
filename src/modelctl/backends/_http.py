"""The one seam between HTTP backends and the network: JSON in and out, errors in words."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from typing import Any, ClassVar

from modelctl.backends import Backend, BackendError
from modelctl.record import errors
from modelctl.record.errors import Busy, ModelctlError


def refused(backend: str, status: int, text: str, reason: str | None) -> ModelctlError:
    """An HTTP error answer, in words: the server's own message when it sent one. A modelctl
    server (a worker, another gateway) names its error's class: the same error is raised here,
    so that a prompt too long for a worker's model is still the client's 400."""
    try:
        body = json.loads(text)
        detail = body.get("error") if isinstance(body, dict) else None
        if isinstance(detail, dict):
            kind = getattr(errors, str(detail.get("modelctl_error")), None)
            if (
                isinstance(kind, type)
                and issubclass(kind, ModelctlError)
                and kind.__init__ in (ModelctlError.__init__, Busy.__init__)
            ):
                return kind(str(detail.get("message")), hint=detail.get("hint"))
            detail = detail.get("message") or json.dumps(detail)
    except ValueError:
        detail = text[:200]
    hint = "check the API key" if status in (401, 403) else None
    return BackendError(f"{backend} answered {status}: {detail or reason}", hint=hint)


def parse_line(backend: str, text: str) -> dict[str, Any]:
    try:
        return json.loads(text)
    except ValueError:
        raise BackendError(f"{backend} sent a broken line: {text[:80]!r}") from None


def _well_formed(backend: str, data: bytes) -> bytes:
    from pydantic_core import from_json

    try:
        from_json(data)
    except ValueError:
        raise BackendError(f"{backend} sent a broken line: {data[:80]!r}") from None
    return data


def _finishes(event: dict[str, Any]) -> bool:
    """Whether a streamed chunk says the answer is complete: a finish reason (OpenAI), or the
    end of the message (Anthropic's `message_stop`)."""
    if event.get("type") == "message_stop":
        return True
    choices = event.get("choices")
    return isinstance(choices, list) and any(
        isinstance(c, dict) and c.get("finish_reason") for c in choices
    )


class Relayed:
    """One OpenAI stream chunk as its server sent it (the JSON after `data:`), passed on byte
    for byte: the gateway relays a worker's stream without decoding and encoding every chunk
    again. What the gateway must know of it is read from the bytes; `event` decodes it."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    @property
    def event(self) -> dict[str, Any]:
        event = json.loads(self.data)
        return event if isinstance(event, dict) else {}

    @property
    def finishes(self) -> bool:
        """It carries a finish reason (`"finish_reason": null` does not count)."""
        return _FINISHED.search(self.data) is not None

    @property
    def usage(self) -> dict[str, Any] | None:
        """Its usage, decoded only where it has one (the last chunk)."""
        if _USAGE.search(self.data) is None:
            return None
        usage = self.event.get("usage")
        return usage if isinstance(usage, dict) else None

    @property
    def usage_only(self) -> bool:
        """It is a stream's usage chunk: no choices, a usage."""
        return _NO_CHOICES.search(self.data) is not None and _USAGE.search(self.data) is not None

    def with_null_usage(self) -> Relayed:
        """The same chunk with `"usage": null`, as OpenAI sends every chunk but the last of a
        stream asked for its usage (a chunk that has a usage key keeps it)."""
        if _USAGE_KEY.search(self.data) or not self.data.startswith(b"{") or self.data == b"{}":
            return self
        return Relayed(b'{"usage":null,' + self.data[1:])

    @property
    def says_something(self) -> bool:
        """It carries generated text or a tool call (a token, for the meter)."""
        return _SAYS.search(self.data) is not None


# Keys read from a relayed chunk's bytes; a key's quotes inside a string value are escaped
# (`\"content\"`), so these match keys only.
_FINISHED = re.compile(rb'"finish_reason"\s*:\s*"')
_USAGE = re.compile(rb'"usage"\s*:\s*\{')
_USAGE_KEY = re.compile(rb'"usage"\s*:')
_NO_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_SAYS = re.compile(rb'"(?:content|text)"\s*:\s*"(?!")|"tool_calls"\s*:\s*\[')


def usage_only(chunk: Any) -> bool:
    """A stream's usage chunk, as OpenAI ends a stream asked for it: no choices, a usage."""
    if type(chunk) is Relayed:
        return chunk.usage_only
    return isinstance(chunk, dict) and not chunk.get("choices") and bool(chunk.get("usage"))


def cut_short(backend: str, base_url: str) -> BackendError:
    """A stream that ended with neither `[DONE]` nor a finish reason: the answer is cut off."""
    return BackendError(
        f"{backend} at {base_url} ended its stream before the answer was complete",
        hint="check the server's log; the request can be sent again",
    )


class Http:
    """A small JSON client for one backend at one base URL (httpx underneath, loaded on use)."""

    def __init__(
        self,
        backend: str,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float | None = 10,
        read_timeout: float | None = None,
    ) -> None:
        import httpx

        self.backend, self.base_url = backend, base_url.rstrip("/")
        # `timeout` to connect and for short calls; `read_timeout`, where given, for the
        # silence a backend may keep inside an answer (a generation, a stream between chunks)
        self._read = httpx.Timeout(timeout, read=read_timeout) if read_timeout else None
        self._client = httpx.Client(base_url=self.base_url, headers=headers or {}, timeout=timeout)

    def close(self) -> None:
        self._client.close()

    def _fail(self, exc: Exception) -> BackendError:
        import httpx

        if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout):
            return BackendError(
                f"cannot reach {self.backend} at {self.base_url}",
                hint=f"is {self.backend} running, and is its URL right? (modelctl config)",
            )
        if isinstance(exc, httpx.TimeoutException):
            return BackendError(
                f"{self.backend} at {self.base_url} did not answer in time",
                hint="raise http_timeout or read_timeout, or check the server",
            )
        if isinstance(exc, httpx.RemoteProtocolError | httpx.ReadError):
            return BackendError(f"{self.backend} at {self.base_url} broke off its answer ({exc})")
        return BackendError(f"{self.backend} at {self.base_url}: {exc}")

    def _check(self, response: Any) -> None:
        if response.status_code >= 400:
            raise refused(self.backend, response.status_code, response.text, response.reason_phrase)

    def request(self, method: str, path: str, body: Any = None, *, answer: bool = False) -> Any:
        """One JSON call; `answer` marks a call that generates (given `read_timeout`)."""
        import httpx

        timeout = self._read if answer and self._read else httpx.USE_CLIENT_DEFAULT
        try:
            response = self._client.request(method, path, json=body, timeout=timeout)
        except httpx.HTTPError as exc:
            raise self._fail(exc) from None
        self._check(response)
        if not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise BackendError(
                f"{self.backend} sent something that is not JSON from {path}"
            ) from None

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any = None, *, answer: bool = False) -> Any:
        """A POST; `answer`: one that generates or loads, which may take `read_timeout`."""
        return self.request("POST", path, body, answer=answer)

    def _lines(self, method: str, path: str, body: Any) -> Iterator[str]:
        """A streamed response's lines as they arrive; errors in words, as for any request."""
        import httpx

        try:
            with self._client.stream(method, path, json=body, timeout=self._read) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise self._fail(exc) from None

    def _parse(self, text: str) -> dict[str, Any]:
        return parse_line(self.backend, text)

    def stream_json_lines(
        self, method: str, path: str, body: Any = None
    ) -> Iterator[dict[str, Any]]:
        """Newline-delimited JSON objects as they arrive (Ollama's streaming format)."""
        for line in self._lines(method, path, body):
            if line.strip():
                yield self._parse(line)

    def stream_until_done(
        self, method: str, path: str, body: Any = None
    ) -> Iterator[dict[str, Any]]:
        """An answer streamed as NDJSON (Ollama's): objects until one says `done: true`; a
        stream that ends before that was cut short, and says so."""
        for event in self.stream_json_lines(method, path, body):
            yield event
            if event.get("done"):
                return
        raise cut_short(self.backend, self.base_url)

    def stream_sse(self, method: str, path: str, body: Any = None) -> Iterator[dict[str, Any]]:
        """Server-sent events' `data:` objects until `[DONE]` (the OpenAI streaming format)."""
        finished = False
        for line in self._lines(method, path, body):
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            event = self._parse(data)
            finished = finished or _finishes(event)
            yield event
        if not finished:
            raise cut_short(self.backend, self.base_url)


class AsyncHttp:
    """The async twin of `Http`, for the gateway (aiohttp: several times httpx's async speed
    on a proxy's hot path). One session per event loop, made on first use."""

    def __init__(
        self,
        backend: str,
        base_url: str,
        *,
        headers: dict[str, str],
        timeout: float,
        read_timeout: float | None = 600,
    ) -> None:
        self.backend, self.base_url = backend, base_url.rstrip("/")
        self.headers, self.timeout, self.read_timeout = headers, timeout, read_timeout
        self._sessions: dict[int, Any] = {}

    def _session(self) -> Any:
        import asyncio

        import aiohttp

        loop = asyncio.get_running_loop()
        session = self._sessions.get(id(loop))
        if session is None or session.closed:
            timeout = aiohttp.ClientTimeout(
                total=None, sock_connect=self.timeout, sock_read=self.read_timeout
            )
            session = aiohttp.ClientSession(
                headers=self.headers, timeout=timeout, connector=aiohttp.TCPConnector(limit=0)
            )
            self._sessions[id(loop)] = session
        return session

    def _fail(self, exc: Exception) -> BackendError:
        import asyncio

        import aiohttp

        if isinstance(exc, aiohttp.ClientConnectorError):
            return BackendError(
                f"cannot reach {self.backend} at {self.base_url}",
                hint=f"is {self.backend} running, and is its URL right? (modelctl config)",
            )
        if isinstance(exc, asyncio.TimeoutError):
            return BackendError(
                f"{self.backend} at {self.base_url} did not answer in time",
                hint="raise http_timeout or read_timeout, or check the server",
            )
        if isinstance(exc, aiohttp.ClientPayloadError | aiohttp.ServerDisconnectedError):
            return BackendError(f"{self.backend} at {self.base_url} broke off its answer ({exc})")
        return BackendError(f"{self.backend} at {self.base_url}: {exc}")

    async def post(self, path: str, body: Any) -> Any:
        import aiohttp

        try:
            async with self._session().post(self.base_url + path, json=body) as response:
                text = await response.text()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._fail(exc) from None
        if response.status >= 400:
            raise refused(self.backend, response.status, text, response.reason)
        return parse_line(self.backend, text) if text else None

    async def stream_sse(
        self, path: str, body: Any, *, relay: bool = False
    ) -> AsyncIterator[dict[str, Any] | Relayed]:
        """Server-sent events' `data:` objects until `[DONE]`; with `relay`, each as the bytes
        the server sent (`Relayed`), not decoded."""
        import aiohttp

        try:
            async with self._session().post(self.base_url + path, json=body) as response:
                if response.status >= 400:
                    text = await response.text()
                    raise refused(self.backend, response.status, text, response.reason)
                finished = False
                async for raw in response.content:
                    line = raw.strip()
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        return
                    if relay:  # checked well-formed (a Rust parser: a tenth of decoding and
                        # encoding again), never passed on broken
                        relayed = Relayed(_well_formed(self.backend, data))
                        finished = finished or relayed.finishes
                        yield relayed
                        continue
                    event = parse_line(self.backend, data.decode())
                    finished = finished or _finishes(event)
                    yield event
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise self._fail(exc) from None
        if not finished:
            raise cut_short(self.backend, self.base_url)

    async def aclose(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()


class HttpBackend(Backend):
    """A backend behind an HTTP API: its URL from a setting, one client made on first use."""

    requires = ("httpx",)
    install_hint = "pip install httpx"
    url_setting: ClassVar[str]

    def __init__(self, settings: Any, *, instance: str | None = None, base_url: str | None = None):
        super().__init__(settings, instance=instance)
        self.url: str = base_url or getattr(settings, self.url_setting)
        self._http: Http | None = None
        self._ahttp: AsyncHttp | None = None

    def headers(self) -> dict[str, str]:
        """Headers every request carries (keys, API versions)."""
        return {}

    @property
    def http(self) -> Http:
        if self._http is None:
            self._http = Http(
                self.instance, self.url, headers=self.headers(), timeout=self.settings.http_timeout,
                read_timeout=self.settings.read_timeout,
            )  # fmt: skip
        return self._http

    @property
    def ahttp(self) -> AsyncHttp:
        if self._ahttp is None:
            self._ahttp = AsyncHttp(
                self.instance, self.url, headers=self.headers(), timeout=self.settings.http_timeout,
                read_timeout=self.settings.read_timeout,
            )  # fmt: skip
        return self._ahttp

    async def aclose(self) -> None:
        if self._ahttp is not None:
            await self._ahttp.aclose()
