"""Wiring the scheduler to the registry, the backends and the fit estimate; running requests.

A request names a model (or uses the current one), gets it loaded through the scheduler, holds
it for the request's whole life (a stream included), applies the model's default generation
options under the request's own, and records the tokens per second of what it generated.
Everything here takes the parts it uses (a registry, a backend lookup, a catalog, a store, a
ledger); `ModelManager` composes them.
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from modelctl.backends._http import Relayed, usage_only
from modelctl.record.errors import (
    InvalidRequest,
    LoadFailed,
    ModelctlError,
    NotFound,
    NotInstalled,
    NotSupported,
)
from modelctl.record.model import GENERATION_OPTIONS, check_options
from modelctl.runtime.admission import Admission
from modelctl.store.ledger import Usage

__all__ = ["STATE_KEY", "Meter", "Requests", "make_scheduler"]

if TYPE_CHECKING:
    from modelctl.backends import Backend
    from modelctl.config import Settings
    from modelctl.fit.catalog import Catalog
    from modelctl.record.model import Model
    from modelctl.registry import Registry
    from modelctl.runtime.scheduler import Scheduler, Slot
    from modelctl.store.ledger import Ledger

STATE_KEY = "scheduler_state"
# Request fields a runtime takes besides the generation options.
PASSED_THROUGH = frozenset(
    {"stream", "tools", "tool_choice", "response_format", "logprobs", "top_logprobs"}
)
RESERVE = 1 << 30  # RAM left to everything else when the budget is not set
# What a local model counts against the budget when nothing at all is known of its size (no
# file, no parameters, no catalog entry): never 0, or any number of them would fit.
UNKNOWN_SIZE = 1 << 30


def make_scheduler(
    *,
    settings: Settings,
    registry: Registry,
    backend: Callable[[str], Backend],
    catalog: Callable[[], Catalog],
) -> Scheduler:
    """A scheduler whose models come from `registry`, load through `backend(name)`, are
    estimated from their files or the catalog, and whose state is saved in the registry's store."""
    import psutil

    from modelctl.fit import estimate as fit
    from modelctl.runtime.scheduler import Scheduler

    budget = settings.memory_budget
    if budget is None:
        budget = max(0, psutil.virtual_memory().available - RESERVE)

    from modelctl.runtime.supervisor import Launcher, Supervisor

    # a model with a command runs in it always; the others in modelctl's own worker where the
    # `workers` setting says so (a server's default), else in this process (the library's)
    supervisor = Supervisor(
        logs=settings.home / "logs" / "workers", home=settings.home, own=bool(settings.workers),
        commands=settings.commands, load_timeout=settings.load_timeout,
    )  # fmt: skip

    def resolve(model_id: str) -> tuple[Model, Any]:
        model = registry.weights(registry[model_id])  # a derived model loads its base's weights
        if model.status == "deleting":  # read once the model's place is taken: a delete
            # that marked it first finds no load to wait for, and one that marks it after
            # finds this load's slot and waits for it before the files go
            raise NotInstalled(f"{model_id} is being deleted", hint=f"modelctl pull {model_id}")
        runs_on = backend(model.backend)
        if supervisor.runs(model, runs_on):
            return model, Launcher(supervisor, runs_on)  # a worker process of its own
        return model, runs_on

    estimates: dict[tuple[Any, ...], int] = {}  # a record unchanged since: the same answer

    def estimate(model: Model, options: dict[str, Any]) -> int:
        context, logits = options.get("context"), bool(options.get("logits"))
        key = (model.id, model.updated_at, context, logits)
        if key not in estimates:
            estimates[key] = _estimate(model, int(context) if context else None, logits)
        return estimates[key]

    def _estimate(model: Model, context: int | None, logits: bool = False) -> int:
        known = catalog()
        try:
            facts, _ = fit.facts_for(model.id, catalog=known, registry=registry)
        except ModelctlError:
            if model.backend not in known.schemes.local:
                return 0  # served elsewhere: no memory here
            # local, with no header, parameters or entry: its files' size, else a guess
            size = model.file_size or fit.size_on_disk(model.file)
            if not size:
                return UNKNOWN_SIZE
            facts = fit.from_download(size)
        return fit.estimate_memory(facts, context=context, logits_all=logits).total

    def rss() -> int:
        return psutil.Process().memory_info().rss

    def persist(state: dict[str, Any]) -> None:
        registry.store.put_state(STATE_KEY, state)

    scheduler = Scheduler(
        resolve=resolve, estimate=estimate, budget=budget, max_loaded=settings.max_loaded,
        keep_alive=settings.keep_alive, measure=rss, persist=persist,
        swap_batch=settings.swap_batch, swap_turn=settings.swap_turn,
    )  # fmt: skip
    supervisor.on_exit = scheduler.failed  # a worker that dies: its model fails
    scheduler.supervisor = supervisor
    return scheduler


