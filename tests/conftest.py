"""Shared fixtures: every test gets its own data folder and no settings from the machine."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from modelctl.manager import ModelManager
from modelctl.record.model import Model
from modelctl.registry import Registry
from tests.postgres import PostgresServer


@pytest.fixture(autouse=True)
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh MODELCTL_HOME, no global config file, and a working folder with no project file."""
    home = tmp_path / "home"
    monkeypatch.setenv("MODELCTL_HOME", str(home))
    monkeypatch.setenv("MODELCTL_CONFIG", str(tmp_path / "no-global-config.toml"))
    # Nothing of this machine's own setup may leak in: daemons, keys, caches.
    for name in (
        *("MODELCTL_DATABASE", "MODELCTL_MODEL_DIRS", "MODELCTL_LOG_LEVEL", "MODELCTL_API_KEY"),
        *("OLLAMA_HOST", "LMSTUDIO_URL", "OPENAI_BASE_URL", "OPENAI_API_KEY", "OPENROUTER_API_KEY"),
        *("ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "HF_ENDPOINT", "HF_TOKEN", "HF_HUB_CACHE"),
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("LITELLM_LOCAL_MODEL_COST_MAP", "True")  # no fetch from the internet
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return home


@pytest.fixture
def tiny_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model folder (MODELCTL_MODEL_DIRS) holding one tiny generated GGUF model, `tiny`."""
    from modelctl.ops.demo import TinySpec, write_llama

    folder = tmp_path / "models"
    folder.mkdir()
    write_llama(folder / "tiny.gguf", TinySpec(name="Tiny"))
    monkeypatch.setenv("MODELCTL_MODEL_DIRS", str(folder))
    return folder


@pytest.fixture
def tiny_manager(tiny_models: Path) -> Iterator[ModelManager]:
    """A manager that has synced the tiny model's folder; closed after the test."""
    m = ModelManager()
    m.sync(only=["llamacpp"])
    yield m
    m.close()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (see tests/postgres.py)."""
    server = PostgresServer().start()
    yield server
    server.remove()


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Where a store lives, on each engine: a SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "registry.sqlite")
    return request.getfixturevalue("postgres").fresh()


@pytest.fixture
def registry(database: str) -> Registry:
    """A registry told what the installed backends declare, as the manager tells its own, on
    each engine."""
    from tests.schemes import SCHEMES

    reg = Registry.open(database, schemes=lambda: SCHEMES)
    yield reg
    reg.close()


SAMPLE = [
    {
        "id": "llama3.2:3b",
        "backend": "ollama",
        "refs": {"ollama": "llama3.2:3b", "huggingface": "meta-llama/Llama-3.2-3B-Instruct"},
        "tasks": ["chat"],
        "capabilities": ["chat", "tools"],
        "parameters": 3_212_749_824,
        "quantization": "Q4_K_M",
        "context_length": 131072,
        "file_size": 2_019_393_189,
        "installed": True,
        "purpose": "speed",
        "tags": ["local", "prod"],
        "aliases": ["fast"],
    },
    {
        "id": "qwen2.5-coder:7b",
        "backend": "ollama",
        "tasks": ["code", "chat"],
        "parameters": 7_615_616_512,
        "quantization": "Q4_K_M",
        "context_length": 32768,
        "file_size": 4_683_087_519,
        "installed": False,
        "purpose": "specialized",
        "tags": ["local", "code"],
        "custom": {"owner": "bob", "langs": ["python", "rust"], "score": 7.5, "beta": True},
    },
    {
        "id": "Qwen/Qwen2.5-0.5B-Instruct",
        "backend": "huggingface",
        "refs": {"huggingface": "Qwen/Qwen2.5-0.5B-Instruct"},
        "tasks": ["chat"],
        "parameters": 494_032_768,
        "quantization": "BF16",
        "context_length": 32768,
        "download_size": 988_097_824,
        "purpose": "speed",
        "tags": ["tiny"],
        "custom": {"owner": "alice"},
    },
    {
        "id": "openai/gpt-4o",
        "backend": "openai",
        "refs": {"openai": "gpt-4o"},
        "tasks": ["chat", "vision"],
        "capabilities": ["chat", "tools", "vision"],
        "context_length": 128000,
        "installed": True,
        "purpose": "quality",
        "pricing": {"input": 2.5, "output": 10.0},
        "tags": ["prod", "remote"],
    },
    {
        "id": "mixtral:8x7b",
        "backend": "ollama",
        "tasks": ["chat"],
        "parameters": 46_702_792_704,
        "context_length": 32768,
        "purpose": "quality",
        "status": "missing",
    },
]


@pytest.fixture
def sample(registry: Registry) -> Registry:
    for record in SAMPLE:
        registry.add(Model.from_dict(record))
    return registry
