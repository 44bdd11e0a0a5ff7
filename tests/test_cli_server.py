"""The CLI and the server: `serve` as a real process, and `load`, `unload`, `use`, `ps` acting
on a running server as Ollama's CLI acts on its daemon; `stats` reading the usage ledger."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from modelctl.cli import app
from modelctl.manager import ModelManager
from modelctl.ops.demo import TinySpec, write_llama
from tests.live import running


def run(*args: str):
    return CliRunner().invoke(app, list(args))


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModelManager]:
    folder = tmp_path / "models"
    folder.mkdir()
    write_llama(folder / "tiny.gguf", TinySpec(name="Tiny"))
    write_llama(folder / "other.gguf", TinySpec(name="Other", layers=3))
    monkeypatch.setenv("MODELCTL_MODEL_DIRS", str(folder))
    with ModelManager() as m:
        m.sync(only=["llamacpp"])
        yield m


@pytest.fixture
def server(manager: ModelManager, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with running(manager) as url:
        monkeypatch.setenv("MODELCTL_SERVER", url)
        yield url


def test_load_ps_use_unload_act_on_the_server(server: str, manager: ModelManager) -> None:
    loaded = run("load", "tiny", "--keep-alive", "10m", "--pin")
    assert loaded.exit_code == 0, loaded.output
    assert "loaded tiny on cpu" in loaded.stderr and "pinned" in loaded.stderr
    assert [s["model"] for s in manager.loaded()] == ["tiny"]  # in the server's process

    used = run("use", "other")
    assert used.exit_code == 0 and "now using other" in used.stderr
    table = run("ps")
    assert table.exit_code == 0
    assert "tiny (pinned)" in table.stdout and "other *" in table.stdout and "10m" in table.stdout
    data = json.loads(run("ps", "--json").stdout)
    assert data["current"] == "other" and {m["model"] for m in data["models"]} == {"tiny", "other"}

    assert "unloaded tiny" in run("unload", "tiny").stderr
    assert "unloaded other" in run("unload", "--all").stderr
    assert run("ps").stderr.startswith("no models loaded")


def test_lifecycle_errors_are_one_line(server: str) -> None:
    missing = run("load", "nope")
    assert missing.exit_code == 3 and missing.stderr.startswith("error: no model named 'nope'")
    bad = run("load", "tiny", "--keep-alive", "soon")
    assert bad.exit_code == 2 and "--keep-alive" in bad.stderr
    assert run("unload").exit_code == 1


def test_no_server_running_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCTL_SERVER", "http://127.0.0.1:9")  # nothing listens on discard
    for args in (("ps",), ("load", "x"), ("unload", "--all"), ("use", "x")):
        result = run(*args)
        assert result.exit_code == 6, args
        assert result.stderr.startswith("error: no modelctl server at http://127.0.0.1:9")
        assert "modelctl serve" in result.stderr and "Traceback" not in result.stderr


def test_stats_shows_what_the_ledger_recorded(manager: ModelManager) -> None:
    manager.chat([{"role": "user", "content": "hi"}], "tiny", max_tokens=3, client="cli-test")
    manager.record_usage("other", latency=0.5, tokens_in=10, tokens_out=20, ok=False, error="x")
    manager.usage.flush()
    table = run("stats")
    assert table.exit_code == 0, table.output
    assert "tiny" in table.stdout and "other" in table.stdout and "(all)" in table.stdout
    data = json.loads(run("stats", "other", "--json").stdout)
    assert data["models"]["other"]["errors"] == 1 and data["models"]["other"]["tokens_out"] == 20
    assert run("stats", "nope").exit_code == 3
    assert run("stats", "--since", "later").exit_code == 2
    assert json.loads(run("stats", "--since", "1h", "--json").stdout)["overall"]["requests"] == 2


def test_serve_refuses_a_public_address_without_a_key() -> None:
    result = run("serve", "--host", "0.0.0.0", "--port", "0")
    assert result.exit_code == 2
    assert "without an API key" in result.stderr and "MODELCTL_API_KEY" in result.stderr


def test_serve_as_a_process_answers_and_stops_cleanly(manager: ModelManager) -> None:
    manager.close()  # the registry is the server's now
    env = {**os.environ, "MODELCTL_API_KEY": "k3y"}
    code = "from modelctl.cli import main; main()"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "serve", "--port", "0"],
        env=env, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("modelctl serving on http://127.0.0.1:"), line
        url = line.split()[3]
        assert httpx.get(f"{url}/api/tags").status_code == 401
        keyed = {"Authorization": "Bearer k3y"}
        assert {
            m["name"] for m in httpx.get(f"{url}/api/tags", headers=keyed).json()["models"]
        } == {
            "tiny",
            "other",
        }
        busy = run("serve", "--port", url.rsplit(":", 1)[1])
        assert busy.exit_code == 2 and "cannot listen" in busy.stderr
    finally:
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0


def test_single_model_servers_in_child_processes(manager: ModelManager) -> None:
    import openai

    server = manager.start_server("tiny")
    try:
        assert server.model == "tiny" and server.url.endswith(f":{server.port}") and server.pid
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0)
        assert [m.id for m in client.models.list()] == ["tiny"]
        # any name reaches its one model, as with llama-server; it was loaded at start
        answer = client.chat.completions.create(
            model="whatever", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
        assert answer.model == "tiny"
        loaded = httpx.get(f"{server.url}/api/v1/loaded").json()["models"]
        assert [(m["model"], m["pinned"]) for m in loaded] == [("tiny", True)]
    finally:
        assert manager.stop_server(server) == 0
    from modelctl.record.errors import ModelctlError

    with pytest.raises(ModelctlError, match="no model named 'nope'"):
        manager.start_server("nope")


def test_serve_one_model_that_cannot_load_says_why(manager: ModelManager, tmp_path: Path) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    manager.registry.add({"id": "broken", "backend": "llamacpp", "location": str(broken),
                          "installed": True})  # fmt: skip
    from modelctl.record.errors import ModelctlError

    with pytest.raises(ModelctlError, match="did not start") as failed:
        manager.start_server("broken")
    assert "cannot serve broken" in str(failed.value) and "its log:" in str(failed.value)


def test_a_server_stops_by_name_and_closing_the_manager_stops_the_rest(
    manager: ModelManager,
) -> None:
    from modelctl.record.errors import NotFound

    servers = [manager.start_server("tiny"), manager.start_server("other")]
    assert manager.stop_server("other") == 0 and servers[1].process.poll() == 0
    with pytest.raises(NotFound, match="no server of this manager serves 'other'"):
        manager.stop_server("other")
    manager.close()
    assert [s.process.poll() for s in servers] == [0, 0]
