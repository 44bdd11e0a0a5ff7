"""`modelctl doctor`: what it finds on this machine, and the steps it gives (protocol servers
stand in for Ollama and an OpenAI-compatible provider)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from modelctl.cli import app
from modelctl.manager import ModelManager
from tests.protocol_servers import FakeOllama, FakeOpenAI, OllamaModel, serve


def test_a_bare_machine_gets_steps() -> None:
    result = CliRunner().invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert "Python 3." in out and "RAM free" in out
    assert "next steps:" in out and "ollama serve" in out and "export OPENAI_API_KEY" in out
    assert "modelctl sync" in out  # the registry is empty
    assert "modelctl pull" in out  # nothing installed: what to pull for this machine
    assert "modelctl serve" in out  # no server running
    assert "Traceback" not in result.output


def test_a_working_setup_is_all_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    ollama = FakeOllama(models={"llama3.2:3b": OllamaModel("llama3.2:3b")})
    with serve(ollama) as ollama_url, serve(FakeOpenAI(key="sk-test")) as openai_url:
        monkeypatch.setenv("OLLAMA_HOST", ollama_url)
        monkeypatch.setenv("OPENAI_BASE_URL", openai_url + "/v1")
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        with ModelManager() as manager:
            manager.sync(only=["ollama"])
            found = {(f.area, f.message.split(":")[0]): f for f in manager.doctor()}
    assert found[("backend", "ollama")].level == "ok"
    assert found[("backend", "openai")].level == "ok"
    assert found[("keys", "OPENAI_API_KEY is set")].level == "ok"
    assert found[("registry", "1 model in " + str(manager.settings.database))].level == "ok"
    assert not [f for f in found.values() if f.area == "models"]  # a model is installed
    data = json.loads(CliRunner().invoke(app, ["doctor", "--json"]).stdout)
    assert {"area", "level", "message", "step"} <= set(data[0])
