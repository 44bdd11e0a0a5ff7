"""What the web dashboard reads from the management API: pages of models with a total, text
search, what fits this machine, the doctor, usage over time and as CSV, and live registry
changes. A real manager on a temporary home, its real SQLite registry and ledger, served by the
real app (in process, and by uvicorn for the event stream)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from modelctl.config import Settings
from modelctl.manager import ModelManager
from modelctl.runtime.events import Event, EventBus
from modelctl.server import create_app
from modelctl.store.ledger import COLUMNS, Usage
from tests.live import running

GiB = 1 << 30
T0 = 1_700_000_000.0  # a round unix time: series spans start here


@pytest.fixture
def manager(database: str) -> Iterator[ModelManager]:
    """A manager whose scheduler's memory budget is 8 GiB, whatever this machine has free, on
    each engine (a SQLite file, a PostgreSQL database)."""
    m = ModelManager(settings=Settings.load(memory_budget="8GiB", database=database))
    yield m
    m.close()


@pytest.fixture
def api(manager: ModelManager) -> Iterator[TestClient]:
    app = create_app(manager, restore=False, reaper_interval=None, hosts=("testserver",))
    with TestClient(app, base_url="http://testserver/api/v1") as client:
        yield client


def add(manager: ModelManager, model_id: str, **fields: Any) -> None:
    manager.add_model({"id": model_id, "backend": "openai", "refs": {"openai": model_id}, **fields})


def ids(answer: httpx.Response) -> list[str]:
    assert answer.status_code == 200, answer.text
    return [m["id"] for m in answer.json()["models"]]


# ---------------------------------------------------------------------- pages, search, fit


def test_pages_of_models_in_order_with_the_total(manager: ModelManager, api: TestClient) -> None:
    for i in range(7):
        add(manager, f"m{i}")
    first = api.get("/models", params={"order_by": "id", "limit": 3})
    assert first.json() | {"models": None} == {
        "models": None, "count": 3, "total": 7, "offset": 0, "limit": 3,
    }  # fmt: skip
    assert ids(first) == ["m0", "m1", "m2"]
    assert ids(api.get("/models", params={"order_by": "id", "limit": 3, "offset": 3})) == [
        "m3", "m4", "m5",
    ]  # fmt: skip
    last = api.get("/models", params={"order_by": "id", "limit": 3, "offset": 6}).json()
    assert [m["id"] for m in last["models"]] == ["m6"] and last["count"] == 1
    assert last["total"] == 7
    beyond = api.get("/models", params={"limit": 3, "offset": 10}).json()
    assert beyond["models"] == [] and beyond["count"] == 0 and beyond["total"] == 7
    # descending, an offset with no limit (SQLite's LIMIT -1), and a filter that total follows
    assert ids(api.get("/models", params={"order_by": "-id", "offset": 4})) == ["m2", "m1", "m0"]
    manager.registry.tag("m1", "prod")
    manager.registry.tag("m5", "prod")
    tagged = api.get("/models", params={"tag": "prod", "limit": 1, "offset": 1}).json()
    assert [m["id"] for m in tagged["models"]] == ["m5"] and tagged["total"] == 2
    assert tagged["limit"] == 1 and tagged["offset"] == 1
    everything = api.get("/models").json()  # no paging asked: every model, as before
    assert everything["count"] == everything["total"] == 7 and everything["limit"] is None


def test_paging_out_of_bounds_is_a_422(api: TestClient) -> None:
    assert api.get("/models", params={"offset": -1}).status_code == 422
    assert api.get("/models", params={"offset": 2**63}).status_code == 422
    assert api.get("/models", params={"limit": -1}).status_code == 422
    assert api.get("/models", params={"q": "x" * 201}).status_code == 422


def test_search_ignores_case_over_id_name_family_and_description(
    manager: ModelManager, api: TestClient
) -> None:
    add(manager, "alpha", name="Llama Three", family="llama")
    add(manager, "beta", name="Beta", description="Good at CODE review, 50% faster")
    add(manager, "gamma-Coder", family="qwen")
    add(manager, "delta")  # no name, family or description
    add(manager, "say_hi", name='The "quoted" one')
    add(manager, "uber", name="Über Modell", description="straße")

    def search(text: str, **more: Any) -> list[str]:
        return ids(api.get("/models", params={"q": text, "order_by": "id", **more}))

    assert search("LLAMA") == ["alpha"]  # the name and the family, counted once
    assert search("code") == ["beta", "gamma-Coder"]  # the description; the id
    assert search("QwEn") == ["gamma-Coder"]
    assert search("a") == ["alpha", "beta", "delta", "gamma-Coder", "say_hi", "uber"]
    assert search("über") == search("ÜBER") == search("STRAßE") == ["uber"]  # beyond ASCII
    assert search("zzz") == []
    assert search("50%") == ["beta"] and search("%") == ["beta"]  # LIKE's wildcards as text
    assert search("_") == ["say_hi"]
    assert search('"quoted"') == ["say_hi"]  # text JSON stores escaped
    assert search("") == search("a")  # an empty search is no search
    page = api.get("/models", params={"q": "a", "order_by": "id", "limit": 2, "offset": 2})
    assert ids(page) == ["delta", "gamma-Coder"] and page.json()["total"] == 6
    # with the other filters and the query language
    assert search("a", where="family=llama") == ["alpha"]
    manager.registry.tag("beta", "prod")
    assert search("a", tag="prod") == ["beta"]


def test_search_keeps_the_query_languages_meaning_under_not(manager: ModelManager) -> None:
    """The quick first check of a search is left out under $not: a record with no name is
    neither in a search for text in its name nor in its negation, as before."""
    from modelctl.registry.query import search

    add(manager, "has-zq", name="zq marks")
    add(manager, "plain")  # no name: `name ~ zq` is NULL for it (and its JSON holds no zq)
    add(manager, "other", name="other")
    registry = manager.registry
    assert registry.ids(search("ZQ")) == ["has-zq"]
    assert registry.ids({"$or": [{"name": {"$contains": "zq"}}]}) == ["has-zq"]
    assert registry.ids({"$not": {"$or": [{"name": {"$contains": "zq"}}]}}) == ["other"]


def test_fits_the_memory_budget_by_min_memory_else_file_size(
    manager: ModelManager, api: TestClient
) -> None:
    assert manager.scheduler.budget == 8 * GiB
    add(manager, "small-file", file_size=1 * GiB)
    add(manager, "big-file", file_size=20 * GiB)
    add(manager, "small-need", min_memory=4 * GiB, file_size=20 * GiB)  # min_memory decides
    add(manager, "big-need", min_memory=16 * GiB, file_size=1 * GiB)
    add(manager, "exactly", file_size=8 * GiB)  # at the budget: fits
    add(manager, "remote")  # no size at all: served elsewhere, fits

    fitting = api.get("/models", params={"fits": "true", "order_by": "id"})
    assert ids(fitting) == ["exactly", "remote", "small-file", "small-need"]
    assert fitting.json()["total"] == 4
    too_big = api.get("/models", params={"fits": "false", "order_by": "id"})
    assert ids(too_big) == ["big-file", "big-need"] and too_big.json()["total"] == 2
    assert len(ids(api.get("/models"))) == 6  # fits not given: every model
    assert ids(api.get("/models", params={"fits": "true", "q": "need"})) == ["small-need"]


# ---------------------------------------------------------------------- doctor


def test_doctor_findings_and_counts(api: TestClient) -> None:
    answer = api.get("/doctor")
    assert answer.status_code == 200
    report = answer.json()
    assert set(report) == {"findings", "counts"}
    assert set(report["counts"]) == {"ok", "warn", "fail"}
    assert sum(report["counts"].values()) == len(report["findings"]) > 0
    for finding in report["findings"]:
        assert set(finding) == {"area", "level", "message", "step"}
        assert finding["level"] in ("ok", "warn", "fail")
    areas = {f["area"] for f in report["findings"]}
    assert {"python", "registry", "memory"} <= areas
    registry = next(f for f in report["findings"] if f["area"] == "registry")
    assert registry["level"] == "warn" and "empty" in registry["message"]


# ---------------------------------------------------------------------- usage over time


def usage(manager: ModelManager, model: str, at: float, latency: float, **more: Any) -> None:
    manager.usage.record(Usage(model=model, latency=latency, at=at, **more))


def test_series_buckets_with_percentiles(manager: ModelManager, api: TestClient) -> None:
    add(manager, "gpt", aliases=["g"])
    add(manager, "other")
    latencies = (0.4, 0.1, 0.3, 0.2)  # span 0: p50 0.2 s, p95 0.4 s
    for i, latency in enumerate(latencies):
        usage(manager, "gpt", T0 + 1 + i, latency, tokens_in=10, tokens_out=20, ttft=0.05,
              cost=0.25, ok=i != 2)  # fmt: skip
    usage(manager, "gpt", T0 + 125, 1.0, tokens_out=5)  # span 2 (spans 1 and 3+ are empty)
    usage(manager, "other", T0 + 10, 9.0)  # another model, in span 0
    usage(manager, "gpt", T0 - 1, 5.0)  # before since
    usage(manager, "gpt", T0 + 600, 5.0)  # at until: not included

    params = {"since": T0, "until": T0 + 600, "step": 60}
    answer = api.get("/usage/series", params=params | {"model": "g"})  # an alias resolves
    assert answer.status_code == 200, answer.text
    series = answer.json()
    assert series["since"] == T0 and series["until"] == T0 + 600 and series["step"] == 60
    first, second = series["points"]
    speed = sum(20 / (s - 0.05) for s in latencies) / 4  # tokens out after the first token
    assert first == {
        "at": T0, "requests": 4, "errors": 1, "latency_p50_ms": 200.0, "latency_p95_ms": 400.0,
        "ttft_avg_ms": 50.0, "tokens_per_second": pytest.approx(speed),
        "tokens_in": 40, "tokens_out": 80, "cost": 1.0,
    }  # fmt: skip
    assert second["at"] == T0 + 120 and second["requests"] == 1
    assert second["latency_p50_ms"] == second["latency_p95_ms"] == 1000.0
    assert second["ttft_avg_ms"] is None and second["errors"] == 0

    every = api.get("/usage/series", params=params).json()["points"]
    assert [p["requests"] for p in every] == [5, 1]  # every model: `other` in span 0
    assert every[0]["latency_p95_ms"] == 9000.0
    assert api.get("/usage/series", params=params | {"model": "nope"}).status_code == 404


def test_series_steps_default_and_clamped(manager: ModelManager, api: TestClient) -> None:
    add(manager, "gpt")
    for i in range(0, 3600, 7):
        usage(manager, "gpt", T0 + i, 0.1)
    hour = {"since": T0, "until": T0 + 3600}
    default = api.get("/usage/series", params=hour).json()
    assert default["step"] == 30 and len(default["points"]) == 120  # a round step, 120 points
    fine = api.get("/usage/series", params=hour | {"step": 0.01}).json()
    assert fine["step"] == pytest.approx(1.8) and len(fine["points"]) <= 2000
    assert sum(p["requests"] for p in fine["points"]) == len(range(0, 3600, 7))
    day = api.get("/usage/series", params={"since": T0, "until": T0 + 86400}).json()
    assert day["step"] == 900  # 86400 / 120 = 720: the next round step
    recent = api.get("/usage/series").json()  # the last hour, to now
    assert recent["until"] - recent["since"] == pytest.approx(3600)
    assert recent["step"] == 30 and recent["points"] == []


def test_series_refuses_an_empty_span(api: TestClient) -> None:
    same = api.get("/usage/series", params={"since": T0, "until": T0})
    assert same.status_code == 400
    error = same.json()["error"]
    assert error["code"] == "invalid_request" and "since" in error["message"]
    assert error["hint"]
    assert api.get("/usage/series", params={"since": T0 + 1, "until": T0}).status_code == 400
    assert api.get("/usage/series", params={"since": T0, "step": 0}).status_code == 422
    assert api.get("/usage/series", params={"since": -1}).status_code == 422
    assert api.get("/usage/series", params={"until": 1e300}).status_code == 422
    assert api.get("/usage/series", params={"since": "nan"}).status_code == 422


# ---------------------------------------------------------------------- usage as CSV


def test_usage_export_is_csv_oldest_first(manager: ModelManager, api: TestClient) -> None:
    add(manager, "gpt")
    add(manager, "other")
    usage(manager, "gpt", T0 + 20, 0.2, client="=HYPERLINK(1)", error="bad, \"quoted\"\nline",
          ok=False)  # fmt: skip
    usage(manager, "gpt", T0 + 10, 0.1, tokens_in=3, tokens_out=4, cost=0.5)  # recorded later
    usage(manager, "other", T0 + 15, 0.3)

    answer = api.get("/usage/export")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/csv; charset=utf-8"
    assert answer.headers["content-disposition"] == 'attachment; filename="modelctl-usage.csv"'
    header, *rows = list(csv.reader(io.StringIO(answer.text)))
    assert header == list(COLUMNS)
    table = [dict(zip(header, row, strict=True)) for row in rows]
    assert [(r["model"], float(r["at"])) for r in table] == [
        ("gpt", T0 + 10), ("other", T0 + 15), ("gpt", T0 + 20),
    ]  # fmt: skip
    assert table[0]["tokens_in"] == "3" and table[0]["cost"] == "0.5" and table[0]["ok"] == "1"
    last = table[2]
    assert last["ok"] == "0" and last["error"] == 'bad, "quoted"\nline'
    assert last["client"] == "'=HYPERLINK(1)"  # a spreadsheet shows it, never runs it

    only = api.get("/usage/export", params={"model": "gpt", "since": T0 + 15}).text
    assert [row[1] for row in csv.reader(io.StringIO(only))] == ["model", "gpt"]
    empty = api.get("/usage/export", params={"since": T0 + 1000}).text
    assert list(csv.reader(io.StringIO(empty))) == [list(COLUMNS)]
    assert api.get("/usage/export", params={"model": "nope"}).status_code == 404
    assert api.get("/usage/export", params={"since": -5}).status_code == 422


def test_ledger_export_reads_in_batches_past_equal_times(manager: ModelManager) -> None:
    add(manager, "gpt")
    for i, at in enumerate((T0 + 2, T0 + 1, T0 + 1, T0 + 1, T0 + 3, T0 + 2, T0 + 1)):
        usage(manager, "gpt", at, i / 10)
    rows = list(manager.usage.export(batch=2))
    at, latency = COLUMNS.index("at"), COLUMNS.index("latency")
    assert [r[at] - T0 for r in rows] == [1, 1, 1, 1, 2, 2, 3]
    assert [r[latency] for r in rows] == [0.1, 0.2, 0.3, 0.6, 0.0, 0.5, 0.4]  # then by id


# ---------------------------------------------------------------------- live changes


def test_registry_changes_are_model_changed_events(manager: ModelManager, api: TestClient) -> None:
    seen: list[Event] = []
    manager.events.on("model-changed", seen.append)

    def changes() -> list[tuple[Any, Any]]:
        found = [(e.data["model"], e.data["change"]) for e in seen]
        seen.clear()
        return found

    record = {"id": "org/m:7b", "backend": "openai", "refs": {"openai": "m"}}
    assert api.post("/models", json=record).status_code == 201
    assert changes() == [("org/m:7b", "added")]
    assert api.patch("/models/org/m:7b", json={"add_tags": ["prod"]}).status_code == 200
    assert changes() == [("org/m:7b", "updated")]
    bad = api.patch("/models/org/m:7b", json={"add_tags": ["x"], "defaults": {"nonsense": 1}})
    assert bad.status_code == 400 and changes() == []  # rolled back: nothing changed
    assert api.post("/models", json=record).status_code == 409 and changes() == []
    assert api.delete("/models/org/m:7b", params={"forget": True, "dry_run": True}).json()[
        "forgotten"
    ] is False  # fmt: skip
    assert changes() == []
    assert api.delete("/models/org/m:7b", params={"forget": True}).status_code == 200
    assert changes() == [("org/m:7b", "forgotten")]
    assert api.get("/models/org/m:7b").status_code == 404

    document = {"models": [{"id": "n", "backend": "openai", "refs": {"openai": "n"}}]}
    assert api.post("/import", json={"document": document, "dry_run": True}).status_code == 200
    assert changes() == []
    assert api.post("/import", json={"document": document}).status_code == 200
    assert changes() == [(None, "imported")]
    assert api.post("/sync", json={"only": ["openai"]}).status_code == 200
    assert changes() == []  # no key: nothing found, nothing changed


def test_changes_through_the_ollama_api_are_model_changed_events(
    tiny_manager: ModelManager,
) -> None:
    """`ollama cp`, `ollama create` and `ollama rm` change the registry too: an open dashboard
    hears of them as of the management API's changes."""
    seen: list[Event] = []
    tiny_manager.events.on("model-changed", seen.append)
    app = create_app(tiny_manager, restore=False, reaper_interval=None, hosts=("testserver",))
    with TestClient(app, base_url="http://testserver") as ollama:
        assert ollama.post("/api/copy", json={"source": "tiny", "destination": "mine"}).is_success
        made = {"model": "terse", "from": "tiny", "system": "Be brief.", "stream": False}
        assert ollama.post("/api/create", json=made).is_success
        assert ollama.request("DELETE", "/api/delete", json={"model": "mine"}).is_success
    assert [(e.data["model"], e.data["change"]) for e in seen] == [
        ("mine", "added"), ("terse", "added"), ("mine", "deleted"),
    ]  # fmt: skip


