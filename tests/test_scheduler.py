"""The scheduler's rules, with an in-memory backend: many models, many threads."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from modelctl.backends import Backend, BackendStatus, Handle
from modelctl.record.errors import InsufficientMemory, LoadFailed
from modelctl.record.model import Model
from modelctl.runtime.events import EventBus
from modelctl.runtime.scheduler import Scheduler

MB = 10**6


class Ledger:
    """What is really open at any moment; the budget check the scheduler must never fail."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[str, int] = {}
        self.peak = 0
        self.loads: dict[str, int] = {}
        self.closed_while_busy: list[str] = []


class MemoryHandle(Handle):
    def __init__(self, model: Model, ledger: Ledger) -> None:
        self.model_id, self.ledger, self.busy = model.id, ledger, 0
        with ledger.lock:
            ledger.open[model.id] = model.file_size or 0
            ledger.peak = max(ledger.peak, sum(ledger.open.values()))
            ledger.loads[model.id] = ledger.loads.get(model.id, 0) + 1

    def chat(self, messages: list[dict[str, Any]], *, stream: bool = False, **options: Any) -> Any:
        self.busy += 1
        time.sleep(options.get("work", 0))
        self.busy -= 1
        message = {"role": "assistant", "content": "ok"}
        choice = {"index": 0, "message": message, "finish_reason": "stop"}
        return {"object": "chat.completion", "model": self.model_id, "choices": [choice]}

    def close(self) -> None:
        with self.ledger.lock:
            if self.busy:
                self.ledger.closed_while_busy.append(self.model_id)
            self.ledger.open.pop(self.model_id, None)


class MemoryBackend(Backend):
    name = "memory"

    def __init__(
        self, ledger: Ledger, load_seconds: float = 0.0, failing: set[str] | None = None
    ) -> None:
        self.ledger, self.load_seconds, self.failing = ledger, load_seconds, failing or set()
        self.instance = "memory"

    def status(self) -> BackendStatus:
        return BackendStatus("memory", True)

    def discover(self) -> list[Model]:
        return []

    def load(self, model: Model, **options: Any) -> Handle:
        time.sleep(self.load_seconds)
        if model.id in self.failing:
            raise RuntimeError("weights are corrupt")
        return MemoryHandle(model, self.ledger)


def scheduler(
    sizes: dict[str, int], *, budget: int | None = None, max_loaded: int | None = None,
    load_seconds: float = 0.0, failing: set[str] | None = None, clock: Any = time.monotonic,
    wait: float = 5.0, **kw: Any,
) -> tuple[Scheduler, Ledger]:  # fmt: skip
    ledger = Ledger()
    backend = MemoryBackend(ledger, load_seconds, failing)
    models = {
        name: Model(id=name, backend="memory", file_size=size) for name, size in sizes.items()
    }
    sched = Scheduler(
        resolve=lambda name: (models[name], backend),
        estimate=lambda model, options: model.file_size or 0,
        budget=budget, max_loaded=max_loaded, clock=clock, wait=wait, **kw,
    )  # fmt: skip
    return sched, ledger


def test_twenty_concurrent_requests_share_one_load() -> None:
    sched, ledger = scheduler({"a": 100 * MB}, load_seconds=0.2)
    barrier = threading.Barrier(20)
    errors: list[Exception] = []

    def request() -> None:
        barrier.wait()
        try:
            with sched.use("a") as handle:
                handle.chat([{"role": "user", "content": "hi"}])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=request) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and ledger.loads == {"a": 1}


