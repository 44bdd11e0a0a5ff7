"""Backends: where models live and run, behind one interface.

Every backend, built-in or third-party, registers in the entry-point group `modelctl.backends`
(see pyproject.toml) and implements `Backend`: `status()` and `discover()` always; `install()`,
`plan_delete()` and `load()` where they apply. A backend says what it is (`kind()`: local or
remote, what it can do, which runtimes it offers, the prefixes and reference forms it answers
to), and the core asks it instead of testing names. A backend whose optional dependency is
missing is listed as unavailable with the command that installs it; it never slows down
`import modelctl`.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from modelctl.record import naming
from modelctl.record.errors import BackendError, NotSupported, PartialDelete, UnsafePath

if TYPE_CHECKING:
    from modelctl.config import Settings
    from modelctl.record.model import Model

__all__ = [
    "Backend",
    "BackendError",
    "BackendKind",
    "BackendStatus",
    "DeletePlan",
    "Handle",
    "NotSupported",
    "Progress",
    "ProgressFn",
    "UnsafePath",
    "in_thread",
    "inside",
    "kind_of",
    "response",
    "schemes",
    "to_the_end",
    "unlink_inside",
]


@dataclass(frozen=True, slots=True)
class BackendKind:
    """What a backend is, as every interface asks it: never by testing its name."""

    name: str
    local: bool  # its models run on this machine: their memory counts here
    can_install: bool
    can_delete: bool
    can_load: bool  # modelctl can load its models and send them requests
    has_server: bool  # it has its own OpenAI-compatible server that clients can reach
    runtimes: tuple[str, ...]  # what runs its models (llama.cpp, transformers, a daemon, an API)
    prefixes: tuple[str, ...]  # what a user may write before a name: `hf:Org/Repo`
    providers: tuple[str, ...]  # providers written `provider/model` that it serves
    forms: tuple[str, ...]  # reference forms it takes when none is written (path, repo, tag)
    catalog_key: str  # the key of its references in the catalog
    model_format: str | None  # the file format of its models (gguf), where there is one
    install_rank: int  # among backends that can pull a catalog model, the lowest is tried first

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BackendStatus:
    """What `modelctl backends` shows for one backend."""

    name: str
    available: bool
    version: str | None = None
    url: str | None = None
    models: int | None = None
    error: str | None = None
    hint: str | None = None  # what to do: start the daemon, set a key, install a package

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Progress:
    """One step of an install: what is happening, and bytes done of bytes total if known."""

    status: str
    completed: int | None = None
    total: int | None = None


ProgressFn = Callable[[Progress], None]


@dataclass(frozen=True, slots=True)
class DeletePlan:
    """What a delete would remove: built first, shown with --dry-run, then executed."""

    backend: str
    ref: str
    paths: tuple[str, ...] = ()
    bytes_freed: int = 0
    note: str | None = None
    execute: Callable[[], None] | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "ref": self.ref,
            "paths": list(self.paths),
            "bytes_freed": self.bytes_freed,
            "note": self.note,
        }


class Handle:
    """A loaded model. Requests and answers are OpenAI-shaped for every runtime:
    `chat(messages)` returns a `chat.completion` dict, or with stream=True an iterator of
    `chat.completion.chunk` dicts; `complete(prompt)` likewise with `text_completion`."""

    model_id: str
    device: str = "cpu"  # cpu | gpu | remote
    memory: int = 0  # bytes the load added to this process, as measured
    # requests it takes at once; the gateway queues the rest on the event loop (never in a
    # worker thread). None: no limit here, the server behind it queues (a daemon, an API).
    parallel: int | None = 1
    # seconds the scheduler keeps it loaded while idle (-1 forever), kept up to date by the
    # scheduler: a runtime whose daemon has a timer of its own sends it with every request
    keep_alive: float | None = None
    # load options that change what the loaded model can do (a context length, embeddings): a
    # request that asks for another value reloads it
    reloads_for: tuple[str, ...] = ()

    def chat(self, messages: list[dict[str, Any]], *, stream: bool = False, **options: Any) -> Any:
        raise NotSupported(f"{self.model_id} cannot chat")

    def complete(self, prompt: str, *, stream: bool = False, **options: Any) -> Any:
        raise NotSupported(f"{self.model_id} cannot complete text")

    def embed(self, inputs: list[str]) -> list[list[float]]:
        raise NotSupported(f"{self.model_id} cannot embed")

    def close(self) -> None:
        """Free the model's memory."""

    # The gateway's async twins: the sync method in a worker thread (so an in-process runtime
    # never blocks the event loop), unless a runtime does better (HTTP runtimes await I/O).

    async def achat(
        self, messages: list[dict[str, Any]], *, stream: bool = False, **options: Any
    ) -> Any:
        return await in_thread(self.chat, messages, stream=stream, **options)

    async def acomplete(self, prompt: str, *, stream: bool = False, **options: Any) -> Any:
        return await in_thread(self.complete, prompt, stream=stream, **options)

    async def aembed(self, inputs: list[str]) -> list[list[float]]:
        return await in_thread(self.embed, inputs)