def _check_load(options: dict[str, Any]) -> None:
    """The load options a request may carry: ValueError names the first that is wrong."""
    for name, value in options.items():
        if name in ("embedding", "logits"):
            if not isinstance(value, bool):
                raise ValueError(f"{name}: must be true or false, not {value!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name}: must be a number, not {repr(value)[:40]}")
        if name == "context" and not 1 <= value <= 10_000_000:
            raise ValueError(f"context: must be between 1 and 10,000,000 tokens, not {value!r}")
        if name == "gpu_layers" and not -1 <= value <= 100_000:
            raise ValueError(f"gpu_layers: must be -1 (all) or more, not {value!r}")


def _files_gone(record: Model, local: frozenset[str]) -> bool:
    """A local model whose own files are named and are not on this disk."""
    path = record.file
    return record.backend in local and path is not None and not os.path.exists(path)


class Requests:
    """Runs requests (`kind`: chat, complete, embed) on models, loading them on demand through
    the scheduler, and meters each into the usage ledger."""

    def __init__(
        self,
        *,
        registry: Registry,
        scheduler: Scheduler,
        ledger: Ledger,
        max_queue: int = 512,
        queue_timeout: float = 600.0,
    ) -> None:
        self.registry, self.scheduler, self.ledger = registry, scheduler, ledger
        self.admission = Admission(max_queue=max_queue, timeout=queue_timeout)

    def _prepare(
        self, kind: str, model: str | None, client: str | None, options: dict[str, Any]
    ) -> tuple[str, dict[str, Any], dict[str, Any], Meter]:
        """(model id, load options, generation options, meter) for one request."""
        scheduler = self.scheduler
        if model is None:
            if scheduler.current is None:
                raise NotFound(
                    "no model named and no current model", hint="name one, or switch_model first"
                )
            model_id = scheduler.current
            record = self.registry.lookup(model_id)
        else:
            record = self.registry.lookup(model)
            model_id = record.id
        weights = self.registry.weights(record) if record.base else record
        deleting = weights.status == "deleting"
        if deleting or (
            not weights.installed and _files_gone(weights, self.registry.schemes.local)
        ):
            # deleted (here or by another process: the lookup sees every commit): refused in
            # words, never loaded from (or served from) a file that is gone
            raise NotInstalled(f"{model_id} is not installed", hint=f"modelctl pull {model_id}")
        load_options = {
            k: options.pop(k)
            for k in ("keep_alive", "context", "gpu_layers", "embedding")
            if k in options
        }
        if kind == "embed":
            load_options.setdefault("embedding", True)
        if record.base is not None and record.context_length:  # a derived model's num_ctx
            load_options.setdefault("context", record.context_length)
        if _wants_logprobs(options):
            weights = self.registry.weights(record) if record.base else record
            if (weights.file or "").lower().endswith(".gguf"):  # llama.cpp: loaded with logits
                load_options["logits"] = True
        unknown = set(options) - GENERATION_OPTIONS - PASSED_THROUGH
        if unknown:
            raise InvalidRequest(
                f"unknown option {sorted(unknown)[0]!r}",
                hint=", ".join(sorted(GENERATION_OPTIONS)),
            )
        try:  # every value checked here, whichever API (or the library) it came through
            generation = check_options(
                {k: v for k, v in options.items() if k in GENERATION_OPTIONS}
            )
            _check_load(load_options)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        passed = {k: v for k, v in options.items() if k in PASSED_THROUGH}
        for name in ("logprobs", "top_logprobs"):
            value = passed.get(name)
            if value is None or (name == "logprobs" and isinstance(value, bool)):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 20:
                raise InvalidRequest(f"{name}: must be a whole number from 0 to 20, not {value!r}")
        meter = Meter(self.ledger, self.scheduler, record, kind, client)
        return model_id, load_options, {**record.defaults, **generation, **passed}, meter

    def request(
        self, kind: str, model: str | None, payload: Any, *, client: str | None = None,
        usage_chunk: bool = False, **options: Any,
    ) -> Any:  # fmt: skip
        """Run one request on a model, loading it on demand; a stream is an iterator (ending
        with the runtime's usage chunk, no choices and the usage, only with `usage_chunk`)."""
        model_id, load_options, merged, meter = self._prepare(kind, model, client, options)
        payload = _with_system(meter.record, kind, payload)
        scheduler = self.scheduler
        if merged.get("stream"):
            chunks = _stream(meter, scheduler, model_id, kind, payload, merged, load_options)
            return chunks if usage_chunk else _without_usage_chunks(chunks)
        try:
            with scheduler.use(model_id, **load_options) as handle:
                _can_give(handle, merged, model_id)
                if kind == "embed":
                    answer = handle.embed(payload)
                else:
                    answer = getattr(handle, kind)(payload, **merged)
        except BaseException as exc:
            meter.finish(error=exc)
            raise
        meter.finish(answer=answer)
        return answer

    async def arequest(
        self, kind: str, model: str | None, payload: Any, *, client: str | None = None,
        relay: bool = False, usage_chunk: bool = False, **options: Any,
    ) -> Any:  # fmt: skip
        """`request` for an event loop: a loaded model is used at once, a load runs in a worker
        thread, and the runtime's async methods answer (HTTP runtimes await their I/O)."""
        model_id, load_options, merged, meter = self._prepare(kind, model, client, options)
        payload = _with_system(meter.record, kind, payload)
        scheduler = self.scheduler
        slot: Slot | None = None
        gate = None
        try:
            while True:
                # held on the scheduler's loop: a loaded model at once, a load awaited without
                # a thread; a client that leaves meanwhile gives up its interest in the load
                slot, fresh = await scheduler.ahold(model_id, **load_options)
                # a turn on the model, waited for on this loop; the slot stays held meanwhile,
                # so the model is not evicted from under the requests queued for it
                gate = await self.admission.enter(model_id, slot.handle)
                if await scheduler.abegin(slot, fresh=fresh):
                    break
                # the model's turn is over (another model waits for its room): let go, and
                # wait for its next turn
                self.admission.leave(gate)
                gate = None
                scheduler.release(slot)
                slot = None
        except BaseException as exc:
            self.admission.leave(gate)
            if slot is not None:
                scheduler.release(slot)
            meter.finish(error=exc)
            raise
        handle = slot.handle
        stream = bool(merged.get("stream"))
        if relay and stream and getattr(handle, "relays", False):
            merged = {**merged, "relay": True}  # its chunks as its server's bytes (`Relayed`)
        try:
            if handle is None:  # its runtime died while the request waited for its turn
                raise LoadFailed(f"{model_id} failed: {slot.error or 'its runtime stopped'}")
            _can_give(handle, merged, model_id)
            if kind == "embed":
                answer = await handle.aembed(payload)
            else:
                answer = await getattr(handle, "a" + kind)(payload, **merged)
        except BaseException as exc:
            self.admission.leave(gate)
            scheduler.release(slot)
            meter.finish(error=exc)
            raise
        if stream:
            let_go = _LetGo(partial(self.admission.leave, gate), scheduler, slot, meter)
            held = _astream(meter, answer, let_go, usage_chunk)
            # a stream nobody iterates (its client left before the first chunk) lets go when
            # it is dropped: its generator's `finally` would never run
            weakref.finalize(held, let_go.from_anywhere, asyncio.get_running_loop())
            return held
        self.admission.leave(gate)
        scheduler.release(slot)
        meter.finish(answer=answer)
        return answer


