"""The catalog: well-known models, their architecture facts, sizes and names on each backend.

Data, not code: `modelctl/data/catalog.json` ships with the package; a user adds or overrides
entries with JSON files of the same format in `<home>/catalog/`. Entries are frozen records.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

from modelctl.record import naming
from modelctl.record.errors import InvalidCatalog, ModelNotFound

__all__ = ["BITS_PER_WEIGHT", "Catalog", "CatalogEntry"]

CATALOG_FORMAT = "modelctl.catalog"

# Effective bits per weight of a whole model file at each quantization (llama.cpp's quantize
# tool reports these for 7-8B models: mixed tensor types included), and for HF formats.
BITS_PER_WEIGHT = {
    "F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q6_K": 6.56, "Q5_K_M": 5.69,
    "Q5_K_S": 5.54, "Q5_1": 6.0, "Q5_0": 5.5, "Q4_K_M": 4.89, "Q4_K_S": 4.58, "Q4_1": 5.0,
    "Q4_0": 4.55, "IQ4_XS": 4.25, "IQ4_NL": 4.5, "MXFP4": 4.25, "Q3_K_L": 4.27, "Q3_K_M": 3.91,
    "Q3_K_S": 3.5, "IQ3_M": 3.66, "IQ3_XXS": 3.06, "Q2_K": 3.35, "IQ2_M": 2.7, "IQ2_XS": 2.31,
    "IQ2_XXS": 2.06, "IQ1_M": 1.75, "IQ1_S": 1.56, "FP8": 8.0, "INT8": 8.0, "INT4": 4.25,
    "AWQ": 4.25, "GPTQ": 4.25,
}  # fmt: skip
# What a local model is offered in, when an entry does not list its own choices.
COMMON_QUANTIZATIONS = ("Q4_K_M", "Q5_K_M", "Q8_0", "F16")


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One well-known model. Sizes in bytes; `architecture` has what the memory estimate needs."""

    id: str
    name: str
    family: str
    tasks: tuple[str, ...]
    capabilities: tuple[str, ...]
    purpose: str
    license: str
    source: str
    refs: dict[str, str] = field(default_factory=dict)
    backend: str | None = None  # a remote provider; None for open weights
    parameters: int | None = None
    architecture: dict[str, int] = field(default_factory=dict)
    context_length: int | None = None
    max_output_tokens: int | None = None
    default_quantization: str | None = None
    quantizations: dict[str, int] = field(default_factory=dict)  # known download sizes
    pricing: dict[str, float] | None = None
    origin: str = "built-in"  # or the user catalog file it came from
    # the backends that run models on this machine, as the catalog was told when loaded
    local_backends: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @property
    def is_local(self) -> bool:
        """Runs on this machine: an entry for any local backend (no backend named), or one
        whose backend is local."""
        return self.backend is None or self.backend in self.local_backends

    def download_size(self, quantization: str | None = None) -> tuple[int | None, bool]:
        """Bytes to download at `quantization` (default: the entry's), and whether estimated."""
        quant = naming.normalize_quantization(quantization) if quantization else None
        quant = quant or self.default_quantization
        if quant is None:
            return None, False
        if quant in self.quantizations:
            return self.quantizations[quant], False
        bits = BITS_PER_WEIGHT.get(quant)
        if bits is None or not self.parameters:
            return None, False
        return round(self.parameters * bits / 8), True

    def offered_quantizations(self) -> list[str]:
        if not self.is_local:
            return []
        listed = [*self.quantizations, *COMMON_QUANTIZATIONS]
        return list(dict.fromkeys(listed))

    def to_dict(self) -> dict[str, Any]:
        sizes = {q: self.download_size(q) for q in self.offered_quantizations()}
        return {
            "id": self.id,
            "name": self.name,
            "family": self.family,
            "backend": self.backend,
            "parameters": self.parameters,
            "architecture": self.architecture,
            "context_length": self.context_length,
            "max_output_tokens": self.max_output_tokens,
            "tasks": list(self.tasks),
            "capabilities": list(self.capabilities),
            "purpose": self.purpose,
            "license": self.license,
            "default_quantization": self.default_quantization,
            "download_sizes": {
                q: {"bytes": size, "estimated": est} for q, (size, est) in sizes.items() if size
            },
            "pricing": self.pricing,
            "refs": self.refs,
            "source": self.source,
            "origin": self.origin,
        }

    def to_model(
        self, quantization: str | None = None, *, backend: str | None = None
    ) -> dict[str, Any]:
        """A registry record (as data) for this entry at a quantization, served by `backend`
        (default: the entry's own, or the first its references name)."""
        quant = quantization or self.default_quantization
        size, _ = self.download_size(quant)
        backend = backend or self.backend or next((k for k in self.refs if k != "gguf"), "gguf")
        record: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "backend": backend,
            "refs": {k: v for k, v in self.refs.items() if k != "gguf"},
            "tasks": list(self.tasks),
            "capabilities": list(self.capabilities),
            "parameters": self.parameters,
            "context_length": self.context_length,
            "max_output_tokens": self.max_output_tokens,
            "purpose": self.purpose,
            "license": self.license,
            "custom": {"catalog": self.id, "source": self.source},
        }
        if self.is_local:
            record |= {"quantization": quant, "download_size": size}
        if self.pricing:
            record["pricing"] = self.pricing
        return {k: v for k, v in record.items() if v is not None}


_REQUIRED = ("id", "name", "tasks", "purpose", "license", "source")
_ARCH_KEYS = ("layers", "embedding", "heads", "kv_heads", "head_dim", "vocab")


