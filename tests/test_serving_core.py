"""The serving core under load and when clients go away: requests wait for a model on the event
loop (never in a worker thread), a bounded queue answers 503 with Retry-After beyond it, and a
stream that ends early gives its model back. Real llama.cpp models on a real server, and an
in-memory model whose requests the test holds with events."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelctl.backends import Backend, BackendStatus, Handle, response
from modelctl.manager import ModelManager
from modelctl.record.errors import Busy
from modelctl.record.model import Model
from modelctl.registry import Registry
from modelctl.runtime.requests import Requests
from modelctl.runtime.scheduler import Scheduler
from modelctl.store.ledger import Ledger
from tests.live import running

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def manager(tiny_manager: ModelManager) -> ModelManager:
    return tiny_manager


async def _stream(client: httpx.AsyncClient, url: str, max_tokens: int = 8) -> str:
    body = {"model": "tiny", "messages": HELLO, "max_tokens": max_tokens, "stream": True}
    finish = None
    async with client.stream("POST", f"{url}/v1/chat/completions", json=body) as answer:
        assert answer.status_code == 200
        async for line in answer.aiter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                finish = choices[0].get("finish_reason") or finish
    assert finish in ("stop", "length")
    return finish


def test_more_streams_than_worker_threads_to_one_model(manager: ModelManager) -> None:
    """64 streams at once to one in-process model (the loop has 40 worker threads): every one
    is answered and /health answers while they run. The first version stopped answering for
    good at 41."""

    async def main(url: str) -> list[str]:
        limits = httpx.Limits(max_connections=100)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            streams = [asyncio.create_task(_stream(client, url)) for _ in range(64)]
            async with asyncio.timeout(30):  # a readiness poll: until requests are queued
                while not manager.requests.admission.waiting("tiny"):
                    await asyncio.sleep(0.005)
            health = await client.get(f"{url}/health", timeout=10)  # answered while they wait
            assert health.status_code == 200
            return await asyncio.wait_for(asyncio.gather(*streams), timeout=120)

    with running(manager) as url:
        finished = asyncio.run(main(url))
    assert len(finished) == 64
    (slot,) = manager.loaded()
    assert slot["in_flight"] == 0


def test_a_client_that_goes_away_mid_stream_gives_the_model_back(manager: ModelManager) -> None:
    """A client reads one chunk of a long stream and hangs up: the model is let go (the next
    request is answered, nothing stays in flight), instead of staying locked for good."""
    with running(manager) as url:
        body = {"model": "tiny", "messages": HELLO, "max_tokens": 400, "stream": True}
        for _ in range(3):
            with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as r:
                assert r.status_code == 200
                first = next(line for line in r.iter_lines() if line.startswith("data: "))
                assert first
            # leaving the block closes the connection mid-stream
        answer = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": "tiny", "messages": HELLO, "max_tokens": 4},
            timeout=30,
        )
        assert answer.status_code == 200
        deadline = time.monotonic() + 10
        while manager.loaded()[0]["in_flight"] and time.monotonic() < deadline:
            time.sleep(0.01)  # a readiness poll: the server lets go once the hang-up is seen
        assert manager.loaded()[0]["in_flight"] == 0


# ---------------------------------------------------------------- the queue, held with events


class HeldHandle(Handle):
    """Answers only when the test says so; counts how many requests it ever ran at once."""

    parallel = 1

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        self.running = self.most = 0

    async def achat(self, messages: list[dict[str, Any]], *, stream: bool = False, **_: Any):
        self.running += 1
        self.most = max(self.most, self.running)
        self.started.set()
        try:
            await self.release.wait()
        finally:
            self.running -= 1
        message = {"role": "assistant", "content": messages[-1]["content"]}
        return response(self.model_id, "chat.completion", {"message": message})


class HeldBackend(Backend):
    name = "held"

    def status(self) -> BackendStatus:
        return BackendStatus(self.name, True)

    def discover(self) -> list[Model]:
        return []

    def load(self, model: Model, **options: Any) -> Handle:
        self.handle = HeldHandle(model.id)
        return self.handle


def _core(
    tmp_path: Path, backend: Backend, *ids: str, size: int = 0, max_queue: int = 512,
    queue_timeout: float = 600.0, **limits: Any,
) -> tuple[Registry, Scheduler, Requests]:  # fmt: skip
    """A registry holding `ids` (default `m`), installed on `backend`; a scheduler that loads
    them through it, each counted `size` bytes; and the requests on top."""
    registry = Registry.open(tmp_path / "registry.sqlite")
    for model_id in ids or ("m",):
        registry.add({"id": model_id, "backend": backend.name, "installed": True})
    scheduler = Scheduler(
        resolve=lambda i: (registry[i], backend), estimate=lambda m, o: size, **limits
    )
    requests = Requests(registry=registry, scheduler=scheduler, ledger=Ledger(registry.store),
                        max_queue=max_queue, queue_timeout=queue_timeout)  # fmt: skip
    return registry, scheduler, requests


async def _until(condition: Any, timeout: float = 5.0) -> None:
    """Let the loop run until `condition()` holds (a readiness poll with a deadline)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0)


