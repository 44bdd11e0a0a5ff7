"""Will it run here? Memory estimates, compatibility checks and recommendations.

An estimate has parts, so a user sees why:

    weights   the tensors (exact from a GGUF file; else the catalog's size; else parameters x bits)
    kv_cache  2 (K and V) x layers x kv_heads x head_dim x context x parallel x bytes per element
    compute   llama.cpp's compute graph buffer (scales with the batch, context and vocabulary)
    overhead  the runtime's fixed cost beyond its buffers

and a split: the layers offloaded to a GPU take their weights and KV cache to VRAM. The compute
formula and the overhead are calibrated against llama.cpp (benchmarks/memory_estimate.py).
"""

from __future__ import annotations

import contextlib
import difflib
import math
import os
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from modelctl.fit.catalog import BITS_PER_WEIGHT, Catalog, CatalogEntry
from modelctl.fit.gguf_meta import GGUFInfo
from modelctl.fit.hardware import SystemInfo
from modelctl.record.errors import FitError, InvalidGGUF, ModelNotFound
from modelctl.record.units import format_memory

__all__ = [
    "Architecture",
    "Compatibility",
    "MemoryEstimate",
    "Recommendation",
    "check_compatibility",
    "check_download",
    "estimate_memory",
    "recommend",
]

KV_BYTES = {"f32": 4.0, "f16": 2.0, "bf16": 2.0, "q8_0": 34 / 32, "q5_1": 24 / 32,
            "q5_0": 22 / 32, "q4_1": 20 / 32, "q4_0": 18 / 32, "iq4_nl": 18 / 32}  # fmt: skip
DEFAULT_CONTEXT = 4096  # what Ollama gives a model unless asked for more
UBATCH = 512  # llama.cpp's default physical batch
MiB = 2**20

# Calibrated against llama.cpp's own buffer reports and measured RSS (see the benchmark).
RUNTIME_OVERHEAD = 24 * MiB


@dataclass(frozen=True, slots=True)
class Architecture:
    """The facts the estimate needs; `head_dim` per attention head."""

    layers: int
    embedding: int
    heads: int
    kv_heads: int
    key_length: int
    value_length: int
    vocab: int
    feed_forward: int | None = None
    experts: int | None = None

    @classmethod
    def from_gguf(cls, info: GGUFInfo) -> Architecture:
        return cls(
            info.layers, info.embedding, info.heads, info.kv_heads, info.key_length,
            info.value_length, info.vocab_size, info.feed_forward, info.experts,
        )  # fmt: skip

    @classmethod
    def from_catalog(cls, arch: dict[str, int]) -> Architecture:
        return cls(
            arch["layers"], arch["embedding"], arch["heads"], arch["kv_heads"], arch["head_dim"],
            arch["head_dim"], arch["vocab"], arch.get("feed_forward"), arch.get("experts"),
        )  # fmt: skip

    def kv_bytes_per_token(self, kv_type: str = "f16") -> float:
        per_element = KV_BYTES[kv_type]
        return self.layers * self.kv_heads * (self.key_length + self.value_length) * per_element


@dataclass(frozen=True, slots=True)
class MemoryEstimate:
    """Bytes a model needs, in parts, and where they go."""

    weights: int
    kv_cache: int
    compute: int
    overhead: int
    context: int
    parallel: int
    kv_type: str
    layers: int | None
    gpu_layers: int
    vram: int
    ram: int
    basis: str  # "gguf file", "catalog", "parameters"
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return self.weights + self.kv_cache + self.compute + self.overhead

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"total": self.total, "notes": list(self.notes)}

    def explain(self) -> list[str]:
        lines = [
            f"weights   {format_memory(self.weights):>9}  ({self.basis})",
            f"kv cache  {format_memory(self.kv_cache):>9}  "
            f"({self.context:,} tokens x {self.parallel} x {self.kv_type})",
            f"compute   {format_memory(self.compute):>9}  (llama.cpp graph buffers)",
            f"overhead  {format_memory(self.overhead):>9}  (runtime)",
            f"total     {format_memory(self.total):>9}",
        ]
        if self.gpu_layers:
            vram, ram = format_memory(self.vram), format_memory(self.ram)
            layers = f"{self.gpu_layers}/{self.layers} layers"
            lines.append(f"split     {vram} VRAM ({layers}) + {ram} RAM")
        return lines + [f"note: {n}" for n in self.notes]


