"""Tiny real GGUF models, for `modelctl demo`, the tests and the benchmarks.

A llama architecture with random weights and a byte-level vocabulary (`<unk>`, `<s>`, `</s>`
and `<0x00>`…`<0xFF>`), written with the `gguf` package: llama.cpp loads it in a fraction of a
second and runs it. The text it writes is noise; the loading, serving and memory are real.
numpy and gguf load only when a model is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from modelctl.backends import Backend
    from modelctl.record.model import Model
    from modelctl.registry import Registry

__all__ = ["CHAT_TEMPLATE", "DEMO_ID", "TinySpec", "make_demo", "write_llama"]

DEMO_ID = "modelctl-demo"

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
TOOL_TEMPLATE = CHAT_TEMPLATE.replace(
    "{% endfor %}", "{% if tools %}<tool_call>{% endif %}{% endfor %}"
)


@dataclass(frozen=True)
class TinySpec:
    layers: int = 2
    embedding: int = 64
    heads: int = 4
    kv_heads: int = 2
    feed_forward: int = 128
    context_length: int = 512
    dtype: str = "F32"  # F32 | F16 | Q8_0
    name: str = "tiny-llama"
    chat_template: str | None = CHAT_TEMPLATE
    extra_vocab: int = 0  # plain tokens after the 259 byte-level ones, for a realistic vocabulary

    @property
    def vocab_size(self) -> int:
        return 3 + 256 + self.extra_vocab


def byte_vocabulary(extra: int = 0) -> tuple[list[str], list[float], list[int]]:
    import gguf

    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"tok{i}" for i in range(extra)]
    scores = [0.0] * len(tokens)
    types = [gguf.TokenType.UNKNOWN, gguf.TokenType.CONTROL, gguf.TokenType.CONTROL]
    types += [gguf.TokenType.BYTE] * 256 + [gguf.TokenType.NORMAL] * extra
    return tokens, scores, [int(t) for t in types]


def write_llama(path: Path, spec: TinySpec = TinySpec(), *, seed: int = 0) -> Path:
    """Write a llama-architecture GGUF model to `path`."""
    import gguf
    import numpy as np

    rng = np.random.default_rng(seed)
    head_dim = spec.embedding // spec.heads
    kv_dim = head_dim * spec.kv_heads
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(spec.name)
    writer.add_context_length(spec.context_length)
    writer.add_embedding_length(spec.embedding)
    writer.add_block_count(spec.layers)
    writer.add_feed_forward_length(spec.feed_forward)
    writer.add_rope_dimension_count(head_dim)
    writer.add_head_count(spec.heads)
    writer.add_head_count_kv(spec.kv_heads)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(
        {"F32": gguf.LlamaFileType.ALL_F32, "F16": gguf.LlamaFileType.MOSTLY_F16,
         "Q8_0": gguf.LlamaFileType.MOSTLY_Q8_0}[spec.dtype]
    )  # fmt: skip
    tokens, scores, types = byte_vocabulary(spec.extra_vocab)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    if spec.chat_template:
        writer.add_chat_template(spec.chat_template)

    def matrix(name: str, rows: int, cols: int) -> None:
        data = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.02).astype(np.float32)
        if spec.dtype == "F16":
            writer.add_tensor(name, data.astype(np.float16))
        elif spec.dtype == "Q8_0":
            quantized = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, data)

    def norm(name: str) -> None:
        writer.add_tensor(name, np.ones(spec.embedding, dtype=np.float32))

    matrix("token_embd.weight", spec.vocab_size, spec.embedding)
    for i in range(spec.layers):
        norm(f"blk.{i}.attn_norm.weight")
        matrix(f"blk.{i}.attn_q.weight", spec.embedding, spec.embedding)
        matrix(f"blk.{i}.attn_k.weight", kv_dim, spec.embedding)
        matrix(f"blk.{i}.attn_v.weight", kv_dim, spec.embedding)
        matrix(f"blk.{i}.attn_output.weight", spec.embedding, spec.embedding)
        norm(f"blk.{i}.ffn_norm.weight")
        matrix(f"blk.{i}.ffn_gate.weight", spec.feed_forward, spec.embedding)
        matrix(f"blk.{i}.ffn_up.weight", spec.feed_forward, spec.embedding)
        matrix(f"blk.{i}.ffn_down.weight", spec.embedding, spec.feed_forward)
    norm("output_norm.weight")
    matrix("output.weight", spec.vocab_size, spec.embedding)

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def make_demo(*, registry: Registry, backend: Backend, folder: Path) -> Model:
    """Write the demo model into `folder` (once) and register it as `backend`'s (the one that
    keeps GGUF files) would record it."""
    from modelctl.ops.install import register

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{DEMO_ID}.gguf"
    if not path.exists():
        partial = path.with_suffix(".gguf.part")
        write_llama(partial, TinySpec(name="modelctl demo", context_length=2048))
        partial.replace(path)  # never a half-written model file under its real name
    model = backend.record(path, DEMO_ID)  # type: ignore[attr-defined]
    model = model.updated(
        description="a tiny random llama for trying modelctl: its text is noise",
        tags=sorted({*model.tags, "demo"}),
    )
    return register(registry, model)
