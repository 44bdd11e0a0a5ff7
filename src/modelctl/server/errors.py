"""Errors over HTTP: one status and code per error kind, in the format each API's clients read.

    /v1/messages  Anthropic: {"type": "error", "error": {"type", "message"}}
    /v1/*      OpenAI: {"error": {"message", "type", "param", "code"}}
    /api/v1/*  modelctl: {"error": {"code", "message", "hint"}}
    /api/*     Ollama: {"error": "message"}

Bad input is a 4xx with a message that says what to fix; a 5xx means a backend or the machine
failed (502, 503), or a bug in modelctl (500).
"""

import logging
import secrets
from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from modelctl.record import errors

log = logging.getLogger("modelctl.server")

# (error class, HTTP status, code), most specific first
_TABLE: tuple[tuple[type[BaseException], int, str], ...] = (
    (errors.ModelNotFound, 404, "model_not_found"),
    (errors.NotInstalled, 404, "model_not_installed"),
    (errors.NotFound, 404, "not_found"),
    (errors.Conflict, 409, "conflict"),
    (errors.InsufficientMemory, 503, "insufficient_memory"),
    (errors.Busy, 503, "busy"),
    (errors.ClientGone, 499, "client_gone"),  # nobody reads it: for the log's sake
    (errors.NotSupported, 400, "not_supported"),
    (errors.UnsafePath, 400, "unsafe_path"),
    (errors.WorkerFailed, 502, "worker_failed"),
    (errors.LoadFailed, 502, "load_failed"),
    (errors.BackendError, 502, "backend_error"),
    (errors.StoreError, 503, "store_error"),
    (errors.ImportFailed, 400, "import_failed"),
    (errors.InvalidQuery, 400, "invalid_query"),
    (errors.ModelctlError, 400, "invalid_request"),
)


def classify(exc: BaseException) -> tuple[int, str]:
    if isinstance(exc, errors.Unauthorized):
        return 401, "unauthorized"
    for kind, status, code in _TABLE:
        if isinstance(exc, kind):
            return status, code
    return 500, "internal_error"


# Anthropic's error types, by status
_ANTHROPIC = {
    401: "authentication_error", 403: "permission_error", 404: "not_found_error",
    413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error",
}  # fmt: skip


def body(path: str, status: int, code: str, message: str, hint: str | None) -> dict[str, Any]:
    """The error body the API under `path` speaks."""
    if path.startswith("/v1/messages"):
        kind = _ANTHROPIC.get(status, "invalid_request_error" if status < 500 else "api_error")
        text = f"{message} ({hint})" if hint else message
        return {"type": "error", "error": {"type": kind, "message": text}}
    if path.startswith("/v1/") or path == "/v1":
        kind = {
            401: "authentication_error", 404: "invalid_request_error", 409: "invalid_request_error",
        }.get(status, "invalid_request_error" if status < 500 else "server_error")  # fmt: skip
        text = f"{message} ({hint})" if hint else message
        return {"error": {"message": text, "type": kind, "param": None, "code": code}}
    if path.startswith("/api/") and not path.startswith("/api/v1"):
        return {"error": f"{message} ({hint})" if hint else message}
    return {"error": {"code": code, "message": message, "hint": hint}}


def respond(
    request: Request,
    status: int,
    code: str,
    message: str,
    hint: str | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    if code == "insufficient_memory":
        headers = {"x-should-retry": "false"}  # a retry gets the same answer
    if status == 401:
        headers = {"www-authenticate": "Bearer"}
    return JSONResponse(
        body(request.url.path, status, code, message, hint), status_code=status, headers=headers
    )


async def modelctl_error(request: Request, exc: Exception) -> JSONResponse:
    status, code = classify(exc)
    message = getattr(exc, "message", None) or str(exc)
    retry = getattr(exc, "retry_after", None)  # a busy model: when to come back
    headers = {"retry-after": str(retry)} if retry is not None else None
    return respond(request, status, code, message, getattr(exc, "hint", None), headers)


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """A request body or parameter that does not validate: 400 (422 on the management API),
    naming the first field that is wrong."""
    problems = exc.errors() if isinstance(exc, RequestValidationError) else []
    first = problems[0] if problems else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "request"
    message = f"{where}: {first.get('msg', 'invalid')}"
    if len(problems) > 1:
        message += f" (and {len(problems) - 1} more)"
    status = 422 if request.url.path.startswith("/api/v1") else 400
    return respond(request, status, "invalid_request", message)


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return respond(request, exc.status_code, code, str(exc.detail))


async def unexpected(request: Request, exc: Exception) -> JSONResponse:
    """A bug: the client gets an id and a generic message; the details go to the log only
    (an exception's text can carry paths, a prompt, or a library's internals)."""
    incident = secrets.token_hex(6)
    log.exception("internal error %s on %s %s", incident, request.method, request.url.path)
    return respond(
        request, 500, "internal_error",
        f"internal error {incident}: a bug in modelctl; the server's log has the details",
        "report it with this id",
    )  # fmt: skip


def install(app: Any) -> None:
    app.add_exception_handler(errors.ModelctlError, modelctl_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(Exception, unexpected)