async def to_the_end(
    function: Callable[..., Any],
    *args: Any,
    undo: Callable[[Any], Any] | None = None,
    cancel: Callable[[], Any] | None = None,
) -> Any:
    """`function(*args)` in a worker thread, seen through to its end: a task cancelled while it
    runs (a client that went away) calls `cancel` (which may cut the work short), waits for
    the thread to finish, then `undo`es what it returned, then is cancelled. A cancelled await
    would otherwise leave the thread running on, holding a runtime's lock or a slot that
    nobody gives back."""
    import asyncio

    from anyio import CancelScope, to_thread

    running = asyncio.ensure_future(to_thread.run_sync(function, *args))
    try:
        return await asyncio.shield(running)
    except asyncio.CancelledError:
        if cancel is not None:
            cancel()
        with CancelScope(shield=True):
            try:
                result = await running
            except BaseException:
                raise asyncio.CancelledError from None
            if undo is not None:
                undo(result)
        raise


async def in_thread(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """`function(*args, **kwargs)` in a worker thread; an iterator it returns is iterated there
    too, and comes back as an async iterator."""
    from functools import partial

    close = lambda result: getattr(result, "close", lambda: None)()  # noqa: E731
    result = await to_the_end(partial(function, *args, **kwargs), undo=close)
    if isinstance(result, Iterator) and not isinstance(result, dict | list | str):
        return _iterate_in_thread(result)
    return result


async def _iterate_in_thread(iterator: Iterator[Any]) -> AsyncIterator[Any]:
    from anyio import CancelScope, to_thread

    done = object()
    try:
        while (item := await to_the_end(next, iterator, done)) is not done:
            yield item
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            # the runtime lets go of the model even when the client went away and this task
            # is being cancelled: unshielded, the close would be cancelled before it ran
            with CancelScope(shield=True):
                await to_thread.run_sync(close)


class Backend(ABC):
    """One place models live. Subclasses set `name` and implement what applies."""

    name: ClassVar[str]
    requires: ClassVar[tuple[str, ...]] = ()  # importable modules this backend needs
    install_hint: ClassVar[str | None] = None  # how to get them
    local: ClassVar[bool] = True  # its models run on this machine
    runtimes: ClassVar[tuple[str, ...]] = ()  # what runs its models, in words
    prefixes: ClassVar[tuple[str, ...]] = ()  # beside its own name: `hf` for huggingface
    providers: ClassVar[tuple[str, ...]] = ()  # `provider/model` spellings it serves
    forms: ClassVar[tuple[str, ...]] = ()  # reference forms it claims (see record.naming)
    catalog_key: ClassVar[str | None] = None  # its references' key in the catalog (its name)
    model_format: ClassVar[str | None] = None  # gguf, safetensors, …
    install_rank: ClassVar[int] = 100  # which backend a catalog model is pulled with: lowest

    def __init__(self, settings: Settings, *, instance: str | None = None) -> None:
        self.settings = settings
        self.instance = instance or self.name

    @classmethod
    def instances(cls, settings: Settings) -> list[Backend]:
        """The configured instances (one, unless a backend serves several endpoints)."""
        return [cls(settings)]

    def kind(self) -> BackendKind:
        """What this backend is; read from its class and what it overrides, no I/O."""
        return kind_of(type(self), self.instance, self)

    def own_name(self, ref: str) -> str:
        """`ref` without a prefix of this backend's own (`hf:Org/Repo` → `Org/Repo`)."""
        head, sep, rest = ref.strip().partition(":")
        if sep and rest.strip() and head.lower() in {self.instance, *self.prefixes}:
            return rest.strip()
        return ref.strip()

    @abstractmethod
    def status(self) -> BackendStatus:
        """Reachable or not, version, model count; never raises for an unreachable backend."""

    @abstractmethod
    def discover(self) -> list[Model]:
        """The models this backend has (or, for a provider, offers), as Model records."""

    def install(self, ref: str, progress: ProgressFn | None = None, **options: Any) -> Model:
        raise NotSupported(f"{self.instance} cannot install models")

    def plan_delete(self, ref: str) -> DeletePlan:
        raise NotSupported(f"{self.instance} cannot delete models")

    def download_size(self, ref: str, **options: Any) -> int | None:
        """Bytes `install(ref, **options)` would download, where the source lists them (a hub
        file's size, a registry manifest); None when unknown. Asked before a pull, to check
        the fit."""
        return None

    def load(self, model: Model, **options: Any) -> Handle:
        """Make `model` ready to answer (into memory, for an in-process runtime)."""
        raise NotSupported(f"loading models through {self.instance} is not supported yet")

    def server(self) -> tuple[str, str, str] | None:
        """This backend's own server, for clients that talk to it directly: its
        OpenAI-compatible base URL, its root, and the key to send. None for in-process ones."""
        return None

    async def aclose(self) -> None:  # noqa: B027 (a hook: most backends open nothing)
        """Close what the gateway's async requests opened (HTTP sessions)."""

    def delete(self, ref: str) -> DeletePlan:
        plan = self.plan_delete(ref)
        if plan.execute is not None:
            plan.execute()
        return plan

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.instance}>"


