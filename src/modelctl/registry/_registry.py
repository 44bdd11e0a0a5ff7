"""`Registry`: every model a user has, as a `MutableMapping[str, Model]` over a `Store`.

>>> reg = Registry.open(tmp / "registry.sqlite")                      # doctest: +SKIP
>>> reg["llama3.2:3b"] = Model(id="llama3.2:3b", backend="ollama")    # doctest: +SKIP
>>> reg.alias("fast", "llama3.2:3b"); reg["fast"].id                  # doctest: +SKIP
'llama3.2:3b'

Reading raw records (`records`, `count`) never loads the Model class: `modelctl list` stays fast.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterable, Iterator, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modelctl.record import naming
from modelctl.record.errors import (
    Conflict,
    ImportFailed,
    InvalidModel,
    InvalidReference,
    ModelNotFound,
    NotFound,
    StoreError,
)
from modelctl.registry import query
from modelctl.store.database import Store, open_store

if TYPE_CHECKING:
    from modelctl.record.model import Model

__all__ = ["EXPORT_FORMAT", "ImportReport", "Registry"]

EXPORT_FORMAT = "modelctl.registry"
EXPORT_VERSION = 1


def _model_class() -> type[Model]:
    from modelctl.record.model import Model  # pydantic loads only when a Model is built

    return Model


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class ImportReport:
    """What an import did (or, with dry_run, would do)."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    replaced: bool = False
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "groups": self.groups,
            "replaced": self.replaced,
            "dry_run": self.dry_run,
        }


Key = str | list[str] | tuple[str, ...] | Callable[["Model"], bool]


