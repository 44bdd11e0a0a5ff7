"""Registry benchmark: bulk import, filtered queries beside raw sqlite3, and the CLI's cold start.

    python benchmarks/registry.py                    # 10,000 and 1,000,000 models
    python benchmarks/registry.py --sizes 10000      # quicker
    python benchmarks/registry.py --postgres         # and the same on PostgreSQL, side by side

Targets (issue "Foundation"): a filtered query within 1.5x of the same query in raw sqlite3;
a cold `modelctl list --json --where ...` over 10,000 models within 15x of `python -c pass`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from modelctl.registry import Registry
from modelctl.registry.query import compile_order, compile_query

BACKENDS = ["ollama"] * 4 + ["huggingface"] * 2 + ["llamacpp"] * 2 + ["openai", "anthropic"]
TAGS = ["prod", "dev", "local", "remote", "code", "chat", "eval", "team-a", "team-b", "old"]
TASKS = ["chat", "code", "reasoning", "embedding", "vision"]
QUANTS = ["Q4_K_M", "Q5_K_M", "Q8_0", "F16", "BF16", None]
OWNERS = ["ann", "bob", "cy", "dee", "eve"]
STAMP = "2026-01-01T00:00:00Z"

# A selective query (about 1% of rows) and a broad one (about 40%).
SELECTIVE = {
    "backend": "ollama",
    "context_length": {"$gte": 65536},
    "tags": {"$contains": "prod"},
    "custom.owner": "ann",
}
SELECTIVE_WHERE = "backend=ollama and context_length>=64k and tags~prod and custom.owner=ann"
BROAD = {"backend": "ollama"}


def synthetic(count: int, seed: int = 7) -> list[dict]:
    """Records shaped like real ones, as an export file holds them (timestamps included)."""
    rng = random.Random(seed)
    records = []
    for i in range(count):
        backend = rng.choice(BACKENDS)
        params = rng.choice([135, 494, 1_240, 3_210, 7_620, 8_030, 14_700, 32_800, 70_600])
        record = {
            "id": f"{backend}-model-{i:07d}:{params}m",
            "backend": backend,
            "refs": {backend: f"model-{i}"},
            "tasks": rng.sample(TASKS, rng.randint(1, 2)),
            "parameters": params * 1_000_000,
            "quantization": rng.choice(QUANTS),
            "context_length": rng.choice([2048, 4096, 8192, 32768, 131072]),
            "file_size": params * 600_000,
            "installed": rng.random() < 0.3,
            "tags": rng.sample(TAGS, rng.randint(0, 3)),
            "custom": {"owner": rng.choice(OWNERS), "score": round(rng.random() * 10, 2)},
            "created_at": STAMP,
            "updated_at": STAMP,
        }
        records.append(record)
    return records


def best_of(fn, repeat: int) -> float:
    """Best wall time of `repeat` runs, in seconds (the least disturbed by a noisy machine)."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def build(folder: Path, count: int) -> tuple[Path, float, float]:
    """Import `count` synthetic models through modelctl; the same rows through raw sqlite3."""
    records = synthetic(count)
    path = folder / f"registry-{count}.sqlite"
    registry = Registry.open(path)
    start = time.perf_counter()
    for chunk in range(0, count, 100_000):  # validate and write in batches of 100,000
        registry.import_data({"models": records[chunk : chunk + 100_000]})
    modelctl_seconds = time.perf_counter() - start
    registry.close()

    raw_path = folder / f"raw-{count}.sqlite"
    db = sqlite3.connect(raw_path, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE models (id TEXT PRIMARY KEY, data TEXT)")
    start = time.perf_counter()
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO models VALUES (?, ?)",
        ((r["id"], json.dumps(r, separators=(",", ":"))) for r in records),
    )
    db.execute("COMMIT")
    raw_seconds = time.perf_counter() - start
    db.close()
    raw_path.unlink()
    return path, modelctl_seconds, raw_seconds


