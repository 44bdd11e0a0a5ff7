"""A worker: one loaded model in a process of its own, served over the OpenAI-compatible API.

    python -m modelctl.runtime.worker SPEC.json --fd N --parent PID

The supervisor (`runtime/supervisor.py`) binds a loopback socket, writes the spec (the model's
record, its backend and load options) and starts this process with the socket's descriptor. The
worker loads the model with the backend's in-process runtime (llama.cpp, transformers: the
same code the Python library runs in its own process), then answers on that socket:

    GET  /health               {"status": "ok", "model", "pid", "parallel"}; answers once loaded
    GET  /v1/models            the one model
    POST /v1/chat/completions  chat, streaming as server-sent events
    POST /v1/completions       completion, streaming as server-sent events
    POST /v1/embeddings        embeddings (float)

An error is OpenAI's error body, plus `modelctl_error`: the error's class, so that the gateway
raises the same error a model in its own process would (a prompt too long stays a 400).
A load that fails writes `SPEC.json.error` ({"error", "message", "hint"}) and exits with 3.
The worker exits when the process that started it is gone: a gateway killed with -9 leaves no
model behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from modelctl.backends import Handle

log = logging.getLogger("modelctl.worker")

LOAD_FAILED = 3  # the exit status of a worker whose model did not load


def load(spec: dict[str, Any]) -> Handle:
    """The model, loaded in this process by its backend's own runtime."""
    from modelctl.backends._loader import load_backends
    from modelctl.config import Settings
    from modelctl.record.errors import BackendError
    from modelctl.record.model import Model

    settings = Settings.load(home=spec.get("home"))
    backends = load_backends(settings, names=[spec["entry"]])
    backend = backends.get(spec["backend"])
    if backend is None:
        raise BackendError(f"backend {spec['backend']} is not installed in the worker's Python")
    model = Model.from_dict(spec["model"], context="the worker's spec")
    return backend.load(model, **spec.get("options", {}))


def _error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    from modelctl.record.errors import BackendError, ModelctlError

    if isinstance(exc, ModelctlError):
        status = 502 if isinstance(exc, BackendError) and type(exc) is BackendError else 400
        message, hint, name = exc.message, exc.hint, type(exc).__name__
    else:  # a bug in a runtime: the log has the traceback
        log.exception("internal error")
        status, message, hint, name = 500, f"{type(exc).__name__}: {exc}", None, "BackendError"
    kind = "invalid_request_error" if status < 500 else "server_error"
    return status, {
        "error": {
            "message": message, "type": kind, "param": None, "code": None,
            "modelctl_error": name, "hint": hint,
        }
    }  # fmt: skip


def make_app(handle: Handle, model_id: str) -> Starlette:
    """The worker's HTTP API over one loaded model."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    dumps = json.dumps

    def failed(exc: BaseException) -> JSONResponse:
        status, body = _error_body(exc)
        return JSONResponse(body, status_code=status)

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok", "model": model_id, "pid": os.getpid(), "parallel": handle.parallel,
                "device": handle.device, "reloads_for": list(handle.reloads_for),
                "context": getattr(handle, "context", None),
                "embedding": getattr(handle, "embedding", None),
                "logprobs": bool(getattr(handle, "gives_logprobs", False)),
            }
        )  # fmt: skip

    async def models(request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": model_id, "object": "model", "owned_by": "modelctl"}],
            }
        )

    async def body_of(request: Request) -> dict[str, Any]:
        from modelctl.record.errors import InvalidRequest

        try:
            body = json.loads(await request.body())
        except ValueError:
            raise InvalidRequest("the body is not JSON") from None
        if not isinstance(body, dict):
            raise InvalidRequest("the body must be a JSON object")
        body.pop("model", None)
        return body

    async def generate(request: Request, kind: str, key: str) -> Response:
        try:
            body = await body_of(request)
            payload = body.pop(key, None)
            stream = bool(body.pop("stream", False))
            answer = await getattr(handle, "a" + kind)(payload, stream=stream, **body)
            if not stream:
                return JSONResponse(answer)
            first = await anext(answer, None)  # a refusal before the first chunk: an HTTP error
        except Exception as exc:
            return failed(exc)

        async def events() -> Any:
            try:
                if first is not None:
                    yield f"data: {dumps(first, separators=(',', ':'))}\n\n"
                async for chunk in answer:
                    yield f"data: {dumps(chunk, separators=(',', ':'))}\n\n"
            except Exception as exc:  # mid-stream: one last event says why
                yield f"data: {dumps(_error_body(exc)[1])}\n\n"
            finally:
                await answer.aclose()  # a client that left lets the model go
            yield "data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def chat(request: Request) -> Response:
        return await generate(request, "chat", "messages")

    async def complete(request: Request) -> Response:
        return await generate(request, "complete", "prompt")

    async def embeddings(request: Request) -> Response:
        try:
            body = await body_of(request)
            texts = body.get("input")
            texts = [texts] if isinstance(texts, str) else texts
            vectors = await handle.aembed(texts)
        except Exception as exc:
            return failed(exc)
        data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
        return JSONResponse({"object": "list", "model": model_id, "data": data})

    return Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/completions", complete, methods=["POST"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
        ]
    )


def _watch_parent(parent: int) -> None:
    """Exit as soon as the process that started this one is gone (killed with -9, say)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        log.warning("the supervisor (pid %d) is gone: exiting", parent)
        os._exit(0)

    threading.Thread(target=watch, name="modelctl-parent-watch", daemon=True).start()


def _import_server() -> None:
    """Load the HTTP server's modules (for their side effect: a later import finds them)."""
    import importlib

    for name in (
        "starlette.applications", "starlette.responses", "starlette.routing", "uvicorn",
        "uvicorn.protocols.http.h11_impl", "uvicorn.protocols.http.httptools_impl",
    ):  # fmt: skip
        importlib.import_module(name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m modelctl.runtime.worker")
    parser.add_argument("spec", type=Path)
    parser.add_argument("--fd", type=int, required=True, help="the listening socket's descriptor")
    parser.add_argument("--parent", type=int, help="exit when this process is gone")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s"
    )
    if args.parent:
        _watch_parent(args.parent)
    spec = json.loads(args.spec.read_text())
    model_id = spec["model"]["id"]
    started = time.perf_counter()
    # the HTTP server's modules load while the model does (a runtime's load runs in C,
    # without the GIL): a worker is ready sooner
    server_modules = threading.Thread(target=_import_server, name="modelctl-imports")
    server_modules.start()
    try:
        handle = load(spec)
    except Exception as exc:  # the supervisor reads why, the log keeps it
        from modelctl.record.errors import ModelctlError

        known = isinstance(exc, ModelctlError)
        error = {
            "error": type(exc).__name__ if known else "LoadFailed",
            "message": exc.message if known else f"{type(exc).__name__}: {exc}",
            "hint": exc.hint if known else None,
        }
        if not known:
            log.exception("loading %s failed", model_id)
        log.error("loading %s failed: %s", model_id, error["message"])
        Path(f"{args.spec}.error").write_text(json.dumps(error))
        return LOAD_FAILED
    log.info("loaded %s in %.2f s (pid %d)", model_id, time.perf_counter() - started, os.getpid())

    import socket

    import uvicorn

    server_modules.join()
    sock = socket.socket(fileno=args.fd)
    config = uvicorn.Config(
        make_app(handle, model_id), log_level="warning", access_log=False, lifespan="off",
        timeout_graceful_shutdown=5,
    )  # fmt: skip
    uvicorn.Server(config).run(sockets=[sock])
    handle.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
