"""GGUF metadata read back from real files written by the gguf package."""

from __future__ import annotations

from pathlib import Path

import pytest

from modelctl.fit.gguf_meta import read_gguf, shard_paths
from modelctl.ops.demo import TinySpec, write_llama
from modelctl.record.errors import InvalidGGUF


def expected_parameters(spec: TinySpec) -> int:
    head_dim = spec.embedding // spec.heads
    kv = head_dim * spec.kv_heads
    per_layer = (
        2 * spec.embedding  # norms
        + 2 * spec.embedding * spec.embedding  # q, output
        + 2 * kv * spec.embedding  # k, v
        + 3 * spec.feed_forward * spec.embedding
    )
    return 2 * spec.vocab_size * spec.embedding + spec.layers * per_layer + spec.embedding


@pytest.mark.parametrize(("dtype", "bytes_per_weight"), [("F32", 4), ("F16", 2), ("Q8_0", 34 / 32)])
def test_metadata_reads_back(tmp_path: Path, dtype: str, bytes_per_weight: float) -> None:
    spec = TinySpec(layers=3, embedding=64, heads=4, kv_heads=2, feed_forward=96, dtype=dtype,
                    context_length=1024, extra_vocab=5)  # fmt: skip
    info = read_gguf(write_llama(tmp_path / "m.gguf", spec))
    assert (info.architecture, info.name, info.quantization) == ("llama", "tiny-llama", dtype)
    assert (info.layers, info.embedding, info.heads, info.kv_heads) == (3, 64, 4, 2)
    assert (info.key_length, info.value_length, info.feed_forward) == (16, 16, 96)
    assert (info.context_length, info.vocab_size, info.experts) == (1024, 264, None)
    assert info.parameters == expected_parameters(spec)
    norms = (2 * spec.layers + 1) * spec.embedding
    matrices = info.parameters - norms
    assert info.tensor_bytes == pytest.approx(matrices * bytes_per_weight + norms * 4)
    assert info.tensor_bytes < info.file_size
    assert len(info.tensor_bytes_by_layer) == 3 and info.per_layer_bytes > 0
    assert info.chat_template is not None and "add_generation_prompt" in info.chat_template


def test_no_chat_template(tmp_path: Path) -> None:
    info = read_gguf(write_llama(tmp_path / "m.gguf", TinySpec(chat_template=None)))
    assert info.chat_template is None


def test_multi_part_files_are_one_model(tmp_path: Path) -> None:
    import gguf

    whole = read_gguf(write_llama(tmp_path / "whole.gguf", TinySpec(layers=4)))
    # the writer splits by tensor count: write the same model in parts
    spec = TinySpec(layers=4)
    original = gguf.GGUFWriter.__init__

    def split(self, path, arch, **kw):  # type: ignore[no-untyped-def]
        original(self, path, arch, split_max_tensors=12, **kw)

    gguf.GGUFWriter.__init__ = split  # type: ignore[method-assign]
    try:
        write_llama(tmp_path / "parts.gguf", spec)
    finally:
        gguf.GGUFWriter.__init__ = original  # type: ignore[method-assign]
    parts = sorted(tmp_path.glob("parts-*-of-*.gguf"))
    assert len(parts) > 1
    assert shard_paths(parts[1]) == parts
    info = read_gguf(parts[0])
    assert info.parameters == whole.parameters and info.tensor_bytes == whole.tensor_bytes
    parts[-1].unlink()
    with pytest.raises(InvalidGGUF, match="not found"):
        read_gguf(parts[0])


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "not a readable GGUF"),
        (b"GGUF" + b"\xff" * 40, "not a readable GGUF"),
        (b"hello" * 50, "not a readable GGUF"),
    ],
)
def test_broken_files_are_clear(tmp_path: Path, content: bytes, words: str) -> None:
    path = tmp_path / "broken.gguf"
    path.write_bytes(content)
    with pytest.raises(InvalidGGUF, match=words):
        read_gguf(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidGGUF, match="not found"):
        read_gguf(tmp_path / "absent.gguf")


@pytest.mark.parametrize("dtype", ["F32", "F16", "Q8_0"])
def test_agrees_with_the_gguf_packages_reader(tmp_path: Path, dtype: str) -> None:
    """modelctl's header reader (which skips the vocabulary) against the gguf package's own."""
    from gguf import GGUFReader

    path = write_llama(tmp_path / "m.gguf", TinySpec(dtype=dtype, extra_vocab=2000, layers=3))
    info = read_gguf(path)
    reader = GGUFReader(path)
    assert info.parameters == sum(int(t.n_elements) for t in reader.tensors)
    assert info.tensor_bytes == sum(int(t.n_bytes) for t in reader.tensors)
    assert info.vocab_size == len(reader.fields["tokenizer.ggml.tokens"].contents()) == 2259
    assert info.chat_template == reader.fields["tokenizer.chat_template"].contents()
    assert info.context_length == reader.fields["llama.context_length"].contents()


def test_a_truncated_file(tmp_path: Path) -> None:
    path = write_llama(tmp_path / "m.gguf", TinySpec(extra_vocab=2000))
    path.write_bytes(path.read_bytes()[:3000])  # cut inside the vocabulary
    with pytest.raises(InvalidGGUF, match="not a readable GGUF file"):
        read_gguf(path)
