"""Pull and remove: pick the backend, check the fit, act, and keep the registry true.

Nothing is marked installed until its backend says the install finished; a delete is planned
(paths, bytes freed) before it runs, and the record stays, not installed, with its metadata.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelctl import naming
from modelctl.backends import BackendError, DeletePlan, ProgressFn
from modelctl.errors import InsufficientMemory

if TYPE_CHECKING:
    from modelctl.catalog import CatalogEntry
    from modelctl.manager import ModelManager
    from modelctl.model import Model

_CATALOG_REF = {"llamacpp": "gguf"}  # the catalog's key for a backend's reference, if not its name


def choose(
    ref: str, *, catalog: Any, backend: str | None = None, quantization: str | None = None
) -> tuple[str, str, CatalogEntry | None]:
    """(backend, the name that backend knows, the catalog entry if any) for what to pull."""
    parsed = naming.parse_ref(ref)
    entry = catalog.find(ref)
    name = backend or (parsed.backend if parsed.explicit else None)
    if entry is not None:
        if not entry.is_local:
            raise BackendError(f"{entry.id} is served by {entry.backend}: nothing to download")
        name = name or next(
            b for b in ("ollama", "llamacpp", "huggingface") if _CATALOG_REF.get(b, b) in entry.refs
        )
        known = entry.refs.get(_CATALOG_REF.get(name, name))
        if known is None:
            raise BackendError(
                f"the catalog knows no {name} download for {entry.id}", hint="try --backend ollama"
            )
        if name == "llamacpp" and quantization:
            known = "/".join(known.split("/")[:2])  # the repo: --quant picks the file
        return name, known, entry
    name = name or parsed.backend or "ollama"
    gguf = quantization or parsed.name.lower().endswith(".gguf")
    if name == "huggingface" and backend is None and gguf:
        name = "llamacpp"  # one GGUF file out of a repo, into the model folder
    return name, parsed.name, None


def pull(
    manager: ModelManager,
    ref: str,
    *,
    backend: str | None = None,
    quantization: str | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> Model:
    """Install a model through its backend and register it; refuses what won't fit unless forced."""
    from modelctl import fit

    name, backend_ref, entry = choose(
        ref, catalog=manager.catalog, backend=backend, quantization=quantization
    )
    target = manager.backend(name)
    if entry is not None and not force:
        check = fit.check_compatibility(
            entry, system=manager.system_info(), quantization=quantization
        )
        if not check.fits:
            raise InsufficientMemory(
                f"{entry.id} won't fit here: {check.reason}",
                hint="pass --force to download it anyway",
            )
    model = target.install(backend_ref, progress, quantization=quantization)
    if entry is not None:
        facts = entry.to_model(quantization)
        filled = ("tasks", "capabilities", "purpose", "license", "name", "context_length")
        gaps = {k: facts[k] for k in filled if k in facts and not getattr(model, k)}
        model = model.updated(**gaps, custom={**model.custom, "catalog": entry.id})
    return register(manager.registry, model)


def register(registry: Any, model: Model) -> Model:
    """Add `model`, or refresh the record that has the same backend reference."""
    with registry.store.transaction():
        existing = registry.store.find_by_ref(model.backend, model.refs[model.backend])
        if not existing:
            model_id = model.id if model.id not in registry else f"{model.backend}/{model.id}"
            return registry.add(model.updated(id=model_id))
        current = registry[existing[0]]
        keep = {
            "tags",
            "aliases",
            "custom",
            "description",
            "id",
            "created_at",
            "updated_at",
            "last_used",
        }
        changes = {
            k: v for k, v in model.to_dict().items() if k not in keep and v not in (None, [], {})
        }
        changes["custom"] = {**model.custom, **current.custom}
        changes["refs"] = {**current.refs, **model.refs}
        return registry.update(current.id, **changes)


def plan_remove(manager: ModelManager, ref: str) -> tuple[Model, DeletePlan]:
    model = manager.registry[ref]
    if not model.installed:
        raise BackendError(
            f"{model.id} is not installed", hint="modelctl forget removes the record"
        )
    backend = manager.backend(model.backend)
    return model, backend.plan_delete(model.ref_for(model.backend))


def remove(manager: ModelManager, ref: str) -> DeletePlan:
    """Delete a model's files through its backend; the record stays, marked not installed."""
    model, plan = plan_remove(manager, ref)
    if plan.execute is not None:
        plan.execute()
    manager.registry.update(model.id, installed=False, status="available")
    return plan
