"""OpenAI and every OpenAI-compatible server (OpenRouter, vLLM, llama-server, …): `/v1/models`.

Instances: `openai` (OPENAI_API_KEY), `openrouter` (OPENROUTER_API_KEY), and each
`[endpoints.NAME]` in the settings, whose key is read from the variable its api_key_env names.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from modelctl.backends import Backend, BackendError, BackendStatus, Handle
from modelctl.backends._http import HttpBackend
from modelctl.backends._openai_wire import OpenAIWireHandle
from modelctl.record import naming

if TYPE_CHECKING:
    from modelctl.record.model import Model


# `provider/model` spellings (LiteLLM's way of writing) and prefixes of the built-in instances;
# an endpoint from the settings claims neither, so its name never shadows a model family's
_PROVIDERS = {
    "openai": ("openai", "azure", "gemini", "mistral", "groq"),
    "openrouter": ("openrouter",),
}
_PREFIXES = {"openrouter": ("openrouter",)}


class OpenAIBackend(HttpBackend):
    name = "openai"
    url_setting = "openai_base_url"
    local = False
    runtimes = ("OpenAI-compatible API",)

    def __init__(
        self,
        settings: Any,
        *,
        instance: str | None = None,
        base_url: str | None = None,
        api_key: str | None = None,
        key_name: str | None = None,
        key_required: bool = True,
    ) -> None:
        super().__init__(settings, instance=instance, base_url=base_url)
        self.providers = _PROVIDERS.get(self.instance, ())
        self.prefixes = _PREFIXES.get(self.instance, ())
        self.api_key = api_key
        self.key_name = key_name
        self.key_required = key_required

    def server(self) -> tuple[str, str, str]:
        url = self.url.rstrip("/")
        return url, url.removesuffix("/v1"), self.api_key or "none"

    @classmethod
    def instances(cls, settings: Any) -> list[Backend]:
        found: list[Backend] = [
            cls(settings, api_key=settings.openai_api_key, key_name="OPENAI_API_KEY"),
            cls(
                settings, instance="openrouter", base_url="https://openrouter.ai/api/v1",
                api_key=settings.openrouter_api_key, key_name="OPENROUTER_API_KEY",
            ),
        ]  # fmt: skip
        for name, spec in (settings.endpoints or {}).items():
            env = spec.get("api_key_env")
            found.append(
                cls(
                    settings,
                    instance=name,
                    base_url=spec["base_url"],
                    api_key=os.environ.get(env) if env else None,
                    key_name=env,
                    key_required=bool(env),
                )
            )
        return found

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}

    def _need_key(self) -> None:
        if self.key_required and not self.api_key:
            raise BackendError(f"{self.instance} needs an API key", hint=f"set {self.key_name}")

    def status(self) -> BackendStatus:
        try:
            self._need_key()
            count = len(self.http.get("/models").get("data") or [])
        except BackendError as exc:
            return BackendStatus(
                self.instance, False, url=self.url, error=exc.message, hint=exc.hint
            )
        return BackendStatus(self.instance, True, url=self.url, models=count)

    def load(self, model: Model, **options: Any) -> Handle:
        return OpenAIHandle(self, model)

    def discover(self) -> list[Model]:
        from modelctl.record.model import Model

        self._need_key()
        out = []
        for entry in self.http.get("/models").get("data") or []:
            model_id = entry["id"]
            record: dict[str, Any] = {
                "id": f"{self.instance}/{model_id}",
                "name": entry.get("name"),
                "backend": self.instance,
                "refs": {self.instance: model_id},
                "installed": True,
                "parameters": naming.parse_parameters_from_name(model_id),
            }
            if "embedding" in model_id:
                record |= {"tasks": ["embedding"], "capabilities": ["embeddings"]}
            else:
                record |= {"tasks": ["chat"], "capabilities": ["chat", "streaming"]}
            if entry.get("context_length"):  # OpenRouter's list says more
                record["context_length"] = entry["context_length"]
            pricing = entry.get("pricing") or {}
            if pricing.get("prompt") is not None:
                record["pricing"] = {
                    "input": float(pricing["prompt"]) * 1_000_000,
                    "output": float(pricing.get("completion") or 0) * 1_000_000,
                }
            top = entry.get("top_provider") or {}
            if top.get("max_completion_tokens"):
                record["max_output_tokens"] = top["max_completion_tokens"]
            modalities = (entry.get("architecture") or {}).get("input_modalities") or []
            if "image" in modalities:
                record["tasks"] = [*record["tasks"], "vision"]
                record["capabilities"] = [*record["capabilities"], "vision"]
            out.append(Model.from_dict(record, context=f"{self.instance} model {model_id!r}"))
        return out


class OpenAIHandle(OpenAIWireHandle):
    """A model an OpenAI-compatible server offers: "loading" checks the key and that the model
    is offered."""

    device = "remote"

    def __init__(self, backend: OpenAIBackend, model: Model) -> None:
        backend._need_key()
        self.http, self.ahttp, self.model_id = backend.http, backend.ahttp, model.id
        self.name = model.ref_for(backend.instance)
        offered = {m["id"] for m in backend.http.get("/models").get("data") or []}
        if offered and self.name not in offered:
            raise BackendError(
                f"{backend.instance} does not offer {self.name!r}",
                hint=f"modelctl sync --backend {backend.instance}",
            )