def test_a_bounded_queue_per_model(tmp_path: Path) -> None:
    backend = HeldBackend(settings=None)  # type: ignore[arg-type]
    registry, scheduler, requests = _core(tmp_path, backend, max_queue=2, queue_timeout=30)

    def ask(text: str) -> Any:
        return requests.arequest("chat", "m", [{"role": "user", "content": text}])

    async def main() -> dict[str, Any]:
        first = asyncio.create_task(ask("first"))
        await _until(lambda: hasattr(backend, "handle") and backend.handle.started.is_set())
        second, third = asyncio.create_task(ask("second")), asyncio.create_task(ask("third"))
        await _until(lambda: requests.admission.waiting("m") == 2)
        with pytest.raises(Busy, match="m is busy: 2 requests are waiting") as busy:
            await ask("fourth")
        assert busy.value.retry_after == 1
        second.cancel()  # its client went away: it leaves the queue
        await _until(lambda: requests.admission.waiting("m") == 1)
        fifth = asyncio.create_task(ask("fifth"))
        await _until(lambda: requests.admission.waiting("m") == 2)
        backend.handle.release.set()
        done = await asyncio.wait_for(asyncio.gather(first, third, fifth), timeout=10)
        with pytest.raises(asyncio.CancelledError):
            await second
        return {"answers": [a["choices"][0]["message"]["content"] for a in done]}

    result = asyncio.run(main())
    assert result["answers"] == ["first", "third", "fifth"]
    assert backend.handle.most == 1  # one at a time, as the handle said
    scheduler.settle()  # the scheduler's loop has taken back what was given back to it
    assert scheduler.slots["m"].in_flight == 0
    registry.close()


def test_busy_is_a_503_with_retry_after_in_each_apis_format(manager: ModelManager) -> None:
    from fastapi.testclient import TestClient

    from modelctl.server import create_app

    app = create_app(manager, restore=False, reaper_interval=None, hosts=("testserver",))

    @app.get("/v1/probe-busy")
    @app.get("/api/probe-busy")
    def busy() -> None:
        raise Busy("tiny is busy: 512 requests are waiting for it already")

    client = TestClient(app)
    openai_style = client.get("/v1/probe-busy")
    assert openai_style.status_code == 503 and openai_style.headers["retry-after"] == "1"
    assert openai_style.json()["error"]["code"] == "busy"
    ollama_style = client.get("/api/probe-busy")
    assert ollama_style.status_code == 503 and ollama_style.headers["retry-after"] == "1"
    assert ollama_style.json()["error"].startswith("tiny is busy")


# ---------------------------------------------------------------- what the budget counts


