"""Usage ledger benchmark: a year of requests on SQLite and PostgreSQL, side by side.

    python benchmarks/ledger.py                     # 10,000,000 requests
    python benchmarks/ledger.py --rows 1000000      # quicker

Each engine gets the same rows: a year of requests from 20 models and 5 clients, written
through the ledger in batches. Measured, on each engine:
- writing them (rows/s);
- `stats` (overall and per model, with p50/p95) while every row is kept;
- folding the rows older than 30 days into daily totals (`compact`), and `stats` after, which
  reads the totals and the rows still kept (the target: under 200 ms on PostgreSQL);
- the ledger's size on disk per million requests, before and after.

PostgreSQL is a server the benchmark starts (Debian's package, as the tests start it).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.postgres import PostgresServer

from modelctl.store.database import open_store
from modelctl.store.ledger import Ledger, Usage

DAY = 86400.0
NOW = 1_790_000_000.0


def rows(count: int, seed: int = 3) -> list[Usage]:
    rng = random.Random(seed)
    models = [f"org/model-{i}:7b" for i in range(20)]
    clients = ["web", "cli", "notebook", "batch", None]
    out = []
    for i in range(count):
        latency = rng.lognormvariate(-1.0, 0.6)
        out.append(Usage(
            model=models[i % 20], latency=latency, ttft=latency / 5, client=clients[i % 5],
            tokens_in=rng.randint(10, 2000), tokens_out=rng.randint(1, 500), ok=i % 97 != 0,
            cost=0.0001 * (i % 7), at=NOW - 365 * DAY * (count - i) / count,
        ))  # fmt: skip
    return out


def size(store: object) -> int:
    """Bytes the ledger's tables take on disk."""
    if store.dialect == "postgresql":
        return store.db.execute(
            "SELECT pg_total_relation_size('usage') + pg_total_relation_size('usage_daily')"
        ).fetchone()[0]
    store.db.execute("VACUUM")
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    return store.path.stat().st_size


def timed(fn: object, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def run(location: str, data: list[Usage]) -> dict[str, float]:
    store = open_store(location)
    ledger = Ledger(store, flush_interval=3600)
    start = time.perf_counter()
    for chunk in range(0, len(data), 100_000):
        for usage in data[chunk : chunk + 100_000]:
            ledger.record(usage)
        ledger.flush()
    written = time.perf_counter() - start
    if store.dialect == "postgresql":
        store.db.execute("VACUUM ANALYZE usage")
    before = size(store)
    stats_all = timed(ledger.stats, 1)
    start = time.perf_counter()
    ledger.compact(NOW - 30 * DAY)
    compacted = time.perf_counter() - start
    if store.dialect == "postgresql":
        store.db.execute("VACUUM FULL usage")
        store.db.execute("ANALYZE usage_daily")
    after = size(store)
    stats_after = timed(ledger.stats)
    one_model = timed(lambda: ledger.stats("org/model-3:7b"))
    kept = store.db.execute("SELECT count(*) FROM usage").fetchone()[0]
    days = store.db.execute("SELECT count(*) FROM usage_daily").fetchone()[0]
    ledger.close()
    store.close()
    million = len(data) / 1e6
    return {
        "write (rows/s)": len(data) / written,
        "stats, every row kept (ms)": stats_all * 1000,
        "fold rows older than 30 days (s)": compacted,
        "rows kept / daily totals": f"{kept:,} / {days:,}",
        "stats after (ms)": stats_after * 1000,
        "stats of one model after (ms)": one_model * 1000,
        "size per million requests, every row (MB)": before / million / 1e6,
        "size per million requests, after (MB)": after / million / 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    args = parser.parse_args()
    data = rows(args.rows)
    server = PostgresServer().start()
    try:
        with tempfile.TemporaryDirectory() as folder:
            results = {
                "SQLite": run(str(Path(folder) / "ledger.sqlite"), data),
                "PostgreSQL": run(server.fresh(), data),
            }
    finally:
        server.remove()
    print(f"# usage ledger, {args.rows:,} requests over a year (20 models, 5 clients)")
    print("| | SQLite | PostgreSQL |\n|---|---|---|")
    for key in results["SQLite"]:
        cells = [results[e][key] for e in ("SQLite", "PostgreSQL")]
        shown = [c if isinstance(c, str) else f"{c:,.1f}" for c in cells]
        print(f"| {key} | {shown[0]} | {shown[1]} |")


if __name__ == "__main__":
    main()