class Registry(MutableMapping[str, "Model"]):
    """Models by id; aliases and other references resolve on every read."""

    def __init__(
        self, store: Store, *, schemes: Callable[[], naming.Schemes] | None = None
    ) -> None:
        self.store = store
        # what the backends declare (prefixes, forms, which are local), asked for only when a
        # reference is not an id or alias: the composer passes the registered backends' own
        self._schemes = schemes
        self._cache: dict[str, tuple[tuple[int, int], Model]] = {}

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        schemes: Callable[[], naming.Schemes] | None = None,
    ) -> Registry:
        return cls(open_store(path), schemes=schemes)

    @property
    def schemes(self) -> naming.Schemes:
        """What the backends declare; none (references by id, alias or any backend's name
        only) until the composer says where it comes from."""
        return self._schemes() if self._schemes is not None else naming.NO_SCHEMES

    def schemes_from(self, source: Callable[[], naming.Schemes]) -> None:
        """Where the backends' declarations come from, for a registry opened without them."""
        if self._schemes is None:
            self._schemes = source

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Registry:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Registry({str(self.store.path)!r}, models={len(self)})"

    # ------------------------------------------------------------------ mapping protocol

    def __getitem__(self, key: Key) -> Any:  # Model, or list[Model] for a list or a predicate
        if callable(key):
            return [m for m in self._models(self.store.select_raw()) if key(m)]
        if isinstance(key, list | tuple):
            return [self[k] for k in key]
        model_id = self.resolve(key)
        text = self.store.get_raw(model_id)
        if text is None:  # deleted between resolve and read by another process
            raise ModelNotFound(key)
        return _model_class().model_validate_json(text)

    def __setitem__(self, key: str, value: Model | dict[str, Any]) -> None:
        model_class = _model_class()
        with self.store.transaction():
            target = self._existing_id(key) or key
            if isinstance(value, dict):
                value = model_class.from_dict({**value, "id": target})
            elif not isinstance(value, model_class):
                raise InvalidModel(f"a registry holds Model records, not {type(value).__name__}")
            elif value.id != target:
                value = value.updated(id=target)
            self._write(value)

    def __delitem__(self, key: str) -> None:
        model_id = self.resolve(key)
        if not self.store.delete(model_id):
            raise ModelNotFound(key)

    def __iter__(self) -> Iterator[str]:
        return iter(self.store.ids())

    def __len__(self) -> int:
        return self.store.count()

    def __contains__(self, key: object) -> bool:
        if not isinstance(key, str):
            return False
        return self._existing_id(key) is not None

    # ------------------------------------------------------------------ resolution

    def _existing_id(self, key: str) -> str | None:
        """The id `key` names exactly: an id or an alias."""
        if self.store.count("id = ?", [key]):
            return key
        return self.store.resolve_alias(key)

    def derived_from(self, model_id: str) -> list[str]:
        """The models whose `base` is `model_id` (see ops/derive.py)."""
        return self.ids({"base": model_id})

    def weights(self, model: Model) -> Model:
        """What loads for `model`: itself, or for a derived model its base's record (its
        weights, and how its backend finds them) under the derived model's id, defaults and
        system prompt; being deleted (or missing) when either is."""
        seen = {model.id}
        base = model
        while base.base is not None:
            base = self[base.base]
            if base.id in seen:  # a loop of bases: a hand-edited registry
                raise InvalidReference(f"{model.id}: its bases form a loop")
            seen.add(base.id)
        if base is model:
            return model
        status = next(
            (s for s in ("deleting", "missing") if s in (base.status, model.status)), base.status
        )
        refs = {**base.refs, base.backend: base.ref_for(base.backend)}
        return base.updated(
            id=model.id, refs=refs, defaults=model.defaults, system=model.system,
            custom=model.custom, base=model.base, aliases=[], status=status,
            context_length=model.context_length or base.context_length,
        )  # fmt: skip

    def lookup(self, ref: str) -> Model:
        """`registry[ref]`, remembered until anything in the store changes: the gateway's hot
        path reads the same few records on every request."""
        hit = self._cache.get(ref)
        try:
            stamp = self.store.stamp()
        except StoreError:
            if hit is not None:  # the database is away: what was read last still serves
                return hit[1]
            raise
        if hit is not None and hit[0] == stamp:
            return hit[1]
        model = self[ref]
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[ref] = (stamp, model)
        return model

    def resolve(self, ref: str) -> str:
        """The id of the model `ref` names: an id, an alias, a backend reference or a file path.

        In order: an exact id or alias; `backend:name` or `provider/name` by that backend's
        reference (or the id, if the model is that backend's); any backend's reference equal to
        `ref`; a .gguf path by location; an id or alias that differs only in case.
        """
        if not isinstance(ref, str):
            raise InvalidReference(f"a model reference must be text, not {type(ref).__name__}")
        found = self._existing_id(ref)
        if found is not None:
            return found
        parsed = naming.parse_ref(ref, self.schemes)
        candidates: list[str] = []
        if parsed.backend is not None:
            candidates = self.store.find_by_ref(parsed.backend, parsed.name)
            if not candidates and parsed.explicit:
                named = self._existing_id(parsed.name)
                if named and self.count({"id": named, "backend": parsed.backend}):
                    candidates = [named]
        if not candidates:
            candidates = self.store.find_by_ref(None, ref)
        if not candidates and parsed.is_path:
            candidates = self.store.find_by_location(os.path.abspath(os.path.expanduser(ref)))
        if not candidates:
            candidates = self.store.find_ids_nocase(ref)
        candidates = sorted(set(candidates))
        if len(candidates) == 1:
            return candidates[0]
        if candidates:
            raise InvalidReference(
                f"{ref!r} names several models: {', '.join(candidates)}",
                hint="use one of these ids",
            )
        raise ModelNotFound(ref, suggestions=self.suggest(ref))

    def suggest(self, ref: str, n: int = 3) -> list[str]:
        """Ids and aliases close to `ref`, for "did you mean" messages."""
        names = (
            self.store.ids()
            if len(self) <= 20_000
            else self.store.ids("id LIKE ?", [ref[:3] + "%"])
        )
        pool = names + list(self.store.aliases())
        close = difflib.get_close_matches(ref, pool, n=n, cutoff=0.6)
        lowered = ref.lower()
        close += [name for name in pool if lowered in name.lower() and name not in close]
        return close[:n]

    # ------------------------------------------------------------------ queries

    def records(
        self,
        where: dict[str, Any] | str | None = None,
        *,
        order_by: str | Iterable[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        **criteria: Any,
    ) -> list[dict[str, Any]]:
        """The matching records as stored (JSON-ready dicts), without building Model objects:
        `limit` of them after the first `offset`, in `order_by` order."""
        order = self._order(order_by, limit, offset)
        return self.store.select(*self._where(where, criteria), **order)

    def records_json(
        self,
        where: dict[str, Any] | str | None = None,
        *,
        order_by: str | Iterable[str] | None = None,
        limit: int | None = None,
        offset: int = 0,
        **criteria: Any,
    ) -> list[str]:
        """The matching records as their stored JSON text: the cheapest read there is."""
        order = self._order(order_by, limit, offset)
        return self.store.select_raw(*self._where(where, criteria), **order)

    def query(
        self,
        where: dict[str, Any] | str | None = None,
        *,
        order_by: str | Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[Model]:
        """Models matching a query dict or a --where expression (see `modelctl.registry.query`)."""
        return self.filter(where=where, order_by=order_by, limit=limit)

    def filter(
        self,
        *,
        order_by: str | Iterable[str] | None = None,
        limit: int | None = None,
        where: dict[str, Any] | str | None = None,
        **criteria: Any,
    ) -> list[Model]:
        """Models matching every given filter: backend, task, size, tags, group, installed, …"""
        return self._models(self.records_json(where, order_by=order_by, limit=limit, **criteria))

    def count(self, where: dict[str, Any] | str | None = None, **criteria: Any) -> int:
        return self.store.count(*self._where(where, criteria))

    def ids(
        self,
        where: dict[str, Any] | str | None = None,
        *,
        order_by: str | Iterable[str] | None = None,
        limit: int | None = None,
        **criteria: Any,
    ) -> list[str]:
        return self.store.ids(*self._where(where, criteria), **self._order(order_by, limit))

    def _where(
        self, where: dict[str, Any] | str | None, given: dict[str, Any]
    ) -> tuple[str, list[Any]]:
        parts = [query.parse_where(where) if isinstance(where, str) else where or {}]
        local = self.schemes.local if given.get("local") is not None else ()
        parts.append(query.criteria(local, **given))
        parts = [p for p in parts if p]
        return query.compile_query(
            parts[0] if len(parts) == 1 else {"$and": parts} if parts else {},
            self.store.dialect,
        )

    def _order(
        self, order_by: str | Iterable[str] | None, limit: int | None, offset: int = 0
    ) -> dict[str, Any]:
        """The store's ordering and paging options, checked."""
        if limit is not None and limit < 0:
            raise query.InvalidQuery(f"limit must be 0 or more, not {limit}")
        if offset < 0:
            raise query.InvalidQuery(f"offset must be 0 or more, not {offset}")
        order = query.compile_order(order_by, self.store.dialect)
        return {"order": order, "limit": limit, "offset": offset}

    @staticmethod
    def _models(texts: Iterable[str]) -> list[Model]:
        validate = _model_class().model_validate_json
        return [validate(text) for text in texts]

    # ------------------------------------------------------------------ writing

    def _write(self, model: Model, *, stamp: bool = True) -> Model:
        """Check ids against aliases, stamp times, store. Call inside a transaction."""
        owner = self.store.resolve_alias(model.id)
        if owner is not None and owner != model.id:
            raise Conflict(f"{model.id!r} is already an alias of model {owner!r}")
        for alias in model.aliases:
            if alias != model.id and self.store.count("id = ?", [alias]):
                raise Conflict(f"alias {alias!r} is already the id of another model")
        if stamp:
            model = self._stamp(model)
        self.store.put(model.to_dict())
        return model

    def _stamp(self, model: Model) -> Model:
        """Set updated_at to now, and created_at to the stored one (or now, for a new model)."""
        existing = self.store.get(model.id)
        now = _now()
        created = existing.get("created_at") if existing else None
        return model.updated(created_at=created or now, updated_at=now)

    def add(self, model: Model | dict[str, Any], *, replace: bool = False) -> Model:
        """Register a model; an id or alias that exists is a Conflict unless `replace`."""
        model_class = _model_class()
        if isinstance(model, dict):
            model = model_class.from_dict(model)
        with self.store.transaction():
            taken = self._existing_id(model.id)
            if taken is not None and not replace:
                raise Conflict(
                    f"model {model.id!r} is already registered",
                    hint="pass replace=True (--replace) to overwrite it",
                )
            return self._write(model)

    def update(self, ref: str, **changes: Any) -> Model:
        """Apply field changes to a model atomically (read, change, write in one transaction)."""
        if "id" in changes:
            raise InvalidModel("the id of a registered model cannot change", field="id")
        return self._edit(ref, lambda m: changes)

    def _edit(self, ref: str, change: Callable[[Model], dict[str, Any]]) -> Model:
        with self.store.transaction():
            current = self[ref]
            return self._write(current.updated(**change(current)))

    def tag(self, ref: str, *tags: str) -> Model:
        return self._edit(ref, lambda m: {"tags": [*m.tags, *tags]})

    def untag(self, ref: str, *tags: str) -> Model:
        return self._edit(ref, lambda m: {"tags": [t for t in m.tags if t not in tags]})

    def alias(self, alias: str, ref: str) -> Model:
        """Make `alias` another name of the model `ref` names (moving it if it named another)."""
        with self.store.transaction():
            target = self.resolve(ref)
            previous = self.store.resolve_alias(alias)
            if previous is not None and previous != target:
                self._edit(previous, lambda m: {"aliases": [a for a in m.aliases if a != alias]})
            return self._edit(target, lambda m: {"aliases": [*m.aliases, alias]})

    def unalias(self, alias: str) -> Model:
        with self.store.transaction():
            owner = self.store.resolve_alias(alias)
            if owner is None:
                close = difflib.get_close_matches(alias, list(self.aliases()), n=3)
                hint = f"did you mean {', '.join(map(repr, close))}?" if close else "modelctl alias"
                raise NotFound(f"no alias named {alias!r}", hint=hint)
            return self._edit(owner, lambda m: {"aliases": [a for a in m.aliases if a != alias]})

    def aliases(self) -> dict[str, str]:
        """Every alias and the id it names."""
        return self.store.aliases()

    def set_custom(self, ref: str, key: str, value: Any) -> Model:
        """Set one custom metadata value (any JSON value)."""
        return self._edit(ref, lambda m: {"custom": {**m.custom, key: value}})

    def unset_custom(self, ref: str, key: str) -> Model:
        def change(m: Model) -> dict[str, Any]:
            if key not in m.custom:
                raise InvalidModel(f"model {m.id!r} has no custom key {key!r}", field="custom")
            return {"custom": {k: v for k, v in m.custom.items() if k != key}}

        return self._edit(ref, change)

    def touch(self, ref: str) -> Model:
        """Record that a model was just used."""
        return self._edit(ref, lambda m: {"last_used": _now()})

    # ------------------------------------------------------------------ groups

    def group(self, name: str, *refs: str, description: str | None = None) -> list[str]:
        """Create group `name` if needed and add models to it; returns its members."""
        _check_group_name(name)
        with self.store.transaction():
            ids = [self.resolve(r) for r in refs]
            self.store.put_group(name, description=description, members=ids)
            return self.store.groups()[name]["models"]

    def ungroup(self, name: str, *refs: str) -> list[str]:
        """Remove models from a group; returns its members."""
        with self.store.transaction():
            self._group_exists(name)
            self.store.remove_from_group(name, [self.resolve(r) for r in refs])
            return self.store.groups()[name]["models"]

    def delete_group(self, name: str) -> None:
        with self.store.transaction():
            self._group_exists(name)
            self.store.delete_group(name)

    def groups(self) -> dict[str, dict[str, Any]]:
        """name → {"description", "created_at", "models"}."""
        return self.store.groups()

    def groups_of(self, ref: str) -> list[str]:
        return self.store.groups_of(self.resolve(ref))

    def _group_exists(self, name: str) -> None:
        groups = self.store.groups()
        if name not in groups:
            close = difflib.get_close_matches(name, list(groups), n=3)
            hint = (
                f"did you mean {', '.join(map(repr, close))}?" if close else "modelctl group list"
            )
            raise NotFound(f"no group named {name!r}", hint=hint)

    # ------------------------------------------------------------------ export and import

    def export_data(self, where: dict[str, Any] | str | None = None) -> dict[str, Any]:
        """The registry (or the models a query selects) as one JSON-ready document."""
        models = self.records(where)
        chosen = {m["id"] for m in models}
        groups = {
            name: {**g, "models": [m for m in g["models"] if m in chosen]}
            for name, g in self.store.groups().items()
        }
        return {
            "format": EXPORT_FORMAT,
            "version": EXPORT_VERSION,
            "exported_at": _now().isoformat().replace("+00:00", "Z"),
            "models": models,
            "groups": groups,
        }

    def import_data(
        self, data: Any, *, replace: bool = False, dry_run: bool = False
    ) -> ImportReport:
        """Import an export: everything is validated first, then written in one transaction.

        A bad record, a duplicate id, an alias clash or a group naming an unknown model rejects
        the whole import with ImportFailed naming the record and the field; nothing is written.
        `replace` empties the registry first; otherwise records with the same id are replaced.
        """
        models, groups = _parse_export(data)
        try:
            with self.store.transaction():
                report = self._import(models, groups, replace=replace, dry_run=dry_run)
                if dry_run:
                    raise _DryRun(report)  # rolls back everything the block wrote
        except _DryRun as done:
            return done.report
        return report

    def _import(
        self,
        models: list[Model],
        groups: dict[str, dict[str, Any]],
        *,
        replace: bool,
        dry_run: bool,
    ) -> ImportReport:
        existing = set(self.store.ids())
        if replace:
            self.store.clear()
        known = (set() if replace else existing) | {m.id for m in models}
        for name, group in groups.items():
            missing = [m for m in group["models"] if m not in known]
            if missing:
                raise ImportFailed(
                    f"group {name!r} names models that are neither in the file nor in the "
                    f"registry: {', '.join(missing)}",
                    field="groups",
                )
        self._check_import_names(models, existing=set() if replace else existing)
        stamped = [m if m.created_at is not None else self._stamp(m) for m in models]
        try:
            self.store.put_many(m.to_dict() for m in stamped)
        except Conflict as exc:  # a clash the checks above should have named
            raise ImportFailed(exc.message, field="aliases") from None
        added = [m.id for m in models if m.id not in existing]
        updated = [m.id for m in models if m.id in existing]
        for name, group in groups.items():
            self.store.put_group(
                name,
                description=group.get("description"),
                created_at=group.get("created_at"),
                members=group["models"],
            )
        return ImportReport(added, updated, sorted(groups), replace, dry_run)

    def _check_import_names(self, models: list[Model], *, existing: set[str]) -> None:
        """After the import, every id and alias must name one model: check against what stays."""
        incoming = {m.id for m in models}
        staying = {  # aliases of registered models that the import does not replace
            alias: owner
            for alias, owner in self.aliases().items()
            if owner in existing and owner not in incoming
        }
        ids_after = existing | incoming
        for index, model in enumerate(models):
            clash = None
            if model.id in staying:
                clash = f"{model.id!r} is already an alias of model {staying[model.id]!r}"
            for alias in model.aliases:
                if alias in ids_after and alias != model.id:
                    clash = f"alias {alias!r} is already the id of another model"
                elif alias in staying:
                    clash = f"alias {alias!r} already names model {staying[alias]!r}"
            if clash:
                raise ImportFailed(
                    f"record {index} ({model.id!r}): {clash}",
                    record=index,
                    model_id=model.id,
                    field="aliases",
                )


class _DryRun(Exception):
    def __init__(self, report: ImportReport) -> None:
        self.report = report


def _check_group_name(name: str) -> None:
    if not isinstance(name, str) or not name or len(name) > 128 or any(c.isspace() for c in name):
        raise InvalidModel(f"group name {name!r} must be 1-128 characters without spaces")


def _parse_export(data: Any) -> tuple[list[Model], dict[str, dict[str, Any]]]:
    """Validate a whole export document before anything is written."""
    model_class = _model_class()
    if isinstance(data, list):  # a bare list of records is accepted too
        data = {"format": EXPORT_FORMAT, "version": EXPORT_VERSION, "models": data}
    if not isinstance(data, dict):
        raise ImportFailed("an import is a JSON object with a 'models' list")
    if data.get("format", EXPORT_FORMAT) != EXPORT_FORMAT:
        raise ImportFailed(f"not a modelctl registry export (format {data.get('format')!r})")
    version = data.get("version", EXPORT_VERSION)
    if not isinstance(version, int) or version > EXPORT_VERSION:
        raise ImportFailed(
            f"export version {version!r} is newer than this modelctl reads ({EXPORT_VERSION})",
            hint="upgrade modelctl",
        )
    records = data.get("models")
    if not isinstance(records, list):
        raise ImportFailed("'models' must be a list of model records", field="models")
    models: list[Model] = []
    seen: dict[str, int] = {}
    names: dict[str, str] = {}  # id or alias → the model that uses it
    for index, record in enumerate(records):
        label = record.get("id") if isinstance(record, dict) else None
        context = f"record {index}" + (f" ({label!r})" if isinstance(label, str) else "")
        try:
            model = model_class.from_dict(record, context=context)
        except InvalidModel as exc:
            raise ImportFailed(
                exc.message,
                record=index,
                model_id=label if isinstance(label, str) else None,
                field=exc.field,
            ) from None
        if model.id in seen:
            raise ImportFailed(
                f"{context}: id {model.id!r} is also record {seen[model.id]}",
                record=index,
                model_id=model.id,
                field="id",
            )
        seen[model.id] = index
        for name in [model.id, *model.aliases]:
            if name in names and names[name] != model.id:
                raise ImportFailed(
                    f"{context}: {name!r} is already used by model {names[name]!r}",
                    record=index,
                    model_id=model.id,
                    field="aliases",
                )
            names[name] = model.id
        models.append(model)
    groups = data.get("groups") or {}
    if not isinstance(groups, dict):
        raise ImportFailed("'groups' must map group names to groups", field="groups")
    parsed: dict[str, dict[str, Any]] = {}
    for name, group in groups.items():
        members = group.get("models") if isinstance(group, dict) else group
        if not isinstance(members, list) or not all(isinstance(m, str) for m in members):
            raise ImportFailed(f"group {name!r} must list model ids", field="groups")
        try:
            _check_group_name(name)
        except InvalidModel as exc:
            raise ImportFailed(exc.message, field="groups") from None
        info = group if isinstance(group, dict) else {}
        parsed[name] = {
            "description": info.get("description"),
            "created_at": info.get("created_at"),
            "models": members,
        }
    return models, parsed
