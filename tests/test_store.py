"""The SQLite store: schema versions, unusable files, and several processes writing at once."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path

import pytest

from modelctl.record.errors import SchemaTooNew, StoreError
from modelctl.registry import Registry
from modelctl.store.database import Store, open_store
from modelctl.store.schema import MIGRATIONS, SCHEMA_VERSION


def test_new_database_is_current_and_in_wal_mode(tmp_path: Path) -> None:
    store = Store(tmp_path / "sub" / "r.sqlite")
    assert store.schema_version == SCHEMA_VERSION
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    store.close()


def test_migrations_run_on_open_and_rewrite_records(tmp_path: Path) -> None:
    """A later schema step runs once, on open, over the records already there."""
    path = tmp_path / "r.sqlite"
    with Registry.open(path) as old:
        old.add({"id": "a", "backend": "ollama", "description": "old words"})

    def step2(db: sqlite3.Connection) -> None:
        db.execute(
            "UPDATE models SET data = json_set(data, '$.description', "
            "upper(json_extract(data, '$.description')))"
        )

    newer = {**MIGRATIONS, SCHEMA_VERSION + 1: step2}
    store = Store(path, migrations=newer)
    assert store.schema_version == SCHEMA_VERSION + 1
    assert Registry(store)["a"].description == "OLD WORDS"
    store.close()
    again = Store(path, migrations=newer)  # already current: the step does not run twice
    assert Registry(again)["a"].description == "OLD WORDS"
    again.close()


def test_newer_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    Store(path, migrations={**MIGRATIONS, SCHEMA_VERSION + 1: lambda db: None}).close()
    with pytest.raises(SchemaTooNew, match=f"schema version {SCHEMA_VERSION + 1}"):
        Store(path)


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "r.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a registry database"):
        Store(path)


def test_a_folder_that_cannot_be_created(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot create the registry folder"):
        Store(blocker / "r.sqlite")


def test_generated_columns_follow_the_record(registry: Registry) -> None:
    """The indexed fields (SQLite's generated columns, PostgreSQL's expression indexes over
    the record's JSONB) are read from the record as it is now."""
    registry.add({"id": "a", "backend": "ollama", "context_length": 4096})
    registry.update("a", context_length=8192)
    assert registry.ids({"backend": "ollama", "context_length": 8192}) == ["a"]
    assert registry.ids({"context_length": 4096}) == []
    if registry.store.dialect == "sqlite":
        row = registry.store.db.execute("SELECT backend, context_length FROM models").fetchone()
        assert row == ("ollama", 8192)


def _writer(path: str, worker: int, count: int) -> None:
    """One process: add its own models and tag one shared model, one transaction each."""
    registry = Registry.open(path)
    for i in range(count):
        registry.add({"id": f"w{worker}-m{i}", "backend": "ollama"})
        registry.tag("shared", f"w{worker}-t{i}")
    registry.close()


def test_two_processes_write_without_losing_anything(database: str) -> None:
    path = database  # a SQLite file, or a PostgreSQL database
    with Registry.open(path) as registry:
        registry.add({"id": "shared", "backend": "ollama"})
    count = 60
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_writer, args=(str(path), w, count)) for w in range(2)]
    for p in workers:
        p.start()
    for p in workers:
        p.join(120)
        assert p.exitcode == 0
    with Registry.open(path) as registry:
        assert len(registry) == 1 + 2 * count
        tags = registry["shared"].tags
        # read-modify-write in one transaction, writers in turn (SQLite's IMMEDIATE, an
        # advisory lock on PostgreSQL): no tag from either process is lost
        assert len(tags) == 2 * count
        if registry.store.dialect == "sqlite":
            assert registry.store.db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_threads_get_their_own_connections(registry: Registry) -> None:
    import threading

    registry.add({"id": "a", "backend": "ollama"})
    seen: list[str] = []

    def read() -> None:
        seen.append(registry["a"].id)
        registry.tag("a", threading.current_thread().name)

    threads = [threading.Thread(target=read, name=f"t{i}") for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == ["a"] * 4 and len(registry["a"].tags) == 4


def test_a_lone_surrogate_in_a_usage_row_loses_nothing(database: str) -> None:
    """JSON's "\\ud800" decodes to a lone surrogate, which SQLite cannot store: the batch it was
    in failed to write (and was lost), and so did every read that flushed it."""
    from modelctl.store.ledger import Ledger, Usage

    store = open_store(database)
    ledger = Ledger(store, flush_interval=3600)
    ledger.record(Usage(model="m", latency=0.1, client="ok", at=1.0))
    ledger.record(Usage(model="m", latency=0.2, client="bad \ud800", error="\udfff", at=2.0))
    assert ledger.stats()["overall"]["requests"] == 2
    assert [r["client"] for r in ledger.rows()] == ["bad ?", "ok"]
    ledger.close()
    store.close()
