"""The store on PostgreSQL against a real server (tests/postgres.py), and what only a shared
database has: a server that restarts under a running gateway, two gateways writing one registry,
a schema from a newer modelctl. The ledger's tests run on both engines (`database`); the
registry, query and store tests do too, through the `registry` fixture."""

from __future__ import annotations

import concurrent.futures
from pathlib import Path

import httpx
import pytest

from modelctl.config import Settings
from modelctl.manager import ModelManager
from modelctl.record.errors import SchemaTooNew, StoreError
from modelctl.store.database import open_store
from modelctl.store.ledger import Ledger, Usage
from modelctl.store.postgres import PostgresStore, shown
from tests.live import running
from tests.postgres import PostgresServer

T0 = 1_700_000_000.0


def test_the_ledger_on_each_engine(database: str) -> None:
    """Rows, stats, series and export give the same answers on SQLite and PostgreSQL."""
    store = open_store(database)
    ledger = Ledger(store, flush_interval=3600)
    for i in range(10):
        model = "a" if i < 6 else "b"
        figures = {"tokens_in": 10, "tokens_out": 20, "ttft": 0.05, "ok": i != 3, "cost": 0.5}
        ledger.record(Usage(model=model, latency=0.1 * (i + 1), at=T0 + 30 * i, **figures))
    stats = ledger.stats()
    assert stats["overall"]["requests"] == 10 and stats["overall"]["errors"] == 1
    assert stats["overall"]["tokens_in"] == 100 and type(stats["overall"]["tokens_in"]) is int
    assert stats["models"]["a"]["latency_p50_ms"] == 300.0
    assert stats["models"]["b"]["requests"] == 4
    assert ledger.stats("a", since=T0 + 60)["overall"]["requests"] == 4
    points = ledger.series(since=T0, until=T0 + 300, step=100)
    assert [(p["at"], p["requests"]) for p in points] == [(T0, 4), (T0 + 100, 3), (T0 + 200, 3)]
    assert points[0]["errors"] == 1 and points[0]["latency_p95_ms"] == 400.0
    assert [r["at"] for r in ledger.rows(limit=3)] == [T0 + 270, T0 + 240, T0 + 210]
    exported = list(ledger.export(batch=3))
    assert len(exported) == 10 and exported[0][0] == T0  # oldest first, across batches
    ledger.close()
    store.close()


def test_a_newer_schema_is_refused(postgres: PostgresServer) -> None:
    url = postgres.fresh()
    PostgresStore(url).close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as db:
        db.execute("UPDATE modelctl_schema SET version = 99")
    with pytest.raises(SchemaTooNew, match="schema version 99"):
        PostgresStore(url)


def test_an_unreachable_server_is_one_clear_error(postgres: PostgresServer) -> None:
    url = f"postgresql://modelctl:secret@127.0.0.1:{_closed_port()}/nothing"
    with pytest.raises(StoreError, match="cannot reach the database") as caught:
        PostgresStore(url, timeout=2)
    assert "secret" not in str(caught.value) and "***" in str(caught.value)
    assert shown("postgresql://u@h/db") == "postgresql://u@h/db"
    assert shown("postgresql://u@h/db?sslmode=require&password=pw") == (
        "postgresql://u@h/db?sslmode=require&password=***"
    )


def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again: nothing listens there