def test_no_local_model_counts_as_zero_bytes(manager: ModelManager, tmp_path: Path) -> None:
    """The first version counted these as 0 bytes: 16 of them fitted in an 85 MB budget."""
    from modelctl.fit.estimate import estimate_memory
    from modelctl.fit.gguf_meta import read_gguf
    from modelctl.runtime.requests import UNKNOWN_SIZE

    tiny = manager.registry["tiny"].location
    blob = tmp_path / "blobs" / ("sha256-" + "a" * 64)  # an Ollama blob: a GGUF, no suffix
    blob.parent.mkdir()
    blob.write_bytes(Path(tiny).read_bytes())
    repo = tmp_path / "hf" / "org--repo"
    repo.mkdir(parents=True)
    (repo / "model.safetensors").write_bytes(b"\0" * 3_000_000)
    add = manager.registry.add
    add({"id": "blob-model", "backend": "ollama", "location": str(blob), "installed": True})
    add({"id": "org/repo", "backend": "huggingface", "location": str(repo), "installed": True})
    add({"id": "mystery", "backend": "lmstudio", "installed": True})
    add({"id": "gpt", "backend": "openai", "refs": {"openai": "gpt-4o"}, "installed": True})

    def counted(model_id: str) -> int:
        return manager.scheduler.estimate(manager.registry[model_id], {})

    from_header = estimate_memory(read_gguf(tiny)).total
    assert counted("blob-model") == from_header > 0  # read from the blob's own header
    assert counted("org/repo") > 3_000_000  # at least its files
    assert counted("mystery") == UNKNOWN_SIZE  # nothing known: never 0
    assert counted("gpt") == 0  # served elsewhere: no memory here


def test_a_model_without_a_context_loads_with_what_its_estimate_assumes(
    manager: ModelManager,
) -> None:
    """No context on the record: the estimate took the file's own (512 here) while llama.cpp
    was given 4,096; both use the same rule now."""
    tiny = manager.registry["tiny"].location
    manager.registry.add({"id": "bare", "backend": "llamacpp", "location": tiny, "installed": True})
    assert manager.registry["bare"].context_length is None
    manager.load("bare")
    handle = manager.scheduler.slots["bare"].handle
    assert handle.llm.n_ctx() == 512


def test_a_cancelled_request_lets_go_only_once_its_thread_is_done() -> None:
    """A cancelled await used to leave the worker thread running on (holding a runtime's lock
    or a slot) while the request had already let go; now it waits, then undoes, then ends."""
    import threading

    from modelctl.backends import to_the_end

    started, finish = threading.Event(), threading.Event()
    undone: list[str] = []

    def load() -> str:
        started.set()
        finish.wait(10)
        return "slot"

    async def main() -> None:
        task = asyncio.create_task(to_the_end(load, undo=undone.append))
        assert await asyncio.to_thread(started.wait, 10)
        task.cancel()
        for _ in range(5):
            await asyncio.sleep(0)
        assert not task.done() and undone == []  # the thread is still at work
        finish.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert undone == ["slot"]

    asyncio.run(main())


class HeldStreamHandle(HeldHandle):
    async def achat(self, messages: list[dict[str, Any]], *, stream: bool = False, **_: Any):
        async def chunks() -> Any:
            yield response(self.model_id, "chat.completion.chunk", {"delta": {"content": "x"}})

        return chunks()


def test_a_stream_dropped_before_its_first_chunk_gives_the_model_back(tmp_path: Path) -> None:
    """The client left before the response started: nobody iterates the stream, so its
    `finally` never runs; dropping it lets go of the turn and the slot."""
    import gc

    backend = HeldBackend(settings=None)  # type: ignore[arg-type]
    backend.load = lambda model, **o: HeldStreamHandle(model.id)  # type: ignore[method-assign]
    registry, scheduler, requests = _core(tmp_path, backend)

    async def main() -> None:
        stream = await requests.arequest("chat", "m", HELLO, stream=True)
        assert scheduler.slots["m"].in_flight == 1
        del stream
        gc.collect()
        await _until(lambda: scheduler.slots["m"].in_flight == 0)
        again = await requests.arequest("chat", "m", HELLO, stream=True)  # the turn is free
        chunks = [c async for c in again]
        assert chunks[0]["choices"][0]["delta"]["content"] == "x"

    asyncio.run(main())
    scheduler.settle()  # the scheduler's loop has taken back what was given back to it
    assert scheduler.slots["m"].in_flight == 0
    registry.close()


