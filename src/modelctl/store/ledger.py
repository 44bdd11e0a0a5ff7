"""The usage ledger: one row per request (model, client, latency, tokens, cost), statistics,
figures over time (`series`), and every row in order (`export`, `export_csv`).

Every request through `ModelManager.chat/complete/embed` and the gateway is recorded; calls made
elsewhere come in through `record_usage`. Rows are buffered and written in one transaction every
`flush_interval` seconds by a background thread, so a request never waits on the database; every
read flushes first, so what was recorded is always what is counted.
"""

from __future__ import annotations

import csv
import heapq
import io
import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from modelctl.record.errors import InvalidRequest, StoreError

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
log = logging.getLogger("modelctl.usage")
HELD = 1_000_000  # rows kept in memory while the database cannot be written
COMPACT_EVERY = 3600  # seconds between two foldings of old rows into daily totals
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
    if isinstance(value, str):
        if "\x00" in value:  # PostgreSQL's text cannot hold it
            value = value.replace("\x00", "")
        if not value.isascii():
            return value.encode("utf-8", "replace").decode()
    return value


class Ledger:
    """Buffered writes to the `usage` table of a store; `stats()` reads it back."""

    def __init__(
        self, store: Store, *, flush_interval: float = 0.5, retention: float | None = None
    ) -> None:
        self.store = store
        self.flush_interval = flush_interval
        # raw rows are kept this many seconds, then folded into daily totals (None: kept)
        self.retention = retention if retention is None or retention > 0 else None
        self._compacted = 0.0
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
                try:
                    self.flush()
                    if self.retention and time.time() - self._compacted > COMPACT_EVERY:
                        self._compacted = time.time()
                        self.compact(time.time() - self.retention)
                except StoreError as exc:  # away for now: the rows are kept, tried again
                    log.warning("usage not written yet: %s", exc)
                    self._stop.wait(min(5.0, self.flush_interval * 10))
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
            try:
                with self.store.transaction() as db:
                    if hasattr(db, "insert"):  # PostgreSQL: by COPY
                        db.insert("usage", COLUMNS, [u.row() for u in batch])
                    else:
                        db.executemany(
                            f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES ({marks})",
                            [u.row() for u in batch],
                        )
            except StoreError as exc:
                if not getattr(exc, "unreachable", False):
                    return self._one_by_one(batch, marks)  # a row it refuses: the others go in
                # the database is away (a server restarting): the rows wait for the next
                # flush, up to HELD of them (then the oldest go: memory is the bound)
                with self._lock:
                    self._pending = (batch + self._pending)[-HELD:]
                raise
            return len(batch)

    def _one_by_one(self, batch: list[Usage], marks: str) -> int:
        """Each row in a transaction of its own; one the database refuses is logged, not kept
        (kept, it would fail every flush after it)."""
        written = 0
        for usage in batch:
            try:
                with self.store.transaction() as db:
                    db.execute(
                        f"INSERT INTO usage ({', '.join(COLUMNS)}) VALUES ({marks})", usage.row()
                    )
                written += 1
            except StoreError as exc:
                log.error("a usage row was refused (%s): %r", exc.message, usage)
        return written

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
        with self.store.reading():  # rows and days' totals from one snapshot
            return self._stats(model, since)

    def _stats(self, model: str | None, since: float | None) -> dict[str, Any]:
        where, params = _where(model, since)
        db = self.store.db
        raw = {
            row[0]: row[1:]
            for row in db.execute(
                f"SELECT model, {_RAW_SUMS} FROM usage WHERE {where} GROUP BY model", params
            ).fetchall()
        }
        # history past the retention, as daily totals: the days that overlap `since` count
        days, day_params = _where(model, None if since is None else since - DAY, column="day")
        days = days.replace("day >= ?", "day > ?")  # the days that end after `since`
        rolled = {
            row[0]: row[1:]
            for row in db.execute(
                f"SELECT model, {_DAILY_SUMS} FROM usage_daily WHERE {days} GROUP BY model",
                day_params,
            ).fetchall()
        }
        # percentiles come from the raw rows (the days' totals keep sums, not every latency)
        each, overall = self._percentiles(where, params)
        models, total = {}, _sums()
        for name in sorted(raw.keys() | rolled.keys()):
            sums = _sums(raw.get(name), rolled.get(name))
            total = _sums(total, sums)
            models[name] = _summary(sums, each.get(name, (None, None)))
        return {"overall": _summary(total, overall), "models": models}

    def _percentiles(
        self, where: str, params: tuple[Any, ...]
    ) -> tuple[dict[str, tuple[Any, Any]], tuple[Any, Any]]:
        """Latency p50 and p95 (nearest rank) per model and overall: PostgreSQL computes them
        (percentile_disc is the nearest rank); from SQLite, one ordered read."""
        db = self.store.db
        if self.store.dialect == "postgresql":
            wanted = (
                "percentile_disc(0.5) WITHIN GROUP (ORDER BY latency), "
                "percentile_disc(0.95) WITHIN GROUP (ORDER BY latency)"
            )
            each = {
                row[0]: (row[1], row[2])
                for row in db.execute(
                    f"SELECT model, {wanted} FROM usage WHERE {where} GROUP BY model", params
                ).fetchall()
            }
            overall = db.execute(f"SELECT {wanted} FROM usage WHERE {where}", params).fetchone()
            return each, (overall[0], overall[1])
        ordered = db.execute(
            f"SELECT model, latency FROM usage WHERE {where} ORDER BY model, latency", params
        )
        lists = {
            name: [latency for _, latency in group]
            for name, group in itertools.groupby(ordered, key=lambda row: row[0])
        }
        every = list(heapq.merge(*lists.values()))
        each = {name: (percentile(v, 50), percentile(v, 95)) for name, v in lists.items()}
        return each, (percentile(every, 50), percentile(every, 95))

    def compact(self, before: float) -> int:
        """Fold the raw rows of every whole day before `before` into daily totals per model
        and client, in one transaction; returns how many rows went. `stats` reads both."""
        self.flush()
        cutoff = math.floor(before / DAY) * DAY
        day = (
            "FLOOR(at / 86400) * 86400"
            if self.store.dialect == "postgresql"
            else "CAST(at / 86400 AS INTEGER) * 86400"
        )
        added = ", ".join(f"{c} = usage_daily.{c} + excluded.{c}" for c in _ADDED)
        latest = "GREATEST" if self.store.dialect == "postgresql" else "MAX"
        with self.store.transaction() as db:
            db.execute(
                f"""INSERT INTO usage_daily (day, model, client, requests, ok, last_at,
                        latency_sum, ttft_sum, ttft_count, tokens_in, tokens_out, speed_sum,
                        speed_count, cost)
                    SELECT {day}, model, COALESCE(client, ''), COUNT(*), SUM(ok), MAX(at),
                        SUM(latency), COALESCE(SUM(ttft), 0), COUNT(ttft), SUM(tokens_in),
                        SUM(tokens_out), COALESCE(SUM(tokens_per_second), 0),
                        COUNT(tokens_per_second), SUM(cost)
                    FROM usage WHERE at < ? GROUP BY {day}, model, COALESCE(client, '')
                    ON CONFLICT (day, model, client) DO UPDATE SET {added},
                        last_at = {latest}(usage_daily.last_at, excluded.last_at)""",
                (cutoff,),
            )
            return db.execute("DELETE FROM usage WHERE at < ?", (cutoff,)).rowcount

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


