"""What every route shares: the server's state (the manager, install jobs, metrics), how a
route finds it, and the questions several APIs ask of it."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from modelctl.record.errors import ClientGone

T = TypeVar("T")

if TYPE_CHECKING:
    from fastapi import Request

    from modelctl.manager import ModelManager
    from modelctl.server.jobs import Jobs
    from modelctl.server.metrics import Metrics

__all__ = ["ServerState", "chained", "client_name", "state", "usable", "while_connected"]


@dataclass
class ServerState:
    """What every route shares: the manager, install jobs, metrics."""

    manager: ModelManager
    jobs: Jobs
    metrics: Metrics
    api_key: str | None = None
    only: str | None = None  # a single-model server: every request goes to this model
    started: float = field(default_factory=time.time)
    restored: dict[str, str] = field(default_factory=dict)  # models that failed to come back

    def changed(self, model: str | None, change: str) -> None:
        """Tell the event stream's readers (a dashboard) that the registry changed, once it
        has: `model-changed` with the model's id (None for many) and what happened."""
        self.manager.events.emit("model-changed", model=model, change=change)

    def resolve(self, ref: str) -> str:
        """A model id from a client's name: aliases, references, and Ollama's `:latest`; on a
        single-model server, whatever the name, its one model (as llama-server does)."""
        if self.only is not None:
            return self.only
        registry = self.manager.registry
        try:
            return registry.lookup(ref).id
        except KeyError:
            if ref.endswith(":latest"):
                return registry.lookup(ref.removesuffix(":latest")).id
            raise


def state(request: Request) -> ServerState:
    return request.app.state.ctl


def client_name(request: Request, user: str | None = None) -> str | None:
    """Who is asking, for the usage ledger: a header, the body's `user`, or the user agent."""
    named = request.headers.get("x-modelctl-client") or user
    if named:
        return named[:128]
    agent = request.headers.get("user-agent")
    return agent.split(" ", 1)[0][:128] if agent else None


def usable(ctl: ServerState) -> list[dict[str, Any]]:
    """Models a request can use now: installed ones, and those served elsewhere (the backends
    say which are local)."""
    if ctl.only is not None:
        return [ctl.manager.registry.store.get(ctl.only)]
    local = ctl.manager.schemes.local
    return [
        r
        for r in ctl.manager.registry.records(order_by="id")
        if r.get("installed") or r.get("backend") not in local
    ]


async def chained(first: Any, rest: AsyncIterator[Any]) -> AsyncIterator[Any]:
    """A stream whose first chunk was read already (to answer a failure with an HTTP error):
    that chunk, then the rest."""
    if first is not None:
        yield first
    async for item in rest:
        yield item


async def while_connected(request: Request, work: Awaitable[T]) -> T:
    """`work` (a request to a model), cancelled if the client goes away first: a request
    queued for a busy model leaves the queue, one that runs lets go as its step ends. The
    server does not cancel a handler whose client is gone; this watches for it."""

    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass  # the body was read already: what comes next is the hang-up

    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(gone())
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watcher.cancel()
    if task in done:
        return task.result()
    task.cancel()
    with contextlib.suppress(BaseException):
        await task  # what it holds is given back before the handler ends
    raise ClientGone("the client went away before its answer")
