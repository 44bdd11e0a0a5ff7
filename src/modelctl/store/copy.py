"""`modelctl migrate`: everything one store holds, copied into another (SQLite to PostgreSQL,
or back), in one transaction of the target's: all of it, or nothing.

Records go through the target's own writes (`put_many`: their index columns and facets made
there); groups, small state, the usage ledger and profiles row by row, in batches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelctl.record.errors import Conflict
from modelctl.store.ledger import COLUMNS

if TYPE_CHECKING:
    from modelctl.store.database import Store
    from modelctl.store.postgres import PostgresStore

__all__ = ["copy_store"]

BATCH = 5000
DAILY = ("day", "model", "client", "requests", "ok", "last_at", "latency_sum", "ttft_sum",
         "ttft_count", "tokens_in", "tokens_out", "speed_sum", "speed_count", "cost")  # fmt: skip


def copy_store(source: Store | PostgresStore, target: Store | PostgresStore) -> dict[str, int]:
    """Copy `source` into `target`, which must be empty; returns how many of each were copied."""
    counts = {"models": 0, "groups": 0, "usage": 0, "usage_days": 0, "profiles": 0, "state": 0}
    with target.transaction() as db:
        held = target.count() + db.execute("SELECT count(*) FROM usage").fetchone()[0]
        if held:
            raise Conflict(
                f"{target.path} already holds models or usage: migrate copies into an empty one",
                hint="point --to at a new database",
            )
        offset = 0
        while batch := source.select(order="id", limit=BATCH, offset=offset):
            counts["models"] += target.put_many(batch)
            offset += len(batch)
        for name, group in source.groups().items():
            target.put_group(name, description=group["description"],
                             created_at=group["created_at"], members=group["models"])  # fmt: skip
            counts["groups"] += 1
        for key, value in source.db.execute("SELECT key, value FROM meta").fetchall():
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
            counts["state"] += 1
        counts["usage"] = _rows(source, db, "usage", COLUMNS)
        daily = source.db.execute(f"SELECT {', '.join(DAILY)} FROM usage_daily").fetchall()
        marks = ", ".join("?" * len(DAILY))
        db.executemany(f"INSERT INTO usage_daily ({', '.join(DAILY)}) VALUES ({marks})", daily)
        counts["usage_days"] = len(daily)
        counts["profiles"] = _rows(source, db, "profiles", ("model", "at", "data"))
    return counts


def _rows(source: Any, db: Any, table: str, columns: tuple[str, ...]) -> int:
    """A table's rows in the order they were written, `BATCH` at a time (by id: no cursor held
    open on the source while the target writes)."""
    names = ", ".join(columns)
    marks = ", ".join("?" * len(columns))
    copied, last = 0, -1
    while rows := source.db.execute(
        f"SELECT id, {names} FROM {table} WHERE id > ? ORDER BY id LIMIT ?", (last, BATCH)
    ).fetchall():
        db.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", [r[1:] for r in rows])
        copied += len(rows)
        last = rows[-1][0]
    return copied
