"""What a GGUF file says about its model: architecture facts and exact tensor sizes.

Read with the `gguf` package (imported here only, on first use). Multi-part files
(`name-00001-of-00003.gguf`) are read as one model.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelctl.errors import ModelctlError

__all__ = ["GGUFInfo", "InvalidGGUF", "read_gguf", "shard_paths"]

_SHARD = re.compile(r"^(?P<stem>.*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)

# general.file_type numbers (llama.cpp's LLAMA_FTYPE_*) to quantization names
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}  # fmt: skip


class InvalidGGUF(ModelctlError):
    """A file that is not a readable GGUF model."""

    exit_code = 2


@dataclass(frozen=True, slots=True)
class GGUFInfo:
    """Facts from a GGUF file's header; sizes in bytes."""

    path: str
    architecture: str
    name: str | None
    layers: int
    embedding: int
    heads: int
    kv_heads: int
    key_length: int  # per head
    value_length: int
    context_length: int | None
    feed_forward: int | None
    vocab_size: int
    experts: int | None
    parameters: int
    tensor_bytes: int  # weights: the sum of every tensor's size
    file_size: int
    quantization: str | None
    chat_template: str | None = None
    tensor_bytes_by_layer: tuple[int, ...] = field(default=(), repr=False)

    @property
    def per_layer_bytes(self) -> int:
        """Weights of one repeating block (what offloading a layer moves to the GPU)."""
        if self.tensor_bytes_by_layer:
            return round(sum(self.tensor_bytes_by_layer) / len(self.tensor_bytes_by_layer))
        return 0


def shard_paths(path: str | os.PathLike[str]) -> list[Path]:
    """Every part of a multi-part GGUF model, in order; just `path` for a single file."""
    path = Path(path)
    match = _SHARD.match(path.name)
    if not match:
        return [path]
    count = int(match.group("count"))
    stem = match.group("stem")
    return [path.with_name(f"{stem}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]


def _value(reader: Any, key: str) -> Any:
    found = reader.fields.get(key)
    if found is None:
        return None
    value = found.contents()
    return value


def read_gguf(path: str | os.PathLike[str]) -> GGUFInfo:
    """Read a GGUF model's metadata (all of its parts); InvalidGGUF for anything unreadable."""
    parts = shard_paths(path)
    missing = [str(p) for p in parts if not p.is_file()]
    if missing:
        raise InvalidGGUF(f"GGUF file not found: {', '.join(missing)}", hint="check the path")
    try:
        from gguf import GGUFReader
    except ImportError:  # pragma: no cover - gguf is a core dependency
        raise ModelctlError("reading GGUF files needs the gguf package: pip install gguf") from None
    readers = []
    for part in parts:
        try:
            readers.append(GGUFReader(part, "r"))
        except (ValueError, KeyError, IndexError, OSError, TypeError) as exc:
            raise InvalidGGUF(f"{part} is not a readable GGUF file ({exc})") from None
    head = readers[0]
    arch = _value(head, "general.architecture")
    if not isinstance(arch, str):
        raise InvalidGGUF(f"{parts[0]} has no general.architecture: not a GGUF model")

    def number(key: str, default: int | None = None) -> int | None:
        value = _value(head, f"{arch}.{key}")
        if isinstance(value, list):  # per-layer values (some architectures): the largest
            value = max(value) if value else None
        return int(value) if value is not None else default

    layers = number("block_count")
    embedding = number("embedding_length")
    heads = number("attention.head_count")
    if not layers or not embedding or not heads:
        raise InvalidGGUF(
            f"{parts[0]}: {arch} metadata lacks block_count, embedding_length or heads"
        )
    kv_heads = number("attention.head_count_kv", heads) or heads
    key_length = number("attention.key_length", embedding // heads) or embedding // heads
    value_length = number("attention.value_length", key_length) or key_length

    tensors = [t for r in readers for t in r.tensors]
    by_layer: dict[int, int] = {}
    for tensor in tensors:
        match = re.match(r"blk\.(\d+)\.", tensor.name)
        if match:
            by_layer[int(match.group(1))] = by_layer.get(int(match.group(1)), 0) + int(
                tensor.n_bytes
            )
    tokens = _value(head, "tokenizer.ggml.tokens")
    vocab = number("vocab_size") or (len(tokens) if isinstance(tokens, list) else 0)
    file_type = _value(head, "general.file_type")
    template = _value(head, "tokenizer.chat_template")
    return GGUFInfo(
        path=str(parts[0]),
        architecture=arch,
        name=_value(head, "general.name"),
        layers=layers,
        embedding=embedding,
        heads=heads,
        kv_heads=kv_heads,
        key_length=key_length,
        value_length=value_length,
        context_length=number("context_length"),
        feed_forward=number("feed_forward_length"),
        vocab_size=vocab,
        experts=number("expert_count"),
        parameters=sum(int(t.n_elements) for t in tensors),
        tensor_bytes=sum(int(t.n_bytes) for t in tensors),
        file_size=sum(p.stat().st_size for p in parts),
        quantization=FILE_TYPES.get(int(file_type)) if file_type is not None else None,
        chat_template=template if isinstance(template, str) else None,
        tensor_bytes_by_layer=tuple(by_layer[i] for i in sorted(by_layer)),
    )