def measure(
    registry: Registry, raw: sqlite3.Connection, query: dict, repeat: int
) -> tuple[int, float, float, float, float, float]:
    """Rows, raw sqlite3 (text), modelctl (text), raw + json.loads, modelctl dicts, Models."""
    where, params = compile_query(query)
    sql = f"SELECT data FROM models WHERE {where} ORDER BY {compile_order(None)}"
    n = len(raw.execute(sql, params).fetchall())  # also warms the page cache for both sides
    return (
        n,
        best_of(lambda: raw.execute(sql, params).fetchall(), repeat),
        best_of(lambda: registry.records_json(query), repeat),
        best_of(lambda: [json.loads(r[0]) for r in raw.execute(sql, params)], repeat),
        best_of(lambda: registry.records(query), repeat),
        best_of(lambda: registry.query(query), max(1, repeat // 2)),
    )


def queries(path: Path, repeat: int) -> list[tuple]:
    """The selective and the broad query, measured on the registry at `path`."""
    registry = Registry.open(path)
    raw = sqlite3.connect(path)
    rows = [
        (label, *measure(registry, raw, query, repeat))
        for label, query in (("selective", SELECTIVE), ("broad", BROAD))
    ]
    raw.close()
    registry.close()
    return rows


def postgres_side(server: object, count: int, repeat: int) -> tuple[float, list[tuple]]:
    """The same import and queries on PostgreSQL: import seconds, and per query (label, rows,
    modelctl JSON text, modelctl dicts)."""
    registry = Registry.open(server.fresh())
    records = synthetic(count)
    start = time.perf_counter()
    for chunk in range(0, count, 100_000):
        registry.import_data({"models": records[chunk : chunk + 100_000]})
    seconds = time.perf_counter() - start
    registry.store.db.execute("ANALYZE")
    rows = []
    for label, query in (("selective", SELECTIVE), ("broad", BROAD)):
        n = len(registry.records_json(query))
        rows.append((label, n, best_of(lambda q=query: registry.records_json(q), repeat),
                     best_of(lambda q=query: registry.records(q), repeat)))  # fmt: skip
    registry.close()
    return seconds, rows


def cold_start(path: Path, runs: int) -> tuple[float, float, float]:
    """Median wall time of a bare interpreter, `import modelctl`, and `modelctl list --json`."""
    script = Path(sys.executable).parent / "modelctl"
    env = {**os.environ, "MODELCTL_DATABASE": str(path), "MODELCTL_HOME": str(path.parent)}

    def median(cmd: list[str]) -> float:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    bare = median([sys.executable, "-c", "pass"])
    imported = median([sys.executable, "-c", "import modelctl"])
    listed = median([str(script), "list", "--json", "--where", SELECTIVE_WHERE])
    return bare, imported, listed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 1_000_000])
    parser.add_argument("--repeat", type=int, default=7, help="query repetitions (best of)")
    parser.add_argument("--runs", type=int, default=21, help="cold-start runs (median)")
    parser.add_argument("--keep", type=Path, help="keep the databases in this folder")
    parser.add_argument(
        "--postgres", action="store_true", help="also on PostgreSQL (a server it starts)"
    )
    args = parser.parse_args()
    server = None
    if args.postgres:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from tests.postgres import PostgresServer

        server = PostgresServer().start()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="modelctl-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    ms = 1000.0
    print(
        f"# registry benchmark (python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version})"
    )
    try:
        for count in args.sizes:
            path, t_import, t_raw_insert = build(folder, count)
            size_mb = path.stat().st_size / 1e6
            print(f"\n## {count:,} models ({size_mb:,.0f} MB database)")
            print(
                f"bulk import (validated, indexed): {t_import:.2f} s "
                f"({count / t_import:,.0f} models/s); raw sqlite3 insert of the same JSON "
                f"(no validation, no indexes): {t_raw_insert:.2f} s"
            )
            print(
                "| query | rows | raw sqlite3 | modelctl (JSON text) | ratio "
                "| raw + json.loads | modelctl dicts | ratio | modelctl Models |"
            )
            print("|---|---|---|---|---|---|---|---|---|")
            for label, n, t_raw, t_text, t_raw_dicts, t_dicts, t_models in queries(
                path, args.repeat
            ):
                print(
                    f"| {label} | {n:,} | {t_raw * ms:.2f} ms | {t_text * ms:.2f} ms "
                    f"| {t_text / t_raw:.2f}x | {t_raw_dicts * ms:.2f} ms | {t_dicts * ms:.2f} ms "
                    f"| {t_dicts / t_raw_dicts:.2f}x | {t_models * ms:.2f} ms |"
                )
            if server is not None:
                seconds, rows = postgres_side(server, count, args.repeat)
                sqlite_side = {r[0]: r for r in queries(path, args.repeat)}
                print(f"\nPostgreSQL 15: import {seconds:.1f} s ({count / seconds:,.0f} models/s)")
                print(
                    "| query | rows | SQLite, JSON text | PostgreSQL, JSON text "
                    "| SQLite, dicts | PostgreSQL, dicts |\n|---|---|---|---|---|---|"
                )
                for label, n, t_text, t_dicts in rows:
                    mine = sqlite_side[label]
                    print(f"| {label} | {n:,} | {mine[3] * ms:.1f} ms | {t_text * ms:.1f} ms "
                          f"| {mine[5] * ms:.1f} ms | {t_dicts * ms:.1f} ms |")  # fmt: skip
            if count == 10_000:
                bare, imported, listed = cold_start(path, args.runs)
                print(
                    f"\ncold start, median of {args.runs}: `python -c pass` {bare * ms:.0f} ms; "
                    f"`import modelctl` {imported * ms:.0f} ms; "
                    f"`modelctl list --json --where '{SELECTIVE_WHERE}'` {listed * ms:.0f} ms "
                    f"= {listed / bare:.1f}x a bare interpreter (target 15x)"
                )
            if not args.keep:
                path.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)
        if server is not None:
            server.remove()


if __name__ == "__main__":
    main()