def test_a_request_whose_client_hangs_up_while_queued_leaves_the_queue(tmp_path: Path) -> None:
    """The server does not cancel a handler whose client went away: the first version let a
    queued request wait on, then run, for nobody. Held with events: the hang-up is the fake
    request's disconnect message."""
    from modelctl.record.errors import ClientGone
    from modelctl.server.state import while_connected

    class Connection:  # what a route's Request gives: receive() ends with the hang-up
        def __init__(self) -> None:
            self.hang_up = asyncio.Event()

        async def receive(self) -> dict[str, str]:
            await self.hang_up.wait()
            return {"type": "http.disconnect"}

    backend = HeldBackend(settings=None)  # type: ignore[arg-type]
    registry, scheduler, requests = _core(tmp_path, backend)

    async def main() -> None:
        first = asyncio.create_task(requests.arequest("chat", "m", HELLO))
        await _until(lambda: hasattr(backend, "handle") and backend.handle.started.is_set())
        client = Connection()
        queued = asyncio.create_task(
            while_connected(client, requests.arequest("chat", "m", HELLO))  # type: ignore[arg-type]
        )
        await _until(lambda: requests.admission.waiting("m") == 1)
        client.hang_up.set()
        with pytest.raises(ClientGone):
            await queued
        # its slot is given back to the scheduler's loop without waiting: seen there at once
        await _until(lambda: scheduler.slots["m"].in_flight == 1)
        assert requests.admission.waiting("m") == 0
        backend.handle.release.set()
        await first
        stays = Connection()  # a client that stays gets its answer, and nothing is cancelled
        answer = await while_connected(stays, requests.arequest("chat", "m", HELLO))  # type: ignore[arg-type]
        assert answer["choices"][0]["message"]["content"] == "hello"

    asyncio.run(main())
    scheduler.settle()  # the scheduler's loop has taken back what was given back to it
    assert scheduler.slots["m"].in_flight == 0 and backend.handle.most == 1
    registry.close()


class TurnHandle(Handle):
    """Answers at once once `release` is set, and notes the order of the requests it served."""

    parallel = 1

    def __init__(self, model_id: str, served: list[str], release: asyncio.Event) -> None:
        self.model_id, self.served, self.release = model_id, served, release

    async def achat(self, messages: list[dict[str, Any]], *, stream: bool = False, **_: Any):
        await self.release.wait()
        self.served.append(self.model_id)
        return response(self.model_id, "chat.completion", {"message": messages[-1]})


class TurnBackend(Backend):
    name = "turns"

    def __init__(self) -> None:
        self.served: list[str] = []
        self.release = asyncio.Event()
        self.loads: list[str] = []

    def status(self) -> BackendStatus:
        return BackendStatus(self.name, True)

    def discover(self) -> list[Model]:
        return []

    def load(self, model: Model, **options: Any) -> Handle:
        self.loads.append(model.id)
        return TurnHandle(model.id, self.served, self.release)


def test_models_that_take_turns_swap_in_batches(tmp_path: Path) -> None:
    """Two models that cannot be loaded together. Ten requests for `a` are queued when one for
    `b` arrives: `a` serves a batch of `swap_batch` more, yields, `b` is loaded and served, and
    `a` is loaded again for the rest. Before, `b` waited until every request queued for `a`
    was served (and a steady stream of them would have starved it)."""
    backend = TurnBackend()
    registry, scheduler, requests = _core(
        tmp_path, backend, "a", "b", size=100, budget=150, swap_batch=3, swap_turn=600
    )

    def ask(model: str) -> Any:
        return requests.arequest("chat", model, [{"role": "user", "content": model}])

    async def main() -> None:
        first = asyncio.create_task(ask("a"))
        await _until(lambda: "a" in scheduler.slots and scheduler.slots["a"].started == 1)
        rest = [asyncio.create_task(ask("a")) for _ in range(9)]
        await _until(lambda: requests.admission.waiting("a") == 9)
        other = asyncio.create_task(ask("b"))
        await _until(lambda: "b" in scheduler._blocked)  # b's load waits for a's room
        backend.release.set()
        await asyncio.wait_for(asyncio.gather(first, *rest, other), timeout=20)

    asyncio.run(main())
    assert "".join(backend.served) == "aaaa" + "b" + "aaaaaa"  # the one running, a batch of 3
    assert backend.loads == ["a", "b", "a"]
    scheduler.settle()  # the scheduler's loop has taken back what was given back to it
    assert scheduler.used() <= 150 and scheduler.slots["a"].in_flight == 0
    registry.close()