def compute_buffer(
    arch: Architecture, context: int, parallel: int = 1, *, logits_all: bool = False
) -> int:
    """llama.cpp's compute memory: its graph buffer, plus the CPU backend's work buffer.

    The graph buffer is fitted to llama.cpp's own reports (flash attention off, the default in
    llama-cpp-python), within 5% on every shape measured: the peak of the attention phase
    (scores and mask for every KV cell), the FFN phase, or the logits of a full ubatch. It is
    the reservation, what a GPU really allocates; on a CPU, pages a run never touches (the
    logits of 512 tokens when only the last is needed) are not resident.
    """
    ubatch = min(UBATCH, _padded(context * parallel))
    cells = _padded(context * parallel)
    ffn = arch.feed_forward or 4 * arch.embedding
    attention = cells * (arch.heads + 1) + 5.5 * arch.embedding
    feed_forward = 3 * ffn + 7 * arch.embedding
    logits = arch.vocab + 2 * arch.embedding
    # the logits buffer kept between calls: every position's with `logits_all` (logprobs)
    output = arch.vocab * 4 * (_padded(context) if logits_all else parallel)
    # ggml's CPU backend converts the softmax output to f16 for the product with V, in a work
    # buffer of its own: ubatch x cells x heads x 2 bytes (measured: 128 MiB at 8k, 16 heads).
    work = ubatch * cells * arch.heads * 2
    return round(ubatch * 4 * max(attention, feed_forward, logits)) + output + work


def _padded(tokens: int) -> int:
    return math.ceil(tokens / 256) * 256  # llama.cpp pads the KV cache to 256 cells


@dataclass(frozen=True)
class _Facts:
    weights: int
    arch: Architecture | None
    parameters: int | None
    per_layer: int  # weights of one repeating layer
    basis: str
    context_max: int | None
    notes: tuple[str, ...] = ()


def _facts(subject: Any, quantization: str | None) -> _Facts:
    """Weights and architecture of a GGUF file, a catalog entry or a registered model."""
    if isinstance(subject, GGUFInfo):
        arch = Architecture.from_gguf(subject)
        per_layer = subject.per_layer_bytes or subject.tensor_bytes // subject.layers
        return _Facts(
            subject.tensor_bytes,
            arch,
            subject.parameters,
            per_layer,
            "gguf file",
            subject.context_length,
        )
    if isinstance(subject, CatalogEntry):
        if not subject.is_local:
            raise FitError(f"{subject.id} is served by {subject.backend}: it needs no memory here")
        size, estimated = subject.download_size(quantization)
        if size is None:
            raise FitError(f"no size known for {subject.id} at {quantization}")
        arch = Architecture.from_catalog(subject.architecture)
        quant = (quantization or subject.default_quantization or "").upper()
        notes = (f"weights from {BITS_PER_WEIGHT[quant]} bits per weight",) if estimated else ()
        per_layer = round(size * 0.95 / arch.layers)  # the embeddings and output: about 5%
        return _Facts(
            size, arch, subject.parameters, per_layer, f"catalog, {quant}",
            subject.context_length, notes,
        )  # fmt: skip
    raise FitError(f"cannot estimate memory for {type(subject).__name__}")


