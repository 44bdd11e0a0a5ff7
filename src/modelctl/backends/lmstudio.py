"""LM Studio at lmstudio_url (default 127.0.0.1:1234): its REST API lists models
(`/api/v0/models`) and loads and unloads them (`/api/v1/models/load|unload`, LM Studio 0.4+);
requests go to its OpenAI-compatible endpoints (`/v1`)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from modelctl.backends import BackendError, BackendStatus
from modelctl.backends._http import AsyncHttp, Http, HttpBackend
from modelctl.backends._openai_wire import OpenAIWireHandle
from modelctl.record import naming

if TYPE_CHECKING:
    from modelctl.record.model import Model

log = logging.getLogger("modelctl.backends.lmstudio")

_TYPES = {"llm": (["chat"], ["chat", "completion", "streaming"]),
          "vlm": (["chat", "vision"], ["chat", "vision", "streaming"]),
          "embeddings": (["embedding"], ["embeddings"])}  # fmt: skip


class LMStudioBackend(HttpBackend):
    name = "lmstudio"
    url_setting = "lmstudio_url"
    runtimes = ("LM Studio",)
    model_format = "gguf"

    def _models(self) -> list[dict[str, Any]]:
        return self.http.get("/api/v0/models").get("data") or []

    def status(self) -> BackendStatus:
        try:
            count = len(self._models())
        except BackendError as exc:
            return BackendStatus(
                self.name, False, url=self.url, error=exc.message,
                hint="start LM Studio's server (Developer tab, or `lms server start`), "
                "or set LMSTUDIO_URL",
            )  # fmt: skip
        return BackendStatus(self.name, True, url=self.url, models=count)

    def discover(self) -> list[Model]:
        from modelctl.record.model import Model

        out = []
        for entry in self._models():
            tasks, caps = _TYPES.get(entry.get("type", "llm"), _TYPES["llm"])
            quant = entry.get("quantization")
            out.append(
                Model.from_dict(
                    {
                        "id": f"lmstudio/{entry['id']}",
                        "backend": self.name,
                        "refs": {self.name: entry["id"]},
                        "tasks": tasks,
                        "capabilities": caps,
                        "parameters": naming.parse_parameters_from_name(entry["id"]),
                        "quantization": naming.normalize_quantization(quant) if quant else None,
                        "context_length": entry.get("max_context_length"),
                        "installed": True,
                        "custom": {
                            "lmstudio_state": entry.get("state"),
                            "format": entry.get("compatibility_type"),
                        },
                    },
                    context=f"LM Studio model {entry.get('id')!r}",
                )
            )
        return out

    def load(self, model: Model, **options: Any) -> LMStudioHandle:
        return LMStudioHandle(self, model, context=options.get("context"))

    def server(self) -> tuple[str, str, str]:
        host = self.url.rstrip("/")
        return f"{host}/v1", host, "lm-studio"

    def openai(self) -> tuple[Http, AsyncHttp]:
        """Clients for LM Studio's OpenAI-compatible endpoints (`/v1`)."""
        if not hasattr(self, "_v1"):
            url, timeout, read = (
                self.url + "/v1",
                self.settings.http_timeout,
                self.settings.read_timeout,
            )
            self._v1 = (
                Http(self.name, url, timeout=timeout, read_timeout=read),
                AsyncHttp(self.name, url, headers={}, timeout=timeout, read_timeout=read),
            )
        return self._v1

    async def aclose(self) -> None:
        await super().aclose()
        if hasattr(self, "_v1"):
            await self._v1[1].aclose()


class LMStudioHandle(OpenAIWireHandle):
    """A model LM Studio holds: loaded through its REST API (an older LM Studio without it
    loads on the first request), asked through its OpenAI-compatible API, unloaded on close."""

    device = "local"

    def __init__(self, backend: LMStudioBackend, model: Model, *, context: int | None) -> None:
        self.backend, self.model_id = backend, model.id
        ref = model.ref_for(backend.name)
        body: dict[str, Any] = {"model": ref}
        if context:
            body["context_length"] = int(context)
        try:
            loaded = backend.http.post("/api/v1/models/load", body, answer=True) or {}
        except BackendError as exc:
            if "answered 404" not in exc.message:
                raise
            loaded = {}  # no v1 REST API: LM Studio loads just in time
        self.instance = loaded.get("instance_id")
        self.name = self.instance or ref
        self.http, self.ahttp = backend.openai()

    def close(self) -> None:
        if self.instance is None:
            return
        try:
            self.backend.http.post("/api/v1/models/unload", {"instance_id": self.instance})
        except BackendError as exc:  # LM Studio went away: nothing of ours is held
            log.warning("could not unload %s from LM Studio: %s", self.instance, exc)
