"""Derived models: a model's weights under a new name, with defaults of its own.

`ollama create NAME` FROM an existing model (with a system prompt, parameters, a template) and
`ollama cp SOURCE DESTINATION` make one. A derived model is a registry record like any other:
listed, shown, loaded and served through every API, its `defaults` and `system` applied to each
request. Its weights are its base's: `base` names the model it derives from, deleting it
removes its record only, and a model others derive from is not deleted before them.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelctl.record.errors import Conflict, InvalidRequest

if TYPE_CHECKING:
    from modelctl.backends import Backend
    from modelctl.record.model import Model
    from modelctl.registry import Registry

__all__ = ["derive", "from_weights"]

# what a derived model takes from its base: what its weights are (not where: a reference, a
# location or a digest names its base alone, and the weights are found through `base`)
_KEPT = (
    "backend", "family", "tasks", "capabilities", "parameters", "size", "quantization",
    "max_output_tokens", "file_size", "installed", "status", "min_memory", "purpose",
    "pricing", "license", "description", "defaults", "system", "custom",
)  # fmt: skip


def derive(
    registry: Registry,
    source: str,
    name: str,
    *,
    system: str | None = None,
    defaults: dict[str, Any] | None = None,
    template: str | None = None,
    context: int | None = None,
) -> Model:
    """Register `name`: `source`'s weights, its defaults updated with `defaults`, its system
    prompt replaced by `system` and its context by `context` where given; `template` is kept
    and shown, not applied (the model's own chat template formats its prompts). A derived
    model of that name is replaced (as Ollama replaces a model it creates again); any other
    model of that name is left alone, with a Conflict."""
    base = registry[source]
    chain, above = {base.id}, base
    while above.base is not None and above.base not in chain:  # its bases, up to the weights
        chain.add(above.base)
        above = registry[above.base]
    if registry.resolve(name) in chain if name in registry else False:
        raise Conflict(f"{source} derives from {name}", hint="choose another name")
    existing = registry.store.get(registry.resolve(name)) if name in registry else None
    if existing is not None and not existing.get("base"):
        raise Conflict(
            f"{existing['id']} exists and is not a derived model",
            hint="choose another name, or delete it first",
        )
    if existing is not None and existing["id"] == base.id:
        raise InvalidRequest(f"{name} is {source} itself", hint="choose another name")
    data = {key: value for key, value in base.to_dict().items() if key in _KEPT}
    data |= {"id": name, "base": base.id}
    if defaults:
        data["defaults"] = {**base.defaults, **defaults}
    if system is not None:
        data["system"] = system
    if template is not None:
        data["custom"] = {**base.custom, "chat_template": template}
    if context is not None:  # the context it loads with (Ollama's num_ctx); else its base's
        data["context_length"] = context
    return registry.add(data, replace=existing is not None)


def from_weights(
    registry: Registry,
    backend: Backend,
    folder: Path,
    name: str,
    weights: Path,
    *,
    system: str | None = None,
    defaults: dict[str, Any] | None = None,
    template: str | None = None,
) -> Model:
    """Register `name`: the GGUF file `weights` (an uploaded blob), linked (or copied) into the
    model folder `folder` as `name`'s file and recorded by `backend` (the one that keeps GGUF
    files), with the given system prompt, defaults and template (Ollama's `create`
    with `files`). A model of that name is left alone, with a Conflict."""
    if name in registry:
        raise Conflict(f"{name} exists", hint="choose another name, or delete it first")
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip(".-") or "model"
    target = folder / f"{stem}.gguf"
    if target.exists():
        raise Conflict(f"{target} exists", hint="choose another name")
    folder.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.part")
    try:
        os.link(weights, partial)  # the blob's bytes, once on disk
    except OSError:
        shutil.copyfile(weights, partial)
    partial.replace(target)  # never a half-written model under its real name
    try:
        model = backend.record(target, name)  # type: ignore[attr-defined]
    except Exception:
        target.unlink(missing_ok=True)
        raise
    changes: dict[str, Any] = {}
    if system is not None:
        changes["system"] = system
    if defaults:
        changes["defaults"] = defaults
    if template is not None:
        changes["custom"] = {**model.custom, "chat_template": template}
    return registry.add(model.updated(**changes) if changes else model)