def _wants_logprobs(options: dict[str, Any]) -> bool:
    """Logprobs asked for: chat's `logprobs: true`, text's `logprobs: N` (0 too), or
    `top_logprobs`."""
    asked = options.get("logprobs")
    return (asked is not None and asked is not False) or bool(options.get("top_logprobs"))


def _can_give(handle: Any, options: dict[str, Any], model_id: str) -> None:
    """Logprobs from a runtime that gives none are refused, never dropped without a word."""
    if _wants_logprobs(options) and not getattr(handle, "gives_logprobs", False):
        raise NotSupported(
            f"{model_id} cannot give logprobs: its runtime does not report them",
            hint="ask without logprobs",
        )


def _with_system(record: Model, kind: str, payload: Any) -> Any:
    """A chat given the model's own system prompt (a derived model's, `ollama create`'s
    SYSTEM) first, unless it brings one of its own."""
    if kind != "chat" or not record.system or not isinstance(payload, list):
        return payload
    if any(isinstance(m, dict) and m.get("role") in ("system", "developer") for m in payload):
        return payload
    return [{"role": "system", "content": record.system}, *payload]


def _stream(
    meter: Meter,
    scheduler: Scheduler,
    model_id: str,
    kind: str,
    payload: Any,
    options: dict[str, Any],
    load: dict[str, Any],
) -> Iterator[Any]:
    """Chunks as they come; the model stays held (never evicted) until the stream ends."""
    error: BaseException | None = None
    try:
        with scheduler.use(model_id, **load) as handle:
            _can_give(handle, options, model_id)
            for chunk in getattr(handle, kind)(payload, **options):
                meter.chunk(chunk)
                yield chunk
    except BaseException as exc:  # a client that goes away ends the stream: GeneratorExit
        error = exc
        raise
    finally:
        meter.finish(error=error)


