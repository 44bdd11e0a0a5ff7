"""The shipped catalog is valid and plausible; user catalogs add and override entries."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from modelctl.fit.catalog import BITS_PER_WEIGHT, Catalog
from modelctl.record.errors import InvalidCatalog, ModelNotFound
from modelctl.record.kinds import Capability, Purpose, Task
from modelctl.record.model import Model
from tests.schemes import SCHEMES

CATALOG = Catalog.load(schemes=SCHEMES)
LOCAL = [e for e in CATALOG if e.is_local]
REMOTE = [e for e in CATALOG if not e.is_local]


def test_size_and_coverage() -> None:
    assert len(CATALOG) >= 60
    families = {e.family for e in CATALOG}
    wanted = "llama3.1 llama3.2 qwen2.5 qwen2.5-coder qwen3 mistral mixtral gemma2 gemma3 phi3 phi4"
    for family in [*wanted.split(), "deepseek-r1", "nomic-bert", "llava", "qwen2.5vl"]:
        assert family in families, family
    assert {"openai", "anthropic"} <= {e.backend for e in REMOTE}
    assert any(e.id == "all-minilm:l6-v2" for e in CATALOG)


@pytest.mark.parametrize("entry", list(CATALOG), ids=lambda e: e.id)
def test_every_entry_is_well_formed(entry) -> None:  # type: ignore[no-untyped-def]
    assert entry.source.startswith("https://")
    assert {Task(t) for t in entry.tasks} and all(Capability(c) for c in entry.capabilities)
    assert Purpose(entry.purpose)
    assert entry.context_length and entry.context_length >= 512
    record = Model.from_dict(entry.to_model())  # every entry registers as a valid Model
    assert record.id == entry.id
    if "ollama" in entry.refs:
        assert re.fullmatch(r"[a-z0-9][a-z0-9._-]*:[a-z0-9][a-z0-9._-]*", entry.refs["ollama"])
    if "huggingface" in entry.refs:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", entry.refs["huggingface"])
    if "gguf" in entry.refs:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+/[\w.-]+\.gguf", entry.refs["gguf"])


@pytest.mark.parametrize("entry", LOCAL, ids=lambda e: e.id)
def test_local_sizes_are_plausible(entry) -> None:  # type: ignore[no-untyped-def]
    """Download size / parameters lands near the quantization's bits per weight (catches typos)."""
    arch = entry.architecture
    assert arch["heads"] % arch["kv_heads"] == 0
    assert arch["head_dim"] * arch["heads"] >= arch["embedding"] * 0.5
    size, estimated = entry.download_size()
    assert size and size > 0 and not estimated
    bits = size * 8 / entry.parameters
    nominal = BITS_PER_WEIGHT[entry.default_quantization]
    assert 0.85 * nominal <= bits <= 1.45 * nominal, f"{bits:.2f} bits/weight"
    for quant in entry.offered_quantizations():
        other, _ = entry.download_size(quant)
        assert other and other > 0


def test_remote_entries_have_prices() -> None:
    for entry in REMOTE:
        assert entry.pricing and entry.pricing["input"] >= 0
        assert entry.to_model()["backend"] == entry.backend


def test_find_by_any_name() -> None:
    assert CATALOG["llama3.2:3b"].id == "llama3.2:3b"
    assert CATALOG["llama3.2"].id.startswith("llama3.2:")  # Ollama's name without a tag
    assert CATALOG["hf:Qwen/Qwen2.5-7B-Instruct"].id == "qwen2.5:7b"
    assert CATALOG["meta-llama/Llama-3.1-8B-Instruct"].id == "llama3.1:8b"
    assert CATALOG["Llama 3.1 8B Instruct"].id == "llama3.1:8b"
    with pytest.raises(ModelNotFound, match="did you mean"):
        CATALOG["llama3.1:9b"]


def test_search() -> None:
    assert [e.id for e in CATALOG.search("qwen coder")] == [
        "qwen2.5-coder:1.5b", "qwen2.5-coder:7b", "qwen2.5-coder:14b", "qwen2.5-coder:32b",
    ]  # fmt: skip
    embedders = CATALOG.search(task="embedding", local=True)
    assert embedders and all("embedding" in e.tasks and e.is_local for e in embedders)
    assert CATALOG.search("no such model anywhere") == []


def test_estimated_sizes_are_marked() -> None:
    entry = CATALOG["qwen2.5:7b"]
    assert entry.download_size() == (4_700_000_000, False)
    size, estimated = entry.download_size("Q8_0")
    assert estimated and size == round(entry.parameters * 8.5 / 8)
    assert entry.download_size("q8_0") == (size, True)


def write_catalog(folder: Path, models: list, name: str = "mine.json") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(json.dumps({"format": "modelctl.catalog", "version": 1, "models": models}))
    return path


def test_user_catalog_adds_and_overrides(tmp_path: Path) -> None:
    base = json.loads(json.dumps(CATALOG["llama3.2:3b"].to_dict()))
    mine = {
        "id": "llama3.2:3b", "name": "My Llama", "tasks": ["chat"], "purpose": "speed",
        "license": "llama3.2", "source": "https://example.com/card",
        "parameters": base["parameters"],
        "architecture": base["architecture"], "context_length": 8192,
        "default_quantization": "Q4_K_M", "quantizations": {"Q4_K_M": 2_100_000_000},
    }  # fmt: skip
    new = dict(mine, id="house-model:7b", name="House model")
    write_catalog(tmp_path / "catalog", [mine, new])
    catalog = Catalog.load([tmp_path / "catalog"])
    assert len(catalog) == len(CATALOG) + 1
    assert catalog["llama3.2:3b"].name == "My Llama"
    assert catalog["house-model:7b"].origin.endswith("mine.json")


@pytest.mark.parametrize(
    ("models", "words"),
    [
        ([{"id": "x"}], "entry 0 ('x'): missing 'name'"),
        ([{"id": "x", "name": "X", "tasks": ["chat"], "purpose": "speed", "license": "l",
           "source": "https://x", "parameters": 10}], "architecture lacks"),
        ([{"id": "x", "name": "X", "tasks": ["chat"], "purpose": "speed", "license": "l",
           "source": "https://x", "parameters": -1}], "positive integer"),
    ],
)  # fmt: skip
def test_bad_user_catalogs_are_clear(tmp_path: Path, models: list, words: str) -> None:
    write_catalog(tmp_path / "catalog", models)
    with pytest.raises(InvalidCatalog, match=re.escape(words)):
        Catalog.load([tmp_path / "catalog"])


def test_user_catalog_not_json(tmp_path: Path) -> None:
    (tmp_path / "catalog").mkdir()
    (tmp_path / "catalog" / "bad.json").write_text("{nope")
    with pytest.raises(InvalidCatalog, match=r"bad\.json is not JSON"):
        Catalog.load([tmp_path / "catalog"])
    (tmp_path / "catalog" / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(InvalidCatalog, match="not a modelctl catalog"):
        Catalog.load([tmp_path / "catalog"])