def from_parameters(parameters: int, quantization: str | None) -> _Facts:
    """Last resort: parameters x bits per weight, and a KV cache guessed from the size."""
    quant = (quantization or "Q4_K_M").upper()
    bits = BITS_PER_WEIGHT.get(quant)
    if bits is None:
        raise FitError(f"unknown quantization {quant!r}", hint=", ".join(BITS_PER_WEIGHT))
    weights = round(parameters * bits / 8)
    # A modern GQA transformer of this size: layers and width follow the parameter count.
    layers = max(8, round(6 * (parameters / 1e9) ** 0.3 * 4))
    embedding = max(512, round(math.sqrt(parameters / (12 * layers)) / 128) * 128)
    kv_heads = min(8, max(1, embedding // 512))
    arch = Architecture(layers, embedding, embedding // 128, kv_heads, 128, 128, 128_000)
    note = "no architecture facts: KV cache and compute guessed from the parameter count"
    per_layer = round(weights * 0.95 / layers)
    return _Facts(weights, arch, parameters, per_layer, f"parameters x {bits} bits", None, (note,))


def from_download(size: int) -> _Facts:
    """A model known only by its download size (a hub file, a registry manifest): the weights
    are the bytes; the layout is guessed as for a 4-bit model of that size."""
    if size <= 0:
        raise FitError(f"a download size must be more than 0 bytes, not {size}")
    guess = from_parameters(max(1, round(size * 8 / BITS_PER_WEIGHT["Q4_K_M"])), "Q4_K_M")
    notes = ("weights from the download size; the layout guessed from it",)
    return replace(guess, weights=size, per_layer=round(size * 0.95 / guess.arch.layers),
                   basis="download size", notes=notes)  # fmt: skip


def size_on_disk(path: str | os.PathLike[str] | None, *, most: int = 10_000) -> int:
    """Bytes of a file, or of every file under a folder (links not followed, other file systems
    not entered); 0 if none, or if the folder holds more than `most` files: no model's folder
    does, and a location such as `/` is not walked to the end."""
    if not path or not os.path.exists(path):
        return 0
    if os.path.isfile(path):
        return os.path.getsize(path)
    total = count = 0
    for folder, folders, files in os.walk(path):
        folders[:] = [f for f in folders if not os.path.ismount(os.path.join(folder, f))]
        count += len(files)
        if count > most:
            return 0
        for name in files:
            full = os.path.join(folder, name)
            with contextlib.suppress(OSError):  # gone since it was listed, or unreadable
                total += 0 if os.path.islink(full) else os.path.getsize(full)
    return total


def check_download(
    size: int, *, memory: int | None = None, system: SystemInfo | None = None, name: str = "model"
) -> Compatibility:
    """Does a model of `size` bytes to download fit (before downloading it)?"""
    return check_compatibility(from_download(size), memory=memory, system=system, name=name)


def estimate_memory(
    subject: GGUFInfo | CatalogEntry | _Facts,
    *,
    context: int | None = None,
    parallel: int = 1,
    kv_type: str = "f16",
    gpu_layers: int = 0,
    quantization: str | None = None,
    logits_all: bool = False,
) -> MemoryEstimate:
    """Memory a model needs at a context length, in parts, split between RAM and VRAM;
    `logits_all`: every position's logits kept (what logprobs need), context x vocabulary."""
    if kv_type not in KV_BYTES:
        raise FitError(f"unknown KV cache type {kv_type!r}", hint=", ".join(KV_BYTES))
    if parallel < 1:
        raise FitError("parallel must be 1 or more")
    facts = subject if isinstance(subject, _Facts) else _facts(subject, quantization)
    notes = list(facts.notes)
    if context is None:
        context = min(DEFAULT_CONTEXT, facts.context_max or DEFAULT_CONTEXT)
    if context < 1:
        raise FitError(f"context must be 1 or more tokens, not {context}")
    if facts.context_max and context > facts.context_max:
        notes.append(f"context {context:,} is beyond the model's {facts.context_max:,} tokens")
    arch = facts.arch
    assert arch is not None
    kv = round(arch.kv_bytes_per_token(kv_type) * _padded(context * parallel))
    compute = compute_buffer(arch, context, parallel, logits_all=logits_all)
    layers = arch.layers
    gpu_layers = max(0, min(gpu_layers, layers + 1))  # +1: the output layer
    vram = 0
    if gpu_layers:
        moved = min(gpu_layers, layers)
        vram = facts.per_layer * moved + round(kv * moved / layers) + compute
        if gpu_layers > layers:
            vram += max(0, facts.weights - facts.per_layer * layers)
    total = facts.weights + kv + compute + RUNTIME_OVERHEAD
    return MemoryEstimate(
        weights=facts.weights,
        kv_cache=kv,
        compute=compute,
        overhead=RUNTIME_OVERHEAD,
        context=context,
        parallel=parallel,
        kv_type=kv_type,
        layers=layers,
        gpu_layers=gpu_layers,
        vram=vram,
        ram=total - vram,
        basis=facts.basis,
        notes=tuple(notes),
    )


# ---------------------------------------------------------------- compatibility


@dataclass(frozen=True, slots=True)
class Compatibility:
    """Whether a model fits, how, and why, with the estimate behind the answer."""

    model: str
    fits: bool
    level: str  # "full GPU" | "partial GPU" | "CPU only" | "fits" | "won't fit"
    reason: str
    estimate: MemoryEstimate
    available: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "fits": self.fits,
            "level": self.level,
            "reason": self.reason,
            "estimate": self.estimate.to_dict(),
            "available": self.available,
        }


def _placement(
    facts: _Facts,
    *,
    memory: int | None,
    system: SystemInfo | None,
    context: int | None,
    parallel: int,
    kv_type: str,
) -> tuple[str, bool, str, MemoryEstimate, dict[str, int]]:
    cpu = estimate_memory(facts, context=context, parallel=parallel, kv_type=kv_type)
    need = cpu.total
    if memory is not None:
        available = {"memory": memory}
        if need <= memory:
            return (
                "fits",
                True,
                f"needs {format_memory(need)} of {format_memory(memory)}",
                cpu,
                available,
            )
        short = format_memory(need - memory)
        return (
            "won't fit",
            False,
            f"needs {format_memory(need)}: {short} more than {format_memory(memory)}",
            cpu,
            available,
        )
    assert system is not None
    ram, vram = system.ram_available, system.vram_free
    available = {"ram": ram, "vram": vram}
    if system.unified_memory:  # Apple silicon: the GPU works in system memory
        vram = max(g.memory_free for g in system.gpus if g.unified)
        available["vram"] = vram
        if need <= vram:
            return (
                "full GPU",
                True,
                f"needs {format_memory(need)} of {format_memory(vram)} unified memory",
                cpu,
                available,
            )
    elif vram:
        layers = facts.arch.layers if facts.arch else 0
        for n in range(layers + 1, 0, -1):  # layers + 1: the output layer too, all on the GPU
            split = estimate_memory(
                facts, context=context, parallel=parallel, kv_type=kv_type, gpu_layers=n
            )
            if split.vram <= vram and split.ram <= ram:
                if n > layers:
                    why = f"all {layers} layers fit in {format_memory(vram)} free VRAM"
                    return "full GPU", True, why, split, available
                why = f"{n} of {layers} layers on the GPU, the rest in RAM"
                return "partial GPU", True, why, split, available
    if need <= ram:
        where = "no GPU" if not system.gpus else "too big for the GPU"
        return (
            "CPU only",
            True,
            f"needs {format_memory(need)} of {format_memory(ram)} free RAM ({where})",
            cpu,
            available,
        )
    total = ram + (0 if system.unified_memory else vram)
    has = f"{format_memory(ram)} RAM" + (f" and {format_memory(vram)} VRAM" if vram else "")
    short = format_memory(need - total)
    why = f"needs {format_memory(need)}; this machine has {has} free ({short} short)"
    return "won't fit", False, why, cpu, available


def check_compatibility(
    subject: GGUFInfo | CatalogEntry | _Facts,
    *,
    memory: int | None = None,
    system: SystemInfo | None = None,
    context: int | None = None,
    parallel: int = 1,
    kv_type: str = "f16",
    quantization: str | None = None,
    name: str | None = None,
) -> Compatibility:
    """Does it fit in `memory` bytes, or (without) in what this machine has free now?"""
    if memory is not None and memory <= 0:
        raise FitError(f"memory must be more than 0 bytes, not {memory}")
    if memory is None and system is None:
        from modelctl.fit.hardware import system_info

        system = system_info()
    facts = subject if isinstance(subject, _Facts) else _facts(subject, quantization)
    level, fits, reason, estimate, available = _placement(
        facts, memory=memory, system=system, context=context, parallel=parallel, kv_type=kv_type
    )
    label = name or getattr(subject, "id", None) or getattr(subject, "path", "model")
    return Compatibility(label, fits, level, reason, estimate, available)


# ---------------------------------------------------------------- recommendation

FALLBACK = {
    "quality": ("quality", "balanced", "speed"),
    "balanced": ("balanced", "quality", "speed"),
    "speed": ("speed", "balanced", "quality"),
}


@dataclass(frozen=True, slots=True)
class Recommendation:
    """The best fitting model, why, and the runners-up; or, when none fits, what is missing."""

    model: CatalogEntry | None
    quantization: str | None
    reason: str
    compatibility: Compatibility | None
    runners_up: tuple[tuple[CatalogEntry, Compatibility], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.id if self.model else None,
            "quantization": self.quantization,
            "reason": self.reason,
            "compatibility": self.compatibility.to_dict() if self.compatibility else None,
            "runners_up": [
                {"model": e.id, "level": c.level, "total": c.estimate.total}
                for e, c in self.runners_up
            ],
        }


def recommend(
    catalog: Catalog,
    *,
    memory: int | None = None,
    system: SystemInfo | None = None,
    priority: str = "balanced",
    task: str | None = "chat",
    context: int | None = None,
    runners_up: int = 3,
    measured: dict[str, float] | None = None,
) -> Recommendation:
    """The best model for this memory and task: the biggest that fits, in the priority's purpose
    first, then the fallbacks (quality → balanced → speed, as the priority orders them).
    For speed, a model measured on this machine (`measured`: catalog id → generation
    tokens/s, from profiles) beats the catalog's guesses, the fastest first."""
    if priority not in FALLBACK:
        raise FitError(f"priority must be one of {', '.join(FALLBACK)}, not {priority!r}")
    if memory is None and system is None:
        from modelctl.fit.hardware import system_info

        system = system_info()
    candidates = [e for e in catalog if e.is_local and (task is None or task in e.tasks)]
    if not candidates:
        raise FitError(f"the catalog has no local model for the task {task!r}")
    checked = [
        (e, check_compatibility(e, memory=memory, system=system, context=context))
        for e in candidates
    ]
    fitting = [(e, c) for e, c in checked if c.fits]
    if not fitting:
        smallest, comp = min(checked, key=lambda ec: ec[1].estimate.total)
        return Recommendation(
            None, None,
            f"nothing for {task or 'any task'} fits: the smallest, {smallest.id}, {comp.reason}",
            comp,
        )  # fmt: skip
    timed = sorted(
        (ec for ec in fitting if (measured or {}).get(ec[0].id)),
        key=lambda ec: -(measured or {})[ec[0].id],
    )
    if priority == "speed" and timed:
        best, comp = timed[0]
        speed = (measured or {})[best.id]
        why = f"the fastest measured here for {task or 'any task'} ({speed:.1f} tokens/s)"
        why += f": {comp.reason}"
        rest = tuple(ec for ec in fitting if ec[0].id != best.id)[:runners_up]
        return Recommendation(best, best.default_quantization, why, comp, rest)
    order = list(FALLBACK[priority])
    if task not in (None, "chat", "completion"):  # a model made for the task comes next
        order.insert(1, "specialized")
    rank = {purpose: i for i, purpose in enumerate(order)}
    fitting.sort(key=lambda ec: (rank.get(ec[0].purpose, 9), -(ec[0].parameters or 0), ec[0].id))
    best, comp = fitting[0]
    first = order[0]
    why = f"the largest {best.purpose} model for {task or 'any task'} that fits: {comp.reason}"
    if best.purpose != first:
        exists = any(e.purpose == first for e in candidates)
        missing = "fits" if exists else f"in the catalog is for {task or 'any task'}"
        why = f"no {first} model {missing}, so {why}"
    return Recommendation(
        best, best.default_quantization, why, comp, tuple(fitting[1 : 1 + runners_up])
    )


def facts_for(
    ref: str,
    *,
    catalog: Catalog,
    registry: Any = None,
    quantization: str | None = None,
) -> tuple[_Facts, str]:
    """What a user names, as facts to estimate: a .gguf path, a catalog entry, or a registered
    model (through its GGUF file, its catalog entry, or its parameter count)."""
    from modelctl.fit.gguf_meta import read_gguf
    from modelctl.record import naming

    parsed = naming.parse_ref(ref, catalog.schemes)
    if parsed.is_path:
        info = read_gguf(os.path.expanduser(parsed.name))
        return _facts(info, None), info.path
    if registry is not None and ref in registry:
        model = registry[ref]
        location = model.file
        if location and os.path.isfile(location):
            try:  # a GGUF file, whatever its name says (Ollama's blobs have no suffix)
                return _facts(read_gguf(location), None), model.id
            except InvalidGGUF:
                pass
        tagged = model.custom.get("catalog")
        entry = (catalog.find(tagged) if isinstance(tagged, str) and tagged else None) or (
            catalog.find(model.id)
        )
        if entry is not None and entry.is_local:
            return _facts(entry, quantization or model.quantization), model.id
        if model.backend not in catalog.schemes.local:
            raise FitError(f"{model.id} is served by {model.backend}: it needs no memory here")
        if model.parameters is None:
            raise FitError(
                f"{model.id} has no parameter count, file or catalog entry to estimate from",
                hint=f"modelctl add {model.id} --replace --parameters 8B, or give its .gguf path",
            )
        return from_parameters(model.parameters, quantization or model.quantization), model.id
    entry = catalog.find(ref)
    if entry is None:
        if registry is not None:
            with contextlib.suppress(ModelNotFound):
                return facts_for(registry.resolve(ref), catalog=catalog, registry=registry)
        close = difflib.get_close_matches(ref, [e.id for e in catalog], n=3, cutoff=0.6)
        mine = registry.suggest(ref) if registry is not None else []
        raise ModelNotFound(ref, suggestions=list(dict.fromkeys(mine + close))[:3])
    return _facts(entry, quantization), entry.id
