"""`ServerClient`: the management API of a running `modelctl serve`, for the CLI and scripts.

Errors come back as the same ModelctlError kinds the library raises, so the CLI prints one line
and exits with the code the error means; a server that is not running is one of them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from modelctl.record import errors

__all__ = ["ServerClient"]


# HTTP status → the error kind the library would have raised
_KINDS: dict[int, type[errors.ModelctlError]] = {
    400: errors.InvalidRequest,
    401: errors.ConfigError,
    404: errors.NotFound,
    422: errors.InvalidRequest,
    409: errors.Conflict,
    503: errors.InsufficientMemory,
}


class ServerClient:
    """`ServerClient("http://127.0.0.1:8765", api_key=None).call("GET", "/api/v1/loaded")`."""

    def __init__(self, url: str, *, api_key: str | None = None, timeout: float = 600.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout

    @staticmethod
    def quote(model: str) -> str:
        """A model id for a path: `/` and `:` stay as they are, anything else is escaped, and
        so are the dots of a `.` or `..` part (an HTTP client reads those as steps up the path:
        `unload ../loaded` would have unloaded every model)."""
        parts = quote(model, safe="/:@").split("/")
        return "/".join(p.replace(".", "%2E") if p in (".", "..") else p for p in parts)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        try:
            reply = httpx.request(
                method, self.url + path, headers=headers, timeout=self.timeout, **kwargs
            )
        except httpx.TransportError as exc:
            raise errors.ServerUnavailable(
                f"no modelctl server at {self.url} ({type(exc).__name__})",
                hint="start one with `modelctl serve`, or set MODELCTL_SERVER to where it runs",
            ) from None
        if reply.is_success:
            return reply.json() if reply.content else None
        try:
            error = reply.json().get("error") or {}
        except ValueError:
            error = {}
        if not isinstance(error, dict):
            error = {"message": str(error)}
        message = error.get("message") or f"the server answered {reply.status_code}"
        kind = _KINDS.get(reply.status_code, errors.ModelctlError)
        if reply.status_code == 503 and error.get("code") != "insufficient_memory":
            kind = errors.ModelctlError
        if reply.status_code == 401:
            error.setdefault("hint", "set MODELCTL_API_KEY to the server's key")
        raised = kind(message, hint=error.get("hint"))
        if reply.status_code >= 500 and kind is errors.ModelctlError:
            raised.exit_code = 6
        raise raised