def kind_of(cls: type[Backend], instance: str, backend: Backend | None = None) -> BackendKind:
    """The kind of a backend class's instance (`backend`, if one could be made)."""
    # its own name is a prefix for the instance that bears it; an endpoint named in the
    # settings is reached by its records, never by a prefix that could shadow a model's name
    own = (cls.name,) if instance == cls.name else ()
    declared = backend.prefixes if backend is not None else cls.prefixes
    return BackendKind(
        name=instance,
        local=cls.local,
        can_install=cls.install is not Backend.install,
        can_delete=cls.plan_delete is not Backend.plan_delete,
        can_load=cls.load is not Backend.load,
        has_server=backend is not None and backend.server() is not None,
        runtimes=cls.runtimes,
        prefixes=(*own, *declared),
        providers=backend.providers if backend is not None else cls.providers,
        forms=cls.forms,
        catalog_key=cls.catalog_key or cls.name,
        model_format=cls.model_format,
        install_rank=cls.install_rank,
    )


def schemes(kinds: Iterable[BackendKind]) -> naming.Schemes:
    """What the layers below the backends need to know of them (each backend's `kind()`): the
    prefixes, providers and reference forms each declares, and which are local. The first
    backend to claim one keeps it (backends come in name order)."""
    prefixes: dict[str, str] = {}
    providers: dict[str, str] = {}
    forms: dict[str, str] = {}
    local: set[str] = set()
    for kind in kinds:
        for prefix in kind.prefixes:
            prefixes.setdefault(prefix.lower(), kind.name)
        for provider in kind.providers:
            providers.setdefault(provider.lower(), kind.name)
        for form in kind.forms:
            forms.setdefault(form, kind.name)
        if kind.local:
            local.add(kind.name)
    return naming.Schemes(prefixes, providers, forms, frozenset(local))


def unlink_inside(root: str | os.PathLike[str], paths: Iterable[str | os.PathLike[str]]) -> None:
    """Delete `paths` (each within `root`) through the folder's own descriptor, following no
    link on the way: a link is deleted as a link, never its target, and a folder swapped for a
    link meanwhile is refused. Everything that can go goes; PartialDelete names what is left."""
    base = Path(root).resolve()
    left: list[str] = []
    for path in paths:
        full = Path(os.path.abspath(path))
        try:
            parts = (full.parent.resolve() / full.name).relative_to(base).parts
        except ValueError:
            left.append(f"{path} (not inside {base})")
            continue
        if not parts:
            left.append(f"{path} (the store itself)")
            continue
        try:
            _unlink_at(base, parts)
        except FileNotFoundError:
            continue  # gone already: what a delete wants
        except OSError as exc:
            left.append(f"{path} ({exc.strerror or exc})")
    if left:
        raise PartialDelete(
            f"could not delete {len(left)} file{'s' if len(left) > 1 else ''}: {', '.join(left)}",
            left=left,
            hint="the registry marks the model not installed; remove what is left yourself",
        )


def _unlink_at(base: Path, parts: tuple[str, ...]) -> None:
    nofollow = getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(base, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        for name in parts[:-1]:
            inner = os.open(name, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | nofollow, dir_fd=fd)
            os.close(fd)
            fd = inner
        os.unlink(parts[-1], dir_fd=fd)
    finally:
        os.close(fd)


def response(
    model_id: str, kind: str, choice: dict[str, Any], usage: dict[str, int] | None = None
) -> dict[str, Any]:
    """An OpenAI response envelope (`chat.completion`, `…chunk`, `text_completion`) around one
    choice: the shape every runtime answers in."""
    import time

    prefix = "chatcmpl" if kind.startswith("chat") else "cmpl"
    out: dict[str, Any] = {
        "id": f"{prefix}-{model_id}",
        "object": kind,
        "created": int(time.time()),
    }
    out |= {"model": model_id, "choices": [{"index": 0, **choice}]}
    if usage is not None:
        out["usage"] = usage
    return out


def inside(
    root: str | os.PathLike[str], path: str | os.PathLike[str], *, follow: bool = True
) -> Path:
    """`path` resolved (symlinks followed), if it lies strictly within `root`; else UnsafePath.
    With `follow=False` a link at the end stays the link (what a delete removes): only the
    folders on the way are resolved."""
    base = Path(root).resolve()
    target = Path(os.path.abspath(os.path.join(base, path)))
    if not follow and target.is_symlink():
        resolved = target.parent.resolve() / target.name
    else:
        resolved = target.resolve()
    for candidate in (target, resolved):  # the store itself is not a model either
        if base not in candidate.parents:
            raise UnsafePath(
                f"{str(path)!r} leads outside {base}",
                hint="modelctl only deletes inside a backend's own store",
            )
    return resolved
