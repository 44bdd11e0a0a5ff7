"""Registry: a MutableMapping over a real SQLite file, with aliases, groups, export and import."""

from __future__ import annotations

import json
from collections.abc import MutableMapping
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelctl.record.errors import (
    Conflict,
    ImportFailed,
    InvalidModel,
    InvalidReference,
    ModelNotFound,
    NotFound,
)
from modelctl.record.model import Model
from modelctl.registry import Registry
from tests.conftest import SAMPLE


def test_mapping_protocol(registry: Registry) -> None:
    assert isinstance(registry, MutableMapping)
    registry["a"] = Model(id="a", backend="ollama")
    registry["b"] = {"backend": "openai", "context_length": 8192}
    assert len(registry) == 2 and list(registry) == ["a", "b"]
    assert registry["b"].context_length == 8192 and registry["b"].id == "b"
    assert "a" in registry and "zzz" not in registry and 3 not in registry
    assert registry.get("zzz") is None
    del registry["a"]
    assert list(registry) == ["b"]
    with pytest.raises(KeyError):
        del registry["a"]


def test_set_under_another_key_takes_that_key(registry: Registry) -> None:
    registry["other"] = Model(id="original", backend="ollama")
    assert list(registry) == ["other"]


def test_lists_and_predicates(sample: Registry) -> None:
    picked = sample[["fast", "openai/gpt-4o"]]
    assert [m.id for m in picked] == ["llama3.2:3b", "openai/gpt-4o"]
    small = sample[lambda m: m.parameters is not None and m.parameters < 4e9]
    assert {m.id for m in small} == {"llama3.2:3b", "Qwen/Qwen2.5-0.5B-Instruct"}


def test_references_resolve_in_every_form(sample: Registry, tmp_path: Path) -> None:
    assert sample.resolve("fast") == "llama3.2:3b"
    assert sample.resolve("ollama:llama3.2:3b") == "llama3.2:3b"
    assert sample.resolve("hf:meta-llama/Llama-3.2-3B-Instruct") == "llama3.2:3b"
    assert sample.resolve("meta-llama/Llama-3.2-3B-Instruct") == "llama3.2:3b"
    assert sample.resolve("gpt-4o") == "openai/gpt-4o"
    assert sample.resolve("openai:gpt-4o") == "openai/gpt-4o"
    assert sample.resolve("FAST") == "llama3.2:3b"
    assert sample.resolve("ollama:mixtral:8x7b") == "mixtral:8x7b"
    gguf = tmp_path / "tiny-q8_0.gguf"
    gguf.write_bytes(b"GGUF")
    sample.add({"id": "tiny", "backend": "llamacpp", "location": str(gguf)})
    assert sample.resolve(str(gguf)) == "tiny"


def test_explicit_backend_must_match(sample: Registry) -> None:
    with pytest.raises(ModelNotFound):
        sample.resolve("openai:mixtral:8x7b")


def test_unknown_names_suggest_close_ones(sample: Registry) -> None:
    with pytest.raises(ModelNotFound) as caught:
        sample["lama3.2:3b"]
    assert caught.value.suggestions[0] == "llama3.2:3b"
    assert "did you mean 'llama3.2:3b'" in str(caught.value)
    with pytest.raises(ModelNotFound) as nothing:
        sample["completely-unrelated-zzz"]
    assert "modelctl list" in str(nothing.value)


def test_ambiguous_reference_lists_candidates(registry: Registry) -> None:
    registry.add({"id": "a", "backend": "ollama", "refs": {"lmstudio": "shared"}})
    registry.add({"id": "b", "backend": "ollama", "refs": {"huggingface": "shared"}})
    with pytest.raises(InvalidReference, match="several models: a, b"):
        registry["shared"]


def test_add_refuses_duplicates_unless_replace(sample: Registry) -> None:
    with pytest.raises(Conflict, match="already registered"):
        sample.add({"id": "llama3.2:3b", "backend": "ollama"})
    with pytest.raises(Conflict):
        sample.add({"id": "fast", "backend": "ollama"})  # an alias is taken too
    replaced = sample.add({"id": "llama3.2:3b", "backend": "ollama"}, replace=True)
    assert replaced.tags == [] and "fast" not in sample


def test_timestamps(registry: Registry) -> None:
    first = registry.add({"id": "a", "backend": "ollama"})
    assert first.created_at is not None and first.created_at == first.updated_at
    later = registry.tag("a", "x")
    assert later.created_at == first.created_at and later.updated_at > first.updated_at
    assert registry.touch("a").last_used is not None


