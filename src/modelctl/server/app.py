"""The app factory, authentication and `serve`; the routers are imported here, never the
other way round (they share `state.ServerState`)."""

import contextlib
import gc
import ipaddress
import logging
import secrets
import signal
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any

from anyio import to_thread
from fastapi import Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from modelctl import __version__
from modelctl.manager import ModelManager
from modelctl.record.errors import ConfigError, ModelctlError, Unauthorized
from modelctl.server import (
    anthropic_api,
    dashboard,
    errors,
    management,
    ollama_api,
    openai_api,
    responses_api,
)
from modelctl.server.guard import Guard
from modelctl.server.jobs import Jobs
from modelctl.server.metrics import Metrics
from modelctl.server.state import ServerState, state

__all__ = ["check_bind", "create_app", "is_loopback", "serve"]

log = logging.getLogger("modelctl.server")


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, api_key: str | None) -> None:
    """Refuse to listen beyond this machine without a key."""
    if not is_loopback(host) and not api_key:
        raise ConfigError(
            f"refusing to serve on {host} without an API key: anyone who can reach it could use it",
            hint="set MODELCTL_API_KEY, or bind 127.0.0.1",
        )


_bearer = HTTPBearer(auto_error=False, description="MODELCTL_API_KEY, when the server has one")


async def _authenticate(
    request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)
) -> None:
    key = state(request).api_key
    if key is None:
        return
    given = credentials.credentials if credentials else request.headers.get("x-api-key", "")
    if not secrets.compare_digest(given.encode(), key.encode()):
        raise Unauthorized(
            "missing or wrong API key", hint="send Authorization: Bearer $MODELCTL_API_KEY"
        )


def create_app(
    manager: ModelManager,
    *,
    api_key: str | None = None,
    restore: bool = True,
    reaper_interval: float | None = 1.0,
    only: str | None = None,
    host: str = "127.0.0.1",
    hosts: tuple[str, ...] = (),
) -> FastAPI:
    """The server for `manager`: management API, OpenAI- and Ollama-compatible APIs, metrics.

    On start it restores what the last run had loaded (`restore`) and starts the keep-alive
    reaper; on stop it cancels install jobs and unloads every model. `host` is the address it
    is bound to: bound to loopback, it answers only to loopback names and the `hosts` setting's
    (and `hosts`); web pages from other origins than its own and the `origins` setting's are
    refused (see server/guard.py).
    """
    only = manager.registry.resolve(only) if only else None
    if only is not None:  # a single-model server's model is not what the next start restores
        manager.scheduler.persist = None
    ctl = ServerState(
        manager=manager, jobs=Jobs(manager), metrics=Metrics(manager), api_key=api_key, only=only
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        scheduler = manager.scheduler
        await to_thread.run_sync(scheduler.start)  # its own loop, started before it serves
        if only is not None:
            try:
                await to_thread.run_sync(partial(scheduler.load, only, pin=True, keep_alive=-1))
            except ModelctlError as exc:
                log.error("error: cannot serve %s: %s", only, exc)
                raise
        elif restore:
            ctl.restored = await to_thread.run_sync(scheduler.restore, manager.saved_state())
            for model, reason in ctl.restored.items():
                log.warning("could not restore %s: %s", model, reason)
        if reaper_interval:
            await to_thread.run_sync(scheduler.start_reaper, reaper_interval)
        # on a shared database (PostgreSQL), every gateway's events reach every other's
        await to_thread.run_sync(manager.share_events)
        gc.collect()
        gc.freeze()  # what was loaded to start is never garbage: keep the collector off it
        yield
        ctl.jobs.close()
        await to_thread.run_sync(manager.stop_sharing_events)
        await manager.aclose()
        manager.usage.flush()

    app = FastAPI(
        title="modelctl",
        version=__version__,
        summary="One control plane for every AI model: management, OpenAI- and Ollama-compatible "
        "APIs over every model, local or remote.",
        lifespan=lifespan,
        dependencies=[Depends(_authenticate)] if api_key else [],
    )
    app.state.ctl = ctl
    settings = manager.settings
    app.add_middleware(
        Guard, bound=host, hosts=(*settings.hosts, *hosts), origins=settings.origins,
        max_body=settings.max_body,
    )  # fmt: skip
    errors.install(app)
    app.include_router(openai_api.router)  # the hot path first: routes match in order
    app.include_router(anthropic_api.router)
    app.include_router(responses_api.router)
    app.include_router(ollama_api.router)
    app.include_router(management.router)

    dashboard.install(app)  # `/`: the dashboard for a browser, one line for a program

    @app.get("/health", tags=["server"])
    async def health() -> dict[str, Any]:  # on the loop: no worker thread to wait for
        return {"status": "ok", "version": __version__, "uptime": time.time() - ctl.started}

    @app.get("/metrics", response_class=PlainTextResponse, tags=["server"])
    def metrics() -> PlainTextResponse:
        """Prometheus metrics: requests, latency, tokens, cost, loaded models, memory."""
        data, content_type = ctl.metrics.render()
        return PlainTextResponse(data, media_type=content_type)

    return app


def serve(
    manager: ModelManager,
    *,
    host: str = "127.0.0.1",
    port: int = 8765,
    api_key: str | None = None,
    restore: bool = True,
    only: str | None = None,
    log_level: str = "warning",
    announce: Callable[[str], None] | None = None,
) -> None:
    """Run the server until interrupted (uvicorn, one process); `announce` gets its URL once
    it is bound (port 0 picks a free one)."""
    import uvicorn

    check_bind(host, api_key)
    settings = manager.settings
    if settings.workers is None:  # unset: a server runs each local model in a worker
        settings.values["workers"] = True
    sock = listen(host, port)
    app = create_app(manager, api_key=api_key, restore=restore, only=only, host=host)
    if announce is not None:
        shown = f"[{host}]" if ":" in host else host
        announce(f"http://{shown}:{sock.getsockname()[1]}")
    # a stop (Ctrl-C, SIGTERM) stops accepting, lets requests in flight finish for the grace
    # period, then the lifespan's end saves what is loaded and the manager stops the workers
    config = uvicorn.Config(
        app, log_level=log_level, access_log=False, timeout_keep_alive=30,
        timeout_graceful_shutdown=settings.shutdown_grace,
    )  # fmt: skip
    # uvicorn stops cleanly, then raises the signal again once its own handlers are gone:
    # Ctrl-C arrives as KeyboardInterrupt, SIGTERM as Stopped (not the default handler, which
    # would end the process before the manager saves its state and stops the workers)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _stopped)
    try:
        with contextlib.suppress(KeyboardInterrupt, Stopped):
            uvicorn.Server(config).run(sockets=[sock])
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


class Stopped(BaseException):
    """SIGTERM, after the server's graceful stop: the caller closes what is left."""


def _stopped(signum: int, frame: object) -> None:
    raise Stopped


def listen(host: str, port: int) -> socket.socket:
    """The listening socket, bound here so that a port in use is one clear line."""
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise ConfigError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="is another server running there? pick another --port",
        ) from None
    sock.listen(2048)  # connections wait in the backlog until the server accepts
    return sock
