"""Loopback HTTP servers that speak the documented protocols of services absent here.

Protocol tests: the Ollama daemon, the Hugging Face Hub, OpenAI-compatible servers, Anthropic's
API and LM Studio cannot be reached from these machines, so each is imitated at the protocol
level (paths, JSON shapes, streaming format, status codes, error bodies, headers) on a real
socket, and modelctl's real HTTP clients talk to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    app: Any = None

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def handle(self) -> None:
        with contextlib.suppress(ConnectionResetError, BrokenPipeError):  # a client hung up
            super().handle()

    def body(self) -> Any:
        """The request's JSON body, read once (an unread body would corrupt the next request
        on a kept-alive connection)."""
        if not hasattr(self, "_body"):
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            self._body = json.loads(raw) if raw else None
        return self._body

    def send_json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        payload = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(payload)

    def handle_any(self) -> None:
        self.__dict__.pop("_body", None)  # one handler object serves a connection's requests
        self.app.requests.append((self.command, self.path, dict(self.headers)))
        self.app.handle(self)
        if self.command in ("POST", "PUT", "PATCH", "DELETE"):
            self.body()

    do_GET = do_POST = do_DELETE = do_HEAD = handle_any


def write_chunked(h: Handler, content_type: str, pieces: list[bytes]) -> None:
    """A streamed (chunked) 200 response, one chunk a piece, as the real servers send them."""
    h.send_response(200)
    h.send_header("Content-Type", content_type)
    h.send_header("Transfer-Encoding", "chunked")
    h.end_headers()
    for data in pieces:
        h.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        h.wfile.flush()
    h.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    # the backlog of a real server (uvicorn's is 2048), not socketserver's 5: under a load
    # test, connections past 5 waited in the kernel for a minute or more (listen overflows)
    # and looked like a gateway that hangs
    request_queue_size = 2048


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run `app` (an object with .handle(handler) and .requests) on a loopback port."""
    handler = type("AppHandler", (Handler,), {"app": app})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# ---------------------------------------------------------------- Ollama


@dataclass
class OllamaModel:
    name: str
    blob: bytes = b"GGUF" + b"\0" * 1020  # the model layer's content
    family: str = "llama"
    parameter_size: str = "3.2B"
    quantization: str = "Q4_K_M"
    context_length: int = 131072
    capabilities: tuple[str, ...] = ("completion", "tools")

    @property
    def blob_digest(self) -> str:
        return hashlib.sha256(self.blob).hexdigest()

    @property
    def size(self) -> int:
        return len(self.blob) + 1580  # template, params and license layers

    def tag(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "model": self.name,
            "modified_at": "2025-01-01T00:00:00.000000000Z",
            "size": self.size,
            "digest": hashlib.sha256(self.name.encode()).hexdigest(),  # the manifest's digest
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": self.family,
                "families": [self.family],
                "parameter_size": self.parameter_size,
                "quantization_level": self.quantization,
            },
        }


