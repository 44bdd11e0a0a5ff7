"""Wiring the scheduler to the registry, the backends and the fit estimate; running requests.

A request names a model (or uses the current one), gets it loaded through the scheduler, holds
it for the request's whole life (a stream included), applies the model's default generation
options under the request's own, and records the tokens per second of what it generated.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from modelctl.errors import ModelctlError, NotFound
from modelctl.model import GENERATION_OPTIONS

__all__ = ["make_scheduler", "request", "saved_state"]

if TYPE_CHECKING:
    from modelctl.manager import ModelManager
    from modelctl.model import Model
    from modelctl.scheduler import Scheduler

STATE_KEY = "scheduler_state"
RESERVE = 1 << 30  # RAM left to everything else when the budget is not set


def make_scheduler(manager: ModelManager) -> Scheduler:
    import json

    import psutil

    from modelctl import fit
    from modelctl.scheduler import Scheduler

    settings = manager.settings
    budget = settings.memory_budget
    if budget is None:
        budget = max(0, psutil.virtual_memory().available - RESERVE)

    def resolve(model_id: str) -> tuple[Model, Any]:
        model = manager.registry[model_id]
        return model, manager.backend(model.backend)

    estimates: dict[tuple[Any, ...], int] = {}  # a record unchanged since: the same answer

    def estimate(model: Model, options: dict[str, Any]) -> int:
        context = options.get("context")
        key = (model.id, model.updated_at, context)
        if key not in estimates:
            try:
                facts, _ = fit.facts_for(
                    model.id, catalog=manager.catalog, registry=manager.registry
                )
            except ModelctlError:  # served elsewhere, or nothing known: no memory here
                estimates[key] = 0
            else:
                estimate = fit.estimate_memory(facts, context=int(context) if context else None)
                estimates[key] = estimate.total
        return estimates[key]

    def rss() -> int:
        return psutil.Process().memory_info().rss

    def persist(state: dict[str, Any]) -> None:
        with manager.registry.store.transaction() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (STATE_KEY, json.dumps(state)),
            )

    return Scheduler(
        resolve=resolve, estimate=estimate, budget=budget, max_loaded=settings.max_loaded,
        keep_alive=settings.keep_alive, measure=rss, persist=persist,
    )  # fmt: skip


def saved_state(manager: ModelManager) -> dict[str, Any]:
    """What was loaded and current when the scheduler last changed (for a restart)."""
    import json

    row = manager.registry.store.db.execute(
        "SELECT value FROM meta WHERE key = ?", (STATE_KEY,)
    ).fetchone()
    return json.loads(row[0]) if row else {}


def request(
    manager: ModelManager, kind: str, model: str | None, payload: Any, **options: Any
) -> Any:
    scheduler = manager.scheduler
    if model is None:
        if scheduler.current is None:
            raise NotFound(
                "no model named and no current model", hint="name one, or switch_model first"
            )
        model_id = scheduler.current
    else:
        model_id = manager.registry.resolve(model)
    record = manager.registry[model_id]
    load_options = {
        k: options.pop(k)
        for k in ("keep_alive", "context", "gpu_layers", "embedding")
        if k in options
    }
    if kind == "embed":
        load_options.setdefault("embedding", True)
    unknown = (
        set(options) - GENERATION_OPTIONS - {"stream", "tools", "tool_choice", "response_format"}
    )
    if unknown:
        raise ModelctlError(
            f"unknown option {sorted(unknown)[0]!r}", hint=", ".join(sorted(GENERATION_OPTIONS))
        )
    merged = {**record.defaults, **options}
    if options.get("stream"):
        return _stream(scheduler, model_id, kind, payload, merged, load_options)
    with scheduler.use(model_id, **load_options) as handle:
        started = time.monotonic()
        if kind == "embed":
            return handle.embed(payload)
        answer = getattr(handle, kind)(payload, **merged)
        _record_speed(scheduler, model_id, answer, time.monotonic() - started)
        return answer


def _stream(
    scheduler: Scheduler,
    model_id: str,
    kind: str,
    payload: Any,
    options: dict[str, Any],
    load: dict[str, Any],
) -> Iterator[Any]:
    """Chunks as they come; the model stays held (never evicted) until the stream ends."""
    with scheduler.use(model_id, **load) as handle:
        started, count = time.monotonic(), 0
        for chunk in getattr(handle, kind)(payload, **options):
            count += 1
            yield chunk
        elapsed = time.monotonic() - started
        if count and elapsed > 0:
            scheduler.record_speed(model_id, count / elapsed)


def _record_speed(scheduler: Scheduler, model_id: str, answer: Any, elapsed: float) -> None:
    tokens = (
        ((answer or {}).get("usage") or {}).get("completion_tokens")
        if isinstance(answer, dict)
        else None
    )
    if tokens and elapsed > 0:
        scheduler.record_speed(model_id, tokens / elapsed)
