"""The usage ledger: one row per request (model, client, latency, tokens, cost), statistics,
figures over time (`series`), and every row in order (`export`, `export_csv`).

Every request through `ModelManager.chat/complete/embed` and the gateway is recorded; calls made
elsewhere come in through `record_usage`. Rows are buffered and written in one transaction every
`flush_interval` seconds by a background thread, so a request never waits on the database; every
read flushes first, so what was recorded is always what is counted.
"""

from __future__ import annotations

import csv
import io
import itertools
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelctl.record.errors import InvalidRequest

if TYPE_CHECKING:
    from modelctl.store.database import Store

__all__ = ["COLUMNS", "KINDS", "Ledger", "Usage", "series_step"]

KINDS = ("chat", "completion", "embedding", "other")
COLUMNS = (  # of the usage table, as `rows`, `export` and `Usage.row` give them
    "at", "model", "backend", "kind", "client", "latency", "ttft", "tokens_in", "tokens_out",
    "tokens_per_second", "ok", "error", "cost",
)  # fmt: skip
SERIES_POINTS = 120  # a series' points by default, at most
SERIES_MOST = 2000  # and whatever step is asked for
ROUND_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400)
DAY = 86400
FORMULA = ("=", "+", "-", "@", "\t", "\r")  # how text a spreadsheet runs may start


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
        """The values in `COLUMNS` order (attribute reads: `asdict` costs 10x more)."""
        ok = int(self.ok)  # SQLite has no booleans
        return tuple(ok if column == "ok" else _text(getattr(self, column)) for column in COLUMNS)


