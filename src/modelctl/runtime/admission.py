"""Admission: how many requests a loaded model takes at once, and who waits.

Each model takes its handle's `parallel` requests at once (1 for an in-process llama.cpp or
transformers model; no limit for a daemon or an API, which queue their own). The rest wait here,
on the event loop, first come first served: at most `max_queue` of them, each at most `timeout`
seconds (-1: no limit); beyond either, `Busy` (503 with Retry-After, as Ollama answers beyond
its OLLAMA_MAX_QUEUE). A request whose task is cancelled (a stream whose client went away)
leaves the queue.

Waiting here holds no worker thread. Before, every waiting request held one of the event loop's
worker threads, blocked on the runtime's lock, and the request holding the lock could not get a
thread for its next chunk: 41 streams to one model stopped the whole server.
"""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field

from modelctl.record.errors import Busy

__all__ = ["Admission", "Gate"]


@dataclass(eq=False)
class Gate:
    """One model's turns on one event loop."""

    handle: object  # the loaded model it is for: a reload gets a new gate
    parallel: int
    waiting: int = 0
    turns: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.turns = asyncio.Semaphore(self.parallel)


class Admission:
    """Gates for every model, per event loop (a manager may serve from several in turn)."""

    def __init__(self, *, max_queue: int = 512, timeout: float = 600.0) -> None:
        self.max_queue, self.timeout = max_queue, timeout
        self._gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Gate]] = (
            weakref.WeakKeyDictionary()
        )

    def _gate(self, model_id: str, handle: object, parallel: int) -> Gate:
        gates = self._gates.setdefault(asyncio.get_running_loop(), {})
        gate = gates.get(model_id)
        if gate is None or gate.handle is not handle:
            gate = gates[model_id] = Gate(handle, parallel)
        return gate

    async def enter(self, model_id: str, handle: object) -> Gate | None:
        """Wait for a turn on `handle` (the model `model_id` as loaded now); None when it takes
        any number at once. Pass the result to `leave` when the request ends."""
        parallel = getattr(handle, "parallel", 1)
        if parallel is None:
            return None
        gate = self._gate(model_id, handle, max(1, int(parallel)))
        if gate.turns.locked() and gate.waiting >= self.max_queue:
            raise Busy(
                f"{model_id} is busy: {gate.waiting} requests are waiting for it already",
                hint="try again shortly, or raise max_queue",
            )
        gate.waiting += 1
        try:
            async with asyncio.timeout(self.timeout if self.timeout >= 0 else None):  # -1: ever
                await gate.turns.acquire()
        except TimeoutError:
            raise Busy(
                f"{model_id} stayed busy for {self.timeout:g} s",
                hint="try again shortly, or raise queue_timeout",
            ) from None
        finally:
            gate.waiting -= 1
        return gate

    @staticmethod
    def leave(gate: Gate | None) -> None:
        if gate is not None:
            gate.turns.release()

    def waiting(self, model_id: str) -> int:
        """Requests waiting for `model_id` now, on every loop."""
        return sum(g[model_id].waiting for g in self._gates.values() if model_id in g)