def _entry(data: Any, origin: str, index: int) -> CatalogEntry:
    where = f"{origin}: entry {index}"
    if not isinstance(data, dict):
        raise InvalidCatalog(f"{where} is not an object")
    where += f" ({data.get('id')!r})"
    for key in _REQUIRED:
        if not data.get(key):
            raise InvalidCatalog(f"{where}: missing {key!r}")
    arch = data.get("architecture") or {}
    backend = data.get("backend")
    if backend is None:  # open weights: the estimator needs parameters and architecture
        if not isinstance(data.get("parameters"), int) or data["parameters"] <= 0:
            raise InvalidCatalog(f"{where}: 'parameters' must be a positive integer")
        missing = [k for k in _ARCH_KEYS if not isinstance(arch.get(k), int) or arch[k] <= 0]
        if missing:
            raise InvalidCatalog(f"{where}: architecture lacks {', '.join(missing)}")
        if arch["heads"] % arch["kv_heads"]:
            raise InvalidCatalog(f"{where}: heads must be a multiple of kv_heads")
    sizes = data.get("quantizations") or {}
    if not all(isinstance(v, int) and v > 0 for v in sizes.values()):
        raise InvalidCatalog(f"{where}: quantization sizes must be positive byte counts")
    try:
        return CatalogEntry(
            id=str(data["id"]),
            name=str(data["name"]),
            family=str(data.get("family") or data["id"]),
            tasks=tuple(data["tasks"]),
            capabilities=tuple(data.get("capabilities") or ()),
            purpose=str(data["purpose"]),
            license=str(data["license"]),
            source=str(data["source"]),
            refs=dict(data.get("refs") or {}),
            backend=backend,
            parameters=data.get("parameters"),
            architecture=dict(arch),
            context_length=data.get("context_length"),
            max_output_tokens=data.get("max_output_tokens"),
            default_quantization=data.get("default_quantization"),
            quantizations={naming.normalize_quantization(k): v for k, v in sizes.items()},
            pricing=data.get("pricing"),
            origin=origin,
        )
    except (TypeError, ValueError) as exc:
        raise InvalidCatalog(f"{where}: {exc}") from None


def read_catalog_file(path: Path | None, text: str | None = None) -> list[CatalogEntry]:
    origin = str(path) if path else "built-in"
    try:
        document = json.loads(text if text is not None else Path(path).read_text("utf-8"))  # type: ignore[arg-type]
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidCatalog(f"cannot read catalog {origin}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise InvalidCatalog(
            f"catalog {origin} is not JSON: {exc.msg} at line {exc.lineno}"
        ) from None
    if not isinstance(document, dict) or document.get("format") != CATALOG_FORMAT:
        raise InvalidCatalog(f"{origin} is not a modelctl catalog (format {CATALOG_FORMAT!r})")
    entries = document.get("models")
    if not isinstance(entries, list):
        raise InvalidCatalog(f"{origin}: 'models' must be a list")
    return [_entry(e, "built-in" if path is None else origin, i) for i, e in enumerate(entries)]


class Catalog:
    """Built-in entries, then user files (later ones replace earlier ones with the same id)."""

    def __init__(
        self, entries: Iterable[CatalogEntry], *, schemes: naming.Schemes = naming.NO_SCHEMES
    ) -> None:
        self.schemes = schemes  # what the backends declare: prefixes, and which are local
        self._entries: dict[str, CatalogEntry] = {}
        for entry in entries:
            self._entries[entry.id] = replace(entry, local_backends=schemes.local)

    @classmethod
    def load(
        cls,
        folders: Iterable[str | os.PathLike[str]] = (),
        *,
        schemes: naming.Schemes = naming.NO_SCHEMES,
    ) -> Catalog:
        text = resources.files("modelctl.data").joinpath("catalog.json").read_text("utf-8")
        entries = read_catalog_file(None, text)
        for folder in folders:
            for path in sorted(Path(folder).glob("*.json")):
                entries.extend(read_catalog_file(path))
        return cls(entries, schemes=schemes)

    def __iter__(self) -> Iterator[CatalogEntry]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.find(name) is not None

    def find(self, name: str) -> CatalogEntry | None:
        """The entry `name` names: its id, a backend's reference, or its display name."""
        if name in self._entries:
            return self._entries[name]
        parsed = naming.parse_ref(name, self.schemes)
        lowered = name.lower()
        for entry in self._entries.values():
            refs = entry.refs.values()
            if parsed.name in refs or name in refs or lowered == entry.name.lower():
                return entry
            if parsed.backend and entry.refs.get(parsed.backend, "").lower() == parsed.name.lower():
                return entry
        for entry in self._entries.values():  # ollama's default tag: `llama3.2` is `llama3.2:3b`?
            if entry.refs.get("ollama", "").split(":")[0] == name and ":" not in name:
                return entry
        return None

    def __getitem__(self, name: str) -> CatalogEntry:
        found = self.find(name)
        if found is None:
            import difflib

            close = difflib.get_close_matches(name, list(self._entries), n=3, cutoff=0.5)
            raise ModelNotFound(name, suggestions=close)
        return found

    def search(
        self, text: str = "", *, task: str | None = None, local: bool | None = None
    ) -> list[CatalogEntry]:
        """Entries whose id, name, family, references or tasks contain every word of `text`."""
        words = text.lower().split()
        found = []
        for entry in self._entries.values():
            haystack = " ".join(
                [
                    entry.id,
                    entry.name,
                    entry.family,
                    *entry.refs.values(),
                    *entry.tasks,
                    entry.purpose,
                ]
            ).lower()
            if not all(w in haystack for w in words):
                continue
            if task and task not in entry.tasks:
                continue
            if local is not None and entry.is_local != local:
                continue
            found.append(entry)
        return found
