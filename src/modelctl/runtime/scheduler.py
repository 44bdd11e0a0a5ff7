"""The scheduler: which models are loaded, within a memory budget, without breaking a request.

States: (waiting for room →) loading → loaded → unloading → (gone); failed keeps its reason.
Rules:

- concurrent requests for one model share one load, also while room is being made for it (the
  first request holds the model's place, the others wait for it);
- a model loaded for a request is held for it from the moment it is loaded: it cannot be
  evicted before the request runs;
- before a load, room is made for its estimated size: idle, unpinned models go first, least
  recently used (and lowest priority) first; a model serving a request is never evicted; if
  only busy models stand in the way, the load waits for them (up to `wait`), then refuses with
  InsufficientMemory naming what is loaded and what is needed;
- keep-alive: an idle model is unloaded after its keep-alive (seconds; -1 forever, 0 at once);
- the budget counts each model's estimate (weights + KV cache + compute at its context), the
  figure the memory benchmark checks against llama.cpp, or, for a model in a worker process,
  the larger of the estimate and the worker's resident memory as measured (at load, and at
  every reaper pass): the budget stays honest for a model the estimator got wrong;
- a model whose runtime dies under it (a worker killed, a crash) goes to failed with the reason
  (`failed`); the next request loads it again, at once after one crash, then after a backoff
  that doubles with each crash in a row, with no request served between them (1 s, 2 s, …
  60 s): meanwhile requests get Busy with Retry-After;
- a request whose load options differ from the loaded model's (a larger context, embeddings on
  a chat model) reloads it once its requests in flight end, as Ollama does;
- a load that no request waits for any more (their clients left) is cancelled: room is no
  longer made for it, and a worker being started is stopped (an in-process load, which cannot
  be stopped, finishes and stays loaded for its keep-alive);
- models that must take turns in memory take them in batches: a busy model that stands in the
  way of another's load goes on serving its requests, but once it has started `swap_batch` more
  of them, or `swap_turn` seconds have passed, since that load began to wait, it yields: its new
  requests wait (the model is not held for them), it drains, the other model loads and serves
  its own batch, and the first is loaded again for its waiting requests. No model starves, and
  a swap serves a batch rather than one request.

The state lives on the scheduler's own event loop and nothing else changes it, so no lock
guards it; loads and unloads run in threads while the loop goes on: requests to loaded models
never wait for another model's load, and a worker being stopped holds up nobody but the loads
that need its room. Every wait has an end (`wait` for room, `patience` for another's work).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

from modelctl.record.errors import Busy, Cancelled, InsufficientMemory, LoadFailed, ModelctlError
from modelctl.record.units import format_memory
from modelctl.runtime.events import EventBus

if TYPE_CHECKING:
    from modelctl.backends import Backend, Handle
    from modelctl.record.model import Model
    from modelctl.runtime.supervisor import Supervisor

__all__ = ["Scheduler", "Slot", "Want"]

log = logging.getLogger("modelctl.scheduler")


@dataclass
class Slot:
    """One model the scheduler holds (or tried to)."""

    model_id: str
    state: str  # waiting (for room) | loading | loaded | unloading | failed
    size: int  # bytes counted against the budget
    keep_alive: float
    pinned: bool = False
    priority: int = 0
    handle: Handle | None = None
    in_flight: int = 0
    waiting: int = 0  # requests waiting for this load to finish
    last_used: float = 0.0
    started: int = 0  # requests that began running on it (`begin`): batches are counted in these
    reserved: int = 0  # waiting: bytes it evicted others for, kept for it until it loads
    wants: set[Want] = field(default_factory=set)  # requests waiting for this load that can leave
    firm: bool = False  # someone who cannot leave waits for this load too (an explicit load)
    cancel: threading.Event = field(default_factory=threading.Event)  # nobody waits any more
    loaded_at: float | None = None
    load_seconds: float | None = None
    measured: int | None = None  # resident bytes: its worker's, or what the load added here
    exact: bool = False  # `measured` is the model's own (a worker's process tree): counted
    error: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    speeds: deque[float] = field(default_factory=lambda: deque(maxlen=20))  # tokens/s, recent

    def expires_at(self) -> float | None:
        if self.keep_alive < 0 or self.state != "loaded":
            return None
        return self.last_used + self.keep_alive

    @property
    def counted(self) -> int:
        """Bytes it counts against the budget: its estimate, or its worker's resident memory
        where that is larger."""
        if self.exact and self.measured:
            return max(self.size, self.measured)
        return self.size

    def info(self, now: float) -> dict[str, Any]:
        expires = self.expires_at()
        return {
            "model": self.model_id,
            "state": self.state,
            "size": self.size,
            "measured": self.measured,
            "counted": self.counted,
            "device": getattr(self.handle, "device", None),
            "pid": getattr(getattr(self.handle, "process", None), "pid", None),
            # its worker's NVIDIA GPU memory at the last measure (in `measured` too); None
            # where there is no NVML
            "vram": getattr(getattr(self.handle, "process", None), "vram", None),
            "pinned": self.pinned,
            "priority": self.priority,
            "in_flight": self.in_flight,
            "waiting": self.waiting,
            "keep_alive": self.keep_alive,
            "expires_in": None if expires is None else max(0.0, expires - now),
            "idle_for": now - self.last_used,
            "load_seconds": self.load_seconds,
            "tokens_per_second": sum(self.speeds) / len(self.speeds) if self.speeds else None,
            "error": self.error,
            "options": dict(self.options),
        }


class Want:
    """One request's interest in a load: `Scheduler.abandon` it when the request goes away;
    a load that no request wants any more (and no explicit load waits for) is cancelled."""

    __slots__ = ("gone", "slot")

    def __init__(self) -> None:
        self.gone = False
        self.slot: Slot | None = None


@dataclass
class _Blocked:
    """A load waiting for busy models to make room: since when, and each busy model's
    `started` count then (its batch is counted from there)."""

    since: float
    marks: dict[str, int]


class Scheduler:
    """Loads, unloads and switches models within `budget` bytes and `max_loaded` models.

    Its state lives on an event loop of its own, in a thread ("modelctl-scheduler"), and only
    that loop changes it: no lock guards it. The sync API (`load`, `use`, `unload`, …) runs its
    work there and waits for it; the gateway awaits the same work from its own loop (`ahold`,
    `abegin`) and gives slots back without waiting (`release`). What blocks (reading a record,
    estimating from a file, loading, closing, measuring, saving) runs in threads, never on the
    loop. Reads (`loaded`, `used`, `state`) are snapshots taken from any thread."""

    def __init__(
        self,
        *,
        resolve: Callable[[str], tuple[Model, Backend]],
        estimate: Callable[[Model, dict[str, Any]], int],
        budget: int | None = None,
        max_loaded: int | None = None,
        keep_alive: float = 300.0,
        wait: float = 30.0,
        events: EventBus | None = None,
        clock: Callable[[], float] = time.monotonic,
        measure: Callable[[], int] | None = None,
        persist: Callable[[dict[str, Any]], None] | None = None,
        swap_batch: int = 16,
        swap_turn: float = 10.0,
        patience: float = 3600.0,
    ) -> None:
        self.resolve, self.estimate = resolve, estimate
        self.swap_batch, self.swap_turn = swap_batch, swap_turn
        self.budget, self.max_loaded = budget, max_loaded
        self.keep_alive, self.wait = keep_alive, wait
        # the longest any call waits for another's work to end (a load under way, requests in
        # flight before an unload): every wait has an end, even if a runtime never answers
        self.patience = patience
        self.events = events or EventBus()
        self.clock, self.measure, self.persist = clock, measure, persist
        self.slots: dict[str, Slot] = {}
        self.current: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._starting = threading.Lock()  # taken once, by a thread, to start the loop's own
        self._work: ThreadPoolExecutor | None = None  # loads, closes, reads: off the loop
        self._saves: ThreadPoolExecutor | None = None  # saves, one at a time, in order
        self._tick: asyncio.Event | None = None  # set (and replaced) whenever the state changes
        self._tasks: set[asyncio.Task[Any]] = set()  # closes and the reaper, owned here
        self._reaper: asyncio.Task[None] | None = None
        self._closing = False  # unloads on the way out are not what the next start restores
        self._crashes: dict[str, tuple[int, float]] = {}  # model: (crashes in a row, last)
        self._blocked: dict[str, _Blocked] = {}  # loads waiting for busy models, by model
        self.supervisor: Supervisor | None = None  # workers' logs; set where models run in them

    # ------------------------------------------------------------------ its loop

    def start(self) -> asyncio.AbstractEventLoop:
        """The scheduler's loop, started in its own thread if it is not running yet. Called
        from a thread (the server starts it before it serves): never on an event loop."""
        loop = self._loop
        if loop is not None:
            return loop
        with self._starting:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                self._work = ThreadPoolExecutor(64, thread_name_prefix="modelctl-scheduler-io")
                self._saves = ThreadPoolExecutor(1, thread_name_prefix="modelctl-scheduler-save")
                self._tick = None
                thread = threading.Thread(
                    target=self._serve, args=(loop,), name="modelctl-scheduler", daemon=True
                )
                thread.start()
                self._thread, self._loop = thread, loop
        assert self._loop is not None
        return self._loop

    @staticmethod
    def _serve(loop: asyncio.AbstractEventLoop) -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def _here(self) -> bool:
        return threading.current_thread() is self._thread

    def _run(self, work: Coroutine[Any, Any, Any], undo: Callable[[Any], Any] | None = None) -> Any:
        """Run `work` on the scheduler's loop and wait for its answer (the sync API). A caller
        interrupted meanwhile leaves it to finish there; `undo` is given what it returns."""
        loop = self.start()
        if self._here():
            work.close()
            raise RuntimeError("a sync scheduler call on the scheduler's own loop")
        future = asyncio.run_coroutine_threadsafe(work, loop)
        try:
            return future.result()
        except BaseException:
            if undo is not None:  # it may have finished as the caller was interrupted
                future.add_done_callback(lambda done: _undo(done, undo))
            raise

    def _apply(self, function: Callable[..., Any], *args: Any) -> None:
        """`function(*args)` on the scheduler's loop: waited for from a plain thread, posted
        (not waited for) from an event loop, which must never block."""
        if self._here():
            function(*args)
        elif _in_a_loop():
            loop = self._loop or self.start()
            with contextlib.suppress(RuntimeError):  # its loop is closed: nothing left to do
                loop.call_soon_threadsafe(function, *args)
        else:
            self._call(function, *args)

    def _call(self, function: Callable[..., Any], *args: Any) -> Any:
        """`function(*args)` on the scheduler's loop, waited for."""
        if self._here():
            return function(*args)
        loop = self._loop or self.start()
        done: Future[Any] = Future()

        def run() -> None:
            try:
                done.set_result(function(*args))
            except BaseException as exc:
                done.set_exception(exc)

        try:
            loop.call_soon_threadsafe(run)
        except RuntimeError:  # its loop is closed: the scheduler is closing
            return None
        return done.result(timeout=self.patience)

    async def _ask(self, function: Callable[..., Any], *args: Any) -> Any:
        """`function(*args)` on the scheduler's loop, awaited from another loop."""
        loop = self._loop or await asyncio.to_thread(self.start)
        here = asyncio.get_running_loop()
        if here is loop:
            return function(*args)
        answer = here.create_future()

        def run() -> None:
            try:
                result = function(*args)
            except BaseException as exc:
                here.call_soon_threadsafe(_settle, answer, None, exc)
            else:
                here.call_soon_threadsafe(_settle, answer, result, None)

        loop.call_soon_threadsafe(run)
        return await answer

    async def _off(self, function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """On the loop: `function` in a worker thread (it may block), awaited."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._work, partial(function, *args, **kwargs))

    def _spawn(self, work: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """On the loop: a task the scheduler owns (and cancels when it closes)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _notify(self) -> None:
        """On the loop: the state changed; whoever waits for it looks again."""
        if self._tick is not None:
            self._tick.set()
            self._tick = None

    async def _wait(self, timeout: float) -> None:
        """On the loop: until the state changes, or `timeout` seconds."""
        if self._tick is None:
            self._tick = asyncio.Event()
        tick = self._tick
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, timeout)):
                await tick.wait()

    async def _until(self, ready: Callable[[], bool], timeout: float) -> bool:
        """On the loop: until `ready()`, at most `timeout` seconds; whether it is."""
        deadline = time.monotonic() + timeout
        while not ready():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await self._wait(min(remaining, 0.5))
        return True

    # ------------------------------------------------------------------ what is loaded

    def _slots(self) -> list[Slot]:
        """A snapshot; from a plain thread, once the loop has done what was posted to it (a
        slot given back from an event loop is seen given back)."""
        if self._loop is not None and not self._here() and not _in_a_loop():
            self._call(lambda: None)
        return list(self.slots.values())  # one step of the interpreter: a snapshot

    def used(self) -> int:
        """Bytes counted against the budget: loaded and loading models."""
        return sum(
            s.counted for s in self._slots() if s.state in ("loading", "loaded", "unloading")
        )

    def loaded(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [s.info(now) for s in self._slots()]

    # ------------------------------------------------------------------ loading

    def load(
        self,
        model_id: str,
        *,
        keep_alive: float | None = None,
        pin: bool | None = None,
        priority: int | None = None,
        hold: bool = False,
        **options: Any,
    ) -> Slot:
        """Load `model_id`, or wait for the load already under way; returns its slot, loaded.
        With `hold`, the slot is held for a request (see `acquire`) from the moment it is
        loaded, so that nothing can evict it first."""
        work = self._load(model_id, keep_alive, pin, priority, hold, options)
        return self._run(work, undo=lambda held: self.release(held[0]) if hold else None)[0]

    async def _load(
        self,
        model_id: str,
        keep_alive: float | None,
        pin: bool | None,
        priority: int | None,
        hold: bool,
        options: dict[str, Any],
        want: Want | None = None,
    ) -> tuple[Slot, bool]:
        """`load`, on the loop; also whether this call loaded it (the request it is held for
        then runs whatever the model's batch: see `begin`). With `want`, a request that may go
        away (`abandon`); without, a caller that waits whatever happens."""
        deadline = time.monotonic() + self.patience
        while True:
            self._check_wanted(want, model_id)  # its client may have left before this began
            slot = self.slots.get(model_id)
            if slot is None or slot.state == "failed":
                self._backoff(model_id)
                break  # this call loads it (a failed load is tried again)
            self._check_patience(deadline, model_id)
            if slot.state == "loaded" and self._differs(slot, options):
                # loaded with other options: reloaded once its requests end, keeping what
                # the request does not change (keep-alive, pin, priority, other options)
                options = {**slot.options, **options}
                keep_alive = slot.keep_alive if keep_alive is None else keep_alive
                pin = slot.pinned if pin is None else pin
                priority = slot.priority if priority is None else priority
                if slot.in_flight == 0:
                    self._unload_now(slot, reason="reload with other options")
                else:
                    await self._wait(0.5)
                continue
            if slot.state == "loaded" and hold and self._yields(slot):
                slot.waiting += 1  # its turn is over: wait until it is loaded again
                try:
                    await self._wait(0.5)
                finally:
                    slot.waiting -= 1
                self._check_wanted(want, model_id)
                continue
            if slot.state == "loaded":
                self._adjust(slot, keep_alive, pin, priority)
                slot.last_used = self.clock()
                slot.in_flight += hold
                return slot, False
            slot.waiting += 1
            self._enlist(slot, want)
            try:  # another request is loading it (or making room for it), or unloading it
                await self._until(
                    lambda s=slot: (
                        self.slots.get(model_id) is not s
                        or s.state in ("loaded", "failed")
                        or (want is not None and want.gone)
                    ),
                    deadline - time.monotonic(),
                )
            finally:
                slot.waiting -= 1
                if want is not None:
                    slot.wants.discard(want)
            self._check_wanted(want, model_id)
            if self.slots.get(model_id) is slot and slot.state == "failed":
                raise LoadFailed(f"{model_id} failed to load: {slot.error}")
        # the model's place, held while its record is read and room is made: other requests
        # for it wait for it (and a delete finds it); it counts for nothing until room is made
        slot = Slot(
            model_id, "waiting", 0,
            keep_alive=self.keep_alive if keep_alive is None else keep_alive,
            pinned=bool(pin), priority=priority or 0, last_used=self.clock(), options=options,
        )  # fmt: skip
        self.slots[model_id] = slot
        self._enlist(slot, want)
        try:
            model, backend = await self._off(self.resolve, model_id)
            need = await self._off(self.estimate, model, options)
            await self._make_room(need, model_id)
            if slot.cancel.is_set():
                self.events.emit("model-load-cancelled", model=model_id)
                raise Cancelled(f"the load of {model_id} was cancelled: nobody waits for it")
        except BaseException:
            if self.slots.get(model_id) is slot:
                del self.slots[model_id]
            self._notify()  # whoever waited for it tries for itself
            raise
        slot.state, slot.size, slot.reserved = "loading", need, 0
        self.events.emit("model-loading", model=model_id, size=need)
        return await self._do_load(slot, model, backend, options, hold), True

    def _check_patience(self, deadline: float, model_id: str) -> None:
        if time.monotonic() > deadline:
            raise Busy(f"{model_id} stayed busy for {self.patience:g} s", hint="try again shortly")

    @staticmethod
    def _enlist(slot: Slot, want: Want | None) -> None:
        """`want` waits for `slot`'s load (no want: one that cannot leave)."""
        if want is None:
            slot.firm = True
        else:
            slot.wants.add(want)
            want.slot = slot

    @staticmethod
    def _check_wanted(want: Want | None, model_id: str) -> None:
        if want is not None and want.gone:
            raise Cancelled(f"the request for {model_id} went away while it waited for the load")

    def abandon(self, want: Want) -> None:
        """The request behind `want` went away: if nobody else waits for the load it waited
        for, that load is cancelled (see `_room` and `_do_load`)."""
        self._apply(self._abandon, want)

    def _abandon(self, want: Want) -> None:
        want.gone = True
        slot = want.slot
        if slot is None:
            return
        slot.wants.discard(want)
        if (
            slot.state in ("waiting", "loading") and not slot.wants and not slot.firm
            and self.slots.get(slot.model_id) is slot
        ):  # fmt: skip
            slot.cancel.set()
        self._notify()

    @staticmethod
    def _differs(slot: Slot, options: dict[str, Any]) -> bool:
        """Whether `options` ask for what the loaded model cannot do as loaded (the options
        its runtime names in `reloads_for`: a daemon or an API has none)."""
        for key in getattr(slot.handle, "reloads_for", ()):
            if key not in options or options[key] is None:
                continue
            loaded = slot.options.get(key)
            if loaded is None and key == "embedding":
                loaded = getattr(slot.handle, "embedding", None)
            if loaded is None and key == "context":
                loaded = getattr(slot.handle, "context", None)
            if loaded != options[key]:
                return True
        return False

    def _backoff(self, model_id: str) -> None:
        """Busy while a model that crashed again and again waits for its next try."""
        count, last = self._crashes.get(model_id, (0, 0.0))
        if count < 2:
            return
        wait = min(60.0, 2.0 ** (count - 2))
        left = last + wait - self.clock()
        if left > 0:
            raise Busy(
                f"{model_id} crashed {count} times in a row; next try in {left:.0f} s",
                hint=f"`modelctl logs {model_id}` says why", retry_after=max(1, round(left)),
            )  # fmt: skip

    def failed(self, model_id: str, handle: object, reason: str) -> None:
        """`handle`'s runtime died (its worker exited): the model goes to failed with `reason`;
        requests in flight on it end with their runtime's error, the next request reloads it."""
        self._apply(self._failed, model_id, handle, reason)

    def _failed(self, model_id: str, handle: object, reason: str) -> None:
        slot = self.slots.get(model_id)
        if slot is None or slot.handle is not handle:
            return  # unloaded meanwhile, or reloaded since: not this load's business
        slot.state, slot.error, slot.size, slot.measured = "failed", reason, 0, None
        slot.handle = None
        count, last = self._crashes.get(model_id, (0, 0.0))
        now = self.clock()
        count = count + 1 if now - last < 300 else 1  # in a row: within 5 minutes
        self._crashes[model_id] = (count, now)
        self._notify()
        log.warning("%s failed: %s", model_id, reason)
        self.events.emit("model-failed", model=model_id, error=reason, crashed=True)
        self._save()
        close = getattr(handle, "close", None)
        if close is not None:  # its clients and whatever is left of its process tree
            self._spawn(self._quietly(close))

    async def _quietly(self, function: Callable[[], Any]) -> None:
        with contextlib.suppress(Exception):
            await self._off(function)

    def _adjust(
        self, slot: Slot, keep_alive: float | None, pin: bool | None, priority: int | None
    ) -> None:
        if keep_alive is not None:
            slot.keep_alive = keep_alive
            if slot.handle is not None:
                slot.handle.keep_alive = keep_alive
        if pin is not None:
            slot.pinned = pin
        if priority is not None:
            slot.priority = priority

    async def _do_load(
        self, slot: Slot, model: Model, backend: Backend, options: dict[str, Any], hold: bool
    ) -> Slot:
        started = self.clock()
        before = await self._off(self.measure) if self.measure else None
        stoppable = {"cancel": slot.cancel} if getattr(backend, "cancellable", False) else {}
        try:
            # a daemon (Ollama) holds the model exactly as long as the scheduler does
            handle = await self._off(
                backend.load, model, keep_alive=slot.keep_alive, **stoppable, **options
            )
        except Exception as exc:  # any failure: the slot says why, the scheduler goes on
            if slot.cancel.is_set():  # stopped because nobody waits for it: no failure
                if self.slots.get(slot.model_id) is slot:
                    del self.slots[slot.model_id]
                self._notify()
                self.events.emit("model-load-cancelled", model=slot.model_id)
                raise Cancelled(
                    f"the load of {slot.model_id} was cancelled: nobody waits for it"
                ) from None
            reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            slot.state, slot.error, slot.size = "failed", reason, 0
            self._notify()
            self.events.emit("model-failed", model=slot.model_id, error=reason)
            raise LoadFailed(f"{slot.model_id} failed to load: {reason}") from exc
        measure = self.measure and not hasattr(handle, "resident")
        after = await self._off(self.measure) if measure else None  # type: ignore[arg-type]
        handle.keep_alive = slot.keep_alive
        slot.handle, slot.state = handle, "loaded"
        slot.wants.clear()
        slot.in_flight += hold  # held for its request before anyone can evict it
        slot.loaded_at = slot.last_used = self.clock()
        slot.load_seconds = slot.loaded_at - started
        resident = getattr(handle, "resident", None)
        if resident is not None:  # a worker: its own process tree, measured exactly
            slot.measured, slot.exact = handle.memory, True
        elif before is not None and after is not None:
            slot.measured = handle.memory = max(0, after - before)
        self._notify()
        self.events.emit(
            "model-loaded", model=slot.model_id, size=slot.size, seconds=slot.load_seconds
        )
        await self._saved()
        return slot

    async def _make_room(self, need: int, model_id: str) -> None:
        """Evict idle models until `need` fits, or wait for busy ones (which yield their place
        after a batch: see `_yields`)."""
        try:
            await self._room(need, model_id)
        finally:
            if self._blocked.pop(model_id, None) is not None:
                self._notify()  # models that were yielding to it may serve again

    def _yields(self, slot: Slot) -> bool:
        """Whether `slot`'s turn is over, a load having waited for its room for `swap_batch`
        more requests begun on it or for `swap_turn` seconds."""
        if slot.pinned or not self._blocked:
            return False
        now = self.clock()
        return any(
            slot.model_id in b.marks
            and (
                slot.started - b.marks[slot.model_id] >= self.swap_batch
                or now - b.since >= self.swap_turn
            )
            for b in self._blocked.values()
        )

    def begin(self, slot: Slot, *, fresh: bool = False) -> bool:
        """A request held on `slot` is about to run on it (its turn came): counted in the
        model's batch. False when the model's turn is over (`_yields`): the caller releases
        the slot and acquires again, which waits for the model's next turn. A request the
        model was loaded for (`fresh`) always runs."""
        return bool(self._call(self._begin, slot, fresh))

    async def abegin(self, slot: Slot, *, fresh: bool = False) -> bool:
        """`begin`, awaited from an event loop."""
        return bool(await self._ask(self._begin, slot, fresh))

    def _begin(self, slot: Slot, fresh: bool) -> bool:
        if not fresh and self._yields(slot):
            return False
        slot.started += 1
        return True

    async def _room(self, need: int, model_id: str) -> None:
        if self.budget is not None and need > self.budget:
            raise InsufficientMemory(
                f"{model_id} needs {format_memory(need)}; "
                f"the whole budget is {format_memory(self.budget)}",
                hint="raise memory_budget, use a smaller quantization or a shorter context",
            )
        deadline = self.clock() + self.wait
        told = False
        own = self.slots.get(model_id)
        while not self._fits(need, model_id):
            if own is not None and own.cancel.is_set():
                self.events.emit("model-load-cancelled", model=model_id)
                raise Cancelled(f"the load of {model_id} was cancelled: nobody waits for it")
            remaining = deadline - self.clock()
            if remaining > 0 and self._fits(need, model_id, after_unloads=True):
                await self._wait(min(remaining, 0.5))  # room on its way: a worker stops
                continue
            ahead = [  # another load is making room already: one at a time, or two loads each
                # holding part of the room would wait for each other
                s for s in self.slots.values()
                if s.state == "waiting" and s.reserved and s.model_id != model_id
            ]  # fmt: skip
            if ahead and remaining > 0:
                await self._wait(min(remaining, 0.5))
                continue
            idle = [
                s
                for s in self.slots.values()
                if s.state == "loaded" and not s.in_flight and not s.pinned
            ]
            if idle:
                victim = min(idle, key=lambda s: (s.priority, s.last_used))
                self._unload_now(victim, event="model-evicted", reason=f"room for {model_id}")
                own = self.slots.get(model_id)
                if own is not None and own.state == "waiting":
                    own.reserved = need  # what is freed here is this load's
                continue
            failed = [s for s in self.slots.values() if s.state == "failed"]
            for slot in failed:
                del self.slots[slot.model_id]
            remaining = deadline - self.clock()
            if remaining > 0 and any(s.state == "unloading" for s in self.slots.values()):
                await self._wait(min(remaining, 0.5))  # what stops may be enough
                continue
            busy = [  # serving requests, or being loaded for one: waited for
                s
                for s in self.slots.values()
                if (
                    (s.state == "loaded" and s.in_flight)
                    or s.state == "loading"
                    or (s.state == "waiting" and s.reserved and s.model_id != model_id)
                )
                and not s.pinned
            ]
            remaining = deadline - self.clock()
            if busy:  # their batches are counted from the moment each stood in the way
                blocked = self._blocked.setdefault(model_id, _Blocked(self.clock(), {}))
                for s in busy:
                    blocked.marks.setdefault(s.model_id, s.started)
            if not busy or remaining <= 0:
                held = ", ".join(
                    f"{s.model_id} ({format_memory(s.counted)}{', pinned' if s.pinned else ''}"
                    f"{', busy' if s.in_flight else ''})"
                    for s in self.slots.values() if s.state in ("loaded", "loading")
                ) or "nothing"  # fmt: skip
                held += "".join(
                    f"; room held for {s.model_id} ({format_memory(s.reserved)}), loading next"
                    for s in self.slots.values() if s.state == "waiting" and s.reserved
                    and s.model_id != model_id
                )  # fmt: skip
                limit = f"{format_memory(self.budget)} budget" if self.budget is not None else ""
                count = f"{self.max_loaded} models at most" if self.max_loaded is not None else ""
                raise InsufficientMemory(
                    f"{model_id} needs {format_memory(need)}; loaded: {held}; "
                    f"limits: {', '.join(x for x in (limit, count) if x)}",
                    hint="unload a model, unpin one, or raise the limits",
                )
            if not told:  # once per load: it waits for requests in flight on these models
                self.events.emit("model-waiting", model=model_id, busy=[s.model_id for s in busy])
                told = True
            await self._wait(min(remaining, 0.5))

    def _fits(self, need: int, model_id: str, *, after_unloads: bool = False) -> bool:
        """Whether `need` more bytes (and one more model) fit now, or once the models being
        unloaded are gone."""
        states = ("loading", "loaded") if after_unloads else ("loading", "loaded", "unloading")
        active = [s for s in self.slots.values() if s.state in states]
        # room another waiting load has evicted models for is its own: nobody else takes it
        reserved = [
            s for s in self.slots.values()
            if s.state == "waiting" and s.reserved and s.model_id != model_id
        ]  # fmt: skip
        if self.max_loaded is not None and len(active) + len(reserved) >= self.max_loaded:
            return False
        counted = sum(s.counted for s in active) + sum(s.reserved for s in reserved)
        return self.budget is None or counted + need <= self.budget

    # ------------------------------------------------------------------ using

    @contextmanager
    def use(self, model_id: str, **load_options: Any) -> Iterator[Handle]:
        """A loaded model for one request: loads it if needed, and holds it against eviction."""
        slot, fresh = self.hold(model_id, **load_options)
        while not self.begin(slot, fresh=fresh):  # its turn is over: wait for the next one
            self.release(slot)
            slot, fresh = self.hold(model_id, **load_options)
        try:
            assert slot.handle is not None
            yield slot.handle
        finally:
            self.release(slot)

    def acquire(self, model_id: str, **load_options: Any) -> Slot:
        """Load `model_id` if needed and hold it for a request; `release` lets go."""
        return self.hold(model_id, **load_options)[0]

    def hold(
        self,
        model_id: str,
        *,
        keep_alive: float | None = None,
        pin: bool | None = None,
        priority: int | None = None,
        want: Want | None = None,
        **options: Any,
    ) -> tuple[Slot, bool]:
        """`acquire`, and whether the model was loaded for this request (`begin`'s `fresh`).
        `want`: the request may go away meanwhile (see `abandon`)."""
        work = self._load(model_id, keep_alive, pin, priority, True, options, want)
        held: tuple[Slot, bool] = self._run(work, undo=lambda held: self.release(held[0]))
        return held

    async def ahold(
        self,
        model_id: str,
        *,
        keep_alive: float | None = None,
        pin: bool | None = None,
        priority: int | None = None,
        **options: Any,
    ) -> tuple[Slot, bool]:
        """`hold`, awaited from an event loop (the gateway's): a model loaded already is held
        at once, a load is waited for without a thread. A task cancelled meanwhile (its client
        went away) gives up its interest in the load (a load nobody waits for any more is
        cancelled), and a slot held for it after all is given back."""
        loop = self._loop or await asyncio.to_thread(self.start)
        want = Want()
        work = self._load(model_id, keep_alive, pin, priority, True, options, want)
        future = asyncio.run_coroutine_threadsafe(work, loop)
        answer = asyncio.wrap_future(future)
        try:
            held: tuple[Slot, bool] = await asyncio.shield(answer)
        except asyncio.CancelledError:
            answer.add_done_callback(lambda a: a.cancelled() or a.exception())  # seen, not logged
            self.abandon(want)
            future.add_done_callback(lambda done: _undo(done, lambda h: self.release(h[0])))
            raise
        return held

    def release(self, slot: Slot) -> None:
        """Let go of a held slot; from an event loop, without waiting."""
        self._apply(self._release, slot)

    def _release(self, slot: Slot) -> None:
        slot.in_flight -= 1
        slot.last_used = self.clock()
        if (
            slot.in_flight == 0 and slot.keep_alive == 0 and not slot.pinned
            and slot.state == "loaded" and self.slots.get(slot.model_id) is slot
        ):  # fmt: skip
            self._unload_now(slot, reason="keep-alive 0")
        self._notify()

    def served(self, model_id: str) -> None:
        """A request on `model_id` succeeded: its crashes are no longer "in a row"."""
        if model_id in self._crashes:
            self._apply(self._crashes.pop, model_id, None)

    def record_speed(self, model_id: str, tokens_per_second: float) -> None:
        self._apply(self._record_speed, model_id, tokens_per_second)

    def _record_speed(self, model_id: str, tokens_per_second: float) -> None:
        slot = self.slots.get(model_id)
        if slot is not None:
            slot.speeds.append(tokens_per_second)

    # ------------------------------------------------------------------ unloading

    def _unload_now(
        self, slot: Slot, *, event: str = "model-unloaded", reason: str = "asked"
    ) -> None:
        """On the loop, with the slot idle: mark it unloading and close it in a thread (a
        worker takes a while to stop); the slot counts against the budget until its memory is
        back, then it is forgotten. `_gone` waits for that."""
        slot.state = "unloading"
        self.events.emit("model-unloading", model=slot.model_id, reason=reason)
        self._spawn(self._close(slot, event, reason))

    async def _close(self, slot: Slot, event: str, reason: str) -> None:
        error = None
        try:
            if slot.handle is not None:
                await self._off(slot.handle.close)
        except Exception as exc:  # a daemon gone away: the model is unloaded from here anyway
            error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            log.warning("closing %s failed: %s", slot.model_id, error)
        finally:
            slot.handle = None
            if self.slots.get(slot.model_id) is slot:
                del self.slots[slot.model_id]
            if self.current == slot.model_id and slot.model_id not in self.slots:
                self.current = None
            self._notify()
        self.events.emit(event, model=slot.model_id, reason=reason, error=error)

    def settle(self, timeout: float = 60.0) -> bool:
        """Wait until no model is being unloaded (their memory is back); False on timeout."""
        return bool(
            self._run(
                self._until(
                    lambda: not any(s.state == "unloading" for s in self.slots.values()), timeout
                )
            )
        )

    async def _gone(self, slot: Slot, timeout: float = 60.0) -> None:
        """Until an unloading slot's memory is back."""
        await self._until(lambda: self.slots.get(slot.model_id) is not slot, timeout)

    def unload(self, model_id: str, *, reason: str = "asked") -> bool:
        """Unload once its requests in flight finish (never mid-request); False if not loaded.
        Busy if they have not finished within `patience` seconds."""
        return bool(self._run(self._unload(model_id, reason)))

    async def _unload(self, model_id: str, reason: str, patience: float | None = None) -> bool:
        patience = self.patience if patience is None else patience
        slot = self.slots.get(model_id)
        if slot is None:
            return False
        if slot.state == "failed":
            del self.slots[model_id]
            self._notify()
            return True
        idle = await self._until(  # a load that fails or is cancelled leaves: nothing to wait for
            lambda: (
                (slot.in_flight == 0 and slot.state not in ("waiting", "loading"))
                or self.slots.get(model_id) is not slot
            ),
            patience,
        )
        if not idle:
            raise Busy(
                f"{model_id} still serves {slot.in_flight} requests after {patience:g} s",
                hint="unload it once they end",
            )
        if self.slots.get(model_id) is slot and slot.state == "loaded":
            self._unload_now(slot, reason=reason)
        await self._gone(slot)
        await self._saved()
        return True

    def unload_all(self) -> list[str]:
        """Unload every model (each once its requests end), their workers stopped together."""
        return list(self._run(self._unload_all()))

    async def _unload_all(self, patience: float | None = None) -> list[str]:
        names = list(self.slots)
        for slot in list(self.slots.values()):
            if slot.state == "failed":
                del self.slots[slot.model_id]
            elif slot.state == "loaded" and slot.in_flight == 0:
                self._unload_now(slot)
        for name in names:  # one that stays busy does not keep the others loaded
            try:
                await self._unload(name, "asked", patience)
            except ModelctlError as exc:
                log.warning("unloading %s: %s", name, exc.message)
        return names

    def unload_least_used(self) -> str | None:
        """Unload the idle, unpinned model used longest ago; None if there is none."""
        return self._run(self._unload_least_used())  # type: ignore[no-any-return]

    async def _unload_least_used(self) -> str | None:
        idle = [
            s
            for s in self.slots.values()
            if s.state == "loaded" and not s.in_flight and not s.pinned
        ]
        if not idle:
            return None
        victim = min(idle, key=lambda s: (s.priority, s.last_used))
        self._unload_now(victim, event="model-evicted", reason="least used")
        await self._gone(victim)
        await self._saved()
        return victim.model_id

    def reap(self) -> list[str]:
        """Unload idle models past their keep-alive; returns their ids. Measures each worker's
        memory again first (in threads): the budget counts what it has grown to."""
        return list(self._run(self._reap()))

    async def _reap(self) -> list[str]:
        workers = [
            (s, s.handle) for s in self.slots.values()
            if s.state == "loaded" and s.exact and s.handle is not None
        ]  # fmt: skip
        measured = await asyncio.gather(
            *(self._off(handle.resident) for _, handle in workers),  # type: ignore[union-attr]
            return_exceptions=True,
        )
        for (slot, handle), resident in zip(workers, measured, strict=True):
            if slot.handle is handle and isinstance(resident, int) and resident:
                slot.measured = handle.memory = resident  # type: ignore[union-attr]
        now = self.clock()
        gone: list[Slot] = []
        for slot in list(self.slots.values()):
            expires = slot.expires_at()
            if expires is not None and now >= expires and not slot.in_flight and not slot.pinned:
                self._unload_now(slot, reason="keep-alive expired")
                gone.append(slot)
        for slot in gone:
            await self._gone(slot)
        if gone:
            await self._saved()
        return [slot.model_id for slot in gone]

    def start_reaper(self, interval: float = 1.0) -> None:
        """A task on the scheduler's loop that applies keep-alive every `interval` seconds."""
        self._run(self._start_reaper(interval))

    async def _start_reaper(self, interval: float) -> None:
        if self._reaper is not None:
            return

        async def reaper() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    await self._reap()
                except Exception:  # a runtime that fails to close: logged, the next pass retries
                    log.exception("keep-alive pass failed")

        self._reaper = self._spawn(reaper())

    def close(self, timeout: float = 30.0) -> None:
        """Stop the reaper, save what is loaded and current (the next start restores it),
        unload everything (a model still busy after `timeout` seconds is left to the
        supervisor, which stops every worker), then stop the scheduler's loop."""
        try:
            if self._loop is not None:
                self._run(self._aclose(timeout))
        finally:
            loop, thread = self._loop, self._thread
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # closed already
                    loop.call_soon_threadsafe(loop.stop)
                if thread is not None:
                    thread.join(timeout=10)
            for pool in (self._work, self._saves):
                if pool is not None:
                    pool.shutdown(wait=False, cancel_futures=True)
            self._loop = self._thread = self._work = self._saves = None
            self._reaper, self._closing = None, False  # a loop started again saves again
            if self.supervisor is not None:
                self.supervisor.close()

    async def _aclose(self, timeout: float) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            self._reaper = None
        await self._saved(force=True)
        self._closing = True
        await self._unload_all(patience=timeout)
        closing = [task for task in self._tasks if not task.done()]
        if closing:
            await asyncio.wait(closing, timeout=30)

    # ------------------------------------------------------------------ the current model

    def switch(self, model_id: str, **options: Any) -> Slot:
        """Load `model_id` if needed and make it the current model."""
        return self._run(self._switch(model_id, options))  # type: ignore[no-any-return]

    async def _switch(self, model_id: str, options: dict[str, Any]) -> Slot:
        keep_alive, pin, priority = (
            options.pop(k, None) for k in ("keep_alive", "pin", "priority")
        )
        slot, _ = await self._load(model_id, keep_alive, pin, priority, False, options)
        previous, self.current = self.current, model_id
        self.events.emit("model-switched", previous=previous, current=model_id)
        await self._saved()
        return slot

    # ------------------------------------------------------------------ restart

    def state(self) -> dict[str, Any]:
        """What is loaded and current (a snapshot; the next start restores it)."""
        return {
            "current": self.current,
            "loaded": [
                {
                    "model": s.model_id,
                    "keep_alive": s.keep_alive,
                    "pinned": s.pinned,
                    "priority": s.priority,
                    "options": dict(s.options),
                }
                for s in self._slots()
                if s.state == "loaded"
            ],
        }

    def _save(self, *, force: bool = False) -> Future[None] | None:
        """On the loop: persist the state now, in the saver's thread (saves keep their order)."""
        if self.persist is None or (self._closing and not force) or self._saves is None:
            return None
        return self._saves.submit(self.persist, self.state())

    async def _saved(self, *, force: bool = False) -> None:
        """`_save`, and wait until it is written. A save that fails (a locked database, a full
        disk) is logged: what is loaded stays as it is, and a request's hold stays its own."""
        saving = self._save(force=force)
        if saving is None:
            return
        try:
            await asyncio.wrap_future(saving)
        except Exception:
            log.exception("saving what is loaded failed; the next change saves it again")

    def save(self) -> dict[str, Any]:
        """Persist what is loaded and current now; returns it. In the saver's thread where it
        runs (after the saves queued before it), so that an older state never comes last."""
        saved = self.state()
        if self.persist is not None:
            saves = self._saves
            if saves is not None:
                saves.submit(self.persist, saved).result(timeout=self.patience)
            else:
                self.persist(saved)
        return saved

    def restore(self, state: dict[str, Any]) -> dict[str, str]:
        """Load what a previous run had loaded; returns the models that failed, with why."""
        failed = {}
        for entry in state.get("loaded") or []:
            try:
                self.load(
                    entry["model"], keep_alive=entry.get("keep_alive"), pin=entry.get("pinned"),
                    priority=entry.get("priority"), **(entry.get("options") or {}),
                )  # fmt: skip
            except ModelctlError as exc:
                failed[entry["model"]] = exc.message
        current = state.get("current")
        if current and current in self.slots and self.slots[current].state == "loaded":
            self._call(setattr, self, "current", current)  # on the loop, as every change
        return failed


def _in_a_loop() -> bool:
    return asyncio._get_running_loop() is not None


def _settle(answer: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if answer.done():  # its awaiter was cancelled meanwhile
        return
    if error is not None:
        answer.set_exception(error)
    else:
        answer.set_result(result)


def _undo(done: Future[Any], undo: Callable[[Any], Any]) -> None:
    """A call whose caller left finished after all: give back what it took."""
    if not done.cancelled() and done.exception() is None:
        with contextlib.suppress(Exception):
            undo(done.result())