def test_tags_aliases_custom(sample: Registry) -> None:
    assert sample.tag("fast", "new", "prod").tags == ["local", "new", "prod"]
    assert sample.untag("fast", "new", "absent").tags == ["local", "prod"]
    with pytest.raises(InvalidModel, match="tag"):
        sample.tag("fast", "has space")
    sample.alias("coder", "qwen2.5-coder:7b")
    assert sample["coder"].id == "qwen2.5-coder:7b"
    sample.alias("coder", "fast")  # moves: one alias names one model
    assert sample["coder"].id == "llama3.2:3b"
    assert sample["qwen2.5-coder:7b"].aliases == []
    assert sample.aliases() == {"coder": "llama3.2:3b", "fast": "llama3.2:3b"}
    with pytest.raises(Conflict, match="id of another model"):
        sample.alias("openai/gpt-4o", "fast")
    sample.unalias("coder")
    with pytest.raises(NotFound, match="no alias named 'coder'"):
        sample.unalias("coder")
    sample.set_custom("fast", "owner", {"team": "ml", "oncall": ["ann"]})
    assert sample["fast"].custom["owner"] == {"team": "ml", "oncall": ["ann"]}
    assert sample.unset_custom("fast", "owner").custom == {}
    with pytest.raises(InvalidModel, match="no custom key"):
        sample.unset_custom("fast", "owner")


def test_update_cannot_change_the_id(sample: Registry) -> None:
    assert sample.update("fast", description="quick").description == "quick"
    with pytest.raises(InvalidModel, match="cannot change"):
        sample.update("fast", id="other")


def test_groups(sample: Registry) -> None:
    assert sample.group("prod", "fast", "gpt-4o", description="live") == [
        "llama3.2:3b",
        "openai/gpt-4o",
    ]
    assert sample.group("prod") == ["llama3.2:3b", "openai/gpt-4o"]
    assert sample.groups()["prod"]["description"] == "live"
    assert sample.groups_of("fast") == ["prod"]
    assert sample.ungroup("prod", "gpt-4o") == ["llama3.2:3b"]
    del sample["fast"]  # deleting a model leaves no dangling membership
    assert sample.groups()["prod"]["models"] == []
    sample.delete_group("prod")
    with pytest.raises(NotFound, match="no group named 'prod'"):
        sample.delete_group("prod")
    with pytest.raises(ModelNotFound):
        sample.group("other", "nope")
    assert "other" not in sample.groups()  # the failed call wrote nothing
    with pytest.raises(InvalidModel, match="group name"):
        sample.group("two words")


def test_deleting_a_model_frees_its_aliases(sample: Registry) -> None:
    del sample["fast"]
    assert sample.aliases() == {}
    sample.add({"id": "x", "backend": "ollama", "aliases": ["fast"]})
    assert sample["fast"].id == "x"


def test_failed_write_leaves_nothing_half_done(sample: Registry) -> None:
    before = sample.export_data()
    with pytest.raises(ModelNotFound), sample.store.transaction():
        sample.tag("fast", "during")
        sample.tag("nope", "x")
    after = sample.export_data()
    before.pop("exported_at"), after.pop("exported_at")
    assert before == after


# ---------------------------------------------------------------- export and import


def _strip(data: dict) -> dict:
    return {k: v for k, v in data.items() if k != "exported_at"}


def test_export_import_round_trip(sample: Registry, tmp_path: Path) -> None:
    sample.group("prod", "fast", "gpt-4o", description="live")
    exported = sample.export_data()
    json.dumps(exported)  # JSON-ready
    other = Registry.open(tmp_path / "other.sqlite")
    report = other.import_data(exported)
    assert len(report.added) == len(SAMPLE) and report.groups == ["prod"]
    assert _strip(other.export_data()) == _strip(exported)


def test_export_a_selection(sample: Registry) -> None:
    sample.group("prod", "fast", "gpt-4o")
    data = sample.export_data({"backend": "openai"})
    assert [m["id"] for m in data["models"]] == ["openai/gpt-4o"]
    assert data["groups"]["prod"]["models"] == ["openai/gpt-4o"]


