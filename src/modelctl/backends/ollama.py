"""Ollama: the daemon's HTTP API at OLLAMA_HOST (default 127.0.0.1:11434)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from modelctl import units
from modelctl.backends import BackendError, BackendStatus, DeletePlan, Progress, ProgressFn
from modelctl.backends._http import HttpBackend

if TYPE_CHECKING:
    from modelctl.model import Model

_BLOB = re.compile(r"sha256[-:]([0-9a-f]{64})")
# Ollama's capability words to modelctl's tasks and capabilities
_CAPABILITIES = {
    "completion": ("chat", ["chat", "completion", "streaming"]),
    "tools": (None, ["tools"]),
    "vision": ("vision", ["vision"]),
    "embedding": ("embedding", ["embeddings"]),
    "thinking": ("reasoning", ["reasoning"]),
}


class OllamaBackend(HttpBackend):
    name = "ollama"
    url_setting = "ollama_host"

    def status(self) -> BackendStatus:
        try:
            version = self.http.get("/api/version").get("version")
            count = len(self.http.get("/api/tags").get("models") or [])
        except BackendError as exc:
            return BackendStatus(
                self.name, False, url=self.url, error=exc.message,
                hint="start it with `ollama serve`, or set OLLAMA_HOST",
            )  # fmt: skip
        return BackendStatus(self.name, True, version=version, url=self.url, models=count)

    def show(self, name: str) -> dict[str, Any]:
        return self.http.post("/api/show", {"model": name}) or {}

    def running(self) -> list[dict[str, Any]]:
        """What the daemon has loaded now (`/api/ps`)."""
        return self.http.get("/api/ps").get("models") or []

    def _record(self, entry: dict[str, Any]) -> Model:
        from modelctl.model import Model

        name = entry["name"]
        details = entry.get("details") or {}
        shown = self.show(name)
        info = shown.get("model_info") or {}
        arch = info.get("general.architecture")
        tasks: list[str] = []
        capabilities: list[str] = []
        for word in shown.get("capabilities") or ["completion"]:
            task, caps = _CAPABILITIES.get(word, (None, []))
            if task and task not in tasks:
                tasks.append(task)
            capabilities += caps
        blob = _BLOB.search(shown.get("modelfile") or "")
        parameters = info.get("general.parameter_count")
        if parameters is None and details.get("parameter_size"):
            try:
                parameters = units.parse_parameters(details["parameter_size"])
            except ValueError:
                parameters = None
        return Model.from_dict(
            {
                "id": name,
                "backend": self.name,
                "refs": {self.name: name},
                "tasks": tasks,
                "capabilities": capabilities,
                "parameters": parameters or None,
                "quantization": details.get("quantization_level") or None,
                "context_length": info.get(f"{arch}.context_length") if arch else None,
                "file_size": entry.get("size"),
                "installed": True,
                "digest": f"sha256:{blob.group(1)}" if blob else None,
                "location": f"{self.url}/api/tags#{name}",
            },
            context=f"ollama model {name!r}",
        )

    def discover(self) -> list[Model]:
        return [self._record(e) for e in self.http.get("/api/tags").get("models") or []]

    def install(self, ref: str, progress: ProgressFn | None = None, **options: Any) -> Model:
        """Pull through the daemon, which downloads, verifies and resumes on its own."""
        for event in self.http.stream_json_lines(
            "POST", "/api/pull", {"model": ref, "stream": True}
        ):
            if "error" in event:
                raise BackendError(f"ollama could not pull {ref}: {event['error']}")
            if progress is not None:
                progress(
                    Progress(event.get("status", ""), event.get("completed"), event.get("total"))
                )
        found = [m for m in self.discover() if m.id == ref or m.id == f"{ref}:latest"]
        if not found:
            raise BackendError(f"ollama reported success but does not list {ref}")
        return found[0]

    def plan_delete(self, ref: str) -> DeletePlan:
        models = {m["name"]: m for m in self.http.get("/api/tags").get("models") or []}
        entry = models.get(ref) or models.get(f"{ref}:latest")
        if entry is None:
            raise BackendError(
                f"ollama has no model {ref!r}", hint="modelctl list --backend ollama"
            )
        name = entry["name"]
        return DeletePlan(
            self.name, name, (f"ollama:{name}",), int(entry.get("size") or 0),
            note="Ollama frees layers no other model uses",
            execute=lambda: self.http.request("DELETE", "/api/delete", {"model": name}),
        )  # fmt: skip
