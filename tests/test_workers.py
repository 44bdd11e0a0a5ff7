"""Workers: each local model in a child process that modelctl starts, watches and stops. Real
llama.cpp loads of generated GGUF files, in real child processes, behind a real server; the
command runtime runs llama-cpp-python's own OpenAI-compatible server (`llama_cpp.server`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from modelctl.manager import ModelManager
from modelctl.record.errors import Busy, InvalidRequest, LoadFailed
from modelctl.runtime.scheduler import Scheduler
from tests.live import running, serve_process

HELLO = [{"role": "user", "content": "hello"}]


@pytest.fixture
def workers(tiny_models: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelManager]:
    """A manager whose local models run in workers, with two tiny models: `tiny` and `tiny2`."""
    from modelctl.ops.demo import TinySpec, write_llama

    write_llama(tiny_models / "tiny2.gguf", TinySpec(name="Tiny two"))
    monkeypatch.setenv("MODELCTL_WORKERS", "1")
    m = ModelManager()
    m.sync(only=["llamacpp"])
    yield m
    m.close()


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether process `pid` is gone (a readiness poll with a deadline)."""
    deadline = time.monotonic() + timeout
    while psutil.pid_exists(pid):
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_local_model_runs_in_a_worker_process_of_its_own(workers: ModelManager) -> None:
    slot = workers.load("tiny")
    pid = slot["pid"]
    assert pid and pid != os.getpid()
    assert "modelctl.runtime.worker" in " ".join(psutil.Process(pid).cmdline())
    # measured: the worker's resident memory; the budget counts the larger of it and the estimate
    assert slot["measured"] > 0 and slot["counted"] == max(slot["size"], slot["measured"])

    answer = workers.chat(HELLO, "tiny", max_tokens=4)
    assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] == 4
    chunks = list(workers.chat(HELLO, "tiny", max_tokens=4, stream=True))
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    # the worker's refusal is the same error as in process: the client's 400, not a 502
    with pytest.raises(InvalidRequest, match="cannot fit a context"):
        workers.complete("a" * 1_000_000, "tiny", max_tokens=1)

    assert workers.unload("tiny") == ["tiny"]
    assert _gone(pid, timeout=1)  # unload waits for the process: its memory is back
    assert workers.loaded() == []


def test_other_load_options_reload_the_model(workers: ModelManager) -> None:
    """Embeddings on a model loaded for chat, or a larger context, reload it (the first version
    answered "not loaded for embeddings", and kept the smaller context silently)."""
    first = workers.load("tiny", keep_alive=-1)
    vectors = workers.embed(["a text"], "tiny")
    assert len(vectors) == 1 and len(vectors[0]) == 64
    (slot,) = workers.loaded()
    assert slot["pid"] != first["pid"] and slot["options"] == {"embedding": True}
    assert slot["keep_alive"] == -1  # what the request did not change stays
    assert _gone(first["pid"])
    workers.chat(HELLO, "tiny", max_tokens=1, context=256)
    (slot,) = workers.loaded()
    assert slot["options"] == {"embedding": True, "context": 256}


