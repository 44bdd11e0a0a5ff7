"""The Model record: validation that names the field, derived values, human input."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from modelctl.record.errors import InvalidModel
from modelctl.record.kinds import Capability, SizeClass, Task
from modelctl.record.model import Model, size_class_for


def make(**fields: object) -> Model:
    return Model.from_dict({"id": "m", "backend": "ollama", **fields})


def test_human_quantities_are_read() -> None:
    m = make(parameters="8B", context_length="128k", file_size="4.7GB", min_memory="6GiB")
    assert m.parameters == 8_000_000_000
    assert m.context_length == 131072
    assert m.file_size == 4_700_000_000
    assert m.min_memory == 6 * 2**30


@pytest.mark.parametrize(
    ("parameters", "size"),
    [
        (135_000_000, SizeClass.TINY),
        (494_032_768, SizeClass.TINY),
        (1_235_814_400, SizeClass.SMALL),
        (7_000_000_000, SizeClass.SMALL),
        (7_241_732_096, SizeClass.SMALL),
        (8_030_261_248, SizeClass.MEDIUM),
        (30_000_000_000, SizeClass.MEDIUM),
        (32_763_876_352, SizeClass.LARGE),
        (70_553_706_496, SizeClass.LARGE),
    ],
)
def test_size_class_derived_from_parameters(parameters: int, size: SizeClass) -> None:
    assert size_class_for(parameters) is size
    assert make(parameters=parameters).size is size


def test_given_size_wins_and_follows_parameter_changes_only_when_derived() -> None:
    assert make(parameters=8_000_000_000, size="small").size is SizeClass.SMALL
    derived = make(parameters=3_000_000_000)
    assert derived.updated(parameters=70_000_000_000).size is SizeClass.LARGE
    chosen = make(parameters=3_000_000_000, size="large")
    assert chosen.updated(parameters=2_000_000_000).size is SizeClass.LARGE


def test_lists_are_normalized() -> None:
    m = make(tags=["prod", "a", "prod"], tasks=["chat", "multimodal", "chat"], aliases="x")
    assert m.tags == ["a", "prod"]
    assert m.tasks == [Task.CHAT, Task.VISION]
    assert m.aliases == ["x"]
    assert make(capabilities="tools").capabilities == [Capability.TOOLS]


def test_quantization_is_normalized() -> None:
    assert make(quantization="q4_k_m").quantization == "Q4_K_M"
    assert make(quantization="fp16").quantization == "F16"


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"id": "has space"}, "id", "spaces"),
        ({"id": ""}, "id", "1 to 256"),
        ({"backend": "Not A Backend"}, "backend", "lowercase"),
        ({"context_length": 0}, "context_length", "greater than 0"),
        ({"context_length": "lots"}, "context_length", "not a count"),
        ({"file_size": -1}, "file_size", "greater than or equal to 0"),
        ({"parameters": "eight"}, "parameters", "not a parameter count"),
        ({"tasks": ["dancing"]}, "tasks.0", "Input should be"),
        ({"tags": ["two words"]}, "tags", "without spaces"),
        ({"pricing": {"input": -1}}, "pricing.input", "greater than or equal to 0"),
        ({"custom": {"a.b": 1}}, "custom", "without '.'"),
        ({"quantization": "Q4 K M"}, "quantization", "not a quantization"),
        ({"colour": "red"}, "colour", "unknown field"),
        ({"aliases": ["m"]}, None, "own id"),
    ],
)
def test_bad_values_name_the_field(fields: dict, field: str | None, words: str) -> None:
    with pytest.raises(InvalidModel) as caught:
        make(**fields)
    assert caught.value.field == field
    assert words in str(caught.value)
    if field:
        assert repr(field) in str(caught.value)


def test_missing_required_field_is_named() -> None:
    with pytest.raises(InvalidModel, match="field 'backend': required field is missing"):
        Model.from_dict({"id": "x"})


def test_records_are_frozen_and_updated_copies_are_validated() -> None:
    m = make()
    with pytest.raises(ValidationError):
        m.tags = ["x"]  # type: ignore[misc]
    with pytest.raises(InvalidModel, match="context_length"):
        m.updated(context_length=-5)


def test_times_are_utc() -> None:
    naive = make(created_at="2025-01-02T03:04:05")
    assert naive.created_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    offset = make(created_at="2025-01-02T05:04:05+02:00")
    assert offset.created_at == datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def test_to_dict_round_trips() -> None:
    m = make(parameters="8B", pricing={"input": 1, "output": 2}, custom={"k": [1, {"a": None}]})
    assert Model.from_dict(m.to_dict()) == m
    assert Model.model_validate_json(m.model_dump_json()) == m


def test_conveniences() -> None:
    m = make(refs={"huggingface": "org/repo"}, pricing={"input": 2.5, "output": 10})
    assert m.display_name == "m"
    assert m.ref_for() == "m" and m.ref_for("huggingface") == "org/repo"
    assert m.pricing is not None and m.pricing.cost(1_000_000, 100_000) == pytest.approx(3.5)
    assert m.file is None
    assert make(refs={"llamacpp": "/m/x.gguf"}).file == "/m/x.gguf"
