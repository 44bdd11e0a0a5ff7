"""Memory estimates, compatibility and recommendation: arithmetic checked against known figures."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelctl.fit.catalog import Catalog
from modelctl.fit.estimate import (
    Architecture,
    FitError,
    check_compatibility,
    compute_buffer,
    estimate_memory,
    facts_for,
    from_parameters,
    recommend,
)
from modelctl.fit.gguf_meta import read_gguf
from modelctl.fit.hardware import GPU, SystemInfo
from modelctl.ops.demo import TinySpec, write_llama
from modelctl.registry import Registry
from tests.schemes import SCHEMES

CATALOG = Catalog.load(schemes=SCHEMES)
GiB = 2**30


def machine(ram: float, vram: float = 0, *, unified: bool = False) -> SystemInfo:
    gpus = ()
    if vram:
        gpus = (
            GPU(
                0,
                "GPU",
                "apple" if unified else "nvidia",
                int(vram * GiB),
                int(vram * GiB),
                unified,
            ),
        )
    return SystemInfo(
        "Linux", "6", "x86_64", "3.11", "cpu", 8, 16, int(ram * 2 * GiB), int(ram * GiB), gpus
    )


def test_kv_cache_matches_the_published_figure() -> None:
    """Llama 3.1 8B keeps 128 KiB of f16 KV cache per token: 1 GiB at 8,192 tokens."""
    estimate = estimate_memory(CATALOG["llama3.1:8b"], context=8192)
    assert estimate.kv_cache == 1 * GiB
    assert (
        estimate_memory(CATALOG["llama3.1:8b"], context=8192, kv_type="q8_0").kv_cache
        == 1 * GiB * 34 // 64
    )
    assert estimate_memory(CATALOG["llama3.1:8b"], context=4096, parallel=2).kv_cache == 1 * GiB


def test_parts_add_up_and_explain() -> None:
    estimate = estimate_memory(CATALOG["qwen2.5:7b"], context=32768)
    assert (
        estimate.total
        == estimate.weights + estimate.kv_cache + estimate.compute + estimate.overhead
    )
    assert estimate.weights == 4_700_000_000 and estimate.basis == "catalog, Q4_K_M"
    assert estimate.ram == estimate.total and estimate.vram == 0
    text = "\n".join(estimate.explain())
    assert "32,768 tokens" in text and "total" in text
    assert estimate.to_dict()["total"] == estimate.total


def test_context_defaults_and_limits() -> None:
    assert estimate_memory(CATALOG["llama3.1:8b"]).context == 4096
    assert estimate_memory(CATALOG["tinyllama:1.1b"]).context == 2048  # the model's own limit
    beyond = estimate_memory(CATALOG["tinyllama:1.1b"], context=8192)
    assert any("beyond the model's 2,048" in n for n in beyond.notes)


def test_compute_buffer_grows_with_context_and_heads() -> None:
    arch = Architecture(32, 4096, 32, 8, 128, 128, 128256, 14336)
    small, large = compute_buffer(arch, 2048), compute_buffer(arch, 32768)
    assert large > small * 8
    # at short contexts the logits of a full ubatch dominate: 512 x vocab x 4 bytes
    assert compute_buffer(arch, 512) >= 512 * 128256 * 4


def test_gguf_estimate_uses_exact_tensor_bytes(tmp_path: Path) -> None:
    info = read_gguf(write_llama(tmp_path / "m.gguf", TinySpec(layers=4, dtype="F16")))
    estimate = estimate_memory(info, context=256)
    assert estimate.weights == info.tensor_bytes and estimate.basis == "gguf file"
    per_token = 4 * 2 * (16 + 16) * 2  # layers x kv heads x (k + v) x f16
    assert estimate.kv_cache == per_token * 256


def test_gpu_split() -> None:
    entry = CATALOG["llama3.1:8b"]
    half = estimate_memory(entry, context=4096, gpu_layers=16)
    assert half.vram + half.ram == half.total and 0 < half.vram < half.total
    full = estimate_memory(entry, context=4096, gpu_layers=33)
    assert full.vram > half.vram and full.ram < half.ram


def test_from_parameters_is_a_labelled_guess() -> None:
    facts = from_parameters(8_000_000_000, "Q4_K_M")
    estimate = estimate_memory(facts, context=8192)
    assert estimate.weights == round(8e9 * 4.89 / 8)
    # the guessed KV cache is within a factor of two of Llama 3.1 8B's real 1 GiB
    assert 0.5 * GiB < estimate.kv_cache < 2 * GiB
    assert "guessed" in estimate.notes[0]


@pytest.mark.parametrize(
    ("system", "model", "level"),
    [
        (machine(ram=32, vram=24), "llama3.1:8b", "full GPU"),
        (machine(ram=64, vram=24), "llama3.1:70b", "partial GPU"),
        (machine(ram=64, vram=1), "llama3.1:8b", "partial GPU"),  # a few layers fit
        (machine(ram=64, vram=0.3), "llama3.1:8b", "CPU only"),  # not even the compute buffer
        (machine(ram=16), "llama3.1:8b", "CPU only"),
        (machine(ram=8), "llama3.1:70b", "won't fit"),
        (machine(ram=64, vram=48, unified=True), "llama3.1:8b", "full GPU"),
    ],
)
def test_levels(system: SystemInfo, model: str, level: str) -> None:
    result = check_compatibility(CATALOG[model], system=system)
    assert result.level == level
    assert result.fits is (level != "won't fit")
    assert result.reason


def test_explicit_memory() -> None:
    fits = check_compatibility(CATALOG["llama3.2:3b"], memory=8 * GiB)
    assert fits.fits and fits.level == "fits" and fits.available == {"memory": 8 * GiB}
    short = check_compatibility(CATALOG["llama3.1:8b"], memory=2 * GiB, context=8192)
    assert not short.fits and "more than" in short.reason
    with pytest.raises(FitError, match="more than 0"):
        check_compatibility(CATALOG["llama3.2:3b"], memory=-1)


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"kv_type": "f8"}, "unknown KV cache type"),
        ({"context": 0}, "context must be"),
        ({"parallel": 0}, "parallel"),
    ],
)
def test_bad_estimate_input(options: dict, words: str) -> None:
    with pytest.raises(FitError, match=words):
        estimate_memory(CATALOG["llama3.2:3b"], **options)


def test_remote_models_need_no_memory() -> None:
    with pytest.raises(FitError, match="served by openai"):
        estimate_memory(CATALOG["openai/gpt-4o"])


def test_recommend_by_priority_and_task() -> None:
    quality = recommend(CATALOG, memory=8 * GiB, priority="quality", task="chat")
    assert quality.model is not None and quality.compatibility and quality.compatibility.fits
    assert quality.compatibility.estimate.total <= 8 * GiB
    speed = recommend(CATALOG, memory=8 * GiB, priority="speed", task="chat")
    assert speed.model is not None and speed.model.purpose == "speed"
    assert speed.model.parameters < quality.model.parameters or quality.model.purpose != "quality"
    code = recommend(CATALOG, memory=8 * GiB, priority="balanced", task="code")
    assert code.model is not None and "code" in code.model.tasks
    assert code.model.purpose == "specialized" and "no balanced model in the catalog" in code.reason
    assert len(code.runners_up) == 3 and all(c.fits for _, c in code.runners_up)


def test_recommend_falls_back_in_one_call() -> None:
    """quality, then balanced, then speed: the seed's fallback pattern, with the reason."""
    found = recommend(CATALOG, memory=3 * GiB, priority="quality", task="chat")
    assert found.model is not None and found.model.purpose != "quality"
    assert found.reason.startswith("no quality model fits")