def _events(answer: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in answer.iter_lines():
        if line.startswith("data: {"):
            yield json.loads(line[6:])


def test_a_worker_killed_mid_stream(workers: ModelManager) -> None:
    """kill -9 of a worker in the middle of a stream: the stream ends with an error event that
    says so, the model is failed with the reason, the other model keeps serving, and the next
    request loads it again."""
    workers.load("tiny2")
    with running(workers) as url, httpx.Client(base_url=url, timeout=30) as client:
        body = {"model": "tiny", "messages": HELLO, "max_tokens": 400, "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=body) as answer:
            assert answer.status_code == 200
            events = _events(answer)
            next(events)  # the stream has begun
            (pid,) = [s["pid"] for s in workers.loaded() if s["model"] == "tiny"]
            os.kill(pid, signal.SIGKILL)
            rest = list(events)  # ends: no hang
        error = rest[-1]["error"]
        assert error["code"] == "worker_failed" and "SIGKILL" in error["message"]
        (failed,) = [s for s in workers.loaded() if s["model"] == "tiny"]
        assert failed["state"] == "failed" and "SIGKILL" in failed["error"]

        other = client.post(
            "/v1/chat/completions", json={"model": "tiny2", "messages": HELLO, "max_tokens": 2}
        )
        assert other.status_code == 200
        again = client.post(
            "/api/chat", json={"model": "tiny", "messages": HELLO, "stream": False,
                               "options": {"num_predict": 2}},
        )  # fmt: skip
        assert again.status_code == 200, again.text
        (slot,) = [s for s in workers.loaded() if s["model"] == "tiny"]
        assert slot["state"] == "loaded" and slot["pid"] != pid

        # a worker killed while a request waits for its answer: a 502 in the API's own format
        os.kill(slot["pid"], signal.SIGSTOP)  # holds it before it answers
        with httpx.Client(base_url=url, timeout=30) as other_client:
            import threading

            result: dict[str, Any] = {}
            ask = threading.Thread(
                target=lambda: result.update(
                    r=other_client.post(
                        "/api/generate",
                        json={
                            "model": "tiny",
                            "prompt": "hi",
                            "stream": False,
                            "options": {"num_predict": 2},
                        },
                    )
                )
            )
            ask.start()
            deadline = time.monotonic() + 10
            while not any(s["in_flight"] for s in workers.loaded() if s["model"] == "tiny"):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            os.kill(slot["pid"], signal.SIGKILL)
            ask.join(timeout=10)
        assert result["r"].status_code == 502
        assert "SIGKILL" in result["r"].json()["error"]

        logs = client.get("/api/v1/logs/tiny", params={"lines": 200}).json()
        assert any("killed by SIGKILL" in line for line in logs["lines"])
        assert any("loaded tiny" in line for line in logs["lines"])


def test_repeated_crashes_back_off() -> None:
    """One crash: the next request reloads at once. Crashes in a row: Busy with Retry-After
    until the backoff (1 s, 2 s, … 60 s) has passed; `ps` keeps the reason."""
    from tests.test_scheduler import scheduler

    now = [0.0]
    sched, _ = scheduler({"a": 1}, clock=lambda: now[0])
    handle = sched.load("a").handle
    sched.failed("a", handle, "the worker (pid 1) killed by SIGKILL")
    assert sched.loaded()[0]["state"] == "failed"
    assert "SIGKILL" in sched.loaded()[0]["error"]
    handle = sched.load("a").handle  # the first crash: at once
    sched.failed("a", object(), "a stale handle: ignored")
    assert sched.slots["a"].state == "loaded"
    sched.failed("a", handle, "killed again")
    with pytest.raises(Busy, match="crashed 2 times") as refused:
        sched.load("a")
    assert refused.value.retry_after == 1
    now[0] += 1.5
    handle = sched.load("a").handle
    sched.failed("a", handle, "and again")
    now[0] += 1.5
    with pytest.raises(Busy, match="crashed 3 times"):
        sched.load("a")  # 2 s now
    now[0] += 1
    handle = sched.load("a").handle
    sched.served("a")  # a request served: the next crash is the first in a row again
    sched.failed("a", handle, "once more")
    assert sched.load("a").state == "loaded"


def test_the_budget_counts_a_workers_measured_memory(
    workers: ModelManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two models whose estimates fit the budget together but whose workers do not: loading
    the second evicts the first. The first version counted estimates only."""
    workers.load("tiny")
    (slot,) = workers.loaded()
    assert slot["measured"] > slot["size"]  # the estimator counts weights, not a process
    budget = slot["size"] * 2 + (slot["measured"] - slot["size"]) // 2
    workers.scheduler.budget = budget  # both estimates fit; the worker and an estimate do not
    workers.load("tiny2")
    assert [s["model"] for s in workers.loaded()] == ["tiny2"]
    assert _gone(slot["pid"])


def test_the_command_runtime_runs_a_third_party_server(
    tiny_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model served by llama-cpp-python's own OpenAI-compatible server, started from a
    command template in the project's settings file, through modelctl's OpenAI API."""
    import openai

    command = (
        f"{sys.executable} -m llama_cpp.server --model {{path}} --host {{host}} --port {{port}} "
        "--model_alias {name} --n_ctx {context}"
    )
    Path("modelctl.toml").write_text(f"[commands]\ntiny = {json.dumps(command)}\n")
    with ModelManager() as m:
        m.sync(only=["llamacpp"])
        slot = m.load("tiny", context=256)
        cmdline = " ".join(psutil.Process(slot["pid"]).cmdline())
        assert "llama_cpp.server" in cmdline and "--n_ctx 256" in cmdline
        with running(m) as url:
            client = openai.OpenAI(base_url=url + "/v1", api_key="none")
            answer = client.chat.completions.create(model="tiny", messages=HELLO, max_tokens=3)
            assert answer.choices[0].message.content is not None
            assert answer.usage is not None and answer.usage.completion_tokens >= 1
            stream = client.completions.create(
                model="tiny", prompt="Once", max_tokens=3, stream=True
            )
            assert sum(1 for _ in stream) >= 1
        assert m.unload("tiny") == ["tiny"]
        assert _gone(slot["pid"], timeout=1)


def test_a_command_that_cannot_start_says_why(
    tiny_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Path("modelctl.toml").write_text(
        '[commands.tiny]\ncommand = "no-such-server --port {port}"\n'
        '[commands.tiny2]\ncommand = "' + sys.executable + ' -c \\"raise SystemExit(4)\\""\n'
    )
    from modelctl.ops.demo import TinySpec, write_llama

    write_llama(tiny_models / "tiny2.gguf", TinySpec(name="Tiny two"))
    with ModelManager() as m:
        m.sync(only=["llamacpp"])
        with pytest.raises(LoadFailed, match="cannot start 'no-such-server'"):
            m.load("tiny")
        with pytest.raises(LoadFailed, match="exited with status 4"):
            m.load("tiny2")


def test_sigterm_drains_streams_then_stops_workers_and_saves_what_was_loaded(
    tiny_models: Path, tmp_path: Path
) -> None:
    """`modelctl serve` stopped with SIGTERM during a stream: the stream finishes, the server
    exits, its workers are gone, and the next start loads what was loaded."""
    env = {**os.environ, "MODELCTL_LOG_LEVEL": "warning", "PYTHONUNBUFFERED": "1"}

    subprocess.run([sys.executable, "-m", "modelctl", "sync"], env=env, check=True)
    proc, url = serve_process(env)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            client.post("/api/v1/loaded", json={"model": "tiny"}).raise_for_status()
            (slot,) = client.get("/api/v1/loaded").json()["models"]
            body = {"model": "tiny", "messages": HELLO, "max_tokens": 200, "stream": True}
            with client.stream("POST", "/v1/chat/completions", json=body) as answer:
                events = _events(answer)
                next(events)
                proc.send_signal(signal.SIGTERM)  # mid-stream
                finish = [e["choices"][0].get("finish_reason") for e in events][-1]
            assert finish == "length"  # finished in full within the grace period
        assert proc.wait(timeout=30) == 0
        assert _gone(slot["pid"])
    finally:
        if proc.poll() is None:
            proc.kill()
    proc, url = serve_process(env)
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            (restored,) = client.get("/api/v1/loaded").json()["models"]
        assert restored["model"] == "tiny" and restored["state"] == "loaded"
        assert restored["pid"] != slot["pid"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        assert _gone(restored["pid"])


def test_workers_do_not_outlive_a_killed_server(workers: ModelManager, tmp_path: Path) -> None:
    """A worker exits when the process that started it is gone (a gateway killed with -9)."""
    script = tmp_path / "start.py"
    script.write_text(
        "import os, sys\n"
        "from modelctl.manager import ModelManager\n"
        "m = ModelManager()\n"
        "print(m.load('tiny')['pid'], flush=True)\n"
        "sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, str(script)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    pid = int(proc.stdout.readline())
    assert psutil.pid_exists(pid)
    proc.kill()
    proc.wait()
    assert _gone(pid, timeout=10)


def test_logs_through_the_cli(workers: ModelManager, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from modelctl.cli import app

    monkeypatch.setenv("MODELCTL_SERVER", "http://127.0.0.1:9")  # no server answers there

    workers.load("tiny")
    workers.unload("tiny")
    result = CliRunner().invoke(app, ["logs", "tiny", "-n", "20"])  # no server: the files
    assert result.exit_code == 0, result.output
    assert "loaded tiny" in result.output and "starting:" in result.output
    result = CliRunner().invoke(app, ["logs", "tiny2"])
    assert result.exit_code != 0 and "tiny2 has no worker log" in result.output


def test_the_library_runs_models_in_process_unless_asked(tiny_manager: ModelManager) -> None:
    assert tiny_manager.load("tiny")["pid"] is None
    assert isinstance(tiny_manager.scheduler, Scheduler)


def test_a_worker_nobody_waits_for_any_more_is_stopped(
    tiny_models: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A model whose server takes long to be ready; the one client asking for it hangs up. The
    load is cancelled and its worker stopped at once, long before `load_timeout`."""
    marker = f"never-ready-{os.getpid()}"
    slow = f'{sys.executable} -c \\"import time; time.sleep(600)\\" {marker} {{port}}'
    Path("modelctl.toml").write_text(f'load_timeout = 600\n[commands]\ntiny = "{slow}"\n')

    def worker() -> psutil.Process | None:
        for child in psutil.Process().children(recursive=True):
            try:
                if marker in " ".join(child.cmdline()):
                    return child
            except psutil.NoSuchProcess:
                continue
        return None

    with ModelManager() as m:
        m.sync(only=["llamacpp"])
        with running(m) as url:

            async def leave_while_it_loads() -> int:
                async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                    body = {"model": "tiny", "messages": HELLO, "max_tokens": 2}
                    ask = asyncio.create_task(client.post("/v1/chat/completions", json=body))
                    async with asyncio.timeout(30):  # a readiness poll: until it starts
                        while (started := worker()) is None:
                            await asyncio.sleep(0.02)
                    ask.cancel()  # the client hangs up
                    with contextlib.suppress(asyncio.CancelledError):
                        await ask
                    return started.pid

            cancelled = threading.Event()
            m.scheduler.events.on("model-load-cancelled", lambda event: cancelled.set())
            pid = asyncio.run(leave_while_it_loads())
            assert cancelled.wait(15) and _gone(pid, timeout=15)
            assert "tiny" not in m.scheduler.slots


def test_a_workers_gpu_memory_counts_where_there_is_a_gpu(workers: ModelManager) -> None:
    """A worker's measured memory is its process tree's resident memory plus the NVIDIA GPU
    memory NVML reports for those processes. Here (no GPU, no driver) NVML says so and `vram`
    is None; on a machine with a GPU and a CUDA build, the offloaded layers show as VRAM."""
    from modelctl.fit.hardware import nvidia_gpus

    gpus, _ = nvidia_gpus()
    workers.load("tiny", gpu_layers=-1)
    (slot,) = workers.loaded()
    worker = psutil.Process(slot["pid"])
    rss = sum(p.memory_info().rss for p in [worker, *worker.children(recursive=True)])
    if gpus:  # 0 with a CPU build of llama.cpp: the layers stay in RAM
        assert slot["vram"] is not None and slot["measured"] >= slot["vram"]
    else:
        assert slot["vram"] is None
        assert abs(slot["measured"] - rss) < 0.1 * rss  # measured at load: the same tree
