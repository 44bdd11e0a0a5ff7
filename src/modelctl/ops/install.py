"""Pull and remove: pick the backend, check the fit, act, and keep the registry true.

Nothing is marked installed until its backend says the install finished; a delete is planned
(paths, bytes freed) before it runs, and the record stays, not installed, with its metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from modelctl.backends import DeletePlan, ProgressFn
from modelctl.record import naming
from modelctl.record.errors import (
    BackendError,
    Conflict,
    InsufficientMemory,
    NotFound,
    NotInstalled,
    PartialDelete,
)

if TYPE_CHECKING:
    from modelctl.backends import Backend, BackendKind
    from modelctl.fit.catalog import Catalog, CatalogEntry
    from modelctl.fit.hardware import SystemInfo
    from modelctl.record.model import Model
    from modelctl.registry import Registry

__all__ = ["choose", "plan_remove", "pull", "register", "remove"]


def choose(
    ref: str,
    *,
    catalog: Catalog,
    kinds: Mapping[str, BackendKind],
    backend: str | None = None,
    quantization: str | None = None,
) -> tuple[str, str, CatalogEntry | None]:
    """(backend, the name that backend knows, the catalog entry if any) for what to pull.

    A catalog model goes to the first backend that can install it (each backend's
    `install_rank`); any other reference to the backend its spelling names."""
    found = catalog.schemes  # what the backends declare, as the catalog was told
    parsed = naming.parse_ref(ref, found)
    entry = catalog.find(ref)
    name = backend or (parsed.backend if parsed.explicit else None)
    installers = sorted(
        (k for k in kinds.values() if k.can_install), key=lambda k: (k.install_rank, k.name)
    )
    if entry is not None:
        if not entry.is_local:
            raise BackendError(f"{entry.id} is served by {entry.backend}: nothing to download")
        name = name or next((k.name for k in installers if k.catalog_key in entry.refs), None)
        if name is None or name not in kinds:
            raise BackendError(f"no backend here can download {entry.id}")
        known = entry.refs.get(kinds[name].catalog_key)
        if known is None:
            first = next((k.name for k in installers if k.catalog_key in entry.refs), "?")
            raise BackendError(
                f"the catalog knows no {name} download for {entry.id}",
                hint=f"try --backend {first}",
            )
        if quantization and known.lower().endswith(".gguf"):
            known = "/".join(known.split("/")[:2])  # the repo: --quant picks the file
        return name, known, entry
    if not installers and name is None:
        raise BackendError("no backend here can download models")
    name = name or parsed.backend or installers[0].name
    gguf = quantization or parsed.name.lower().endswith(".gguf")
    files = found.forms.get("path")  # the backend that keeps single model files
    if backend is None and gguf and files and name == found.forms.get("repo"):
        name = files  # one GGUF file out of a repo, into the model folder
    return name, parsed.name, None  # without the prefix the reference was written with


def pull(
    ref: str,
    *,
    registry: Registry,
    catalog: Catalog,
    backends: Mapping[str, Backend],
    system: Callable[[], SystemInfo],
    backend: str | None = None,
    quantization: str | None = None,
    force: bool = False,
    progress: ProgressFn | None = None,
) -> Model:
    """Install a model through its backend and register it; refuses what won't fit unless
    forced: a catalog model by its estimate, any other by the size its source lists."""
    from modelctl.fit import estimate as fit

    kinds = {name: b.kind() for name, b in backends.items()}
    name, backend_ref, entry = choose(
        ref, catalog=catalog, kinds=kinds, backend=backend, quantization=quantization
    )
    if name not in backends:
        raise NotFound(f"no backend named {name!r}", hint=f"backends: {', '.join(backends)}")
    target = backends[name]
    if not force:
        if entry is not None:
            check = fit.check_compatibility(entry, system=system(), quantization=quantization)
        else:
            size = target.download_size(backend_ref, quantization=quantization)
            check = None if size is None else fit.check_download(size, system=system())
        if check is not None and not check.fits:
            raise InsufficientMemory(
                f"{entry.id if entry else backend_ref} won't fit here: {check.reason}",
                hint="pass --force to download it anyway",
            )
    model = target.install(backend_ref, progress, quantization=quantization)
    if entry is not None:
        facts = entry.to_model(quantization, backend=name)
        filled = ("tasks", "capabilities", "purpose", "license", "name", "context_length")
        gaps = {k: facts[k] for k in filled if k in facts and not getattr(model, k)}
        model = model.updated(**gaps, custom={**model.custom, "catalog": entry.id})
    return register(registry, model)


def register(registry: Registry, model: Model) -> Model:
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


def plan_remove(
    registry: Registry, backends: Mapping[str, Backend], ref: str
) -> tuple[Model, DeletePlan]:
    model = registry[ref]
    derived = registry.derived_from(model.id)
    if derived:
        raise Conflict(
            f"{', '.join(derived)} derive{'s' if len(derived) == 1 else ''} from {model.id}",
            hint=f"delete {'it' if len(derived) == 1 else 'them'} first",
        )
    if model.base is not None:  # its weights are its base's: only its record goes
        return model, DeletePlan(model.backend, model.id, note=f"a name for {model.base}'s weights")
    if not model.installed:
        raise NotInstalled(
            f"{model.id} is not installed", hint="modelctl forget removes the record"
        )
    if model.backend not in backends:
        raise NotFound(
            f"no backend named {model.backend!r}", hint=f"backends: {', '.join(backends)}"
        )
    return model, backends[model.backend].plan_delete(model.ref_for(model.backend))


def remove(
    registry: Registry,
    backends: Mapping[str, Backend],
    ref: str,
    *,
    unload: Callable[[str], Any] | None = None,
) -> DeletePlan:
    """Delete a model's files through its backend; the record stays, marked not installed.

    The record says not installed first, so no request loads the model while its files go;
    then it is unloaded (`unload`: after its requests in flight), then the files go. A delete
    that stops half-way leaves the record saying which files are left (`custom.files_left`)."""
    model, plan = plan_remove(registry, backends, ref)
    if model.base is not None:  # a derived model: its record goes, its base's files stay
        if unload is not None:
            unload(model.id)
        del registry[model.id]
        return plan
    registry.update(model.id, installed=False, status="deleting")
    deleting = False
    try:
        if unload is not None:
            unload(model.id)
        if plan.execute is not None:
            deleting = True
            plan.execute()
    except PartialDelete as exc:
        registry.update(model.id, status="missing", custom={**model.custom, "files_left": exc.left})
        raise
    except BaseException:
        if deleting:  # some files may be gone: never installed again on a guess
            registry.update(model.id, status="missing")
        else:  # nothing was touched
            registry.update(model.id, installed=True, status=model.status)
        raise
    custom = {k: v for k, v in model.custom.items() if k != "files_left"}
    registry.update(model.id, status="available", custom=custom)
    return plan
