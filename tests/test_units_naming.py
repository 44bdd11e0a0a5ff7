"""Quantities and names: what people write, read the way they mean it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelctl.record import naming, units
from modelctl.record.errors import InvalidReference, ModelctlError
from tests.schemes import SCHEMES


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512", 512),
        ("4.7GB", 4_700_000_000),
        ("4.7 gb", 4_700_000_000),
        ("8G", 8 * 2**30),
        ("8GiB", 8 * 2**30),
        ("512MB", 512_000_000),
        ("1.5T", int(1.5 * 2**40)),
        (3, 3),
    ],
)
def test_parse_bytes(text: str | int, expected: int) -> None:
    assert units.parse_bytes(text) == expected


@pytest.mark.parametrize("bad", ["lots", "-1GB", "4 parsecs", "", "GB", True])
def test_parse_bytes_rejects(bad: object) -> None:
    with pytest.raises(ValueError):
        units.parse_bytes(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "expected"), [("8k", 8192), ("128K", 131072), ("32768", 32768), ("1M", 1048576)]
)
def test_parse_count(text: str, expected: int) -> None:
    assert units.parse_count(text) == expected


@given(st.integers(min_value=1, max_value=10**13))
def test_parameters_format_parse_stays_close(count: int) -> None:
    """Formatting rounds; reading the text back lands within the rounding (5%)."""
    shown = units.format_parameters(count)
    assert abs(units.parse_parameters(shown) - count) <= max(0.05 * count, 1000)


@pytest.mark.parametrize(
    ("text", "backend", "name", "explicit"),
    [
        ("gguf:./x.gguf", "llamacpp", "./x.gguf", True),
        ("llama3.2:3b", "ollama", "llama3.2:3b", False),
        ("ollama:llama3.2:3b", "ollama", "llama3.2:3b", True),
        ("hf:Qwen/Qwen2.5-0.5B-Instruct", "huggingface", "Qwen/Qwen2.5-0.5B-Instruct", True),
        ("Qwen/Qwen2.5-0.5B-Instruct", "huggingface", "Qwen/Qwen2.5-0.5B-Instruct", False),
        ("openai/gpt-4o", "openai", "gpt-4o", False),
        ("anthropic/claude-3-5-sonnet-latest", "anthropic", "claude-3-5-sonnet-latest", False),
        ("openrouter/meta-llama/llama-3-8b", "openrouter", "meta-llama/llama-3-8b", False),
        ("./models/x.Q4_K_M.gguf", "llamacpp", "./models/x.Q4_K_M.gguf", False),
        ("/abs/x.gguf", "llamacpp", "/abs/x.gguf", False),
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", "ollama", None, False),
        ("gpt-j-6b", None, "gpt-j-6b", False),
        ("  llama3  ", None, "llama3", False),
    ],
)
def test_parse_ref(text: str, backend: str | None, name: str | None, explicit: bool) -> None:
    ref = naming.parse_ref(text, SCHEMES)
    assert ref.backend == backend
    assert ref.name == (name or text.strip())
    assert ref.explicit is explicit


@pytest.mark.parametrize("bad", ["", "   ", "ollama:", "hf:  ", "a\x00b", 42])
def test_parse_ref_rejects(bad: object) -> None:
    with pytest.raises(InvalidReference):
        naming.parse_ref(bad, SCHEMES)  # type: ignore[arg-type]


def test_default_id() -> None:
    assert naming.default_id(naming.parse_ref("openai/gpt-4o", SCHEMES)) == "openai/gpt-4o"
    assert naming.default_id(naming.parse_ref("ollama:llama3.2:3b", SCHEMES)) == "llama3.2:3b"
    assert naming.default_id(naming.parse_ref("~/m/Mistral-7B.Q4_K_M.gguf")) == "Mistral-7B.Q4_K_M"


def test_without_backends_a_reference_has_a_form_and_no_backend() -> None:
    """The record layer reads spelling only: which backend a form means is the backends' to say."""
    assert naming.parse_ref("Qwen/Qwen2.5-0.5B-Instruct").form == "repo"
    assert naming.parse_ref("llama3.2:3b").form == "tag"
    assert naming.parse_ref("./m.gguf").is_path
    assert naming.parse_ref("ollama:llama3.2:3b").backend is None


@given(st.text(max_size=80))
def test_parse_ref_never_crashes(text: str) -> None:
    """Any text parses or raises our own error, never anything else."""
    try:
        ref = naming.parse_ref(text, SCHEMES)
    except ModelctlError:
        return
    assert ref.name.strip() == ref.name and ref.name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llama3.1:8b", 8 * 10**9),
        ("llama3.1:70B-instruct", 70 * 10**9),
        ("Qwen2.5-0.5B-Instruct", 500_000_000),
        ("smollm2:135m", 135_000_000),
        ("deepseek-r1:1.5b", 1_500_000_000),
        ("mixtral:8x7b", 56 * 10**9),
        ("Qwen3-30B-A3B", 30 * 10**9),
        ("mistral-7b-instruct-v0.2.Q4_K_M.gguf", 7 * 10**9),
        ("phi-3-mini-4k-instruct", None),
        ("llama3.2", None),
        ("gpt-4o", None),
        ("all-MiniLM-L6-v2", None),
        ("model-8bit", None),
    ],
)
def test_parameters_from_name(name: str, expected: int | None) -> None:
    assert naming.parse_parameters_from_name(name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("llama3.1:8b-instruct-q4_K_M", "Q4_K_M"),
        ("mistral-7b-instruct-v0.2.Q4_K_M.gguf", "Q4_K_M"),
        ("model.q8_0.gguf", "Q8_0"),
        ("llama3:8b-fp16", "F16"),
        ("Llama-3-8B-bf16", "BF16"),
        ("x-IQ3_XXS.gguf", "IQ3_XXS"),
        ("x-q4-k-m", "Q4_K_M"),
        ("Qwen2.5-7B-Instruct-AWQ", "AWQ"),
        ("mlx-community/Llama-3.2-3B-Instruct-4bit", "INT4"),
        ("llama3.2:3b", None),
        ("qwen2.5-coder", None),
    ],
)
def test_quantization_from_name(name: str, expected: str | None) -> None:
    assert naming.parse_quantization(name) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("q4_k_m", "Q4_K_M"), ("fp16", "F16"), ("float16", "F16"), ("exl2", "EXL2")],
)
def test_normalize_quantization(text: str, expected: str) -> None:
    assert naming.normalize_quantization(text) == expected