def _text(value: Any) -> Any:
    """Text SQLite can store: a lone surrogate (JSON's `"\\ud800"`, in a client's name or an
    error) made the whole batch fail to write, and every read of the ledger with it."""
    if isinstance(value, str) and not value.isascii():
        return value.encode("utf-8", "replace").decode()
    return value


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
            marks = ", ".join("?" * len(COLUMNS))
            with self.store.transaction() as db:
                db.executemany(
                    f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES ({marks})",
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
            f"SELECT {', '.join(COLUMNS)} FROM usage WHERE {where} ORDER BY at DESC LIMIT ?",
            (*params, int(limit)),
        )
        return [
            dict(zip(COLUMNS, row, strict=True)) | {"ok": bool(row[10])}
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

    def series(
        self, model: str | None = None, *, since: float, until: float, step: float
    ) -> list[dict[str, Any]]:
        """Figures per `step` seconds from `since` up to `until` (not included), for each span
        that holds requests, in time order; `at` is where the span starts."""
        if step <= 0 or since >= until:
            raise InvalidRequest(
                f"a series from {since} to {until} by {step}: since must come before until",
                hint="and step must be more than 0",
            )
        self.flush()
        where, params = _where(model, since)
        where, params = f"{where} AND at < ?", (*params, until)
        # the span's number (at >= since: no negatives); PostgreSQL's CAST rounds, SQLite's cuts
        span = (
            "CAST(FLOOR((at - ?) / ?) AS INTEGER)"
            if self.store.dialect == "postgresql"
            else "CAST((at - ?) / ? AS INTEGER)"
        )
        db = self.store.db
        groups = db.execute(
            f"""SELECT {span} AS span, COUNT(*), SUM(ok), AVG(ttft), SUM(tokens_in),
                       SUM(tokens_out), AVG(tokens_per_second), SUM(cost)
                FROM usage WHERE {where} GROUP BY span ORDER BY span""",
            (since, step, *params),
        ).fetchall()
        ordered = db.execute(
            f"SELECT {span} AS span, latency FROM usage WHERE {where} ORDER BY span, latency",
            (since, step, *params),
        )
        latencies = {
            number: [latency for _, latency in rows]
            for number, rows in itertools.groupby(ordered, key=lambda row: row[0])
        }
        return [_point(since + row[0] * step, row[1:], latencies[row[0]]) for row in groups]

    def export(
        self, model: str | None = None, *, since: float | None = None, batch: int = 1000
    ) -> Iterator[tuple[Any, ...]]:
        """Every row (values in `COLUMNS` order), oldest first, read `batch` at a time: each
        read is a query of its own, so a slow reader holds nothing open between them, and
        the next batch may be read from another thread."""
        self.flush()
        return self._batches(model, since, batch)

    def export_csv(
        self, model: str | None = None, *, since: float | None = None, batch: int = 1000
    ) -> Iterator[str]:
        """`export` as CSV text, a header of `COLUMNS` and then `batch` rows to a chunk; text
        that a spreadsheet would run as a formula (a client's name) starts with `'`, so it is
        shown and never run."""
        return _csv(self.export(model, since=since, batch=batch), batch)

    def _batches(self, model: str | None, since: float | None, batch: int) -> Iterator[Any]:
        where, params = _where(model, since)
        select = f"SELECT at, id, {', '.join(COLUMNS)} FROM usage WHERE {where}"
        rows = self.store.db.execute(
            f"{select} ORDER BY at, id LIMIT ?", (*params, batch)
        ).fetchall()
        while rows:
            yield from (row[2:] for row in rows)
            if len(rows) < batch:
                return
            last = rows[-1][:2]  # the next batch starts after it, by (at, id)
            rows = self.store.db.execute(
                f"{select} AND (at, id) > (?, ?) ORDER BY at, id LIMIT ?", (*params, *last, batch)
            ).fetchall()


def series_step(span: float, asked: float | None = None) -> float:
    """The step of a series over `span` seconds: as asked, made larger where it would give
    more than SERIES_MOST points; by default the first round one that gives at most
    SERIES_POINTS.

    >>> series_step(3600), series_step(86400), series_step(3600, 0.5), series_step(60, 1)
    (30, 900, 1.8, 1)
    """
    if asked is not None:
        return max(asked, span / SERIES_MOST)
    wanted = span / SERIES_POINTS
    return next((s for s in ROUND_STEPS if s >= wanted), math.ceil(wanted / DAY) * DAY)


def _csv(rows: Iterator[tuple[Any, ...]], batch: int) -> Iterator[str]:
    """The header, then each `batch` rows, as CSV text (formulas quoted)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(COLUMNS)
    while True:
        chunk = itertools.islice(rows, batch)
        writer.writerows([f"'{v}" if isinstance(v, str) and v.startswith(FORMULA) else v
                          for v in row] for row in chunk)  # fmt: skip
        text = out.getvalue()
        if not text:
            return
        yield text
        out.seek(0)
        out.truncate()


def _where(model: str | None, since: float | None) -> tuple[str, tuple[Any, ...]]:
    clauses, params = ["TRUE"], []
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


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 3)


def _point(at: float, row: tuple[Any, ...], latencies: list[float]) -> dict[str, Any]:
    """One span of a series: its start, and the figures of its requests."""
    count, ok, ttft, tokens_in, tokens_out, speed, cost = row
    return {
        "at": at,
        "requests": count,
        "errors": count - int(ok or 0),
        "latency_p50_ms": _ms(percentile(latencies, 50)),
        "latency_p95_ms": _ms(percentile(latencies, 95)),
        "ttft_avg_ms": _ms(ttft),
        "tokens_per_second": speed,
        "tokens_in": int(tokens_in or 0),  # PostgreSQL's SUM of integers is a decimal
        "tokens_out": int(tokens_out or 0),
        "cost": round(cost or 0.0, 8),
    }


def _summary(row: tuple[Any, ...], latencies: list[float]) -> dict[str, Any]:
    count, ok, last, avg, ttft, tokens_in, tokens_out, speed, cost = row
    return {
        "requests": count or 0,
        "errors": (count or 0) - int(ok or 0),
        "success_rate": int(ok or 0) / count if count else None,
        "last_used": last,
        "latency_avg_ms": _ms(avg),
        "latency_p50_ms": _ms(percentile(latencies, 50)),
        "latency_p95_ms": _ms(percentile(latencies, 95)),
        "ttft_avg_ms": _ms(ttft),
        "tokens_in": int(tokens_in or 0),  # PostgreSQL's SUM of integers is a decimal
        "tokens_out": int(tokens_out or 0),
        "tokens_per_second": speed,
        "cost": round(cost or 0.0, 8),
    }
