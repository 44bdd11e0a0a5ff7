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

Loads and unloads run outside the lock: requests to loaded models never wait for another
model's load, and a worker being stopped holds up nobody but the loads that need its room.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
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
    """Loads, unloads and switches models within `budget` bytes and `max_loaded` models."""

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
    ) -> None:
        self.resolve, self.estimate = resolve, estimate
        self.swap_batch, self.swap_turn = swap_batch, swap_turn
        self.budget, self.max_loaded = budget, max_loaded
        self.keep_alive, self.wait = keep_alive, wait
        self.events = events or EventBus()
        self.clock, self.measure, self.persist = clock, measure, persist
        self.slots: dict[str, Slot] = {}
        self.current: str | None = None
        self._cond = threading.Condition()
        self._reaper: threading.Thread | None = None
        self._stop = threading.Event()
        self._closing = False  # unloads on the way out are not what the next start restores
        self._crashes: dict[str, tuple[int, float]] = {}  # model: (crashes in a row, last)
        self._closers: set[threading.Thread] = set()  # handles being closed, off the lock
        self._blocked: dict[str, _Blocked] = {}  # loads waiting for busy models, by model
        self.supervisor: Supervisor | None = None  # workers' logs; set where models run in them

    # ------------------------------------------------------------------ what is loaded

    def used(self) -> int:
        """Bytes counted against the budget: loaded and loading models."""
        return sum(
            s.counted for s in self.slots.values() if s.state in ("loading", "loaded", "unloading")
        )

    def loaded(self) -> list[dict[str, Any]]:
        now = self.clock()
        with self._cond:
            return [s.info(now) for s in self.slots.values()]

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
        return self._load(model_id, keep_alive, pin, priority, hold, options)[0]

    def _load(
        self,
        model_id: str,
        keep_alive: float | None,
        pin: bool | None,
        priority: int | None,
        hold: bool,
        options: dict[str, Any],
        want: Want | None = None,
    ) -> tuple[Slot, bool]:
        """`load`; also whether this call loaded it (the request it is held for then runs
        whatever the model's batch: see `begin`). With `want`, a request that may go away
        (`abandon`); without, a caller that waits whatever happens."""
        with self._cond:
            while True:
                slot = self.slots.get(model_id)
                if slot is None or slot.state == "failed":
                    self._backoff(model_id)
                    break  # this call loads it (a failed load is tried again)
                if slot.state == "loaded" and self._differs(slot, options):
                    # loaded with other options: reloaded once its requests end, keeping what
                    # the request does not change (keep-alive, pin, priority, other options)
                    options = {**slot.options, **options}
                    keep_alive = slot.keep_alive if keep_alive is None else keep_alive
                    pin = slot.pinned if pin is None else pin
                    priority = slot.priority if priority is None else priority
                    if slot.in_flight == 0:
                        self._unload_locked(slot, reason="reload with other options")
                    else:
                        self._cond.wait(timeout=0.5)
                    continue
                if slot.state == "loaded" and hold and self._yields(slot):
                    slot.waiting += 1  # its turn is over: wait until it is loaded again
                    try:
                        self._cond.wait(timeout=0.5)
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
                    self._cond.wait_for(
                        lambda s=slot: (
                            self.slots.get(model_id) is not s
                            or s.state in ("loaded", "failed")
                            or (want is not None and want.gone)
                        )
                    )
                finally:
                    slot.waiting -= 1
                    if want is not None:
                        slot.wants.discard(want)
                self._check_wanted(want, model_id)
                if self.slots.get(model_id) is slot and slot.state == "failed":
                    raise LoadFailed(f"{model_id} failed to load: {slot.error}")
            model, backend = self.resolve(model_id)
            # the model's place, held while room is made: other requests for it wait for it;
            # it counts for nothing until room is made
            slot = Slot(
                model_id, "waiting", 0,
                keep_alive=self.keep_alive if keep_alive is None else keep_alive,
                pinned=bool(pin), priority=priority or 0, last_used=self.clock(), options=options,
            )  # fmt: skip
            self.slots[model_id] = slot
            self._enlist(slot, want)
            try:
                need = self.estimate(model, options)
                self._make_room(need, model_id)
            except BaseException:
                if self.slots.get(model_id) is slot:
                    del self.slots[model_id]
                self._cond.notify_all()  # whoever waited for it tries for itself
                raise
            slot.state, slot.size, slot.reserved = "loading", need, 0
        self.events.emit("model-loading", model=model_id, size=need)
        return self._do_load(slot, model, backend, options, hold), True

    @staticmethod
    def _enlist(slot: Slot, want: Want | None) -> None:
        """Under the lock: `want` waits for `slot`'s load (no want: one that cannot leave)."""
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
        with self._cond:
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
            self._cond.notify_all()

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
        with self._cond:
            slot = self.slots.get(model_id)
            if slot is None or slot.handle is not handle:
                return  # unloaded meanwhile, or reloaded since: not this load's business
            slot.state, slot.error, slot.size, slot.measured = "failed", reason, 0, None
            slot.handle = None
            count, last = self._crashes.get(model_id, (0, 0.0))
            now = self.clock()
            count = count + 1 if now - last < 300 else 1  # in a row: within 5 minutes
            self._crashes[model_id] = (count, now)
            self._cond.notify_all()
        log.warning("%s failed: %s", model_id, reason)
        self.events.emit("model-failed", model=model_id, error=reason, crashed=True)
        self._save()
        with contextlib.suppress(Exception):
            close = getattr(handle, "close", None)
            if close is not None:
                close()  # its clients and whatever is left of its process tree

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

    def _do_load(
        self, slot: Slot, model: Model, backend: Backend, options: dict[str, Any], hold: bool
    ) -> Slot:
        started = self.clock()
        before = self.measure() if self.measure else None
        stoppable = {"cancel": slot.cancel} if getattr(backend, "cancellable", False) else {}
        try:
            # a daemon (Ollama) holds the model exactly as long as the scheduler does
            handle = backend.load(model, keep_alive=slot.keep_alive, **stoppable, **options)
        except Exception as exc:  # any failure: the slot says why, the scheduler goes on
            if slot.cancel.is_set():  # stopped because nobody waits for it: no failure
                with self._cond:
                    if self.slots.get(slot.model_id) is slot:
                        del self.slots[slot.model_id]
                    self._cond.notify_all()
                self.events.emit("model-load-cancelled", model=slot.model_id)
                raise Cancelled(
                    f"the load of {slot.model_id} was cancelled: nobody waits for it"
                ) from None
            reason = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            with self._cond:
                slot.state, slot.error, slot.size = "failed", reason, 0
                self._cond.notify_all()
            self.events.emit("model-failed", model=slot.model_id, error=reason)
            raise LoadFailed(f"{slot.model_id} failed to load: {reason}") from exc
        after = self.measure() if self.measure and not hasattr(handle, "resident") else None
        handle.keep_alive = slot.keep_alive
        with self._cond:
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
            self._cond.notify_all()
        self.events.emit(
            "model-loaded", model=slot.model_id, size=slot.size, seconds=slot.load_seconds
        )
        self._save()
        return slot

    def _make_room(self, need: int, model_id: str) -> None:
        """Under the lock: evict idle models until `need` fits, or wait for busy ones (which
        yield their place after a batch: see `_yields`)."""
        try:
            self._room(need, model_id)
        finally:
            if self._blocked.pop(model_id, None) is not None:
                self._cond.notify_all()  # models that were yielding to it may serve again

    def _yields(self, slot: Slot) -> bool:
        """Under the lock: whether `slot`'s turn is over, a load having waited for its room
        for `swap_batch` more requests begun on it or for `swap_turn` seconds."""
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
        with self._cond:
            if not fresh and self._yields(slot):
                return False
            slot.started += 1
            return True

    def _room(self, need: int, model_id: str) -> None:
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
                self._cond.wait(timeout=min(remaining, 0.5))  # room on its way: a worker stops
                continue
            ahead = [  # another load is making room already: one at a time, or two loads each
                # holding part of the room would wait for each other
                s for s in self.slots.values()
                if s.state == "waiting" and s.reserved and s.model_id != model_id
            ]  # fmt: skip
            if ahead and remaining > 0:
                self._cond.wait(timeout=min(remaining, 0.5))
                continue
            idle = [
                s
                for s in self.slots.values()
                if s.state == "loaded" and not s.in_flight and not s.pinned
            ]
            if idle:
                victim = min(idle, key=lambda s: (s.priority, s.last_used))
                self._unload_locked(victim, event="model-evicted", reason=f"room for {model_id}")
                own = self.slots.get(model_id)
                if own is not None and own.state == "waiting":
                    own.reserved = need  # what is freed here is this load's
                continue
            failed = [s for s in self.slots.values() if s.state == "failed"]
            for slot in failed:
                del self.slots[slot.model_id]
            remaining = deadline - self.clock()
            if remaining > 0 and any(s.state == "unloading" for s in self.slots.values()):
                self._cond.wait(timeout=min(remaining, 0.5))  # what stops may be enough
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
            self._cond.wait(timeout=min(remaining, 0.5))

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
        return self._load(model_id, keep_alive, pin, priority, True, options, want)

    def try_acquire(
        self,
        model_id: str,
        *,
        keep_alive: float | None = None,
        pin: bool | None = None,
        priority: int | None = None,
        **options: Any,
    ) -> Slot | None:
        """Without waiting: hold a model that is loaded already, or return None."""
        with self._cond:
            slot = self.slots.get(model_id)
            if slot is None or slot.state != "loaded" or self._yields(slot):
                return None
            self._adjust(slot, keep_alive, pin, priority)
            slot.in_flight += 1
            slot.last_used = self.clock()
            return slot

    def release(self, slot: Slot) -> None:
        with self._cond:
            slot.in_flight -= 1
            slot.last_used = self.clock()
            if (
                slot.in_flight == 0 and slot.keep_alive == 0 and not slot.pinned
                and slot.state == "loaded" and self.slots.get(slot.model_id) is slot
            ):  # fmt: skip
                self._unload_locked(slot, reason="keep-alive 0")
            self._cond.notify_all()

    def served(self, model_id: str) -> None:
        """A request on `model_id` succeeded: its crashes are no longer "in a row"."""
        if model_id in self._crashes:
            with self._cond:
                self._crashes.pop(model_id, None)

    def record_speed(self, model_id: str, tokens_per_second: float) -> None:
        with self._cond:
            slot = self.slots.get(model_id)
            if slot is not None:
                slot.speeds.append(tokens_per_second)

    # ------------------------------------------------------------------ unloading

    def _unload_locked(
        self, slot: Slot, *, event: str = "model-unloaded", reason: str = "asked"
    ) -> None:
        """Under the lock, with the slot idle: mark it unloading and close it in a thread of
        its own, off the lock (a worker takes a while to stop); the slot counts against the
        budget until its memory is back, then it is forgotten. `_gone` waits for that."""
        slot.state = "unloading"
        self.events.emit("model-unloading", model=slot.model_id, reason=reason)
        closer = threading.Thread(
            target=self._close, args=(slot, event, reason), name=f"modelctl-unload-{slot.model_id}",
            daemon=True,
        )  # fmt: skip
        self._closers.add(closer)
        closer.start()

    def _close(self, slot: Slot, event: str, reason: str) -> None:
        error = None
        try:
            if slot.handle is not None:
                slot.handle.close()
        except Exception as exc:  # a daemon gone away: the model is unloaded from here anyway
            error = getattr(exc, "message", None) or f"{type(exc).__name__}: {exc}"
            log.warning("closing %s failed: %s", slot.model_id, error)
        finally:
            with self._cond:
                slot.handle = None
                if self.slots.get(slot.model_id) is slot:
                    del self.slots[slot.model_id]
                if self.current == slot.model_id and slot.model_id not in self.slots:
                    self.current = None
                self._closers.discard(threading.current_thread())
                self._cond.notify_all()
            self.events.emit(event, model=slot.model_id, reason=reason, error=error)

    def settle(self, timeout: float = 60.0) -> bool:
        """Wait until no model is being unloaded (their memory is back); False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not any(s.state == "unloading" for s in self.slots.values()),
                timeout=timeout,
            )

    def _gone(self, slot: Slot, timeout: float = 60.0) -> None:
        """Under the lock: wait until an unloading slot's memory is back."""
        self._cond.wait_for(lambda: self.slots.get(slot.model_id) is not slot, timeout=timeout)

    def unload(self, model_id: str, *, reason: str = "asked") -> bool:
        """Unload once its requests in flight finish (never mid-request); False if not loaded."""
        with self._cond:
            slot = self.slots.get(model_id)
            if slot is None:
                return False
            if slot.state == "failed":
                del self.slots[model_id]
                return True
            self._cond.wait_for(  # a load that fails or is cancelled leaves: nothing to wait for
                lambda: (
                    (slot.in_flight == 0 and slot.state not in ("waiting", "loading"))
                    or self.slots.get(model_id) is not slot
                )
            )
            if self.slots.get(model_id) is slot and slot.state == "loaded":
                self._unload_locked(slot, reason=reason)
            self._gone(slot)
        self._save()
        return True

    def unload_all(self) -> list[str]:
        """Unload every model (each once its requests end), their workers stopped together."""
        with self._cond:
            names = list(self.slots)
            for slot in list(self.slots.values()):
                if slot.state == "failed":
                    del self.slots[slot.model_id]
                elif slot.state == "loaded" and slot.in_flight == 0:
                    self._unload_locked(slot)
        for name in names:
            self.unload(name)
        return names

    def unload_least_used(self) -> str | None:
        """Unload the idle, unpinned model used longest ago; None if there is none."""
        with self._cond:
            idle = [
                s
                for s in self.slots.values()
                if s.state == "loaded" and not s.in_flight and not s.pinned
            ]
            if not idle:
                return None
            victim = min(idle, key=lambda s: (s.priority, s.last_used))
            self._unload_locked(victim, event="model-evicted", reason="least used")
            self._gone(victim)
        self._save()
        return victim.model_id

    def reap(self) -> list[str]:
        """Unload idle models past their keep-alive; returns their ids. Measures each worker's
        memory again first (off the lock): the budget counts what it has grown to."""
        with self._cond:
            workers = [
                (s, s.handle) for s in self.slots.values()
                if s.state == "loaded" and s.exact and s.handle is not None
            ]  # fmt: skip
        for slot, handle in workers:
            resident = handle.resident()  # type: ignore[attr-defined]
            with self._cond:
                if slot.handle is handle and resident:
                    slot.measured = handle.memory = resident
        now = self.clock()
        gone: list[Slot] = []
        with self._cond:
            for slot in list(self.slots.values()):
                expires = slot.expires_at()
                if (
                    expires is not None
                    and now >= expires
                    and not slot.in_flight
                    and not slot.pinned
                ):
                    self._unload_locked(slot, reason="keep-alive expired")
                    gone.append(slot)
            for slot in gone:
                self._gone(slot)
        if gone:
            self._save()
        return [slot.model_id for slot in gone]

    def start_reaper(self, interval: float = 1.0) -> None:
        """A background thread that applies keep-alive every `interval` seconds."""
        if self._reaper is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                self.reap()

        self._reaper = threading.Thread(target=loop, name="modelctl-keep-alive", daemon=True)
        self._reaper.start()

    def close(self) -> None:
        """Stop the reaper, save what is loaded and current (the next start restores it), then
        unload everything."""
        self._stop.set()
        if self._reaper is not None:
            self._reaper.join(timeout=5)
        self.save()
        self._closing = True
        self.unload_all()
        for closer in list(self._closers):
            closer.join(timeout=30)
        if self.supervisor is not None:
            self.supervisor.close()

    # ------------------------------------------------------------------ the current model

    def switch(self, model_id: str, **options: Any) -> Slot:
        """Load `model_id` if needed and make it the current model."""
        slot = self.load(model_id, **options)
        with self._cond:
            previous, self.current = self.current, model_id
        self.events.emit("model-switched", previous=previous, current=model_id)
        self._save()
        return slot

    # ------------------------------------------------------------------ restart

    def state(self) -> dict[str, Any]:
        with self._cond:
            return {
                "current": self.current,
                "loaded": [
                    {
                        "model": s.model_id,
                        "keep_alive": s.keep_alive,
                        "pinned": s.pinned,
                        "priority": s.priority,
                        "options": s.options,
                    }
                    for s in self.slots.values()
                    if s.state == "loaded"
                ],
            }

    def _save(self) -> None:
        if self.persist is not None and not self._closing:
            self.persist(self.state())

    def save(self) -> dict[str, Any]:
        """Persist what is loaded and current now; returns it."""
        saved = self.state()
        if self.persist is not None:
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
            self.current = current
        return failed
