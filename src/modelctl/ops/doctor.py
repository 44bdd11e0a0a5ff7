"""`modelctl doctor`: check this machine and every backend, and say in plain steps what to do.

Each check is a `Finding`: ok, warn (works, could be better) or fail (something a person
asked for will not work), with the step that fixes it. Nothing here changes anything.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from modelctl.record.errors import ModelctlError
from modelctl.record.units import format_memory

if TYPE_CHECKING:
    from collections.abc import Callable

    from modelctl.backends import BackendStatus
    from modelctl.config import Settings
    from modelctl.fit.estimate import Recommendation
    from modelctl.fit.hardware import SystemInfo
    from modelctl.registry import Registry

__all__ = ["Finding", "diagnose"]


@dataclass(frozen=True, slots=True)
class Finding:
    area: str
    level: str  # ok | warn | fail
    message: str
    step: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def diagnose(
    *,
    settings: Settings,
    registry: Registry,
    system: SystemInfo,
    statuses: Callable[[], list[BackendStatus]],
    recommend: Callable[..., Recommendation],
) -> list[Finding]:
    """Every check, in the order a person would fix things."""
    found: list[Finding] = []
    found += _python()
    found += _registry(registry, settings)
    found += _database(registry)
    found += _machine(system)
    found += _runtimes()
    found += _backends(statuses())
    found += _keys(settings)
    found += _server(settings)
    found += _next_model(registry, recommend)
    return found


def _python() -> list[Finding]:
    version = ".".join(map(str, sys.version_info[:3]))  # 3.11+: the package requires it
    return [Finding("python", "ok", f"Python {version} at {sys.executable}")]


def _registry(registry: Registry, settings: Settings) -> list[Finding]:
    try:
        count = len(registry)
    except ModelctlError as exc:
        return [Finding("registry", "fail", exc.message, exc.hint)]
    where = registry.store.path  # (a database's URL without its password)
    if not count:
        return [Finding("registry", "warn", f"the registry at {where} is empty",
                        "run `modelctl sync` to find the models you have")]  # fmt: skip
    return [Finding("registry", "ok", f"{count} model{'' if count == 1 else 's'} in {where}")]


def _database(registry: Registry) -> list[Finding]:
    """The store's engine, reachable or not, and its schema."""
    try:
        facts = registry.store.describe()
    except ModelctlError as exc:
        return [Finding("database", "fail", exc.message, exc.hint)]
    said = f"{facts['engine']} at {facts['where']}, schema version {facts['schema']}"
    if facts["schema"] < facts["latest"]:  # (opening it migrates: only a store opened before)
        return [Finding("database", "warn", said, "restart modelctl to bring it up to date")]
    return [Finding("database", "ok", said)]


def _machine(system: Any) -> list[Finding]:
    ram = f"{format_memory(system.ram_available)} of {format_memory(system.ram_total)} RAM free"
    if system.ram_available > 2 << 30:
        out = [Finding("memory", "ok", ram)]
    else:
        out = [Finding("memory", "warn", ram, "close other programs: under 2 GiB fits tiny models")]
    if system.gpus:
        for gpu in system.gpus:
            vram = f"{format_memory(gpu.vram_free)} of {format_memory(gpu.vram_total)}"
            out.append(Finding("gpu", "ok", f"{gpu.name}: {vram} VRAM free"))
    elif system.unified_memory:
        out.append(Finding("gpu", "ok", "Apple silicon: unified memory serves the GPU"))
    else:
        out.append(Finding("gpu", "warn", "no GPU found: models run on the CPU",
                           "expect a few tokens/s from 7B models; small models (1-3B) answer "
                           "faster; with an NVIDIA GPU, install its driver"))  # fmt: skip
    for folder, free in system.disks:
        if free < 10 << 30:
            out.append(Finding("disk", "warn", f"{format_memory(free)} free at {folder}",
                               "free some space: a 7B model needs about 5 GB"))  # fmt: skip
    return out


def _runtimes() -> list[Finding]:
    out = []
    for module, what, extra in (
        ("llama_cpp", "GGUF models in process (llama.cpp)", "llamacpp"),
        ("transformers", "Hugging Face models in process (transformers)", "transformers"),
    ):
        if importlib.util.find_spec(module) is not None:
            out.append(Finding("runtime", "ok", what))
        else:
            out.append(Finding("runtime", "warn", f"{what}: not installed",
                               f"pip install 'modelctl[{extra}]'"))  # fmt: skip
    return out


def _backends(statuses: list[BackendStatus]) -> list[Finding]:
    out = []
    for status in statuses:
        error = status.error or ""
        if "API key" in error:
            continue  # the keys checks below say it once
        if "Apple silicon" in error:
            out.append(Finding("backend", "ok", f"{status.name}: not for this machine ({error})"))
            continue
        if status.available:
            many = "" if status.models == 1 else "s"
            count = "" if status.models is None else f", {status.models} model{many}"
            out.append(Finding("backend", "ok", f"{status.name}: reachable{count}"))
        else:
            out.append(Finding("backend", "warn", f"{status.name}: {status.error}", status.hint))
    return out


def _keys(settings: Settings) -> list[Finding]:
    out = []
    for key, name, what in (
        ("openai_api_key", "OPENAI_API_KEY", "OpenAI"),
        ("anthropic_api_key", "ANTHROPIC_API_KEY", "Anthropic"),
        ("openrouter_api_key", "OPENROUTER_API_KEY", "OpenRouter"),
    ):
        if getattr(settings, key):
            out.append(Finding("keys", "ok", f"{name} is set: {what} models are available"))
        else:
            out.append(Finding("keys", "warn", f"{name} is not set",
                               f"export {name}=... to use {what} models"))  # fmt: skip
    return out


def _server(settings: Settings) -> list[Finding]:
    from modelctl.ops.client import ServerClient
    from modelctl.record.errors import ServerUnavailable

    url = settings.server
    try:
        ServerClient(url, api_key=settings.api_key, timeout=2).call("GET", "/health")
    except ServerUnavailable:
        return [Finding("server", "warn", f"no modelctl server at {url}",
                        "run `modelctl serve` to serve every model over HTTP")]  # fmt: skip
    except ModelctlError as exc:
        return [Finding("server", "warn", f"the server at {url}: {exc.message}", exc.hint)]
    return [Finding("server", "ok", f"modelctl serve answers at {url}")]


def _next_model(registry: Registry, recommend: Callable[..., Recommendation]) -> list[Finding]:
    if registry.count(installed=True):
        return []
    best = recommend(priority="balanced", task="chat")
    if best.model is None:
        return [Finding("models", "warn", f"no catalog model fits: {best.reason}")]
    pull = best.model.id  # `modelctl pull` takes a catalog id and picks the backend
    return [Finding("models", "warn", "no model is installed",
                    f"for this machine: `modelctl pull {pull}` ({best.reason})")]  # fmt: skip
