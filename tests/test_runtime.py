"""Real models through the manager: tiny GGUF files, generated here, loaded by llama.cpp."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelctl.backends import NotSupported
from modelctl.cli import app
from modelctl.manager import ModelManager
from modelctl.ops.demo import TinySpec, write_llama
from modelctl.record.errors import InsufficientMemory, LoadFailed, ModelNotFound


@pytest.fixture
def models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    write_llama(folder / "chatty.gguf", TinySpec(name="Chatty"))
    write_llama(folder / "other.gguf", TinySpec(name="Other", layers=3))
    write_llama(folder / "plain.gguf", TinySpec(name="Plain", chat_template=None))
    monkeypatch.setenv("MODELCTL_MODEL_DIRS", str(folder))
    return folder


@pytest.fixture
def manager(models: Path):
    m = ModelManager()
    m.sync(only=["llamacpp"])
    yield m
    m.close()


MESSAGES = [{"role": "user", "content": "hello"}]


def test_load_chat_stream_complete_unload(manager: ModelManager) -> None:
    events: list[str] = []
    manager.events.on("*", lambda e: events.append(e.name))
    state = manager.load("chatty", keep_alive=-1)
    assert state["state"] == "loaded" and state["device"] == "cpu" and state["size"] > 0
    answer = manager.chat(MESSAGES, "chatty", max_tokens=4, seed=1)
    assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] <= 4
    chunks = list(manager.chat(MESSAGES, "chatty", max_tokens=4, stream=True))
    assert (
        chunks[0]["object"] == "chat.completion.chunk" and chunks[-1]["choices"][0]["finish_reason"]
    )
    text = manager.complete("abc", "chatty", max_tokens=3)
    assert text["object"] == "text_completion"
    info = {i["model"]: i for i in manager.loaded()}["chatty"]
    assert info["in_flight"] == 0 and info["tokens_per_second"] and info["measured"] is not None
    assert manager.total_memory_usage() == info["size"]
    assert manager.unload("chatty") == ["chatty"] and manager.loaded() == []
    assert events[:2] == ["model-loading", "model-loaded"] and events[-1] == "model-unloaded"


def test_loads_on_demand_and_switches(manager: ModelManager) -> None:
    assert manager.chat(MESSAGES, "other", max_tokens=2)["choices"]  # loaded by the request
    manager.switch_model("chatty")
    assert manager.current() == "chatty"
    assert manager.chat(MESSAGES, max_tokens=2)["model"]  # the current model
    assert {i["model"] for i in manager.loaded()} == {"chatty", "other"}
    assert manager.unload_least_used() == "other"


def test_default_parameters_apply_and_requests_override(manager: ModelManager) -> None:
    manager.update_model_parameters("chatty", max_tokens=2, temperature=0.0)
    assert manager.registry["chatty"].defaults == {"max_tokens": 2, "temperature": 0.0}
    assert manager.chat(MESSAGES, "chatty")["usage"]["completion_tokens"] <= 2
    assert manager.chat(MESSAGES, "chatty", max_tokens=6, seed=3)["usage"]["completion_tokens"] <= 6
    with pytest.raises(Exception, match="unknown generation option"):
        manager.update_model_parameters("chatty", warp_speed=9)


def test_embeddings(manager: ModelManager) -> None:
    vectors = manager.embed(["one", "two"], "chatty")
    assert len(vectors) == 2 and len(vectors[0]) == 64 and vectors[0] != vectors[1]


def test_clear_errors(manager: ModelManager, models: Path) -> None:
    with pytest.raises(NotSupported, match="no chat template"):
        manager.chat(MESSAGES, "plain", max_tokens=2)
    assert manager.complete("x", "plain", max_tokens=2)["choices"]  # completion still works
    with pytest.raises(ModelNotFound):
        manager.chat(MESSAGES, "nosuch")
    with pytest.raises(Exception, match="unknown option 'warp'"):
        manager.chat(MESSAGES, "chatty", warp=1)
    (models / "chatty.gguf").write_bytes(b"GGUF" + b"\0" * 100)  # the file breaks under us
    manager.unload("chatty")
    with pytest.raises(LoadFailed, match="chatty failed to load"):
        manager.load("chatty")
    failed = {i["model"]: i for i in manager.loaded()}["chatty"]
    assert failed["state"] == "failed" and failed["error"]
    assert manager.chat(MESSAGES, "other", max_tokens=2)["choices"]  # the scheduler goes on


def test_a_model_that_cannot_fit(models: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELCTL_MEMORY_BUDGET", "1M")
    with ModelManager() as m:
        m.sync(only=["llamacpp"])
        with pytest.raises(InsufficientMemory, match=r"the whole budget is 1\.0 MiB"):
            m.load("chatty")


def test_state_survives_a_restart(manager: ModelManager) -> None:
    manager.switch_model("chatty", keep_alive=-1, pin=True)
    manager.load("other")
    state = manager.saved_state()
    assert state["current"] == "chatty" and {e["model"] for e in state["loaded"]} == {
        "chatty",
        "other",
    }
    with ModelManager() as again:
        assert again.scheduler.restore(again.saved_state()) == {}
        assert again.current() == "chatty" and again.scheduler.slots["chatty"].pinned


def test_a_clean_stop_saves_what_was_loaded(manager: ModelManager) -> None:
    """Closing the manager (what Ctrl-C on `modelctl serve` does) unloads every model, and the
    saved state is what was loaded before, not the empty scheduler after."""
    manager.switch_model("chatty", keep_alive=-1)
    manager.load("other", pin=True)
    manager.close()
    with ModelManager() as again:
        state = again.saved_state()
        assert state["current"] == "chatty"
        assert {e["model"]: e["pinned"] for e in state["loaded"]} == {
            "chatty": False,
            "other": True,
        }
        assert again.scheduler.restore(state) == {} and again.current() == "chatty"


def test_run_command(manager: ModelManager) -> None:
    runner = CliRunner()
    once = runner.invoke(app, ["run", "chatty", "hello", "-n", "3", "--seed", "1"])
    assert once.exit_code == 0, once.output
    assert once.stdout.endswith("\n")
    chat = runner.invoke(app, ["run", "chatty", "-n", "2"], input="hi\nagain\n")
    assert chat.exit_code == 0 and chat.stdout.count("\n") == 2
    raw = runner.invoke(app, ["run", "plain", "abc", "--raw", "-n", "2"])
    assert raw.exit_code == 0
    refused = runner.invoke(app, ["run", "plain", "abc", "-n", "2"])
    assert refused.exit_code == 2 and "no chat template" in refused.stderr