def test_import_is_all_or_nothing(sample: Registry) -> None:
    before = _strip(sample.export_data())
    bad = {
        "models": [
            {"id": "new-one", "backend": "ollama"},
            {"id": "broken", "backend": "ollama", "context_length": -1},
        ]
    }
    with pytest.raises(ImportFailed) as caught:
        sample.import_data(bad)
    assert caught.value.record == 1 and caught.value.field == "context_length"
    assert "record 1 ('broken')" in str(caught.value)
    assert _strip(sample.export_data()) == before


@pytest.mark.parametrize(
    ("document", "words"),
    [
        ("not json data", "JSON object"),
        ({"format": "other-tool", "models": []}, "not a modelctl registry export"),
        ({"version": 99, "models": []}, "newer than this modelctl"),
        ({"models": "x"}, "'models' must be a list"),
        ({"models": [{"id": "a", "backend": "x"}, {"id": "a", "backend": "x"}]}, "also record 0"),
        (
            {
                "models": [
                    {"id": "a", "backend": "x"},
                    {"id": "b", "backend": "x", "aliases": ["a"]},
                ]
            },
            "already used by model 'a'",
        ),
        ({"models": [], "groups": {"g": ["ghost"]}}, "neither in the file nor in the registry"),
        ({"models": [], "groups": {"bad name": []}}, "group name"),
        ({"models": [], "groups": {"g": "x"}}, "must list model ids"),
        ({"models": [{"id": "z", "backend": "x", "aliases": ["fast"]}]}, "already names model"),
        ({"models": [{"id": "fast", "backend": "x"}]}, "alias of model"),
        ({"models": ["just a string"]}, "record 0"),
    ],
)
def test_bad_imports_write_nothing(sample: Registry, document: object, words: str) -> None:
    before = _strip(sample.export_data())
    with pytest.raises(ImportFailed, match=words):
        sample.import_data(document)
    assert _strip(sample.export_data()) == before


def test_import_merges_or_replaces(sample: Registry) -> None:
    report = sample.import_data(
        [{"id": "llama3.2:3b", "backend": "ollama"}, {"id": "n", "backend": "x"}]
    )
    assert report.added == ["n"] and report.updated == ["llama3.2:3b"]
    assert len(sample) == len(SAMPLE) + 1
    sample.import_data([{"id": "only", "backend": "x"}], replace=True)
    assert list(sample) == ["only"]


def test_dry_run_writes_nothing(sample: Registry) -> None:
    before = _strip(sample.export_data())
    report = sample.import_data([{"id": "n", "backend": "x"}], replace=True, dry_run=True)
    assert report.dry_run and report.added == ["n"] and report.replaced
    assert _strip(sample.export_data()) == before
    with sample.store.transaction():  # inside an outer transaction, a dry run undoes only itself
        sample.tag("fast", "kept")
        sample.import_data([{"id": "n", "backend": "x"}], dry_run=True)
    assert "kept" in sample["fast"].tags and "n" not in sample


# Hypothesis: any valid registry content survives export then import unchanged.
_ids = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_.:/", min_size=1, max_size=20)
_json = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=3)
        | st.dictionaries(st.text("abc", min_size=1, max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)
_record = st.fixed_dictionaries(
    {"backend": st.sampled_from(["ollama", "openai", "llamacpp", "my-backend"])},
    optional={
        "parameters": st.integers(1, 10**12),
        "context_length": st.integers(1, 10**7),
        "file_size": st.integers(0, 10**13),
        "installed": st.booleans(),
        "tasks": st.lists(st.sampled_from(["chat", "code", "embedding", "vision"]), max_size=3),
        "tags": st.lists(st.text("abcxyz-_", min_size=1, max_size=6), max_size=4),
        "custom": st.dictionaries(st.text("kmnp", min_size=1, max_size=4), _json, max_size=3),
        "pricing": st.fixed_dictionaries({"input": st.floats(0, 100), "output": st.floats(0, 100)}),
        "description": st.text(max_size=30),
        "name": st.text(min_size=1, max_size=12),
    },
)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.dictionaries(_ids, _record, max_size=6))
def test_round_trip_property(tmp_path: Path, models: dict[str, dict]) -> None:
    source = Registry.open(tmp_path / "src.sqlite")
    target = Registry.open(tmp_path / "dst.sqlite")
    try:
        source.import_data([{"id": i, **r} for i, r in models.items()], replace=True)
        exported = source.export_data()
        target.import_data(json.loads(json.dumps(exported)), replace=True)
        assert _strip(target.export_data()) == _strip(exported)
        assert sorted(target) == sorted(models)
    finally:
        source.close()
        target.close()