def _where(
    model: str | None, since: float | None, column: str = "at"
) -> tuple[str, tuple[Any, ...]]:
    clauses, params = ["TRUE"], []
    if model is not None:
        clauses.append("model = ?")
        params.append(model)
    if since is not None:
        clauses.append(f"{column} >= ?")
        params.append(since)
    return " AND ".join(clauses), tuple(params)


# count, ok, last, latency, ttft and its count, tokens in and out, speed and its count, cost
_RAW_SUMS = """COUNT(*), SUM(ok), MAX(at), SUM(latency), SUM(ttft), COUNT(ttft), SUM(tokens_in),
    SUM(tokens_out), SUM(tokens_per_second), COUNT(tokens_per_second), SUM(cost)"""
_DAILY_SUMS = """SUM(requests), SUM(ok), MAX(last_at), SUM(latency_sum), SUM(ttft_sum),
    SUM(ttft_count), SUM(tokens_in), SUM(tokens_out), SUM(speed_sum), SUM(speed_count),
    SUM(cost)"""
_ADDED = ("requests", "ok", "latency_sum", "ttft_sum", "ttft_count", "tokens_in", "tokens_out",
          "speed_sum", "speed_count", "cost")  # fmt: skip


def _sums(*rows: tuple[Any, ...] | None) -> tuple[Any, ...]:
    """Rows of `_RAW_SUMS` (or `_DAILY_SUMS`) added up: the last use is the latest of them."""
    out: list[Any] = [0] * 11
    out[2] = None
    for row in rows:
        if row is None:
            continue
        for i, value in enumerate(row):
            if value is None:
                continue
            if i == 2:
                out[2] = value if out[2] is None else max(out[2], value)
            else:
                out[i] += value
    return tuple(out)


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


def _summary(row: tuple[Any, ...], percentiles: tuple[Any, Any]) -> dict[str, Any]:
    # (PostgreSQL's SUM of integers is a decimal: each count made an int again)
    count, ok, ttft_count, speed_count = (int(row[i] or 0) for i in (0, 1, 5, 9))
    last, latency, ttft_sum, tokens_in, tokens_out, speed_sum, cost = (
        row[i] for i in (2, 3, 4, 6, 7, 8, 10)
    )
    avg = latency / count if count else None
    ttft = ttft_sum / ttft_count if ttft_count else None
    speed = float(speed_sum) / speed_count if speed_count else None
    return {
        "requests": count or 0,
        "errors": (count or 0) - int(ok or 0),
        "success_rate": int(ok or 0) / count if count else None,
        "last_used": last,
        "latency_avg_ms": _ms(avg),
        "latency_p50_ms": _ms(percentiles[0]),
        "latency_p95_ms": _ms(percentiles[1]),
        "ttft_avg_ms": _ms(ttft),
        "tokens_in": int(tokens_in or 0),  # PostgreSQL's SUM of integers is a decimal
        "tokens_out": int(tokens_out or 0),
        "tokens_per_second": speed,
        "cost": round(cost or 0.0, 8),
    }
