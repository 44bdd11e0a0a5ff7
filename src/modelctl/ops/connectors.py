"""Connectors: a ready client of a framework for any model in the registry.

    manager.client("gpt-4o", "langchain", temperature=0.2)     # a ChatOpenAI
    manager.connector_kwargs("tiny", "dspy", via="gateway")    # dspy.LM's arguments, no import

A connector points at the model's own server when it has one (OpenAI, OpenRouter, an
`[endpoints.NAME]`, Ollama, LM Studio, Anthropic), or at a running `modelctl serve` (`via=
"gateway"`, and always for models that run in process: GGUF files, Hugging Face). The model's
default parameters apply; keyword arguments override them. Connectors register in the entry
point group `modelctl.connectors`, as backends do; framework packages load only when a client
is built, and a missing one is an error that says what to install.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from modelctl.record.errors import MissingPackage, ModelctlError, NotFound

if TYPE_CHECKING:
    from modelctl.backends import Backend
    from modelctl.config import Settings
    from modelctl.record.model import Model

__all__ = ["Connector", "Endpoint", "connectors", "endpoint_for"]

GROUP = "modelctl.connectors"
VIA = ("auto", "direct", "gateway")


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where a client sends a model's requests."""

    base_url: str  # OpenAI-compatible, ending in /v1
    host: str  # the server's root (Ollama's clients)
    api_key: str
    model: str  # the name that server knows the model by
    via: str  # direct | gateway


def endpoint_for(
    record: Model, via: str = "auto", *, settings: Settings, backend: Backend | None
) -> Endpoint:
    """The model's own server (`direct`: its `backend`'s), modelctl's gateway (at the
    settings' server URL), or (`auto`) the first of them that exists."""
    if via not in VIA:
        raise ModelctlError(f"via must be one of {', '.join(VIA)}, not {via!r}")
    if via != "gateway":
        direct = _direct(backend, record)
        if direct is not None:
            return direct
        if via == "direct":
            raise ModelctlError(
                f"{record.id} runs in process ({record.backend}): it has no server of its own",
                hint="use via='gateway' with `modelctl serve` running, or manager.start_server()",
            )
    server = settings.server.rstrip("/")
    key = settings.api_key or "modelctl"  # the SDKs want a key; loopback needs none
    return Endpoint(f"{server}/v1", server, key, record.id, "gateway")


def _direct(backend: Backend | None, record: Model) -> Endpoint | None:
    found = backend.server() if backend is not None else None
    if found is None:
        return None
    base_url, host, key = found
    return Endpoint(base_url, host, key, record.ref_for(record.backend), "direct")


class Connector(ABC):
    """One framework: the arguments its client takes (no import), and the client itself."""

    name: ClassVar[str]
    package: ClassVar[str | None] = None  # the module the client needs
    install: ClassVar[str | None] = None  # the command that installs it

    @abstractmethod
    def kwargs(self, endpoint: Endpoint, params: dict[str, Any]) -> dict[str, Any]:
        """The client's arguments for this endpoint and these generation parameters."""

    def build(self, kwargs: dict[str, Any]) -> Any:
        """The client; by default, the arguments themselves."""
        return kwargs

    def need(self) -> Any:
        import importlib

        assert self.package is not None
        try:
            return importlib.import_module(self.package)
        except ImportError:
            raise MissingPackage(
                f"the {self.name} connector needs the {self.package} package",
                hint=self.install,
            ) from None


class OpenAIConnector(Connector):
    """An `openai.OpenAI` client. The SDK has no per-client generation defaults: `model` and
    the parameters come back from `connector_kwargs` for `create()`."""

    name, package, install = "openai", "openai", "pip install openai"

    def kwargs(self, endpoint: Endpoint, params: dict[str, Any]) -> dict[str, Any]:
        return {"base_url": endpoint.base_url, "api_key": endpoint.api_key,
                "model": endpoint.model, **params}  # fmt: skip

    def build(self, kwargs: dict[str, Any]) -> Any:
        return self.need().OpenAI(base_url=kwargs["base_url"], api_key=kwargs["api_key"])


class LangChainConnector(Connector):
    """A LangChain chat model (`langchain_openai.ChatOpenAI`)."""

    name, package = "langchain", "langchain_openai"
    install = "pip install langchain-openai"
    NATIVE = ("temperature", "max_tokens", "top_p", "stop", "seed", "presence_penalty",
              "frequency_penalty")  # fmt: skip

    def kwargs(self, endpoint: Endpoint, params: dict[str, Any]) -> dict[str, Any]:
        out = {"model": endpoint.model, "base_url": endpoint.base_url,
               "api_key": endpoint.api_key}  # fmt: skip
        out |= {k: v for k, v in params.items() if k in self.NATIVE}
        extra = {k: v for k, v in params.items() if k not in self.NATIVE}
        if extra:
            out["model_kwargs"] = extra
        return out

    def build(self, kwargs: dict[str, Any]) -> Any:
        return self.need().ChatOpenAI(**kwargs)


class DSPyConnector(Connector):
    """A `dspy.LM` (LiteLLM underneath, through the OpenAI-compatible endpoint)."""

    name, package, install = "dspy", "dspy", "pip install dspy"

    def kwargs(self, endpoint: Endpoint, params: dict[str, Any]) -> dict[str, Any]:
        return {"model": f"openai/{endpoint.model}", "api_base": endpoint.base_url,
                "api_key": endpoint.api_key, **params}  # fmt: skip

    def build(self, kwargs: dict[str, Any]) -> Any:
        return self.need().LM(**kwargs)


class LiteLLMConnector(Connector):
    """LiteLLM's completion arguments: `litellm.completion(**args, messages=[...])`."""

    name, install = "litellm", "pip install litellm"

    def kwargs(self, endpoint: Endpoint, params: dict[str, Any]) -> dict[str, Any]:
        return {"model": f"openai/{endpoint.model}", "api_base": endpoint.base_url,
                "api_key": endpoint.api_key, **params}  # fmt: skip


class OllamaConnector(Connector):
    """An `ollama.Client` on the gateway's (or Ollama's own) Ollama API; `model` and
    `options` (Ollama's names) come back from `connector_kwargs` for `chat()`."""

    name, package, install = "ollama", "ollama", "pip install ollama"
    NAMES: ClassVar[dict[str, str]] = {"max_tokens": "num_predict"}

    def kwargs(self, endpoint: Endpoint, params: dict[str, Any]) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {endpoint.api_key}"}
        options = {self.NAMES.get(k, k): v for k, v in params.items()}
        return {"host": endpoint.host, "headers": headers, "model": endpoint.model,
                "options": options}  # fmt: skip

    def build(self, kwargs: dict[str, Any]) -> Any:
        return self.need().Client(host=kwargs["host"], headers=kwargs["headers"])


def connectors() -> dict[str, Connector]:
    """Every registered connector by name (entry point group `modelctl.connectors`)."""
    from modelctl.backends._loader import entry_points

    return {name: point.load()() for name, point in sorted(entry_points(GROUP).items())}


def connector(name: str) -> Connector:
    found = connectors()
    if name not in found:
        raise NotFound(f"no connector named {name!r}", hint=f"connectors: {', '.join(found)}")
    return found[name]
