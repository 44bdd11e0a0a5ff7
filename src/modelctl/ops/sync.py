"""Sync: what every reachable backend has, merged into the registry without losing user data.

Backends own the facts they report (installed, size, location, digest, their own reference);
the user owns the rest (name, tags, aliases, groups, custom metadata, description, pricing set
by hand). A model a backend no longer lists is marked not installed, never deleted. A GGUF file
and an Ollama model with the same sha256 are one model with two references.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelctl.record.errors import ModelctlError

if TYPE_CHECKING:
    from modelctl.backends import Backend
    from modelctl.record.model import Model
    from modelctl.registry import Registry

# Fields a backend reports and may overwrite; everything else belongs to the user.
BACKEND_FACTS = (
    "installed", "file_size", "location", "digest", "quantization", "parameters", "family",
    "context_length", "max_output_tokens", "tasks", "capabilities", "status",
)  # fmt: skip
FILL_ONLY = ("name", "pricing", "license")  # set from the backend only while still empty


@dataclass
class SyncReport:
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)  # a second backend's copy, matched by content
    missing: list[str] = field(default_factory=list)  # gone from their backend: not installed
    errors: dict[str, str] = field(default_factory=dict)  # backend → why it was skipped
    skipped: list[str] = field(default_factory=list)  # unreadable files

    def to_dict(self) -> dict[str, Any]:
        return {
            k: getattr(self, k)
            for k in ("added", "updated", "merged", "missing", "errors", "skipped")
        }


def _apply(current: Model, found: Model) -> Model:
    """`current` with the backend's facts from `found`; user-owned fields untouched."""
    changes: dict[str, Any] = {
        k: getattr(found, k) for k in BACKEND_FACTS if getattr(found, k) not in (None, [])
    }
    for key in FILL_ONLY:
        if getattr(current, key) is None and getattr(found, key) is not None:
            changes[key] = getattr(found, key)
    changes["refs"] = {**current.refs, **found.refs}
    if "pricing" in changes and changes["pricing"] is not None:
        changes["pricing"] = changes["pricing"].model_dump()
    return current.updated(**changes)


def _same_content(model: Model, gguf: Model) -> bool:
    """An Ollama model whose blob is this GGUF file: near-equal size first, then the sha256."""
    if not model.digest or not gguf.location or not model.file_size or not gguf.file_size:
        return False
    if abs(model.file_size - gguf.file_size) > 1 << 20:  # Ollama adds template and params layers
        return False
    from modelctl.backends._hub import sha256_of

    return f"sha256:{sha256_of(Path(gguf.location))}" == model.digest


def sync(
    registry: Registry, backends: dict[str, Backend], *, only: list[str] | None = None
) -> SyncReport:
    report = SyncReport()
    discovered: dict[str, list[Model]] = {}
    for name, backend in backends.items():
        if only and name not in only:
            continue
        status = backend.status()
        if not status.available:
            report.errors[name] = status.error or "unavailable"
            continue
        try:
            discovered[name] = backend.discover()
        except ModelctlError as exc:
            report.errors[name] = exc.message
            continue
        report.skipped += getattr(backend, "skipped", [])

    # Backends that know their models' digests first, so that files elsewhere can match them.
    order = sorted(discovered, key=lambda n: not any(m.digest for m in discovered[n]))
    with registry.store.transaction():
        seen: dict[str, set[str]] = {name: set() for name in discovered}
        for name in order:
            found_list = discovered[name]
            for found in found_list:
                ref = found.refs[name]
                seen[name].add(ref)
                matches = registry.store.find_by_ref(name, ref)
                target = matches[0] if matches else None
                if target is None and found.location and found.location.endswith(".gguf"):
                    for model in registry.query({"digest": {"$exists": True}}):
                        if _same_content(model, found):
                            target = model.id
                            report.merged.append(f"{found.location} = {model.id}")
                            break
                if target is None:
                    model_id = found.id if found.id not in registry else f"{name}/{found.id}"
                    registry.add(found.updated(id=model_id), replace=False)
                    report.added.append(model_id)
                    continue
                current = registry[target]
                merged = (
                    _apply(current, found)
                    if current.backend == name
                    else current.updated(refs={**current.refs, **found.refs})
                )
                if merged.to_dict() | {"updated_at": None} != current.to_dict() | {
                    "updated_at": None
                }:
                    registry.update(
                        target, **{k: v for k, v in merged.to_dict().items() if k != "id"}
                    )
                    report.updated.append(target)
        for name, refs in seen.items():
            for model in registry.filter(backend=name, installed=True):
                if model.base is not None:  # a derived model: its base's weights are looked at
                    continue
                if model.refs.get(name, model.id) not in refs:
                    registry.update(model.id, installed=False, status="missing")
                    report.missing.append(model.id)
    return report
