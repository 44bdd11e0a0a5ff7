"""Sync, pull and rm through the manager and the CLI: a loopback Ollama (protocol test), a
loopback Hub (protocol test), and real GGUF files in a model folder."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from modelctl.cli import app
from modelctl.manager import ModelManager
from modelctl.ops.demo import TinySpec, write_llama
from tests.protocol_servers import FakeHub, FakeOllama, OllamaModel, serve


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    """An Ollama daemon holding one model whose blob is also a GGUF file in the model folder."""
    folder = tmp_path / "models"
    folder.mkdir()
    shared = write_llama(folder / "shared-Q8_0.gguf", TinySpec(dtype="Q8_0", name="Shared"))
    write_llama(folder / "only-here.gguf", TinySpec(name="Only here"))
    ollama = FakeOllama(
        models={"shared:latest": OllamaModel("shared:latest", blob=shared.read_bytes()),
                "other:7b": OllamaModel("other:7b", parameter_size="7B")},
        library={"tiny:1b": OllamaModel("tiny:1b", parameter_size="1B")},
    )  # fmt: skip
    with serve(ollama) as url:
        monkeypatch.setenv("OLLAMA_HOST", url)
        monkeypatch.setenv("MODELCTL_MODEL_DIRS", str(folder))
        yield {"ollama": ollama, "folder": folder, "shared": shared}


def manager() -> ModelManager:
    return ModelManager()


def test_sync_adds_merges_and_keeps_user_data(world: dict) -> None:
    m = manager()
    report = m.sync()
    assert set(report.added) == {"shared:latest", "other:7b", "only-here"}
    assert report.merged == [f"{world['shared']} = shared:latest"]  # same sha256: one record
    shared = m.registry["shared:latest"]
    assert shared.refs == {"ollama": "shared:latest", "llamacpp": str(world["shared"])}
    assert {"openai", "anthropic", "lmstudio"} <= set(report.errors)  # unreachable: reported
    # the user organizes; a second sync changes nothing of it
    m.registry.tag("other:7b", "favourite")
    m.registry.alias("o7", "other:7b")
    m.registry.set_custom("other:7b", "note", "mine")
    m.registry.group("team", "o7")
    again = m.sync()
    assert again.added == [] and again.merged == []
    other = m.registry["o7"]
    assert other.tags == ["favourite"] and other.custom == {"note": "mine"}
    assert m.registry.groups_of("o7") == ["team"]
    # gone from Ollama: kept, marked not installed
    del world["ollama"].models["other:7b"]
    gone = m.sync(only=["ollama"])
    assert gone.missing == ["other:7b"]
    kept = m.registry["o7"]
    assert not kept.installed and kept.status == "missing" and kept.tags == ["favourite"]


def test_pull_registers_and_rm_deletes(world: dict) -> None:
    m = manager()
    model = m.install_model("ollama:tiny:1b")
    assert model.installed and model.backend == "ollama" and m.registry["tiny:1b"].installed
    plan = m.delete_model("tiny:1b", dry_run=True)
    assert plan.bytes_freed > 0 and "tiny:1b" in world["ollama"].models
    m.delete_model("tiny:1b")
    assert "tiny:1b" not in world["ollama"].models
    assert not m.registry["tiny:1b"].installed


def test_a_failed_pull_registers_nothing(world: dict) -> None:
    from modelctl.backends import BackendError

    m = manager()
    with pytest.raises(BackendError, match="file does not exist"):
        m.install_model("ollama:nope:1b")
    assert "nope:1b" not in m.registry and len(m.registry) == 0


def test_pull_refuses_what_will_not_fit() -> None:
    from modelctl.record.errors import InsufficientMemory

    with pytest.raises(InsufficientMemory, match=r"llama3\.1:405b won't fit here"):
        manager().install_model("llama3.1:405b")


def test_pull_a_gguf_from_the_hub_into_the_model_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = write_llama(tmp_path / "src.gguf", TinySpec(dtype="Q8_0")).read_bytes()
    hub = FakeHub(repos={"org/Tiny-GGUF": {"Tiny-Q8_0.gguf": data}})
    with serve(hub) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("MODELCTL_MODEL_DIRS", str(tmp_path / "models"))
        model = manager().install_model("hf:org/Tiny-GGUF", quantization="Q8_0")
    assert model.backend == "llamacpp" and model.installed and model.quantization == "Q8_0"
    assert Path(model.location).parent == tmp_path / "models" / "org__Tiny-GGUF"


def test_pull_checks_the_fit_of_an_ollama_model_by_its_manifest(
    world: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The registry's manifest gives the layers' sizes before the daemon downloads anything
    (protocol test: the fake daemon answers as the registry too)."""
    from modelctl.record.errors import InsufficientMemory

    ollama = world["ollama"]
    ollama.library["huge:405b"] = OllamaModel("huge:405b", parameter_size="405B")
    ollama.listed["huge:405b"] = 1 << 50
    monkeypatch.setenv("MODELCTL_OLLAMA_REGISTRY", os.environ["OLLAMA_HOST"])
    m = manager()
    assert m.backend("ollama").download_size("huge:405b") == (1 << 50) + 485 + 1095
    assert m.backend("ollama").download_size("hf.co/org/repo:Q4_K_M") is None  # not asked
    with pytest.raises(InsufficientMemory, match=r"huge:405b won't fit here"):
        m.install_model("ollama:huge:405b")
    assert "huge:405b" not in ollama.models and len(m.registry) == 0  # nothing was pulled
    assert m.install_model("ollama:tiny:1b").installed  # a small one goes through