@dataclass
class FakeOllama:
    """GET /api/version, /api/tags, /api/ps; POST /api/show, /api/pull (NDJSON); DELETE /api/delete.
    As the registry: GET /v2/{namespace}/{model}/manifests/{tag} for the library's models, whose
    model layer is `listed` bytes where given (a model too big to serve), else its blob's size."""

    models: dict[str, OllamaModel] = field(default_factory=dict)
    library: dict[str, OllamaModel] = field(default_factory=dict)  # what a pull can fetch
    listed: dict[str, int] = field(default_factory=dict)
    loaded: dict[str, Any] = field(default_factory=dict)  # name → keep_alive it was given
    requests: list[Any] = field(default_factory=list)
    cut_streams: bool = False  # answer streams end early, without `done: true`

    def handle(self, h: Handler) -> None:
        path = h.path.split("?")[0]
        if h.command == "GET" and path.startswith("/v2/") and "/manifests/" in path:
            return self.manifest(h, path)
        if h.command == "GET" and path == "/api/version":
            return h.send_json(200, {"version": "0.12.6"})
        if h.command == "GET" and path == "/api/tags":
            return h.send_json(200, {"models": [m.tag() for m in self.models.values()]})
        if h.command == "GET" and path == "/api/ps":
            return h.send_json(
                200,
                {
                    "models": [
                        self.models[n].tag()
                        | {"expires_at": "2099-01-01T00:00:00Z", "size_vram": 0}
                        for n in self.loaded
                    ]
                },
            )
        if h.command == "POST" and path in ("/api/generate", "/api/chat", "/api/embed"):
            return self.infer(h, path, h.body() or {})
        if h.command == "POST" and path == "/api/show":
            name = (h.body() or {}).get("model", "")
            model = self.models.get(name) or self.models.get(f"{name}:latest")
            if model is None:
                return h.send_json(404, {"error": f"model '{name}' not found"})
            return h.send_json(
                200,
                {
                    "modelfile": f"# Modelfile\nFROM /root/.ollama/models/blobs/sha256-{model.blob_digest}\n",
                    "parameters": 'stop "<|eot_id|>"',
                    "template": "{{ .Prompt }}",
                    "details": model.tag()["details"],
                    "model_info": {
                        "general.architecture": model.family,
                        f"{model.family}.context_length": model.context_length,
                        "general.parameter_count": 3_212_749_824,
                    },
                    "capabilities": list(model.capabilities),
                },
            )
        if h.command == "POST" and path == "/api/pull":
            return self.pull(h, (h.body() or {}).get("model", ""))
        if h.command == "DELETE" and path == "/api/delete":
            name = (h.body() or {}).get("model", "")
            if self.models.pop(name, None) is None:
                return h.send_json(404, {"error": f"model '{name}' not found"})
            h.send_response(200)
            h.send_header("Content-Length", "0")
            h.end_headers()
            return None
        return h.send_json(404, {"error": "not found"})

    def finished(self, h: Handler, name: str, reason: str) -> None:
        """The reply to a request with nothing to generate: a load, or an unload (keep_alive 0)."""
        h.send_json(200, {"model": name, "created_at": "2025-01-01T00:00:00Z", "response": "",
                          "done": True, "done_reason": reason})  # fmt: skip

    def infer(self, h: Handler, path: str, body: dict[str, Any]) -> None:
        name = body.get("model", "")
        if name not in self.models:
            return h.send_json(404, {"error": f"model '{name}' not found, try pulling it first"})
        if body.get("keep_alive") in (0, "0", "0s"):
            self.loaded.pop(name, None)
            return self.finished(h, name, "unload")
        self.loaded[name] = body.get("keep_alive", "5m")
        if path == "/api/embed":
            inputs = body.get("input") or []
            inputs = [inputs] if isinstance(inputs, str) else inputs
            return h.send_json(
                200,
                {
                    "model": name,
                    "embeddings": [[float(len(t)), 1.0, 0.5] for t in inputs],
                    "prompt_eval_count": len(inputs),
                },
            )
        if path == "/api/generate" and not body.get("prompt"):
            return self.finished(h, name, "load")
        words = ["Hello", " from", " the", " daemon"][
            : (body.get("options") or {}).get("num_predict", 4)
        ]
        chat = path == "/api/chat"

        def piece(text: str, done: bool) -> dict[str, Any]:
            event: dict[str, Any] = {
                "model": name,
                "created_at": "2025-01-01T00:00:00Z",
                "done": done,
            }
            if chat:
                event["message"] = {"role": "assistant", "content": text}
            else:
                event["response"] = text
            if done:
                event |= {
                    "done_reason": "stop",
                    "prompt_eval_count": 7,
                    "eval_count": len(words),
                    "total_duration": 1000,
                }
            return event

        if not body.get("stream", True):
            return h.send_json(200, piece("".join(words), True))
        events = [*(piece(w, False) for w in words), piece("", True)]
        if self.cut_streams:  # a daemon that ends its stream early, but cleanly
            events = events[:2]
        write_chunked(h, "application/x-ndjson", [(json.dumps(e) + "\n").encode() for e in events])
        return None

    def manifest(self, h: Handler, path: str) -> None:
        repo, tag = path.removeprefix("/v2/").split("/manifests/")
        namespace, model = repo.split("/", 1)
        name = f"{model}:{tag}" if namespace == "library" else f"{repo}:{tag}"
        found = self.library.get(name)
        if found is None:
            return h.send_json(404, {"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]})  # fmt: skip
        size = self.listed.get(name, len(found.blob))
        layer = "application/vnd.ollama.image."
        return h.send_json(200, {
            "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:" + "c" * 64, "size": 485},
            "layers": [{"mediaType": layer + "model", "digest": "sha256:" + found.blob_digest, "size": size},
                       {"mediaType": layer + "template", "digest": "sha256:" + "d" * 64, "size": 1095}],
        })  # fmt: skip

    def pull(self, h: Handler, name: str) -> None:
        model = self.library.get(name)
        events: list[dict[str, Any]] = [{"status": "pulling manifest"}]
        if model is None:
            events.append({"error": "pull model manifest: file does not exist"})
        else:
            total = len(model.blob)
            for done in (0, total // 2, total):
                events.append({"status": f"pulling {model.blob_digest[:12]}", "digest": f"sha256:{model.blob_digest}",
                               "total": total, "completed": done})  # fmt: skip
            events += [
                {"status": s} for s in ("verifying sha256 digest", "writing manifest", "success")
            ]
            self.models[name] = model
        write_chunked(h, "application/x-ndjson", [(json.dumps(e) + "\n").encode() for e in events])


# ---------------------------------------------------------------- OpenAI-compatible, Anthropic, LM Studio


@dataclass
class FakeOpenAI:
    """GET /v1/models with a Bearer key; OpenRouter's richer entries when `rich` is set."""

    key: str | None = "sk-test"
    models: list[str] = field(default_factory=lambda: ["gpt-4o", "text-embedding-3-small"])
    rich: bool = False
    requests: list[Any] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)  # what inference requests sent
    streamed: list[bytes] = field(default_factory=list)  # the events of its streams, as sent

    def handle(self, h: Handler) -> None:
        if self.key and h.headers.get("Authorization") != f"Bearer {self.key}":
            return h.send_json(401, {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "code": "invalid_api_key"}})  # fmt: skip
        if h.command == "POST":
            return self.infer(h, h.path.rstrip("/"), h.body() or {})
        if h.path.rstrip("/").endswith("/models"):
            data = []
            for m in self.models:
                entry: dict[str, Any] = {
                    "id": m,
                    "object": "model",
                    "created": 1715367049,
                    "owned_by": "system",
                }
                if self.rich:
                    entry |= {"name": m.split("/")[-1].title(), "context_length": 200000,
                              "pricing": {"prompt": "0.000003", "completion": "0.000015"},
                              "top_provider": {"max_completion_tokens": 8192},
                              "architecture": {"input_modalities": ["text", "image"]}}  # fmt: skip
                data.append(entry)
            return h.send_json(200, {"object": "list", "data": data})
        return h.send_json(404, {"error": {"message": "not found"}})

    def infer(self, h: Handler, path: str, body: dict[str, Any]) -> None:
        self.bodies.append(body)
        model = body.get("model")
        if model not in self.models:
            return h.send_json(
                404,
                {
                    "error": {
                        "message": f"The model `{model}` does not exist",
                        "type": "invalid_request_error",
                        "code": "model_not_found",
                    }
                },
            )
        if path.endswith("/embeddings"):
            inputs = body.get("input") or []
            inputs = [inputs] if isinstance(inputs, str) else inputs
            data = [
                {"object": "embedding", "index": i, "embedding": [float(len(t)), 0.25]}
                for i, t in enumerate(inputs)
            ]
            return h.send_json(
                200,
                {
                    "object": "list",
                    "data": data,
                    "model": model,
                    "usage": {"prompt_tokens": 3, "total_tokens": 3},
                },
            )
        chat = path.endswith("/chat/completions")
        words = ["Hi", " there", "!"][: body.get("max_tokens") or 3]
        kind = "chat.completion" if chat else "text_completion"
        if not body.get("stream"):
            choice = {"index": 0, "finish_reason": "stop"} | (
                {"message": {"role": "assistant", "content": "".join(words)}}
                if chat
                else {"text": "".join(words)}
            )
            return h.send_json(
                200,
                {
                    "id": "chatcmpl-1",
                    "object": kind,
                    "created": 1,
                    "model": model,
                    "choices": [choice],
                    "usage": {
                        "prompt_tokens": 5,
                        "completion_tokens": len(words),
                        "total_tokens": 5 + len(words),
                    },
                },
            )
        events = []
        for i, word in enumerate([*words, None]):
            choice: dict[str, Any] = {"index": 0, "finish_reason": "stop" if word is None else None}
            if chat:
                choice["delta"] = (
                    {}
                    if word is None
                    else ({"role": "assistant", "content": word} if i == 0 else {"content": word})
                )
            else:
                choice["text"] = word or ""
            events.append(
                f"data: {json.dumps({'id': 'chatcmpl-1', 'object': kind + ('.chunk' if chat else ''), 'created': 1, 'model': model, 'choices': [choice]})}\n\n"
            )
        events.append("data: [DONE]\n\n")
        self.streamed += [e.encode() for e in events]
        write_chunked(h, "text/event-stream", [e.encode() for e in events])
        return None


