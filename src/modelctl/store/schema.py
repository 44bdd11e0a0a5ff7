"""The schema of every table modelctl keeps, and the migrations that build it step by step.

A database's version is SQLite's `PRAGMA user_version`; `Store` runs the steps it lacks on open
and refuses a database from a newer modelctl.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

__all__ = [
    "FACETS", "INDEXED_COLUMNS", "MIGRATIONS", "SCHEMA_VERSION", "USAGE_DAILY", "Migration",
]  # fmt: skip

# (column, JSON path, SQL type): generated from the record, so they can never disagree with it.
INDEXED_COLUMNS = (
    ("backend", "$.backend", "TEXT"),
    ("size", "$.size", "TEXT"),
    ("quantization", "$.quantization", "TEXT"),
    ("parameters", "$.parameters", "INTEGER"),
    ("context_length", "$.context_length", "INTEGER"),
    ("file_size", "$.file_size", "INTEGER"),
    ("min_memory", "$.min_memory", "INTEGER"),
    ("installed", "$.installed", "INTEGER"),
    ("status", "$.status", "TEXT"),
    ("purpose", "$.purpose", "TEXT"),
)
# List fields of a record kept in the facets table, by facet name.
FACETS = {"tag": "tags", "task": "tasks", "capability": "capabilities", "alias": "aliases"}


def _schema_v1(db: sqlite3.Connection) -> None:
    columns = ",\n".join(
        f"  {name} {sqltype} GENERATED ALWAYS AS (json_extract(data, '{path}')) STORED"
        for name, path, sqltype in INDEXED_COLUMNS
    )
    db.execute(
        f"""CREATE TABLE models (
  id TEXT PRIMARY KEY NOT NULL,
  data TEXT NOT NULL CHECK (json_valid(data)),
{columns})"""
    )
    for name, _, _ in INDEXED_COLUMNS:
        db.execute(f"CREATE INDEX models_{name} ON models({name})")
    db.execute(
        """CREATE TABLE facets (
  facet TEXT NOT NULL, value TEXT NOT NULL,
  model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE,
  PRIMARY KEY (facet, value, model_id)) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX facets_model ON facets(model_id)")
    db.execute("CREATE UNIQUE INDEX facets_alias ON facets(value) WHERE facet = 'alias'")
    db.execute(
        """CREATE TABLE groups (
  name TEXT PRIMARY KEY NOT NULL, description TEXT, created_at TEXT NOT NULL)"""
    )
    db.execute(
        """CREATE TABLE group_members (
  group_name TEXT NOT NULL REFERENCES groups(name) ON DELETE CASCADE ON UPDATE CASCADE,
  model_id TEXT NOT NULL REFERENCES models(id) ON DELETE CASCADE ON UPDATE CASCADE,
  PRIMARY KEY (group_name, model_id)) WITHOUT ROWID"""
    )
    db.execute("CREATE INDEX group_members_model ON group_members(model_id)")
    db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY NOT NULL, value TEXT)")


# version → the step that brings a database from version-1 to it. Steps that change the shape of
# records rewrite `data` here too, so every record in a store is always in the current shape.
Migration = Callable[[sqlite3.Connection], None]


def _schema_v2(db: sqlite3.Connection) -> None:
    """Migration step: the usage table (kept when a model is forgotten: history stays true)."""
    db.execute(
        """CREATE TABLE usage (
  id INTEGER PRIMARY KEY,
  at REAL NOT NULL,
  model TEXT NOT NULL,
  backend TEXT,
  kind TEXT NOT NULL,
  client TEXT,
  latency REAL NOT NULL,
  ttft REAL,
  tokens_in INTEGER NOT NULL DEFAULT 0,
  tokens_out INTEGER NOT NULL DEFAULT 0,
  tokens_per_second REAL,
  ok INTEGER NOT NULL,
  error TEXT,
  cost REAL NOT NULL DEFAULT 0)"""
    )
    db.execute("CREATE INDEX usage_model_at ON usage(model, at)")
    db.execute("CREATE INDEX usage_at ON usage(at)")


def _schema_v3(db: sqlite3.Connection) -> None:
    """Migration step: the profiles table."""
    db.execute(
        """CREATE TABLE profiles (
  id INTEGER PRIMARY KEY, model TEXT NOT NULL, at REAL NOT NULL, data TEXT NOT NULL)"""
    )
    db.execute("CREATE INDEX profiles_model_at ON profiles(model, at)")


def _schema_v4(db: sqlite3.Connection) -> None:
    """Default generation options that the first versions stored unchecked and no runtime can
    take (`"temperature": "hot"`) are dropped, the rest normalized: every record stays
    readable, and requests to it work."""
    import json

    from modelctl.record.model import check_options

    rows = db.execute(
        "SELECT id, data FROM models WHERE json_extract(data, '$.defaults') IS NOT NULL"
    ).fetchall()
    for model_id, text in rows:
        record = json.loads(text)
        defaults = record.get("defaults") or {}
        kept: dict[str, object] = {}
        for name, value in defaults.items():
            try:
                kept |= check_options({name: value})
            except ValueError:
                continue
        if kept != defaults:
            record["defaults"] = kept
            data = json.dumps(record, separators=(",", ":"), ensure_ascii=False)
            db.execute("UPDATE models SET data = ? WHERE id = ?", (data, model_id))


# Daily totals per model and client, for usage older than the ledger's retention: what `stats`
# reads beside the raw rows (sums and counts, so that averages add up), and no more.
USAGE_DAILY = """CREATE TABLE usage_daily (
  day {real} NOT NULL,
  model TEXT NOT NULL,
  client TEXT NOT NULL DEFAULT '',
  requests {int} NOT NULL,
  ok {int} NOT NULL,
  last_at {real} NOT NULL,
  latency_sum {real} NOT NULL,
  ttft_sum {real} NOT NULL DEFAULT 0,
  ttft_count {int} NOT NULL DEFAULT 0,
  tokens_in {int} NOT NULL DEFAULT 0,
  tokens_out {int} NOT NULL DEFAULT 0,
  speed_sum {real} NOT NULL DEFAULT 0,
  speed_count {int} NOT NULL DEFAULT 0,
  cost {real} NOT NULL DEFAULT 0,
  PRIMARY KEY (day, model, client))"""


def _schema_v5(db: sqlite3.Connection) -> None:
    """Migration step: daily usage totals (the ledger's history past its retention)."""
    db.execute(USAGE_DAILY.format(real="REAL", int="INTEGER"))


MIGRATIONS: dict[int, Migration] = {
    1: _schema_v1, 2: _schema_v2, 3: _schema_v3, 4: _schema_v4, 5: _schema_v5,
}  # fmt: skip
SCHEMA_VERSION = max(MIGRATIONS)
