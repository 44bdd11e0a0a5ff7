"""Profiling a tiny GGUF model with real requests: results stored, shown, compared, and used by
`recommend` for speed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelctl.cli import app
from modelctl.manager import ModelManager
from modelctl.ops.demo import TinySpec, write_llama
from modelctl.record.errors import ModelctlError


@pytest.fixture
def manager(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    folder = tmp_path / "models"
    folder.mkdir()
    write_llama(folder / "tiny.gguf", TinySpec(name="Tiny"))
    write_llama(folder / "other.gguf", TinySpec(name="Other", layers=4))
    monkeypatch.setenv("MODELCTL_MODEL_DIRS", str(folder))
    with ModelManager() as m:
        m.sync(only=["llamacpp"])
        yield m


def test_profile_measures_and_stores(manager: ModelManager) -> None:
    result = manager.profile("tiny", n=2, max_tokens=8)
    assert result["requests"] == 4 and result["success_rate"] == 1.0
    assert 0 < result["latency_p50_ms"] <= result["latency_p95_ms"]
    assert result["ttft_ms"] > 0 and result["generation_tokens_per_second"] > 0
    assert result["prompt_tokens_per_second"] > 0 and result["peak_memory"] > 0
    assert manager.profiles("tiny")["tiny"] == result
    assert manager.usage_stats("tiny")["models"]["tiny"]["requests"] == 4  # recorded as used
    with pytest.raises(ModelctlError, match="n must be 1 or more"):
        manager.profile("tiny", n=0)


def test_profile_and_compare_commands(manager: ModelManager) -> None:
    runner = CliRunner()
    shown = runner.invoke(app, ["profile", "tiny", "-n", "1"])
    assert shown.exit_code == 0, shown.output
    assert "GEN TOK/S" in shown.stdout and "tiny" in shown.stdout and "100%" in shown.stdout
    compared = runner.invoke(app, ["compare", "tiny", "other"])
    assert compared.exit_code == 0
    assert "tiny" in compared.stdout and "other" in compared.stdout
    assert "not profiled yet: other" in compared.stderr
    data = json.loads(runner.invoke(app, ["compare", "tiny", "other", "--json"]).stdout)
    assert data["tiny"]["profile"]["n"] == 1 and data["other"]["profile"] is None
    assert runner.invoke(app, ["compare", "tiny", "nope"]).exit_code == 3


def test_recommend_prefers_what_was_measured_here(manager: ModelManager, tmp_path: Path) -> None:
    # a catalog model, installed here as a GGUF file (a tiny one stands in for it)
    manager.add_model({"id": "tinyllama:1.1b", "backend": "llamacpp", "installed": True,
                       "location": str(tmp_path / "models" / "tiny.gguf")})  # fmt: skip
    before = manager.recommend_model(memory="8G", priority="speed")
    assert "measured" not in before.reason
    manager.profile("tinyllama:1.1b", n=1, max_tokens=8)
    after = manager.recommend_model(memory="8G", priority="speed")
    assert after.model.id == "tinyllama:1.1b" and "measured here" in after.reason
    # other priorities keep the catalog's order
    assert "measured" not in manager.recommend_model(memory="8G", priority="quality").reason