@dataclass
class FakeAnthropic:
    """GET /v1/models, paged (has_more, last_id), with x-api-key and anthropic-version."""

    key: str = "sk-ant-test"
    models: list[str] = field(
        default_factory=lambda: ["claude-sonnet-4-0", "claude-3-5-haiku-latest", "claude-opus-4-0"]
    )
    requests: list[Any] = field(default_factory=list)
    bodies: list[Any] = field(default_factory=list)

    def handle(self, h: Handler) -> None:
        if h.headers.get("x-api-key") != self.key:
            return h.send_json(401, {"type": "error", "error": {"type": "authentication_error", "message": "invalid x-api-key"}})  # fmt: skip
        if not h.headers.get("anthropic-version"):
            return h.send_json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "anthropic-version header is required"}})  # fmt: skip
        from urllib.parse import parse_qs, urlparse

        query = parse_qs(urlparse(h.path).query)
        after = query.get("after_id", [None])[0]
        start = self.models.index(after) + 1 if after else 0
        page = self.models[start : start + 2]  # two per page, to exercise paging
        data = [{"type": "model", "id": m, "display_name": m.replace("-", " ").title(), "created_at": "2025-02-19T00:00:00Z"} for m in page]  # fmt: skip
        if h.command == "POST" and h.path.startswith("/v1/messages"):
            return self.messages(h, h.body() or {})
        return h.send_json(200, {"data": data, "has_more": start + 2 < len(self.models),
                                 "first_id": page[0] if page else None, "last_id": page[-1] if page else None})  # fmt: skip

    def messages(self, h: Handler, body: dict[str, Any]) -> None:
        """POST /v1/messages: the Messages API, with its streaming events."""
        self.bodies.append(body)
        if body.get("model") not in self.models:
            return h.send_json(404, {"type": "error", "error": {"type": "not_found_error", "message": f"model: {body.get('model')}"}})  # fmt: skip
        if "max_tokens" not in body:
            return h.send_json(400, {"type": "error", "error": {"type": "invalid_request_error", "message": "max_tokens: Field required"}})  # fmt: skip
        words = ["Hello", " from", " Claude"]
        if not body.get("stream"):
            return h.send_json(200, {"id": "msg_1", "type": "message", "role": "assistant", "model": body["model"],
                                     "content": [{"type": "text", "text": "".join(words)}], "stop_reason": "end_turn",
                                     "stop_sequence": None, "usage": {"input_tokens": 12, "output_tokens": 3}})  # fmt: skip
        events = [("message_start", {"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": body["model"], "stop_reason": None, "usage": {"input_tokens": 12, "output_tokens": 1}}}),
                  ("content_block_start", {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
                  ("ping", {"type": "ping"})]  # fmt: skip
        events += [("content_block_delta", {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}}) for w in words]  # fmt: skip
        events += [("content_block_stop", {"type": "content_block_stop", "index": 0}),
                   ("message_delta", {"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": None}, "usage": {"output_tokens": 3}}),
                   ("message_stop", {"type": "message_stop"})]  # fmt: skip
        write_chunked(
            h,
            "text/event-stream",
            [f"event: {n}\ndata: {json.dumps(d)}\n\n".encode() for n, d in events],
        )


