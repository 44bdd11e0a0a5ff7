"""What a GGUF file says about its model: architecture facts and exact tensor sizes.

The header is read directly (struct over an mmap), skipping long arrays such as the
vocabulary; the `gguf` package supplies the size of each tensor type. Multi-part files
(`name-00001-of-00003.gguf`) are read as one model.
"""

from __future__ import annotations

import functools
import os
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modelctl.record.errors import InvalidGGUF

__all__ = ["GGUFInfo", "read_gguf", "shard_paths"]

_SHARD = re.compile(r"^(?P<stem>.*)-(?P<index>\d{5})-of-(?P<count>\d{5})\.gguf$", re.IGNORECASE)

# general.file_type numbers (llama.cpp's LLAMA_FTYPE_*) to quantization names
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S",
    29: "IQ2_M", 30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4",
}  # fmt: skip


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


_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q",
            11: "<q", 12: "<d"}  # fmt: skip
_STRING, _ARRAY = 8, 9
_DECODE_ARRAYS_UP_TO = 1024  # longer arrays (vocabularies) are skipped; their length is kept


@dataclass(frozen=True, slots=True)
class _Skipped:
    """A long array left unread: only its length matters here (a vocabulary's size)."""

    count: int

    def __len__(self) -> int:
        return self.count


class _Header:
    """GGUF's header (key-values and tensor infos) read straight from the file.

    The gguf package's reader builds a numpy view of every vocabulary string (a second or
    more for a 150k vocabulary); this reads the same bytes with struct, skipping long arrays.
    """

    def __init__(self, path: Path) -> None:
        import mmap

        self.unpack = struct.unpack_from
        with (
            path.open("rb") as handle,
            mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data,
        ):
            self.data = data
            magic, version = data[:4], self.unpack("<I", data, 4)[0]
            if magic != b"GGUF":
                raise ValueError("GGUF magic invalid")
            if version < 2:
                raise ValueError(f"GGUF version {version} is too old (2 or later)")
            tensor_count, kv_count = self.unpack("<QQ", data, 8)
            pos = 24
            self.fields: dict[str, Any] = {}
            for _ in range(kv_count):
                key, pos = self._string(pos)
                kind = self.unpack("<I", data, pos)[0]
                value, pos = self._value(kind, pos + 4)
                self.fields[key] = value
            self.tensors: list[tuple[str, tuple[int, ...], int]] = []
            for _ in range(tensor_count):
                name, pos = self._string(pos)
                dims = self.unpack("<I", data, pos)[0]
                shape = self.unpack(f"<{dims}Q", data, pos + 4)
                kind = self.unpack("<I", data, pos + 4 + 8 * dims)[0]
                pos += 4 + 8 * dims + 4 + 8  # type, then the data offset
                self.tensors.append((name, shape, kind))
            del self.data

    def _string(self, pos: int) -> tuple[str, int]:
        length = self.unpack("<Q", self.data, pos)[0]
        end = pos + 8 + length
        if end > len(self.data):
            raise ValueError("truncated string")
        return self.data[pos + 8 : end].decode("utf-8", errors="replace"), end

    def _value(self, kind: int, pos: int) -> tuple[Any, int]:
        if kind == _STRING:
            return self._string(pos)
        if kind in _SCALARS:
            fmt = _SCALARS[kind]
            return self.unpack(fmt, self.data, pos)[0], pos + struct_size(fmt)
        if kind != _ARRAY:
            raise ValueError(f"unknown value type {kind}")
        item, count = self.unpack("<IQ", self.data, pos)
        pos += 12
        if count > _DECODE_ARRAYS_UP_TO:
            if item == _STRING:
                for _ in range(count):
                    pos += 8 + self.unpack("<Q", self.data, pos)[0]
            elif item in _SCALARS:
                pos += count * struct_size(_SCALARS[item])
            else:
                raise ValueError("nested arrays are not GGUF metadata")
            return _Skipped(count), pos
        values = []
        for _ in range(count):
            value, pos = self._value(item, pos)
            values.append(value)
        return values, pos


def struct_size(fmt: str) -> int:
    return struct.calcsize(fmt)


def read_gguf(path: str | os.PathLike[str]) -> GGUFInfo:
    """Read a GGUF model's metadata (all of its parts); InvalidGGUF for anything unreadable.

    Cached per file, size and modification time: a file read once is not parsed again.
    """
    parts = shard_paths(path)
    missing = [str(p) for p in parts if not os.path.isfile(p)]  # a name too long: not found
    if missing:
        raise InvalidGGUF(f"GGUF file not found: {', '.join(missing)}", hint="check the path")
    stamp = tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in parts)
    return _read_parts(stamp)


@functools.lru_cache(maxsize=256)
def _read_parts(stamp: tuple[tuple[str, int, int], ...]) -> GGUFInfo:
    parts = [Path(name) for name, _, _ in stamp]
    from gguf.constants import GGML_QUANT_SIZES  # block size and bytes per block, by type

    headers = []
    for part in parts:
        try:
            headers.append(_Header(part))
        except (ValueError, IndexError, OSError, struct.error) as exc:  # a damaged header
            raise InvalidGGUF(f"{part} is not a readable GGUF file ({exc})") from None
    head = headers[0].fields
    arch = head.get("general.architecture")
    if not isinstance(arch, str):
        raise InvalidGGUF(f"{parts[0]} has no general.architecture: not a GGUF model")

    def number(key: str, default: int | None = None) -> int | None:
        value = head.get(f"{arch}.{key}")
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

    sizes: list[tuple[str, int, int]] = []  # name, elements, bytes
    for header in headers:
        for name, shape, kind in header.tensors:
            elements = 1
            for dim in shape:
                elements *= dim
            if kind not in GGML_QUANT_SIZES:
                raise InvalidGGUF(f"{parts[0]}: tensor {name} has an unknown type {kind}")
            block, size = GGML_QUANT_SIZES[kind]
            sizes.append((name, elements, elements // block * size))
    by_layer: dict[int, int] = {}
    for name, _, nbytes in sizes:
        match = re.match(r"blk\.(\d+)\.", name)
        if match:
            by_layer[int(match.group(1))] = by_layer.get(int(match.group(1)), 0) + nbytes
    tokens = head.get("tokenizer.ggml.tokens")
    vocab = number("vocab_size") or (len(tokens) if tokens is not None else 0)
    file_type = head.get("general.file_type")
    template = head.get("tokenizer.chat_template")
    return GGUFInfo(
        path=str(parts[0]),
        architecture=arch,
        name=head.get("general.name"),
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
        parameters=sum(elements for _, elements, _ in sizes),
        tensor_bytes=sum(nbytes for _, _, nbytes in sizes),
        file_size=sum(p.stat().st_size for p in parts),
        quantization=FILE_TYPES.get(int(file_type)) if file_type is not None else None,
        chat_template=template if isinstance(template, str) else None,
        tensor_bytes_by_layer=tuple(by_layer[i] for i in sorted(by_layer)),
    )