class SlowBackend(Backend):
    """Loads until `finish` is set, or stops when its load is cancelled (as a worker's start
    is stopped)."""

    name = "slow"
    cancellable = True

    def __init__(self) -> None:
        self.started, self.finish = threading.Event(), threading.Event()
        self.cancelled = threading.Event()

    def status(self) -> BackendStatus:
        return BackendStatus(self.name, True)

    def discover(self) -> list[Model]:
        return []

    def load(self, model: Model, *, cancel: threading.Event, **options: Any) -> Handle:
        self.started.set()
        while not self.finish.wait(0.005):  # a long load, watching for its cancellation
            if cancel.is_set():
                self.cancelled.set()
                raise RuntimeError("stopped")
        answer_at_once = asyncio.Event()
        answer_at_once.set()
        return TurnHandle(model.id, [], answer_at_once)


def test_a_load_nobody_waits_for_any_more_is_cancelled(tmp_path: Path) -> None:
    """Two requests wait for one load: the first leaving changes nothing, the second leaving
    cancels the load (a worker being started is stopped); the next request loads it anew."""
    backend = SlowBackend()
    registry, scheduler, requests = _core(tmp_path, backend)
    events: list[str] = []
    scheduler.events.on("*", lambda event: events.append(event.name))

    def ask() -> Any:
        return requests.arequest("chat", "m", [{"role": "user", "content": "hi"}])

    async def main() -> None:
        first = asyncio.create_task(ask())
        await _until(backend.started.is_set)
        second = asyncio.create_task(ask())
        await _until(lambda: scheduler.slots["m"].waiting == 1)
        first.cancel()
        await _until(lambda: len(scheduler.slots["m"].wants) == 1)
        assert not scheduler.slots["m"].cancel.is_set()  # the second still waits for it
        second.cancel()
        await _until(lambda: "m" not in scheduler.slots)
        for task in (first, second):
            with pytest.raises(asyncio.CancelledError):
                await task
        assert backend.cancelled.is_set()
        backend.started.clear()
        backend.finish.set()
        third = await asyncio.wait_for(ask(), timeout=10)
        assert third is not None and scheduler.slots["m"].state == "loaded"

    asyncio.run(main())
    assert events.count("model-load-cancelled") == 1 and events.count("model-loaded") == 1
    registry.close()


def test_an_unload_waiting_for_a_load_that_is_cancelled_returns(tmp_path: Path) -> None:
    """`unload` waits for a load under way; that load is cancelled (its one client left), and
    the unload returns instead of waiting for a state the gone slot can never reach."""
    backend = SlowBackend()
    registry, scheduler, requests = _core(tmp_path, backend)
    unloaded: list[bool] = []

    async def main() -> None:
        ask = asyncio.create_task(requests.arequest("chat", "m", HELLO))
        await _until(backend.started.is_set)
        unload = threading.Thread(target=lambda: unloaded.append(scheduler.unload("m")))
        unload.start()
        await _until(lambda: scheduler._tick is not None and len(scheduler._tick._waiters) == 1)
        ask.cancel()
        with pytest.raises(asyncio.CancelledError):
            await ask
        await asyncio.to_thread(unload.join, 30)
        assert not unload.is_alive()

    asyncio.run(main())
    assert unloaded == [True] and "m" not in scheduler.slots
    registry.close()