def test_pull_checks_the_fit_of_a_hub_file_before_downloading_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only catalog models: the size the Hub lists is checked first (protocol test)."""
    from modelctl.record.errors import InsufficientMemory

    data = write_llama(tmp_path / "src.gguf", TinySpec(dtype="Q8_0")).read_bytes()
    hub = FakeHub(
        repos={"org/Huge-GGUF": {"Huge-Q8_0.gguf": data}, "org/Huge": {"model.safetensors": data}},
        listed={"Huge-Q8_0.gguf": 1 << 50, "model.safetensors": 1 << 50},  # a petabyte each
    )
    models = tmp_path / "models"
    with serve(hub) as url:
        monkeypatch.setenv("HF_ENDPOINT", url)
        monkeypatch.setenv("MODELCTL_MODEL_DIRS", str(models))
        m = manager()
        with pytest.raises(InsufficientMemory, match=r"Huge-Q8_0\.gguf won't fit here"):
            m.install_model("hf:org/Huge-GGUF/Huge-Q8_0.gguf")
        with pytest.raises(InsufficientMemory, match="org/Huge won't fit here"):
            m.install_model("hf:org/Huge")
        assert not models.exists() and len(m.registry) == 0  # nothing was downloaded
        # --force downloads it anyway (the real file is tiny)
        forced = m.install_model("hf:org/Huge-GGUF/Huge-Q8_0.gguf", force=True)
        assert forced.installed and forced.backend == "llamacpp"


# ---------------------------------------------------------------- the CLI


def run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_cli_backends_sync_pull_rm(world: dict) -> None:
    statuses = {s["name"]: s for s in json.loads(run("backends", "--json").stdout)}
    assert statuses["ollama"]["available"] and statuses["ollama"]["models"] == 2
    assert statuses["llamacpp"]["models"] == 2 and not statuses["openai"]["available"]
    assert "ollama" in run("backends").stdout
    report = json.loads(run("sync", "--json").stdout)
    assert len(report["added"]) == 3 and report["merged"]
    pulled = run("pull", "ollama:tiny:1b")
    assert pulled.exit_code == 0, pulled.output
    assert "installed tiny:1b" in pulled.stderr and "success" in pulled.stderr
    dry = run("rm", "tiny:1b", "--dry-run", "--json")
    assert json.loads(dry.stdout)["paths"] == ["ollama:tiny:1b"]
    assert run("rm", "tiny:1b").exit_code == 1  # asks first; no terminal: needs --yes
    assert run("rm", "tiny:1b", "--yes").exit_code == 0
    again = run("rm", "tiny:1b", "--yes")
    assert again.exit_code == 3 and "not installed" in again.stderr  # not found: exit 3
    assert run("rm", "only-here", "--yes").exit_code == 0
    assert not (world["folder"] / "only-here.gguf").exists()


def test_cli_pull_errors_are_one_line(world: dict) -> None:
    for args, code, words in [
        (["pull", "ollama:nope:1b"], 6, "file does not exist"),
        (["pull", "llama3.1:405b"], 7, "won't fit here"),
        (["pull", "openai/gpt-4o"], 6, "nothing to download"),
        (["pull", "x", "--backend", "nosuch"], 3, "no backend named 'nosuch'"),
    ]:
        result = run(*args)
        assert result.exit_code == code, (args, result.output)
        assert words in result.output and "Traceback" not in result.output