@dataclass
class FakeLMStudio:
    """LM Studio: GET /api/v0/models, POST /api/v1/models/load|unload (0.4+; absent when
    `v1` is False, as in older versions), and the OpenAI-compatible /v1 endpoints."""

    v1: bool = True
    loaded: dict[str, dict[str, Any]] = field(default_factory=dict)  # instance_id → load body
    requests: list[Any] = field(default_factory=list)
    openai: FakeOpenAI = field(default_factory=lambda: FakeOpenAI(
        key=None, models=["qwen2.5-7b-instruct", "text-embedding-nomic-embed-text-v1.5"]))  # fmt: skip

    def handle(self, h: Handler) -> None:
        if h.path.startswith("/api/v1/models/") and self.v1 and h.command == "POST":
            body = h.body() or {}
            if h.path.endswith("/load"):
                if body.get("model") not in self.openai.models:
                    return h.send_json(404, {"error": {"message": f"Model '{body.get('model')}' not found", "type": "invalid_request_error"}})  # fmt: skip
                self.loaded[body["model"]] = body
                return h.send_json(200, {"type": "llm", "instance_id": body["model"], "load_time_seconds": 0.5, "status": "loaded"})  # fmt: skip
            if h.path.endswith("/unload"):
                self.loaded.pop(body.get("instance_id"), None)
                return h.send_json(200, {"instance_id": body.get("instance_id")})
        if h.path.startswith("/v1/"):
            return self.openai.handle(h)
        if h.path.startswith("/api/v0/models"):
            return h.send_json(200, {"object": "list", "data": [
                {"id": "qwen2.5-7b-instruct", "object": "model", "type": "llm", "publisher": "lmstudio-community",
                 "arch": "qwen2", "compatibility_type": "gguf", "quantization": "Q4_K_M", "state": "loaded",
                 "max_context_length": 32768},
                {"id": "text-embedding-nomic-embed-text-v1.5", "object": "model", "type": "embeddings",
                 "publisher": "nomic-ai", "arch": "nomic-bert", "compatibility_type": "gguf",
                 "quantization": "Q4_K_M", "state": "not-loaded", "max_context_length": 2048},
            ]})  # fmt: skip
        return h.send_json(404, {"error": "Unexpected endpoint or method."})