def test_reading_one_models_record_holds_up_no_request_to_another(tmp_path: Path) -> None:
    """Reading `b`'s record (the registry, a file's header: disk) is held while 20 requests for
    the loaded `a` arrive: all are answered meanwhile. Before, that read ran under the
    scheduler's threading lock, which the requests took on the event loop: the loop itself, and
    every request on every model, waited for another model's disk."""
    backend = TurnBackend()
    backend.release.set()  # answers at once
    registry, scheduler, requests = _core(tmp_path, backend, "a", "b")
    reading, go_on, done = threading.Event(), threading.Event(), threading.Event()
    resolve = scheduler.resolve

    def slow_resolve(model_id: str) -> Any:
        if model_id == "b":
            reading.set()
            go_on.wait(20)  # held until the test lets it go (with a bound, should it fail)
            done.set()
        return resolve(model_id)

    scheduler.resolve = slow_resolve

    async def main() -> int:
        await requests.arequest("chat", "a", HELLO)  # a is loaded
        b = asyncio.create_task(requests.arequest("chat", "b", HELLO))
        assert await asyncio.to_thread(reading.wait, 10)
        answers = await asyncio.gather(*(requests.arequest("chat", "a", HELLO) for _ in range(20)))
        assert not done.is_set()  # answered while b's record was still being read
        go_on.set()
        await asyncio.wait_for(b, 10)
        return len(answers)

    assert asyncio.run(main()) == 20
    assert backend.served.count("a") == 21 and backend.served.count("b") == 1
    scheduler.close()
    registry.close()


def test_the_scheduler_takes_no_lock_on_the_gateways_loop(tmp_path: Path) -> None:
    """Every request's hold, turn and release reach the scheduler's own loop without a
    threading lock on the caller's loop: its state is changed in one thread only."""
    backend = TurnBackend()
    backend.release.set()
    registry, scheduler, requests = _core(tmp_path, backend, "a")
    changed_in: set[str] = set()
    release = scheduler._release

    def watched_release(slot: Any) -> None:
        changed_in.add(threading.current_thread().name)
        release(slot)

    scheduler._release = watched_release  # type: ignore[method-assign]

    async def main() -> None:
        await asyncio.gather(*(requests.arequest("chat", "a", HELLO) for _ in range(10)))

    asyncio.run(main())
    scheduler.settle()
    assert changed_in == {"modelctl-scheduler"} and scheduler.slots["a"].in_flight == 0
    scheduler.close()
    registry.close()


def test_a_client_gone_before_the_scheduler_saw_its_request_loads_nothing(tmp_path: Path) -> None:
    """The scheduler's loop is busy when a request for `m` arrives and its client leaves at
    once: by the time the loop sees the request, nobody wants it, and nothing is loaded.
    Before, the load began anyway (its want was checked only while waiting for another's)."""
    backend = TurnBackend()
    registry, scheduler, _ = _core(tmp_path, backend)
    busy, free = threading.Event(), threading.Event()

    def occupy() -> None:  # the loop at work on something else
        busy.set()
        free.wait(10)

    async def main() -> None:
        loop = await asyncio.to_thread(scheduler.start)
        loop.call_soon_threadsafe(occupy)
        await asyncio.to_thread(busy.wait, 10)
        asking = asyncio.create_task(scheduler.ahold("m"))
        posted = "run_coroutine_threadsafe"  # the request, waiting for the busy loop
        await _until(lambda: any(posted in repr(handle) for handle in list(loop._ready)))
        asking.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asking
        free.set()

    asyncio.run(main())
    scheduler.settle()
    assert backend.loads == [] and "m" not in scheduler.slots
    scheduler.close()
    registry.close()


def test_a_save_that_fails_keeps_a_requests_hold_its_own(tmp_path: Path) -> None:
    """Saving what is loaded fails (a locked database, a full disk): the request still gets
    its model and gives it back; before, the failure left the model held for good."""
    backend = TurnBackend()
    backend.release.set()

    def persist(state: Any) -> None:
        raise OSError("No space left on device")

    registry, scheduler, requests = _core(tmp_path, backend, persist=persist)
    answer = asyncio.run(requests.arequest("chat", "m", HELLO))
    assert answer["choices"][0]["message"]["content"] == "hello"
    scheduler.settle()
    assert scheduler.slots["m"].in_flight == 0 and scheduler.unload("m")
    scheduler.close()
    registry.close()
