"""LM Studio: its REST API (`/api/v0/models`) at lmstudio_url (default 127.0.0.1:1234)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from modelctl import naming
from modelctl.backends import BackendError, BackendStatus
from modelctl.backends._http import HttpBackend

if TYPE_CHECKING:
    from modelctl.model import Model

_TYPES = {"llm": (["chat"], ["chat", "completion", "streaming"]),
          "vlm": (["chat", "vision"], ["chat", "vision", "streaming"]),
          "embeddings": (["embedding"], ["embeddings"])}  # fmt: skip


class LMStudioBackend(HttpBackend):
    name = "lmstudio"
    url_setting = "lmstudio_url"

    def _models(self) -> list[dict[str, Any]]:
        return self.http.get("/api/v0/models").get("data") or []

    def status(self) -> BackendStatus:
        try:
            count = len(self._models())
        except BackendError as exc:
            return BackendStatus(
                self.name, False, url=self.url, error=exc.message,
                hint="start LM Studio's server (Developer tab, or `lms server start`)",
            )  # fmt: skip
        return BackendStatus(self.name, True, url=self.url, models=count)

    def discover(self) -> list[Model]:
        from modelctl.model import Model

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