class _LetGo:
    """Gives a stream's turn and slot back and records it, once, however the stream ends."""

    def __init__(
        self, leave: Callable[[], None], scheduler: Scheduler, slot: Slot, meter: Meter
    ) -> None:
        self.leave, self.scheduler, self.slot, self.meter = leave, scheduler, slot, meter
        self.done = False

    def __call__(self, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        try:
            self.leave()
        finally:
            self.scheduler.release(self.slot)
            self.meter.finish(error=error)

    def from_anywhere(self, loop: asyncio.AbstractEventLoop) -> None:
        """For a finalizer, which may run in any thread: the turn belongs to `loop`."""
        if self.done:
            return
        try:
            loop.call_soon_threadsafe(self, GeneratorExit())
        except RuntimeError:  # the loop is closed: nobody waits for a turn on it any more
            self(GeneratorExit())


def _without_usage_chunks(chunks: Iterator[Any]) -> Iterator[Any]:
    """A library stream: the meter has read the usage chunk; the caller gets the answer's."""
    try:
        for chunk in chunks:
            if not usage_only(chunk):
                yield chunk
    finally:
        chunks.close()  # type: ignore[attr-defined]


async def _astream(
    meter: Meter, chunks: AsyncIterator[Any], let_go: _LetGo, usage_chunk: bool = True
) -> AsyncIterator[Any]:
    """Chunks as they come (the usage chunk only with `usage_chunk`); the model's turn and
    its slot are held until the stream ends, and given back however it ends (a client that
    goes away included)."""
    from anyio import CancelScope

    error: BaseException | None = None
    try:
        async for chunk in chunks:
            meter.chunk(chunk)
            if usage_chunk or not usage_only(chunk):
                yield chunk
    except BaseException as exc:  # the client went away: GeneratorExit, or a cancellation
        error = exc
        raise
    finally:
        try:
            close = getattr(chunks, "aclose", None)
            if close is not None:
                with CancelScope(shield=True):  # a cancelled task still lets the runtime go
                    await close()
        finally:
            let_go(error)


class Meter:
    """Measures one request (latency, time to first token, tokens) and records it once."""

    KINDS: ClassVar[dict[str, str]] = {
        "chat": "chat", "complete": "completion", "embed": "embedding"
    }  # fmt: skip

    def __init__(
        self, ledger: Ledger, scheduler: Scheduler, record: Model, kind: str, client: str | None
    ) -> None:
        self.ledger, self.scheduler = ledger, scheduler
        self.record, self.kind, self.client = record, kind, client
        self.started = time.perf_counter()
        self.first: float | None = None
        self.tokens_in = self.tokens_out = 0
        self.usage_seen = False
        self.done = False

    def chunk(self, chunk: Any) -> None:
        if type(chunk) is Relayed:  # read from its bytes: decoded only for its usage
            usage = chunk.usage
            if usage:
                self._usage(usage)
            if chunk.says_something:
                if self.first is None:
                    self.first = time.perf_counter()
                if not self.usage_seen:
                    self.tokens_out += 1
            return
        if not isinstance(chunk, dict):
            return
        usage = chunk.get("usage")
        if usage:
            self._usage(usage)
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            if choice.get("text") or delta.get("content") or delta.get("tool_calls"):
                if self.first is None:
                    self.first = time.perf_counter()
                if not self.usage_seen:
                    self.tokens_out += 1  # one chunk, one token: what the runtimes stream

    def _usage(self, usage: dict[str, Any]) -> None:
        self.usage_seen = True
        self.tokens_in = int(usage.get("prompt_tokens") or 0)
        self.tokens_out = int(usage.get("completion_tokens") or 0)

    def finish(self, *, answer: Any = None, error: BaseException | None = None) -> None:
        if self.done:
            return
        self.done = True
        if isinstance(answer, dict) and answer.get("usage"):
            self._usage(answer["usage"])
        latency = time.perf_counter() - self.started
        pricing = self.record.pricing
        failed = error is not None and not _went_away(error)
        entry = Usage(
            model=self.record.id,
            backend=self.record.backend,
            kind=self.KINDS.get(self.kind, "other"),
            client=self.client,
            latency=latency,
            ttft=None if self.first is None else self.first - self.started,
            tokens_in=self.tokens_in,
            tokens_out=self.tokens_out,
            ok=not failed,
            error=_describe(error) if error is not None else None,
            cost=pricing.cost(self.tokens_in, self.tokens_out) if pricing else 0.0,
        )
        self.ledger.record(entry)
        if entry.ok and error is None:
            self.scheduler.served(self.record.id)
        speed = entry.tokens_per_second
        if entry.ok and speed:
            self.scheduler.record_speed(self.record.id, speed)


def _went_away(error: BaseException) -> bool:
    import asyncio

    return isinstance(error, GeneratorExit | asyncio.CancelledError)


def _describe(error: BaseException) -> str:
    if _went_away(error):
        return "cancelled: the client went away"
    return str(error) or type(error).__name__