def test_budget_holds_under_load_and_busy_models_are_never_evicted() -> None:
    names = {f"m{i}": (50 + 25 * (i % 4)) * MB for i in range(12)}
    budget = 300 * MB
    sched, ledger = scheduler(names, budget=budget, load_seconds=0.005, wait=10)
    errors: list[Exception] = []

    def worker(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(25):
            name = rng.choice(list(names))
            try:
                with sched.use(name) as handle:
                    handle.chat([], work=rng.random() * 0.003)
            except InsufficientMemory:
                pass  # allowed: every model was busy for too long
            except Exception as exc:  # pragma: no cover
                errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert ledger.peak <= budget, f"peak {ledger.peak / MB} MB over a {budget / MB} MB budget"
    assert ledger.closed_while_busy == []
    assert sched.used() <= budget
    assert sum(ledger.loads.values()) > len(names)  # models were really evicted and reloaded


def test_lru_eviction_pinning_and_priority() -> None:
    now = [0.0]
    sched, _ = scheduler({"a": 40, "b": 40, "c": 40, "d": 40}, budget=100, clock=lambda: now[0])
    events: list[str] = []
    sched.events.on("*", lambda e: events.append(f"{e.name}:{e.data.get('model', '')}"))
    sched.load("a", pin=True)
    now[0] = 1
    sched.load("b")
    now[0] = 2
    sched.load("c")  # no room: b (least recently used, a is pinned) goes
    assert set(sched.slots) == {"a", "c"} and "model-evicted:b" in events
    now[0] = 3
    sched.load("c", priority=5)  # a used model stays; a high priority survives longer
    sched.load("b")  # evicts? a pinned, c priority 5: nothing idle but c -> c goes
    assert set(sched.slots) == {"a", "b"}
    assert sched.unload_least_used() == "b" and set(sched.slots) == {"a"}
    assert sched.unload_least_used() is None  # only a pinned model left


def test_max_loaded() -> None:
    sched, _ = scheduler({"a": 1, "b": 1, "c": 1}, max_loaded=2)
    for name in "abc":
        sched.load(name)
    assert len(sched.slots) == 2 and "c" in sched.slots


def test_a_model_too_big_for_the_budget_is_refused_clearly() -> None:
    sched, _ = scheduler({"big": 500, "small": 10}, budget=100)
    with pytest.raises(InsufficientMemory, match="the whole budget"):
        sched.load("big")
    sched.load("small")


def test_busy_models_make_a_load_wait_then_refuse() -> None:
    sched, _ = scheduler({"a": 80, "b": 80}, budget=100, wait=0.3)
    with sched.use("a"), pytest.raises(InsufficientMemory) as caught:
        sched.load("b")  # a is serving a request: it is not evicted
    assert "a (" in str(caught.value) and "busy" in str(caught.value)
    sched.load("b")  # once a is idle, it makes way
    assert set(sched.slots) == {"b"}


def test_keep_alive() -> None:
    now = [0.0]
    sched, _ = scheduler({"a": 1, "b": 1, "c": 1}, clock=lambda: now[0], keep_alive=300)
    sched.load("a")
    sched.load("b", keep_alive=-1)  # forever
    with sched.use("c", keep_alive=0):  # unloaded as soon as its request ends
        assert "c" in sched.slots
    assert sched.settle(timeout=10)  # the unload runs off the lock, in a thread of its own
    assert "c" not in sched.slots
    now[0] = 299
    assert sched.reap() == []
    now[0] = 301
    assert sched.reap() == ["a"] and set(sched.slots) == {"b"}


def test_keep_alive_in_a_background_thread() -> None:
    sched, _ = scheduler({"a": 1}, keep_alive=0.05)
    sched.start_reaper(interval=0.02)
    sched.load("a")
    deadline = time.monotonic() + 5
    while "a" in sched.slots and time.monotonic() < deadline:
        time.sleep(0.01)
    sched.close()
    assert "a" not in sched.slots


def test_a_failed_load_keeps_its_reason_and_the_scheduler_works() -> None:
    sched, ledger = scheduler({"bad": 10, "good": 10}, failing={"bad"})
    seen: list[str] = []
    sched.events.on("model-failed", lambda e: seen.append(e.data["error"]))
    with pytest.raises(LoadFailed, match="weights are corrupt"):
        sched.load("bad")
    info = {i["model"]: i for i in sched.loaded()}
    assert info["bad"]["state"] == "failed" and "corrupt" in info["bad"]["error"]
    assert seen == ["RuntimeError: weights are corrupt"]
    sched.load("good")
    assert ledger.loads == {"good": 1} and sched.used() == 10


def test_unload_waits_for_the_request_in_flight() -> None:
    sched, ledger = scheduler({"a": 1})
    started, finished = threading.Event(), []

    def long_request() -> None:
        with sched.use("a") as handle:
            started.set()
            handle.chat([], work=0.2)
            finished.append(time.monotonic())

    thread = threading.Thread(target=long_request)
    thread.start()
    started.wait()
    sched.unload("a")
    unloaded_at = time.monotonic()
    thread.join()
    assert finished and finished[0] <= unloaded_at and ledger.closed_while_busy == []


def test_switch_current_and_restore() -> None:
    saved: list[dict] = []
    bus = EventBus()
    sched, _ = scheduler({"a": 1, "b": 1}, persist=saved.append, events=bus)
    switched: list[tuple] = []
    bus.on("model-switched", lambda e: switched.append((e.data["previous"], e.data["current"])))
    sched.switch("a")
    sched.switch("b", keep_alive=-1, pin=True)
    assert sched.current == "b" and switched == [(None, "a"), ("a", "b")]
    state = saved[-1]
    assert state["current"] == "b"
    assert {e["model"] for e in state["loaded"]} == {"a", "b"}
    fresh, ledger = scheduler({"a": 1, "b": 1})
    assert fresh.restore(state) == {}
    assert fresh.current == "b" and fresh.slots["b"].pinned and fresh.slots["b"].keep_alive == -1
    assert ledger.loads == {"a": 1, "b": 1}
    sched.unload("b")
    assert sched.current is None


def test_a_broken_event_handler_breaks_nothing() -> None:
    bus = EventBus()
    bus.on("model-loaded", lambda e: 1 / 0)
    got: list[str] = []
    bus.on("model-loaded", lambda e: got.append(e.data["model"]))
    sched, _ = scheduler({"a": 1}, events=bus)
    sched.load("a")
    assert got == ["a"] and bus.recent[-1].name == "model-loaded"


def test_a_handle_that_fails_to_close_is_still_unloaded() -> None:
    sched, _ = scheduler({"a": 1, "b": 1})
    sched.load("a")
    sched.load("b")

    def broken() -> None:
        raise ConnectionError("daemon gone")

    sched.slots["a"].handle.close = broken  # type: ignore[method-assign,union-attr]
    errors: dict[str, object] = {}
    sched.events.on("model-unloaded", lambda e: errors.update({e.data["model"]: e.data["error"]}))
    assert sched.unload_all() == ["a", "b"]  # both at once, each in a thread of its own
    assert sched.slots == {} and errors == {"a": "ConnectionError: daemon gone", "b": None}


def _poll(condition: Any, timeout: float = 10.0) -> None:
    """Wait until `condition()` holds (a readiness poll with a deadline)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)


def test_requests_for_a_model_while_room_is_made_for_it_share_one_load() -> None:
    """`a` is busy and fills the budget; two requests for `b` wait for room. The first version
    loaded `b` twice: the first copy was dropped without being closed, and the budget was
    exceeded while used() said less."""
    sched, ledger = scheduler({"a": 100 * MB, "b": 100 * MB}, budget=150 * MB, wait=10)
    waiting = threading.Event()
    sched.events.on("model-waiting", lambda e: waiting.set())
    held = sched.acquire("a")
    got: list[Any] = []
    threads = [threading.Thread(target=lambda: got.append(sched.acquire("b"))) for _ in range(2)]
    threads[0].start()
    assert waiting.wait(10)  # the first request waits for room for b, holding b's place
    threads[1].start()
    _poll(lambda: sched.slots["b"].waiting == 1)  # the second waits for that load
    sched.release(held)
    for t in threads:
        t.join(timeout=10)
    assert ledger.loads == {"a": 1, "b": 1}
    assert got[0] is got[1] and got[0].in_flight == 2
    assert ledger.peak <= 150 * MB and sched.used() == 100 * MB
    assert ledger.open == {"b": 100 * MB}  # a was closed to make room; nothing dropped open


def test_a_model_loaded_for_a_request_is_not_evicted_before_the_request_runs() -> None:
    """Between `b` being loaded and its request taking hold of it, a request for `c` needing
    the room evicted it, and `b` was loaded again (the first version)."""
    sched, ledger = scheduler({"b": 100 * MB, "c": 100 * MB}, budget=150 * MB, wait=10)
    c_waits = threading.Event()
    sched.events.on("model-waiting", lambda e: e.data["model"] == "c" and c_waits.set())
    other: list[Any] = []

    def on_loaded(event: Any) -> None:
        if event.data["model"] != "b" or other:
            return
        # b is loaded and its request has not used it yet: now c wants the room
        thread = threading.Thread(target=lambda: other.append(sched.acquire("c")))
        other.append(thread)
        thread.start()  # (handlers run on the scheduler's loop: this one must not wait)

    sched.events.on("model-loaded", on_loaded)
    slot = sched.acquire("b")
    assert c_waits.wait(10)  # c waits for b's request (the first version evicted b)
    assert slot.state == "loaded" and slot.in_flight == 1 and ledger.open == {"b": 100 * MB}
    sched.release(slot)
    other[0].join(timeout=10)
    assert ledger.loads == {"b": 1, "c": 1} and ledger.closed_while_busy == []


def test_a_steady_stream_of_requests_for_one_model_does_not_starve_another() -> None:
    """Four threads ask for `a` without pause; `a` and `b` cannot be loaded together. A request
    for `b` used to wait for `a` to go idle, which never happened, and failed after `wait`
    with InsufficientMemory. Now `a` yields after its batch, `b` is served, and `a` is loaded
    again for its requests, within the budget throughout."""
    sched, ledger = scheduler(
        {"a": 100 * MB, "b": 100 * MB}, budget=150 * MB, wait=10, swap_batch=4, swap_turn=600
    )
    served: list[str] = []
    enough, again = threading.Event(), threading.Event()  # again: `a` served after `b`
    stop = threading.Event()
    errors: list[Exception] = []

    def steady() -> None:
        try:
            while not stop.is_set():
                with sched.use("a") as handle:
                    handle.chat([{"role": "user", "content": "hi"}], work=0.002)
                    served.append("a")
                    if "b" in served:
                        again.set()
                if served.count("a") >= 20:
                    enough.set()
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=steady) for _ in range(4)]
    for t in threads:
        t.start()
    try:
        assert enough.wait(10)
        with sched.use("b") as handle:
            handle.chat([{"role": "user", "content": "hi"}])
            served.append("b")
        assert again.wait(10)  # `a` is loaded again for its requests
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert errors == [] and "a" in served[served.index("b") :]
    assert ledger.loads == {"a": 2, "b": 1}
    assert ledger.peak <= 150 * MB and ledger.closed_while_busy == []


def test_two_loads_making_room_at_once_do_not_block_each_other() -> None:
    """`x` and `y` are loaded and busy. `b` evicts `x` once it is idle and holds that room
    while it waits for `y`; `c` arrives meanwhile. Each used to hold part of the room and wait
    for the other until both failed; now `c` waits its turn behind `b`, and both load."""
    sizes = {"x": 5 * MB, "y": 5 * MB, "b": 6 * MB, "c": 6 * MB}
    sched, ledger = scheduler(sizes, budget=10 * MB, wait=10)
    x, y = sched.acquire("x"), sched.acquire("y")
    results: dict[str, Any] = {}

    def load(name: str) -> None:
        try:
            sched.load(name)  # returns once loaded (a later load may evict it at once)
            results[name] = "loaded"
        except Exception as exc:  # pragma: no cover - reported below
            results[name] = exc

    b = threading.Thread(target=load, args=("b",))
    b.start()
    _until(lambda: "b" in sched._blocked)
    sched.release(x)  # b evicts x, and holds its room while it waits for y
    _until(lambda: sched.slots.get("b") is not None and sched.slots["b"].reserved > 0)
    c = threading.Thread(target=load, args=("c",))
    c.start()
    _until(lambda: "c" in sched.slots)
    sched.release(y)
    b.join(timeout=30)
    c.join(timeout=30)
    assert results == {"b": "loaded", "c": "loaded"}
    assert ledger.peak <= 10 * MB


def _until(condition: Any, timeout: float = 10.0) -> None:
    """A readiness poll with a deadline."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.001)