# ---------------------------------------------------------------- Hugging Face Hub


@dataclass
class FakeHub:
    """The Hub's download protocol: /api/models/{repo}/revision|tree/{rev}, and
    /{repo}/resolve/{rev}/{file} (HEAD and GET) with X-Repo-Commit, the file's sha256 as the
    ETag of large files (X-Linked-Etag), and Range requests for resuming.

    `cut_after` bytes: the next GET of a file stops after that many bytes (an interrupted
    download); with `down_after_cut`, the hub then answers 503 until `down` is cleared.
    `corrupt`: files served with content that does not match their ETag.
    `listed`: sizes the tree listing gives instead of the real ones (a model too big to serve).
    """

    repos: dict[str, dict[str, bytes]] = field(default_factory=dict)
    commit: str = "a" * 40
    cut_after: int | None = None
    down_after_cut: bool = False
    down: bool = False
    corrupt: set[str] = field(default_factory=set)
    gated: set[str] = field(default_factory=set)
    requests: list[Any] = field(default_factory=list)
    listed: dict[str, int] = field(default_factory=dict)

    def handle(self, h: Handler) -> None:
        from urllib.parse import unquote, urlparse

        path = unquote(urlparse(h.path).path)
        if path.startswith("/api/models/"):
            rest = path.removeprefix("/api/models/")
            for repo, files in self.repos.items():
                if rest.startswith(repo + "/"):
                    kind = rest.removeprefix(repo + "/").split("/")[0]
                    if kind == "revision":
                        return h.send_json(200, {"id": repo, "modelId": repo, "sha": self.commit, "private": False,
                                                 "siblings": [{"rfilename": f} for f in sorted(files)]})  # fmt: skip
                    if kind == "tree":
                        return h.send_json(200, [
                            {"type": "file", "path": f, "size": self.listed.get(f, len(b)), "oid": hashlib.sha1(b).hexdigest(),
                             **({"lfs": {"oid": hashlib.sha256(b).hexdigest(), "size": self.listed.get(f, len(b)), "pointerSize": 134}}
                                if f.endswith((".gguf", ".safetensors")) else {})}
                            for f, b in sorted(files.items())
                        ])  # fmt: skip
            return h.send_json(
                404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
            )
        for repo, files in self.repos.items():
            prefix = f"/{repo}/resolve/"
            if path.startswith(prefix):
                if repo in self.gated and h.headers.get("Authorization") != "Bearer hf_good":
                    return h.send_json(401, {"error": "Access to model is restricted."}, {"X-Error-Code": "GatedRepo"})  # fmt: skip
                filename = path.removeprefix(prefix).split("/", 1)[1]
                if filename not in files:
                    return h.send_json(
                        404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"}
                    )
                return self.send_file(h, filename, files[filename])
        return h.send_json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})

    def send_file(self, h: Handler, filename: str, content: bytes) -> None:
        if self.down and h.command == "GET":
            return h.send_json(503, {"error": "Service Unavailable"})
        sha = hashlib.sha256(content).hexdigest()
        large = filename.endswith((".gguf", ".safetensors"))
        served = content if filename not in self.corrupt else bytes(reversed(content))
        start = 0
        if h.headers.get("Range", "").startswith("bytes="):
            start = int(h.headers["Range"].removeprefix("bytes=").split("-")[0] or 0)
        body = served[start:]
        h.send_response(206 if start else 200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("X-Repo-Commit", self.commit)
        h.send_header("ETag", f'"{sha if large else hashlib.sha1(content).hexdigest()}"')
        if large:
            h.send_header("X-Linked-Etag", f'"{sha}"')
            h.send_header("X-Linked-Size", str(len(content)))
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(served) - 1}/{len(served)}")
        h.end_headers()
        if h.command == "HEAD":
            return
        if self.cut_after is not None and len(body) > self.cut_after:
            h.wfile.write(body[: self.cut_after])
            h.wfile.flush()
            self.cut_after = None
            self.down = self.down_after_cut
            h.close_connection = True
            import socket

            h.connection.shutdown(socket.SHUT_RDWR)
            return
        h.wfile.write(body)