def test_model_changed_reaches_the_event_stream(manager: ModelManager) -> None:
    with running(manager, restore=False, reaper_interval=None) as url:
        api = httpx.Client(base_url=f"{url}/api/v1")
        add(manager, "m")
        assert api.patch("/models/m", json={"add_tags": ["prod"]}).status_code == 200
        with httpx.stream("GET", f"{url}/api/v1/events", timeout=10) as events:
            for line in events.iter_lines():
                if line.startswith("data: ") and "model-changed" in line:
                    event = json.loads(line.removeprefix("data: "))
                    break
    assert event["event"] == "model-changed"
    assert event["model"] == "m" and event["change"] == "updated"


def test_an_install_job_says_when_it_ends() -> None:
    """The job runner with a stand-in installer (the install itself is tested elsewhere) and
    a real event bus."""
    from modelctl.record.errors import NotFound
    from modelctl.server.jobs import Jobs

    class Installed:
        id = "org/model-Q8_0"

    class Installer:
        events = EventBus()
        registry = type("R", (), {"store": type("S", (), {"close": lambda self: None})()})()

        def install_model(self, ref: str, **options: Any) -> Installed:
            if ref == "missing":
                raise NotFound("no such model on the Hub")
            return Installed()

    installer = Installer()
    seen: list[Event] = []
    installer.events.on("model-changed", seen.append)
    jobs = Jobs(installer)  # type: ignore[arg-type]
    assert jobs.wait(jobs.start("hf:org/model")).state == "done"
    assert jobs.wait(jobs.start("missing")).state == "failed"
    assert [(e.data["model"], e.data["change"]) for e in seen] == [
        ("org/model-Q8_0", "installed"), ("missing", "install-failed"),
    ]  # fmt: skip