def test_recommend_with_nothing_fitting_says_what_is_missing() -> None:
    found = recommend(CATALOG, memory=100 * 2**20, task="chat")
    assert found.model is None and "more than" in found.reason
    with pytest.raises(FitError, match="priority"):
        recommend(CATALOG, memory=GiB, priority="cheap")
    with pytest.raises(FitError, match="no local model for the task"):
        recommend(CATALOG, memory=GiB, task="image")


def test_facts_for_every_kind_of_name(tmp_path: Path, registry: Registry) -> None:
    gguf = write_llama(tmp_path / "tiny.gguf", TinySpec())
    assert facts_for(str(gguf), catalog=CATALOG)[0].basis == "gguf file"
    assert facts_for("llama3.2:3b", catalog=CATALOG)[1] == "llama3.2:3b"
    registry.add({"id": "mine", "backend": "llamacpp", "location": str(gguf)})
    registry.add({"id": "from-catalog", "backend": "ollama", "custom": {"catalog": "qwen2.5:7b"}})
    registry.add({"id": "bare-8b", "backend": "ollama", "parameters": "8B"})
    registry.add({"id": "nothing", "backend": "ollama"})
    registry.add({"id": "remote", "backend": "openai"})
    assert facts_for("mine", catalog=CATALOG, registry=registry)[0].basis == "gguf file"
    assert (
        facts_for("from-catalog", catalog=CATALOG, registry=registry)[0].basis == "catalog, Q4_K_M"
    )
    assert facts_for("bare-8b", catalog=CATALOG, registry=registry)[0].basis.startswith(
        "parameters"
    )
    with pytest.raises(FitError, match="no parameter count"):
        facts_for("nothing", catalog=CATALOG, registry=registry)
    with pytest.raises(FitError, match="served by openai"):
        facts_for("remote", catalog=CATALOG, registry=registry)
