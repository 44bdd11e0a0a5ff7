"""`ModelManager`: the facade every interface (CLI, server, connectors) goes through.

Thin by design: it composes the parts (settings, store and registry, catalog, backends,
scheduler, usage ledger) and hands each operation the narrow parts it uses; it holds no logic
of its own. Nothing below it imports it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modelctl.config import Settings
from modelctl.registry import ImportReport, Registry

if TYPE_CHECKING:
    from collections.abc import Callable

    from modelctl.backends import Backend, BackendKind, BackendStatus, DeletePlan
    from modelctl.fit.catalog import Catalog
    from modelctl.fit.estimate import Compatibility, Recommendation
    from modelctl.fit.hardware import SystemInfo
    from modelctl.ops.doctor import Finding
    from modelctl.ops.servers import ServerInfo
    from modelctl.ops.sync import SyncReport
    from modelctl.record.model import Model
    from modelctl.record.naming import ModelRef, Schemes
    from modelctl.runtime.events import EventBus
    from modelctl.runtime.requests import Requests
    from modelctl.runtime.scheduler import Scheduler
    from modelctl.store.ledger import Ledger, Usage

__all__ = ["ModelManager"]


class ModelManager:
    """`ModelManager(home=...)`: settings, and the registry they point at, opened on first use."""

    def __init__(
        self,
        home: str | os.PathLike[str] | None = None,
        *,
        settings: Settings | None = None,
        registry: Registry | None = None,
    ) -> None:
        self.settings = settings or Settings.load(home=home)
        self._registry = registry
        if registry is not None:
            registry.schemes_from(lambda: self.schemes)
        self._catalog: Catalog | None = None
        self._backends: dict[str, Backend] | None = None
        self._schemes: Schemes | None = None
        self._scheduler: Scheduler | None = None
        self._requests: Requests | None = None
        self._usage: Ledger | None = None
        self._servers: list[ServerInfo] = []
        self._sharing: Callable[[], None] | None = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry.open(self.settings.database, schemes=lambda: self.schemes)
        return self._registry

    @property
    def home(self) -> Path:
        return self.settings.home

    @property
    def catalog(self) -> Catalog:
        """The built-in catalog and the user's own files in `<home>/catalog/`."""
        if self._catalog is None:
            from modelctl.fit.catalog import Catalog

            self._catalog = Catalog.load([self.home / "catalog"], schemes=self.schemes)
        return self._catalog

    def close(self) -> None:
        self.stop_sharing_events()
        for server in list(self._servers):  # stop_server takes each off the list
            self.stop_server(server)
        if self._scheduler is not None:
            self._scheduler.close()
        if self._usage is not None:
            self._usage.close()
        if self._registry is not None:
            self._registry.close()

    async def aclose(self) -> None:
        """Close the async HTTP sessions the gateway opened (`close` does the rest)."""
        for backend in (self._backends or {}).values():
            await backend.aclose()

    def share_events(self) -> bool:
        """On a database that many processes share (PostgreSQL), send this process's events
        to the others and theirs to this one's bus (what the event stream and a dashboard
        show): a model loaded or tagged on one machine shows on every one. Returns whether it
        does; `stop_sharing_events` (and `close`) ends it."""
        store = self.registry.store
        if self._sharing is not None or not hasattr(store, "notifier"):
            return self._sharing is not None
        import uuid

        bus = self.events

        def receive(message: dict[str, Any]) -> None:  # another process's event, here
            data = message.get("data")
            data = {str(k): v for k, v in data.items()} if isinstance(data, dict) else {}
            bus.emit(str(message.get("name")), **{**data, "remote": message.get("origin")})

        notifier = store.notifier(receive, origin=uuid.uuid4().hex)
        notifier.listening.wait(5)  # what the others send from now on reaches this process

        def share(event: Any) -> None:  # this process's own events, to the others
            if "remote" not in event.data:
                notifier.publish({"name": event.name, "data": event.data})

        unsubscribe = bus.on("*", share)

        def stop() -> None:
            unsubscribe()
            notifier.close()

        self._sharing = stop
        return True

    def stop_sharing_events(self) -> None:
        if self._sharing is not None:
            self._sharing()
            self._sharing = None

    def __enter__(self) -> ModelManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"ModelManager(home={str(self.home)!r})"

    # The reference systems' names, each one call into the registry.

    def list_models(self, where: dict[str, Any] | str | None = None, **filters: Any) -> list[Model]:
        """Models matching filters (backend, task, size, tags, group, installed, …) and a query."""
        return self.registry.filter(where=where, **filters)

    def get_model_info(self, ref: str) -> Model:
        return self.registry[ref]

    def add_model(self, model: Model | dict[str, Any], *, replace: bool = False) -> Model:
        return self.registry.add(model, replace=replace)

    def export_metadata(self, path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
        """The registry as a JSON-ready document; written atomically to `path` when given."""
        from modelctl.registry import transfer

        if path is None:
            return self.registry.export_data()
        return transfer.export_file(self.registry, path)

    def import_metadata(
        self, source: str | os.PathLike[str] | dict[str, Any] | list[Any], **options: Any
    ) -> ImportReport:
        """Import an export document, or the file that holds one (all or nothing)."""
        from modelctl.registry import transfer

        if isinstance(source, dict | list):
            return self.registry.import_data(source, **options)
        return transfer.import_file(self.registry, source, **options)

    # Fit: the machine, and what runs on it.

    def system_info(self) -> SystemInfo:
        from modelctl.fit.hardware import system_info

        return system_info([self.home, *self.settings.model_dirs])

    def check_compatibility(
        self,
        model: str,
        memory: int | str | None = None,
        *,
        context: int | None = None,
        quantization: str | None = None,
        **options: Any,
    ) -> Compatibility:
        """Does `model` (registered, in the catalog, or a .gguf path) fit in `memory`, or here?"""
        from modelctl.fit import estimate as fit
        from modelctl.record import units

        facts, name = fit.facts_for(
            model, catalog=self.catalog, registry=self.registry, quantization=quantization
        )
        budget = units.parse_bytes(memory) if memory is not None else None
        system = None if budget is not None else self.system_info()
        return fit.check_compatibility(
            facts, memory=budget, system=system, context=context, name=name, **options
        )

    def recommend_model(
        self,
        memory: int | str | None = None,
        priority: str = "balanced",
        *,
        task: str | None = "chat",
        context: int | None = None,
    ) -> Recommendation:
        """The best catalog model for this memory (or this machine), priority and task."""
        from modelctl.fit import estimate as fit
        from modelctl.record import units

        budget = units.parse_bytes(memory) if memory is not None else None
        system = None if budget is not None else self.system_info()
        return fit.recommend(
            self.catalog, memory=budget, system=system, priority=priority, task=task,
            context=context, measured=self._measured_speeds(),
        )  # fmt: skip

    def _measured_speeds(self) -> dict[str, float]:
        """Catalog id → generation tokens/s measured here, from the newest profiles."""
        speeds: dict[str, float] = {}
        for model_id, found in self.profiles().items():
            speed = found.get("generation_tokens_per_second")
            record = self.registry.store.get(model_id)
            if not speed or record is None:
                continue
            entry = (record.get("custom") or {}).get("catalog") or model_id
            if self.catalog.find(entry) is not None:
                speeds[self.catalog.find(entry).id] = speed
        return speeds

    # Backends: where models live.

    @property
    def backends(self) -> dict[str, Backend]:
        """Every registered backend instance by name (entry-point group `modelctl.backends`)."""
        if self._backends is None:
            from modelctl.backends._loader import load_backends

            self._backends = load_backends(self.settings)
        return self._backends

    @property
    def schemes(self) -> Schemes:
        """What the registered backends declare: prefixes, reference forms, which are local."""
        if self._schemes is None:
            from modelctl.backends import schemes

            self._schemes = schemes(self.backend_kinds().values())
        return self._schemes

    def parse_ref(self, text: str) -> ModelRef:
        """A reference read with what the registered backends declare (`hf:`, `openai/…`)."""
        from modelctl.record.naming import parse_ref

        return parse_ref(text, self.schemes)

    def backend_kinds(self) -> dict[str, BackendKind]:
        """What each backend is (local, what it can do, its runtimes), by name."""
        return {name: backend.kind() for name, backend in self.backends.items()}

    def backend(self, name: str) -> Backend:
        from modelctl.record.errors import NotFound

        if name not in self.backends:
            raise NotFound(
                f"no backend named {name!r}", hint=f"backends: {', '.join(self.backends)}"
            )
        return self.backends[name]

    def check_backend_status(self, name: str | None = None) -> list[BackendStatus]:
        names = [name] if name else list(self.backends)
        return [self.backend(n).status() for n in names]

    def sync(self, only: list[str] | None = None) -> SyncReport:
        from modelctl.ops.sync import sync

        return sync(self.registry, self.backends, only=only)

    def install_model(self, ref: str, **options: Any) -> Model:
        """Pull through the backend the reference (or the catalog) names; checks the fit first
        (`force=True` skips it); `progress=` receives each step."""
        from modelctl.ops.install import pull

        return pull(ref, registry=self.registry, catalog=self.catalog, backends=self.backends,
                    system=self.system_info, **options)  # fmt: skip

    def delete_model(self, ref: str, *, dry_run: bool = False) -> DeletePlan:
        from modelctl.ops.install import plan_remove, remove

        if dry_run:
            return plan_remove(self.registry, self.backends, ref)[1]
        return remove(self.registry, self.backends, ref, unload=self.unload)

    def derive(
        self,
        source: str,
        name: str,
        *,
        system: str | None = None,
        defaults: dict[str, Any] | None = None,
        template: str | None = None,
        context: int | None = None,
    ) -> Model:
        """Register `name`: `source`'s weights under a name of its own, with its own defaults,
        system prompt, chat template and context length (Ollama's `create` FROM a model, and
        its `copy`)."""
        from modelctl.ops.derive import derive

        return derive(
            self.registry, source, name, system=system, defaults=defaults, template=template,
            context=context,
        )  # fmt: skip

    def create_from_weights(
        self, name: str, weights: str | os.PathLike[str], **fields: Any
    ) -> Model:
        """Register `name` from a GGUF file (an uploaded blob), linked into the first model
        folder; `fields`: system, defaults, template (Ollama's `create` with files)."""
        from pathlib import Path

        from modelctl.ops.derive import from_weights
        from modelctl.record.errors import NotFound

        files = self.schemes.forms.get("path")
        if files is None:
            raise NotFound("no backend here keeps GGUF files", hint="pip install gguf")
        folder = self.settings.model_dirs[0]
        return from_weights(
            self.registry, self.backend(files), folder, name, Path(weights), **fields
        )

    def make_demo(self) -> Model:
        """Write and register the tiny demo GGUF model (see `modelctl demo`)."""
        from modelctl.ops.demo import make_demo

        files = self.schemes.forms.get("path")
        if files is None:
            from modelctl.record.errors import NotFound

            raise NotFound("no backend here keeps GGUF files", hint="pip install gguf")
        folder = self.settings.model_dirs[0]
        return make_demo(registry=self.registry, backend=self.backend(files), folder=folder)

    def doctor(self) -> list[Finding]:
        """Every check of this machine, the registry, the backends, keys and the server."""
        from modelctl.ops.doctor import Finding, diagnose
        from modelctl.record.errors import StoreError

        try:
            registry = self.registry
        except StoreError as exc:  # the rest needs it: this is the step to take first
            return [Finding("database", "fail", exc.message, exc.hint)]
        return diagnose(settings=self.settings, registry=registry,
                        system=self.system_info(), statuses=self.check_backend_status,
                        recommend=self.recommend_model)  # fmt: skip

    # Loaded models: the scheduler.

    @property
    def scheduler(self) -> Scheduler:
        """Loads and unloads within the memory budget (settings: memory_budget, max_loaded,
        keep_alive); the budget defaults to the RAM free when it starts, less 1 GiB."""
        if self._scheduler is None:
            from modelctl.runtime.requests import make_scheduler

            self._scheduler = make_scheduler(
                settings=self.settings, registry=self.registry, backend=self.backend,
                catalog=lambda: self.catalog,
            )  # fmt: skip
        return self._scheduler

    @property
    def requests(self) -> Requests:
        """Runs chat, completion and embedding requests, loading models on demand, metered."""
        if self._requests is None:
            from modelctl.runtime.requests import Requests

            self._requests = Requests(
                registry=self.registry, scheduler=self.scheduler, ledger=self.usage,
                max_queue=self.settings.max_queue, queue_timeout=self.settings.queue_timeout,
            )  # fmt: skip
        return self._requests

    def saved_state(self) -> dict[str, Any]:
        """What was loaded and current when the scheduler last changed (for a restart)."""
        from modelctl.runtime.requests import STATE_KEY

        return self.registry.store.get_state(STATE_KEY) or {}

    @property
    def events(self) -> EventBus:
        return self.scheduler.events

    def load(self, model: str, **options: Any) -> dict[str, Any]:
        """Load a model (keep_alive=, pin=, priority=, context=, …); returns its state."""
        model_id = self.registry.resolve(model)
        return self.scheduler.load(model_id, **options).info(self.scheduler.clock())

    def unload(self, model: str | None = None, *, all: bool = False) -> list[str]:
        if all:
            return self.scheduler.unload_all()
        model_id = self.registry.resolve(model) if model else self.scheduler.current
        return [model_id] if model_id and self.scheduler.unload(model_id) else []

    def switch_model(self, model: str, **options: Any) -> dict[str, Any]:
        model_id = self.registry.resolve(model)
        return self.scheduler.switch(model_id, **options).info(self.scheduler.clock())

    def current(self) -> str | None:
        return self.scheduler.current

    def loaded(self) -> list[dict[str, Any]]:
        return self.scheduler.loaded()

    def logs(self, model: str, lines: int = 100) -> dict[str, Any]:
        """The last `lines` lines of a model's worker log (what its runtime printed, and each
        start and exit); NotFound when it never ran in a worker."""
        from modelctl.record.errors import NotFound
        from modelctl.runtime.supervisor import log_tail, safe_name

        model_id = self.registry.resolve(model)
        path = self.home / "logs" / "workers" / f"{safe_name(model_id)}.log"
        if not path.is_file():
            raise NotFound(
                f"{model_id} has no worker log", hint="it has not run in a worker on this machine"
            )
        return {"model": model_id, "path": str(path), "lines": log_tail(path, lines)}

    def unload_least_used(self) -> str | None:
        return self.scheduler.unload_least_used()

    def total_memory_usage(self) -> int:
        return self.scheduler.used()

    def update_model_parameters(self, model: str, **parameters: Any) -> Model:
        """Default generation options for a model (temperature, top_p, max_tokens, stop, …)."""
        current = self.registry[model]
        merged = {**current.defaults, **parameters}
        return self.registry.update(
            current.id, defaults={k: v for k, v in merged.items() if v is not None}
        )

    def chat(self, messages: list[dict[str, Any]], model: str | None = None, **options: Any) -> Any:
        """OpenAI-shaped chat; loads the model on demand (the current model if none is named).
        Recorded in the usage ledger (`client=` names the caller)."""
        return self.requests.request("chat", model, messages, **options)

    def complete(self, prompt: str, model: str | None = None, **options: Any) -> Any:
        return self.requests.request("complete", model, prompt, **options)

    def embed(
        self, inputs: str | list[str], model: str | None = None, **options: Any
    ) -> list[list[float]]:
        batch = [inputs] if isinstance(inputs, str) else inputs
        return self.requests.request("embed", model, batch, **options)

    async def achat(
        self, messages: list[dict[str, Any]], model: str | None = None, **options: Any
    ) -> Any:
        """`chat` for an event loop (a stream is an async iterator); the gateway's path."""
        return await self.requests.arequest("chat", model, messages, **options)

    async def acomplete(self, prompt: str, model: str | None = None, **options: Any) -> Any:
        return await self.requests.arequest("complete", model, prompt, **options)

    async def aembed(
        self, inputs: str | list[str], model: str | None = None, **options: Any
    ) -> list[list[float]]:
        batch = [inputs] if isinstance(inputs, str) else inputs
        return await self.requests.arequest("embed", model, batch, **options)

    # Capabilities: what a model can do, and how we know.

    def detect_capabilities(self, model: str, *, probe: bool = False) -> dict[str, list[str]]:
        """Each capability with its sources: declared, metadata, name, and (probe=True) real
        requests, which can also rule one out."""
        from modelctl.ops.capabilities import detect_capabilities

        record = self.registry[model]
        return detect_capabilities(record, probe=probe, requests=self.requests if probe else None)

    def supports(self, model: str, capability: str) -> bool:
        return capability in self.detect_capabilities(model)

    # Profiles: how fast a model is here.

    def profile(self, model: str, n: int = 10, **options: Any) -> dict[str, Any]:
        """Run n rounds of standard requests; store and return latency p50/p95, time to first
        token, prompt and generation tokens/s, success rate and peak memory."""
        from modelctl.ops.profiling import profile

        return profile(self.registry[model], n, requests=self.requests, load=self.load,
                       store=self.registry.store, **options)  # fmt: skip

    def profiles(self, *models: str) -> dict[str, dict[str, Any]]:
        """The newest profile of each model (of every profiled model if none is named)."""
        from modelctl.store import profiles

        ids = [self.registry.resolve(m) for m in models] if models else None
        return profiles.latest(self.registry.store, ids)

    # Connectors: the model from the framework a person already writes code in.

    def connector_kwargs(
        self, model: str, framework: str = "openai", *, via: str = "auto", **params: Any
    ) -> dict[str, Any]:
        """A framework client's arguments for `model`, without importing the framework:
        the model's default parameters, overridden by `params` (see modelctl.ops.connectors)."""
        from modelctl.ops.connectors import connector, endpoint_for

        record = self.registry[model]
        merged = {k: v for k, v in {**record.defaults, **params}.items() if v is not None}
        endpoint = endpoint_for(
            record, via, settings=self.settings, backend=self.backends.get(record.backend)
        )
        return connector(framework).kwargs(endpoint, merged)

    def client(
        self, model: str, framework: str = "openai", *, via: str = "auto", **params: Any
    ) -> Any:
        """A ready client of `framework` (openai, langchain, dspy, litellm, ollama) for `model`,
        at its own server or (`via="gateway"`) at a running `modelctl serve`."""
        from modelctl.ops.connectors import connector

        chosen = connector(framework)
        return chosen.build(self.connector_kwargs(model, framework, via=via, **params))

    # Single-model servers, in child processes.

    def start_server(self, model: str, port: int | None = None) -> ServerInfo:
        """An OpenAI- and Ollama-compatible server for one model, in a child process: its url,
        port, pid and model. It stops with `stop_server`, or when this manager closes."""
        from modelctl.ops.servers import start_server

        server = start_server(self.registry.resolve(model), port, settings=self.settings)
        self._servers.append(server)
        return server

    def stop_server(self, server: ServerInfo | str) -> int:
        """Stop a server `start_server` started: what it returned, or its model's name."""
        from modelctl.ops.servers import stop_server

        if isinstance(server, str):
            model_id = self.registry.resolve(server)
            found = [s for s in self._servers if s.model == model_id]
            if not found:
                from modelctl.record.errors import NotFound

                running = ", ".join(s.model for s in self._servers) or "none"
                raise NotFound(f"no server of this manager serves {model_id!r}",
                               hint=f"serving: {running}")  # fmt: skip
            server = found[0]
        if server in self._servers:
            self._servers.remove(server)
        return stop_server(server)

    # Usage: what every request cost.

    @property
    def usage(self) -> Ledger:
        """The usage ledger in the registry's database (every request is recorded here)."""
        if self._usage is None:
            from modelctl.store.ledger import Ledger

            self._usage = Ledger(self.registry.store, retention=self.settings.usage_retention)
        return self._usage

    def record_usage(
        self,
        model: str,
        *,
        latency: float,
        tokens_in: int = 0,
        tokens_out: int = 0,
        ttft: float | None = None,
        ok: bool = True,
        error: str | None = None,
        kind: str = "chat",
        client: str | None = None,
        cost: float | None = None,
    ) -> Usage:
        """Record a call made elsewhere (latency in seconds); its cost comes from the model's
        pricing unless given."""
        from modelctl.record.errors import InvalidRequest
        from modelctl.store.ledger import KINDS, Usage

        if kind not in KINDS:
            raise InvalidRequest(f"unknown usage kind {kind!r}", hint=", ".join(KINDS))
        if latency < 0 or tokens_in < 0 or tokens_out < 0 or (ttft is not None and ttft < 0):
            raise InvalidRequest("latency, ttft and token counts cannot be negative")
        record = self.registry[model]
        if cost is None:
            cost = record.pricing.cost(tokens_in, tokens_out) if record.pricing else 0.0
        return self.usage.record(
            Usage(model=record.id, backend=record.backend, kind=kind, client=client,
                  latency=latency, ttft=ttft, tokens_in=tokens_in, tokens_out=tokens_out,
                  ok=ok, error=error, cost=cost)
        )  # fmt: skip

    def usage_stats(
        self, model: str | None = None, *, since: float | None = None
    ) -> dict[str, Any]:
        """Requests, last use, latency (avg, p50, p95), tokens/s, success rate and cost."""
        model_id = self.registry.resolve(model) if model else None
        return self.usage.stats(model_id, since=since)
