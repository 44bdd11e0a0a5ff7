"""The usage ledger: one row per request (model, client, latency, tokens, cost), and statistics.

Every request through `ModelManager.chat/complete/embed` and the gateway is recorded; calls made
elsewhere come in through `record_usage`. Rows are buffered and written in one transaction every
`flush_interval` seconds by a background thread, so a request never waits on the database; every
read flushes first, so what was recorded is always what is counted.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from modelctl.store.database import Store

__all__ = ["KINDS", "Ledger", "Usage"]

KINDS = ("chat", "completion", "embedding", "other")
_COLUMNS = (
    "at", "model", "backend", "kind", "client", "latency", "ttft", "tokens_in", "tokens_out",
    "tokens_per_second", "ok", "error", "cost",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Usage:
    """One request: seconds for `latency` and `ttft` (time to first token), tokens, cost."""

    model: str
    latency: float
    kind: str = "chat"
    backend: str | None = None
    client: str | None = None
    ttft: float | None = None
    tokens_in: int = 0
    tokens_out: int = 0
    ok: bool = True
    error: str | None = None
    cost: float = 0.0
    at: float = field(default_factory=time.time)

    @property
    def tokens_per_second(self) -> float | None:
        """Generation speed: tokens out over the time after the first token (or the whole)."""
        if not self.tokens_out:
            return None
        span = self.latency - (self.ttft or 0.0)
        if span <= 0 or (self.ttft is not None and self.tokens_out < 2):
            span = self.latency
        return self.tokens_out / span if span > 0 else None

    def row(self) -> tuple[Any, ...]:
        """The values in `_COLUMNS` order (attribute reads: `asdict` costs 10x more)."""
        ok = int(self.ok)  # SQLite has no booleans
        return tuple(ok if column == "ok" else getattr(self, column) for column in _COLUMNS)


class Ledger:
    """Buffered writes to the `usage` table of a store; `stats()` reads it back."""

    def __init__(self, store: Store, *, flush_interval: float = 0.5) -> None:
        self.store = store
        self.flush_interval = flush_interval
        self._pending: list[Usage] = []
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.observers: list[Callable[[Usage], None]] = []  # metrics, live views

    def record(self, usage: Usage) -> Usage:
        for observe in self.observers:
            observe(usage)
        with self._lock:
            self._pending.append(usage)
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(
                    target=self._run, name="modelctl-usage", daemon=True
                )
                self._thread.start()
        return usage

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.wait(self.flush_interval)
                self._wake.clear()
                self.flush()
        finally:
            self.store.close()  # this thread's connection

    def flush(self) -> int:
        """Write what is buffered now, in one transaction; returns how many rows."""
        with self._flush_lock:
            with self._lock:
                batch, self._pending = self._pending, []
            if not batch:
                return 0
            marks = ", ".join("?" * len(_COLUMNS))
            with self.store.transaction() as db:
                db.executemany(
                    f"INSERT INTO usage ({', '.join(_COLUMNS)}) VALUES ({marks})",
                    [u.row() for u in batch],
                )
            return len(batch)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush()

    # ------------------------------------------------------------------ reading

    def rows(
        self, model: str | None = None, *, since: float | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """The most recent requests, newest first."""
        self.flush()
        where, params = _where(model, since)
        cursor = self.store.db.execute(
            f"SELECT {', '.join(_COLUMNS)} FROM usage WHERE {where} ORDER BY at DESC LIMIT ?",
            (*params, int(limit)),
        )
        return [
            dict(zip(_COLUMNS, row, strict=True)) | {"ok": bool(row[10])}
            for row in cursor.fetchall()
        ]

    def stats(self, model: str | None = None, *, since: float | None = None) -> dict[str, Any]:
        """Counts, last use, latency (average, p50, p95), speed, success rate and cost, per
        model and overall: `{"overall": {...}, "models": {id: {...}}}`."""
        self.flush()
        where, params = _where(model, since)
        db = self.store.db
        groups = db.execute(
            f"""SELECT model, COUNT(*), SUM(ok), MAX(at), AVG(latency), AVG(ttft),
                       SUM(tokens_in), SUM(tokens_out), AVG(tokens_per_second), SUM(cost)
                FROM usage WHERE {where} GROUP BY model ORDER BY model""",
            params,
        ).fetchall()
        models = {
            row[0]: _summary(row[1:], _latencies(db, f"{where} AND model = ?", (*params, row[0])))
            for row in groups
        }
        total = db.execute(
            f"""SELECT COUNT(*), SUM(ok), MAX(at), AVG(latency), AVG(ttft),
                       SUM(tokens_in), SUM(tokens_out), AVG(tokens_per_second), SUM(cost)
                FROM usage WHERE {where}""",
            params,
        ).fetchone()
        return {"overall": _summary(total, _latencies(db, where, params)), "models": models}


def _where(model: str | None, since: float | None) -> tuple[str, tuple[Any, ...]]:
    clauses, params = ["1"], []
    if model is not None:
        clauses.append("model = ?")
        params.append(model)
    if since is not None:
        clauses.append("at >= ?")
        params.append(since)
    return " AND ".join(clauses), tuple(params)


def _latencies(db: Any, where: str, params: tuple[Any, ...]) -> list[float]:
    query = f"SELECT latency FROM usage WHERE {where} ORDER BY latency"
    return [row[0] for row in db.execute(query, params)]


def percentile(ordered: list[float], q: float) -> float | None:
    """The nearest-rank percentile of an ascending list (q in 0..100)."""
    if not ordered:
        return None
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def _summary(row: tuple[Any, ...], latencies: list[float]) -> dict[str, Any]:
    count, ok, last, avg, ttft, tokens_in, tokens_out, speed, cost = row
    ms = lambda s: None if s is None else round(s * 1000, 3)  # noqa: E731
    return {
        "requests": count or 0,
        "errors": (count or 0) - (ok or 0),
        "success_rate": (ok or 0) / count if count else None,
        "last_used": last,
        "latency_avg_ms": ms(avg),
        "latency_p50_ms": ms(percentile(latencies, 50)),
        "latency_p95_ms": ms(percentile(latencies, 95)),
        "ttft_avg_ms": ms(ttft),
        "tokens_in": tokens_in or 0,
        "tokens_out": tokens_out or 0,
        "tokens_per_second": speed,
        "cost": round(cost or 0.0, 8),
    }
