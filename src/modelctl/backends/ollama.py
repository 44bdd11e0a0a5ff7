"""Ollama: the daemon's HTTP API at OLLAMA_HOST (default 127.0.0.1:11434)."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from modelctl.backends import (
    BackendError,
    BackendStatus,
    DeletePlan,
    Handle,
    Progress,
    ProgressFn,
    response,
)
from modelctl.backends._http import HttpBackend
from modelctl.record import units

if TYPE_CHECKING:
    from modelctl.record.model import Model

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
    runtimes = ("Ollama",)
    forms = ("tag",)  # name:tag, user/name:tag, hf.co/org/repo:tag
    model_format = "gguf"
    install_rank = 10  # a catalog model is pulled with Ollama first

    def server(self) -> tuple[str, str, str]:
        host = self.url.rstrip("/")
        return f"{host}/v1", host, "ollama"

    def status(self) -> BackendStatus:
        try:
            version = self.http.get("/api/version").get("version")
            count = len(self.http.get("/api/tags").get("models") or [])
        except BackendError as exc:
            return BackendStatus(
                self.name, False, url=self.url, error=exc.message,
                hint="install Ollama (https://ollama.com) and run `ollama serve`, "
                "or set OLLAMA_HOST to where it runs",
            )  # fmt: skip
        return BackendStatus(self.name, True, version=version, url=self.url, models=count)

    def show(self, name: str) -> dict[str, Any]:
        return self.http.post("/api/show", {"model": name}) or {}

    def running(self) -> list[dict[str, Any]]:
        """What the daemon has loaded now (`/api/ps`)."""
        return self.http.get("/api/ps").get("models") or []

    def _record(self, entry: dict[str, Any]) -> Model:
        from modelctl.record.model import Model

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
                "family": details.get("family") or None,
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

    def download_size(self, ref: str, **options: Any) -> int | None:
        """The layers' sizes in the model's manifest on the Ollama registry (the library's, or
        a user's namespace); None for other registries or when it cannot be read."""
        import httpx

        name, _, tag = ref.partition(":")
        parts = name.split("/")
        if "." in parts[0] or len(parts) > 2:
            return None  # another registry (hf.co/…): not asked
        path = "/".join(parts if len(parts) == 2 else ["library", *parts])
        url = f"{self.settings.ollama_registry.rstrip('/')}/v2/{path}/manifests/{tag or 'latest'}"
        accept = "application/vnd.docker.distribution.manifest.v2+json"
        try:
            answer = httpx.get(url, headers={"Accept": accept}, timeout=10, follow_redirects=True)
            manifest = answer.json() if answer.is_success else {}
            layers = [*manifest.get("layers", []), manifest.get("config") or {}]
            return sum(int(layer.get("size") or 0) for layer in layers) or None
        except (httpx.HTTPError, ValueError, TypeError, AttributeError):
            return None  # the pull itself says what is wrong

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

    def load(self, model: Model, **options: Any) -> Handle:
        """Ask the daemon to load it (its own memory); keep_alive as the scheduler's."""
        return OllamaHandle(self, model, **options)

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


# Request options as the OpenAI API names them, to Ollama's names.
_OPTIONS = {"max_tokens": "num_predict"}


def _ollama_options(options: dict[str, Any]) -> dict[str, Any]:
    return {_OPTIONS.get(k, k): v for k, v in options.items() if v is not None}


def _keep_alive(seconds: float | None) -> Any:
    """Ollama's keep_alive: a duration string, -1 forever, 0 unload now."""
    if seconds is None:
        return None
    return -1 if seconds < 0 else f"{int(seconds)}s"


class OllamaHandle(Handle):
    """A model the Ollama daemon holds; requests go through its API, answers come back
    OpenAI-shaped."""

    device = "ollama"
    parallel = None  # the daemon queues its own requests (OLLAMA_NUM_PARALLEL)

    def __init__(self, backend: OllamaBackend, model: Model, **options: Any) -> None:
        self.http, self.model_id = backend.http, model.id
        self.name = model.ref_for(backend.name)
        self.keep_alive = options.get("keep_alive")
        keep = _keep_alive(self.keep_alive)
        body: dict[str, Any] = {"model": self.name}  # an empty request loads the model
        if keep is not None:
            body["keep_alive"] = keep
        if options.get("context"):
            body["options"] = {"num_ctx": int(options["context"])}
        self.context = body.get("options")
        self.http.post("/api/generate", body, answer=True)  # a load: it may take long

    def _body(self, options: dict[str, Any], **fields: Any) -> dict[str, Any]:
        stream = bool(options.pop("stream", False))
        merged = {**(self.context or {}), **_ollama_options(options)}
        keep = _keep_alive(self.keep_alive)  # the daemon's timer, reset by every request
        return {
            "model": self.name,
            "stream": stream,
            **fields,
            **({"options": merged} if merged else {}),
            **({"keep_alive": keep} if keep is not None else {}),
        }

    def chat(self, messages: list[dict[str, Any]], *, stream: bool = False, **options: Any) -> Any:
        body = self._body({**options, "stream": stream}, messages=messages)
        if stream:
            return (
                _chat_chunk(self.model_id, e)
                for e in self.http.stream_until_done("POST", "/api/chat", body)
            )
        return _chat_answer(self.model_id, self.http.post("/api/chat", body, answer=True))

    def complete(self, prompt: str, *, stream: bool = False, **options: Any) -> Any:
        body = self._body({**options, "stream": stream}, prompt=prompt)
        if stream:
            return (
                _text_chunk(self.model_id, e)
                for e in self.http.stream_until_done("POST", "/api/generate", body)
            )
        return _text_answer(self.model_id, self.http.post("/api/generate", body, answer=True))

    def embed(self, inputs: list[str]) -> list[list[float]]:
        body: dict[str, Any] = {"model": self.name, "input": inputs}
        if (keep := _keep_alive(self.keep_alive)) is not None:
            body["keep_alive"] = keep
        return self.http.post("/api/embed", body, answer=True)["embeddings"]

    def close(self) -> None:
        self.http.post("/api/generate", {"model": self.name, "keep_alive": 0})


def _usage(event: dict[str, Any]) -> dict[str, int]:
    prompt, completion = event.get("prompt_eval_count") or 0, event.get("eval_count") or 0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _finish(event: dict[str, Any]) -> str | None:
    if not event.get("done"):
        return None
    return "length" if event.get("done_reason") == "length" else "stop"


def _chat_answer(model_id: str, event: dict[str, Any]) -> dict[str, Any]:
    content = (event.get("message") or {}).get("content", "")
    message = {"role": "assistant", "content": content}
    return response(
        model_id,
        "chat.completion",
        {"message": message, "finish_reason": _finish(event) or "stop"},
        _usage(event),
    )


def _chat_chunk(model_id: str, event: dict[str, Any]) -> dict[str, Any]:
    content = (event.get("message") or {}).get("content", "")
    delta = {"content": content} if content else {}
    return response(
        model_id, "chat.completion.chunk", {"delta": delta, "finish_reason": _finish(event)}
    )


def _text_answer(model_id: str, event: dict[str, Any]) -> dict[str, Any]:
    choice = {"text": event.get("response", ""), "finish_reason": _finish(event) or "stop"}
    return response(model_id, "text_completion", choice, _usage(event))


def _text_chunk(model_id: str, event: dict[str, Any]) -> dict[str, Any]:
    return response(
        model_id,
        "text_completion",
        {"text": event.get("response", ""), "finish_reason": _finish(event)},
    )
