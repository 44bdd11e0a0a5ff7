"""The one seam between HTTP backends and the network: JSON in and out, errors in words."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any, ClassVar

from modelctl.backends import Backend, BackendError


class Http:
    """A small JSON client for one backend at one base URL (httpx underneath, loaded on use)."""

    def __init__(
        self,
        backend: str,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> None:
        import httpx

        self.backend, self.base_url = backend, base_url.rstrip("/")
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
                hint="raise http_timeout, or check the server",
            )
        return BackendError(f"{self.backend} at {self.base_url}: {exc}")

    def _check(self, response: Any) -> None:
        if response.status_code < 400:
            return
        try:
            body = response.json()
            detail = body.get("error") if isinstance(body, dict) else None
            if isinstance(detail, dict):
                detail = detail.get("message") or json.dumps(detail)
        except ValueError:
            detail = response.text[:200]
        hint = "check the API key" if response.status_code in (401, 403) else None
        raise BackendError(
            f"{self.backend} answered {response.status_code}: {detail or response.reason_phrase}",
            hint=hint,
        )

    def request(self, method: str, path: str, body: Any = None) -> Any:
        import httpx

        try:
            response = self._client.request(method, path, json=body)
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

    def post(self, path: str, body: Any = None) -> Any:
        return self.request("POST", path, body)

    def _lines(self, method: str, path: str, body: Any) -> Iterator[str]:
        """A streamed response's lines as they arrive; errors in words, as for any request."""
        import httpx

        try:
            with self._client.stream(method, path, json=body, timeout=None) as response:
                if response.status_code >= 400:
                    response.read()
                    self._check(response)
                yield from response.iter_lines()
        except httpx.HTTPError as exc:
            raise self._fail(exc) from None

    def _parse(self, text: str) -> dict[str, Any]:
        try:
            return json.loads(text)
        except ValueError:
            raise BackendError(f"{self.backend} sent a broken line: {text[:80]!r}") from None

    def stream_json_lines(
        self, method: str, path: str, body: Any = None
    ) -> Iterator[dict[str, Any]]:
        """Newline-delimited JSON objects as they arrive (Ollama's streaming format)."""
        for line in self._lines(method, path, body):
            if line.strip():
                yield self._parse(line)

    def stream_sse(self, method: str, path: str, body: Any = None) -> Iterator[dict[str, Any]]:
        """Server-sent events' `data:` objects until `[DONE]` (the OpenAI streaming format)."""
        for line in self._lines(method, path, body):
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                return
            yield self._parse(data)


class HttpBackend(Backend):
    """A backend behind an HTTP API: its URL from a setting, one client made on first use."""

    requires = ("httpx",)
    install_hint = "pip install httpx"
    url_setting: ClassVar[str]

    def __init__(self, settings: Any, *, instance: str | None = None, base_url: str | None = None):
        super().__init__(settings, instance=instance)
        self.url: str = base_url or getattr(settings, self.url_setting)
        self._http: Http | None = None

    def headers(self) -> dict[str, str]:
        """Headers every request carries (keys, API versions)."""
        return {}

    @property
    def http(self) -> Http:
        if self._http is None:
            self._http = Http(
                self.instance, self.url, headers=self.headers(), timeout=self.settings.http_timeout
            )
        return self._http
