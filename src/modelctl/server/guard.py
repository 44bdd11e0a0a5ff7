"""What keeps a web page from driving the server (the hole Ollama closed in CVE-2024-28224).

Pure ASGI, before any route runs, with or without an API key:
- Host: a server bound to loopback answers only to loopback names (`localhost`, `*.localhost`,
  loopback addresses) and the configured `hosts`; a page that rebinds its own name to 127.0.0.1
  (DNS rebinding) is refused. A server bound beyond loopback needs an API key already, and
  answers to any name.
- Origin: a request a browser sends from another origin is refused unless that origin is
  configured (`origins`, `MODELCTL_ORIGINS`, patterns such as `http://app.local:*`); the
  server's own origin is always allowed. CORS headers go to allowed origins only.
- Content-Type: a body must be `application/json`. The bodies a page can send without asking
  first (text/plain, form encoding) are refused with 415: what real clients send (the OpenAI
  and Ollama packages, `curl -H 'Content-Type: application/json'`) passes.
- Size: a body past `max_body` bytes gets 413, by its Content-Length before it is read, or as
  it arrives when it is sent in chunks.
- The one exception to the last two: an upload of a model's weights (`POST /api/blobs/…`,
  Ollama's) is bytes of any size, checked against its digest as it is written to disk; with an
  Origin header (a web page's), it gets the same checks as any other request.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import json
from collections.abc import Iterable
from typing import Any

from modelctl.server.errors import body

__all__ = ["Guard", "host_allowed"]

_CORS_METHODS = b"GET, POST, PUT, PATCH, DELETE, OPTIONS, HEAD"
_CORS_HEADERS = b"Authorization, Content-Type, X-Api-Key, X-Modelctl-Client, User-Agent"


def _is_loopback(name: str) -> bool:
    """A name that can only mean this machine: localhost, a loopback or unspecified address
    (0.0.0.0 reaches loopback), an IPv4-mapped loopback address."""
    name = name.strip("[]").lower()
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or address.is_unspecified or bool(mapped and mapped.is_loopback)


def _bound_here(bound: str) -> bool:
    """A bind address that only this machine reaches (0.0.0.0 and :: reach every machine)."""
    name = bound.strip("[]").lower()
    try:
        return name == "localhost" or ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _hostname(netloc: str) -> str:
    """`example.com:8765` → `example.com`; `[::1]:8765` → `::1`."""
    if netloc.startswith("["):
        return netloc[1 : netloc.find("]")] if "]" in netloc else netloc
    return netloc.rsplit(":", 1)[0] if netloc.count(":") == 1 else netloc


def host_allowed(host_header: str, *, bound: str, extra: Iterable[str] = ()) -> bool:
    """Whether a request whose Host is `host_header` may be answered by a server bound to
    `bound` (a loopback bind answers loopback names and `extra` only)."""
    if not _bound_here(bound):
        return True  # reachable beyond this machine, behind an API key: any name
    name = _hostname(host_header.strip()).lower()
    named = {_hostname(e.strip()).lower() for e in extra}  # a configured name, with a port or not
    return bool(name) and (_is_loopback(name) or name in named)


class Guard:
    """The ASGI middleware: Host, Origin and Content-Type checks, and CORS for allowed
    origins."""

    def __init__(
        self,
        app: Any,
        *,
        bound: str,
        hosts: Iterable[str] = (),
        origins: Iterable[str] = (),
        max_body: int = 64 << 20,
    ) -> None:
        self.app, self.bound, self.max_body = app, bound, max_body
        self.hosts = tuple(hosts)
        self.origins = tuple(o.rstrip("/").lower() for o in origins)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.lower(): v for k, v in scope["headers"]}
        path = scope.get("path", "")
        host = headers.get(b"host", b"").decode("latin-1")
        if not host_allowed(host, bound=self.bound, extra=self.hosts):
            return await _refuse(
                send, path, 403, "forbidden_host",
                f"this server does not answer to the host name {host[:100]!r}",
                "open it as http://127.0.0.1:PORT, or add the name to the hosts setting "
                "(MODELCTL_HOSTS)",
            )  # fmt: skip
        origin = headers.get(b"origin", b"").decode("latin-1").rstrip("/").lower()
        allowed_origin = not origin or self._origin_allowed(origin, host)
        if not allowed_origin:
            return await _refuse(
                send, path, 403, "forbidden_origin",
                f"web pages from {origin[:100]!r} may not use this server",
                "add the origin to the origins setting (MODELCTL_ORIGINS) to allow it",
            )  # fmt: skip
        method = scope["method"]
        if method == "OPTIONS" and origin and b"access-control-request-method" in headers:
            return await _preflight(send, origin)
        if method == "POST" and path.startswith(BLOBS) and not origin:
            # a model's weights (Ollama's blob upload): bytes of any size, streamed to disk and
            # checked against their digest; never from a web page (a page sends an Origin)
            return await self.app(scope, receive, send)
        if method in ("POST", "PUT", "PATCH", "DELETE") and _has_body(headers):
            kind = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
            if kind != b"application/json":
                shown = kind.decode("latin-1")[:60] or "none"
                return await _refuse(
                    send, path, 415, "unsupported_media_type",
                    f"the body must be JSON sent as application/json, not {shown}",
                    "send Content-Type: application/json; "
                    "with curl, add -H 'Content-Type: application/json'",
                )  # fmt: skip
        length = headers.get(b"content-length")
        if length is not None:
            if not length.strip().isdigit():
                message = "the Content-Length header is not a number"
                return await _refuse(send, path, 400, "invalid_request", message, "send one")
            if int(length) > self.max_body:
                return await _refuse(send, path, 413, "body_too_large", *self._too_large())
            if not origin:  # the common case: nothing to count, nothing to add
                return await self.app(scope, receive, send)
        elif not origin and b"transfer-encoding" not in headers:
            return await self.app(scope, receive, send)
        started = over = False
        received = 0

        async def counted_receive() -> Any:
            nonlocal received, over
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:  # sent in chunks: counted as it arrives
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Any) -> None:
            nonlocal started
            if over and not started:
                return  # the app's answer to a cut-off body: the 413 below answers instead
            if message["type"] == "http.response.start":
                started = True
                if origin:
                    extra = [(b"access-control-allow-origin", origin.encode("latin-1")),
                             (b"vary", b"Origin")]  # fmt: skip
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        try:
            await self.app(scope, counted_receive, guarded_send)
        except Exception:
            if not over:
                raise
        if over and not started:
            await _refuse(send, path, 413, "body_too_large", *self._too_large())

    def _too_large(self) -> tuple[str, str]:
        return (
            f"the request body is larger than {self.max_body:,} bytes",
            "send less, or raise the max_body setting (MODELCTL_MAX_BODY)",
        )

    def _origin_allowed(self, origin: str, host: str) -> bool:
        if origin == "null":  # sandboxed frames, file:// pages: only when listed as such
            return "null" in self.origins
        scheme, _, netloc = origin.partition("://")
        if scheme in ("http", "https") and netloc == host.lower():
            return True  # the server's own pages
        return any(fnmatch.fnmatchcase(origin, pattern) for pattern in self.origins)


BLOBS = "/api/blobs/"


def _has_body(headers: dict[bytes, bytes]) -> bool:
    length = headers.get(b"content-length")
    if length is not None:
        return length.strip() not in (b"", b"0")
    return b"transfer-encoding" in headers or b"content-type" in headers


async def _refuse(send: Any, path: str, status: int, code: str, message: str, hint: str) -> None:
    payload = json.dumps(body(path, status, code, message, hint)).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
    ]})  # fmt: skip
    await send({"type": "http.response.body", "body": payload})


async def _preflight(send: Any, origin: str) -> None:
    await send({"type": "http.response.start", "status": 204, "headers": [
        (b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin"),
        (b"access-control-allow-methods", _CORS_METHODS),
        (b"access-control-allow-headers", _CORS_HEADERS),
        (b"access-control-max-age", b"600"),
    ]})  # fmt: skip
    await send({"type": "http.response.body", "body": b""})