def test_a_server_restarted_under_a_running_gateway(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """While the database is down, what needs it is a 503 that says so; once it is back, the
    same gateway answers again (no restart)."""
    manager = ModelManager(settings=Settings.load(database=postgres.fresh(), home=tmp_path))
    manager.add_model({"id": "m", "backend": "openai", "refs": {"openai": "m"}})
    try:
        with running(manager, restore=False, reaper_interval=None) as url:
            assert httpx.get(url + "/api/v1/models/m").status_code == 200
            postgres.stop()
            try:
                down = httpx.get(url + "/api/v1/models/m", timeout=30)
                assert down.status_code == 503, down.text
                assert "cannot reach the database" in down.json()["error"]["message"]
                assert httpx.get(url + "/health").status_code == 200  # the gateway itself lives
            finally:
                postgres.start_again()
            for _ in range(3):  # every worker thread's connection is made again
                again = httpx.get(url + "/api/v1/models/m", timeout=30)
                assert again.status_code == 200, again.text
            tagged = httpx.patch(url + "/api/v1/models/m", json={"add_tags": ["back"]})
            assert tagged.status_code == 200 and tagged.json()["tags"] == ["back"]
    finally:
        manager.close()


def test_two_gateways_writing_one_registry_lose_nothing(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    database = postgres.fresh()
    managers = [
        ModelManager(settings=Settings.load(database=database, home=tmp_path / f"home{i}"))
        for i in range(2)
    ]
    managers[0].add_model({"id": "shared", "backend": "openai", "refs": {"openai": "s"}})
    try:
        with (
            running(managers[0], restore=False, reaper_interval=None) as one,
            running(managers[1], restore=False, reaper_interval=None) as two,
        ):

            def tag(i: int) -> int:
                url = (one, two)[i % 2]
                body = {"add_tags": [f"t{i}"]}
                return httpx.patch(url + "/api/v1/models/shared", json=body, timeout=60).status_code

            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                assert set(pool.map(tag, range(40))) == {200}
            seen = httpx.get(two + "/api/v1/models/shared").json()["tags"]
            assert sorted(seen) == sorted(f"t{i}" for i in range(40))
    finally:
        for m in managers:
            m.close()


def _filled(tmp_path: Path) -> ModelManager:
    """A SQLite home with records, aliases, a group, usage rows, a profile and saved state."""
    from modelctl.store import profiles

    manager = ModelManager(settings=Settings.load(home=tmp_path / "home"))
    for i in range(30):
        manager.add_model({"id": f"org/m{i}:7b", "backend": "openai", "refs": {"openai": f"m{i}"},
                           "tags": ["even" if i % 2 == 0 else "odd"], "aliases": [f"alias{i}"],
                           "custom": {"rank": i}, "context_length": 1024 * (i + 1)})  # fmt: skip
    manager.registry.group("team", "org/m1:7b", "org/m2:7b")
    for i in range(25):
        manager.record_usage("org/m1:7b", latency=0.1 + i / 100, tokens_in=5, tokens_out=7)
    profiles.save(manager.registry.store, {"model": "org/m1:7b", "at": T0, "speed": 12.5})
    manager.registry.store.put_state("loaded", {"models": ["org/m1:7b"]})
    manager.usage.flush()
    return manager


def test_migrate_copies_everything_into_postgresql(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from modelctl.cli import app as cli
    from modelctl.registry import Registry
    from modelctl.store import profiles

    source = _filled(tmp_path)
    before = source.registry.export_data()
    stats = source.usage.stats()
    source.close()
    monkeypatch.setenv("MODELCTL_HOME", str(tmp_path / "home"))
    url = postgres.fresh()
    done = CliRunner().invoke(cli, ["migrate", "--to", url])
    assert done.exit_code == 0, done.output
    assert "copied 30 models, 1 groups, 25 usage rows, 1 profiles and 1 saved states" in done.output
    with Registry.open(url) as copied:
        after = copied.export_data()
        assert after["models"] == before["models"] and after["groups"] == before["groups"]
        assert copied.lookup("alias7").id == "org/m7:7b"  # aliases resolve there
        assert [m.id for m in copied.query("custom.rank>=28")] == ["org/m28:7b", "org/m29:7b"]
        ledger = Ledger(copied.store)
        assert ledger.stats() == stats
        assert profiles.latest(copied.store)["org/m1:7b"]["speed"] == 12.5
        assert copied.store.get_state("loaded") == {"models": ["org/m1:7b"]}
    again = CliRunner().invoke(cli, ["migrate", "--to", url])  # into a database that holds some
    assert again.exit_code != 0 and "already holds models or usage" in again.output


def test_migrate_is_all_or_nothing(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from modelctl.store import copy

    source = _filled(tmp_path)
    url = postgres.fresh()
    target = open_store(url)

    def broken(*args: object) -> int:
        raise StoreError("the line dropped while copying the ledger")

    monkeypatch.setattr(copy, "_rows", broken)  # after the models and groups were written
    with pytest.raises(StoreError, match="line dropped"):
        copy.copy_store(source.registry.store, target)
    assert target.count() == 0 and target.groups() == {}  # none of it
    monkeypatch.undo()
    assert copy.copy_store(source.registry.store, target)["models"] == 30  # and then all of it
    target.close()
    source.close()


def test_the_doctor_checks_the_database(postgres: PostgresServer, tmp_path: Path) -> None:
    url = postgres.fresh().replace("modelctl@", "modelctl:pw@")  # trust: any password passes
    manager = ModelManager(settings=Settings.load(database=url, home=tmp_path))
    found = {f.area: f for f in manager.doctor()}
    assert found["database"].level == "ok"
    assert found["database"].message.startswith("PostgreSQL 15.")
    assert "schema version 2" in found["database"].message and "pw" not in found["database"].message
    assert "pw@" not in found["registry"].message
    assert manager.settings.shown("database").startswith("postgresql://modelctl:********@")
    manager.close()
    away = f"postgresql://modelctl@127.0.0.1:{_closed_port()}/nothing"
    gone = ModelManager(settings=Settings.load(database=away, home=tmp_path)).doctor()
    assert [(f.area, f.level) for f in gone] == [("database", "fail")]
    assert "cannot reach the database" in gone[0].message and "PostgreSQL running" in gone[0].step


def test_events_reach_every_gateway_on_the_database(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    """A tag set through one gateway shows at once in another's event stream (LISTEN/NOTIFY),
    marked as coming from elsewhere; each process's own events go out once."""
    import json
    import threading

    database = postgres.fresh()
    one, two = (
        ModelManager(settings=Settings.load(database=database, home=tmp_path / f"home{i}"))
        for i in range(2)
    )
    one.add_model({"id": "shared", "backend": "openai", "refs": {"openai": "s"}})
    heard: list[dict] = []
    arrived = threading.Event()
    try:
        with (
            running(one, restore=False, reaper_interval=None) as first,
            running(two, restore=False, reaper_interval=None) as second,
        ):
            opened = threading.Event()

            def follow() -> None:
                with httpx.stream("GET", second + "/api/v1/events?recent=false", timeout=60) as s:
                    opened.set()  # its reader is subscribed before the answer starts
                    for line in s.iter_lines():
                        if line.startswith("data: ") and "model-changed" in line:
                            heard.append(json.loads(line.removeprefix("data: ")))
                            arrived.set()
                            return

            reader = threading.Thread(target=follow, daemon=True)
            reader.start()
            assert opened.wait(30)
            for manager in (one, two):  # both listen (their servers started sharing)
                assert manager._sharing is not None
            patched = httpx.patch(first + "/api/v1/models/shared", json={"add_tags": ["x"]})
            assert patched.status_code == 200
            assert arrived.wait(30), "the other gateway's stream heard nothing"
            assert heard[0]["event"] == "model-changed" and heard[0]["model"] == "shared"
            assert heard[0]["change"] == "updated" and heard[0]["remote"]  # from elsewhere
            assert httpx.get(second + "/api/v1/models/shared").json()["tags"] == ["x"]
            reader.join(10)
    finally:
        one.close()
        two.close()


def test_old_usage_becomes_daily_totals_and_stats_read_both(database: str) -> None:
    """Past the retention, a day's rows become one total per model and client: the ledger
    stays small, and `stats` counts the same requests, tokens, cost and averages."""
    store = open_store(database)
    ledger = Ledger(store, flush_interval=3600)
    day = 86400
    for i in range(40):  # 3 days ago and 2 days ago, two clients; and 10 today
        at = T0 - (3 if i < 20 else 2) * day + i * 60
        ledger.record(Usage(model="m", latency=0.2 + i / 100, at=at, client=f"c{i % 2}",
                            tokens_in=3, tokens_out=4, ttft=0.1, cost=0.25))  # fmt: skip
    for i in range(10):
        ledger.record(Usage(model="m", latency=0.5, at=T0 + i, tokens_out=8, cost=1.0))
    before = ledger.stats()["overall"]
    assert ledger.compact(T0 - day) == 40  # every row of a whole day before the cutoff
    raw = store.db.execute("SELECT count(*) FROM usage").fetchone()[0]
    days = store.db.execute("SELECT count(*) FROM usage_daily").fetchone()[0]
    assert (raw, days) == (10, 4)  # two days, two clients each
    after = ledger.stats()["overall"]
    for key in ("requests", "errors", "tokens_in", "tokens_out", "last_used"):
        assert after[key] == before[key], key
    for key in ("cost", "latency_avg_ms", "ttft_avg_ms"):
        assert after[key] == pytest.approx(before[key]), key
    assert after["latency_p50_ms"] == 500.0  # percentiles: from the rows still kept
    assert ledger.stats(since=T0 - day)["overall"]["requests"] == 10
    assert ledger.compact(T0 - day) == 0  # nothing left to fold
    ledger.close()
    store.close()


def test_while_the_database_is_away_nothing_is_lost(postgres: PostgresServer) -> None:
    """A model read before still resolves (the gateway's hot path), and the usage of requests
    served meanwhile waits in memory and is written once the database is back."""
    from modelctl.registry import Registry

    url = postgres.fresh()
    registry = Registry.open(url)
    registry.add({"id": "m", "backend": "openai", "refs": {"openai": "m"}})
    assert registry.lookup("m").id == "m"
    ledger = Ledger(registry.store, flush_interval=3600)
    postgres.stop()
    try:
        assert registry.lookup("m").id == "m"  # what was read last
        with pytest.raises(StoreError, match="cannot reach the database"):
            registry.lookup("never-read")
        ledger.record(Usage(model="m", latency=0.3, at=T0))
        with pytest.raises(StoreError):
            ledger.flush()
    finally:
        postgres.start_again()
    assert ledger.flush() == 1  # kept, then written
    assert ledger.stats()["overall"]["requests"] == 1
    ledger.close()
    registry.close()


def test_many_records_at_once_on_each_engine(database: str) -> None:
    """A large write (by COPY on PostgreSQL) keeps what one write after another keeps: the
    last record of an id, its facets, and an alias clash named."""
    from modelctl.record.errors import Conflict

    store = open_store(database)
    records = [{"id": f"m{i}", "backend": "openai", "tags": [f"t{i % 3}"]} for i in range(150)]
    records.append({"id": "m7", "backend": "ollama", "aliases": ["seven"]})  # m7 again, last
    assert store.put_many(records) == 151
    assert store.count() == 150 and store.get("m7")["backend"] == "ollama"
    assert store.resolve_alias("seven") == "m7"
    clash = [{"id": f"n{i}", "backend": "openai"} for i in range(120)]
    clash.append({"id": "n0", "backend": "openai", "aliases": ["seven"]})
    with pytest.raises(Conflict, match="alias 'seven' already names model 'm7'"):
        store.put_many(clash)
    assert store.count() == 150  # none of it
    store.close()


def test_reviewed_edges_on_each_engine(database: str) -> None:
    """Two large writes in one transaction (as migrate makes them); a record written twice in
    one write keeps only the last one's facets; text sorts by bytes on both engines; a time
    that cannot be read is a clear error; a NUL in a usage row is dropped, not the row."""
    from modelctl.record.errors import InvalidQuery
    from modelctl.registry import Registry

    store = open_store(database)
    with store.transaction():
        store.put_many([{"id": f"a{i}", "backend": "openai"} for i in range(120)])
        store.put_many([{"id": f"b{i}", "backend": "openai"} for i in range(120)])
    assert store.count() == 240
    store.put_many([{"id": "t", "backend": "openai", "tags": ["old"]},
                    {"id": "t", "backend": "openai", "tags": ["new"]}])  # fmt: skip
    registry = Registry(store)
    assert registry.ids(tags=["old"]) == [] and registry.ids(tags=["new"]) == ["t"]
    registry.add({"id": "B-model", "backend": "openai"})
    registry.add({"id": "a-model", "backend": "openai"})
    assert registry.ids({"id": {"$in": ["a-model", "B-model"]}}) == ["B-model", "a-model"]
    if store.dialect == "postgresql":  # (SQLite finds nothing for such a time)
        with pytest.raises(InvalidQuery, match="compares with a time"):
            registry.ids("updated_at>not-a-time")
    ledger = Ledger(store, flush_interval=3600)
    ledger.record(Usage(model="m", latency=0.1, error="nul\x00here", at=T0))
    assert ledger.flush() == 1 and ledger.rows()[0]["error"] == "nulhere"
    ledger.close()
    store.close()


def test_a_password_in_the_query_is_masked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCTL_DATABASE", "postgresql://me@db/x?password=hunter2&sslmode=verify")
    shown_value = Settings.load().shown("database")
    assert "hunter2" not in shown_value and "sslmode=verify" in shown_value
