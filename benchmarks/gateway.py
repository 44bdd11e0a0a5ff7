"""What the gateway adds: one instant upstream, reached three ways in one run.

    direct     the upstream itself (an OpenAI-compatible stub that answers at once)
    modelctl   `modelctl serve`, with the upstream configured as an [endpoints.stub] backend
    litellm    LiteLLM's proxy, configured for the same upstream (installed from the package
               index into .bench/litellm on first run; skipped with a note if that fails)

For 1, 16 and 64 concurrent clients, streaming and not: requests/s, and latency p50/p99 with
what each proxy adds over the direct path. Every server runs in its own process, on one
machine; the load generator is a small asyncio HTTP/1.1 client with keep-alive connections.

    python benchmarks/gateway.py [--seconds 4] [--no-litellm]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LITELLM_VENV = ROOT / ".bench" / "litellm"
CHUNKS = 8  # tokens in a streamed answer
KEY = "sk-bench-0123456789abcdef"  # both proxies check a bearer key, as each would in production

# ---------------------------------------------------------------------- the upstream


def _answer() -> bytes:
    return json.dumps({
        "id": "chatcmpl-stub", "object": "chat.completion", "created": 0, "model": "gpt-stub",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hello there"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
    }).encode()  # fmt: skip


def _chunk(text: str, finish: str | None) -> bytes:
    return b"data: " + json.dumps({
        "id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": 0,
        "model": "gpt-stub",
        "choices": [{"index": 0, "delta": {"content": text} if text else {},
                     "finish_reason": finish}],
    }).encode() + b"\n\n"  # fmt: skip


MODELS = json.dumps({"object": "list", "data": [
    {"id": "gpt-stub", "object": "model", "created": 0, "owned_by": "stub"}]}).encode()  # fmt: skip


async def upstream(scope, receive, send) -> None:  # a raw ASGI app: as fast as uvicorn goes
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["path"].endswith("/models"):
        payload, stream = MODELS, False
    else:
        payload, stream = _answer(), b'"stream": true' in body or b'"stream":true' in body
    if not stream:
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})  # fmt: skip
        await send({"type": "http.response.body", "body": payload})
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})  # fmt: skip
    for i in range(CHUNKS):
        await send(
            {"type": "http.response.body", "body": _chunk(f"t{i} ", None), "more_body": True}
        )
    await send({"type": "http.response.body", "body": _chunk("", "stop") + b"data: [DONE]\n\n"})


# ---------------------------------------------------------------------- the load generator


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines if ": " in line)
    if headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    else:
        await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split(" ", 2)[1])


async def _client(port: int, request: bytes, until: float, latencies: list[float]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < until:
            started = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            if status != 200:
                raise RuntimeError(f"status {status}")
            latencies.append(time.perf_counter() - started)
    finally:
        writer.close()


def _request(path: str, model: str, stream: bool, key: str | None) -> bytes:
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 16, "stream": stream}).encode()  # fmt: skip
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"{auth}Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


def measure(port: int, model: str, *, clients: int, stream: bool, seconds: float,
            key: str | None = None) -> dict[str, float]:  # fmt: skip
    request = _request("/v1/chat/completions", model, stream, key)
    latencies: list[float] = []

    async def load() -> None:
        warm: list[float] = []
        await asyncio.gather(*(_client(port, request, time.perf_counter() + 0.5, warm)
                               for _ in range(clients)))  # fmt: skip
        until = time.perf_counter() + seconds
        await asyncio.gather(*(_client(port, request, until, latencies) for _ in range(clients)))

    started = time.perf_counter()
    asyncio.run(load())
    elapsed = time.perf_counter() - started - 0.5
    ordered = sorted(latencies)
    return {
        "rps": len(latencies) / elapsed,
        "p50": statistics.median(ordered) * 1000,
        "p99": ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] * 1000,
        "n": len(latencies),
    }


# ---------------------------------------------------------------------- the servers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(port: int, path: str, proc: subprocess.Popen, timeout: float = 120,
             key: str | None = None) -> None:  # fmt: skip
    import httpx

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=2).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"no answer on port {port}{path}")


def start_upstream() -> tuple[subprocess.Popen, int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "gateway:upstream", "--port", str(port),
         "--log-level", "warning", "--no-access-log"],
        cwd=Path(__file__).parent,
    )  # fmt: skip
    wait_for(port, "/v1/models", proc)
    return proc, port


def start_modelctl(upstream_port: int, home: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    (home / "config.toml").write_text(
        f'[endpoints.stub]\nbase_url = "http://127.0.0.1:{upstream_port}/v1"\n'
        'api_key_env = "STUB_KEY"\n'
    )
    env = {**os.environ, "MODELCTL_HOME": str(home), "MODELCTL_CONFIG": str(home / "config.toml"),
           "STUB_KEY": "sk-stub", "MODELCTL_API_KEY": KEY}  # fmt: skip
    modelctl = [sys.executable, "-m", "modelctl"]
    subprocess.run([*modelctl, "sync", "--backend", "stub"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    proc = subprocess.Popen([*modelctl, "serve", "--port", str(port)], env=env)
    wait_for(port, "/v1/models", proc, key=KEY)
    return proc, port


def start_litellm(upstream_port: int, work: Path) -> tuple[subprocess.Popen, int] | str:
    binary = LITELLM_VENV / "bin" / "litellm"
    if not binary.exists():
        print("installing LiteLLM's proxy into .bench/litellm (once) …", file=sys.stderr)
        try:
            subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True)
            subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "litellm[proxy]"],
                           check=True)  # fmt: skip
        except subprocess.CalledProcessError as exc:
            return f"could not install litellm[proxy]: {exc}"
    port = free_port()
    config = work / "litellm.yaml"
    config.write_text(
        "model_list:\n  - model_name: gpt-stub\n    litellm_params:\n"
        f"      model: openai/gpt-stub\n      api_base: http://127.0.0.1:{upstream_port}/v1\n"
        "      api_key: sk-stub\n"
        "litellm_settings:\n  drop_params: true\n  telemetry: false\n"
    )
    env = {**os.environ, "LITELLM_LOG": "ERROR", "LITELLM_TELEMETRY": "False",
           "LITELLM_MASTER_KEY": KEY}  # fmt: skip
    proc = subprocess.Popen(
        [str(binary), "--config", str(config), "--port", str(port), "--num_workers", "1"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(port, "/health/liveliness", proc, timeout=180, key=KEY)
    except RuntimeError as exc:
        proc.kill()
        return f"LiteLLM's proxy did not start: {exc}"
    return proc, port


def _litellm_version() -> str:
    python = LITELLM_VENV / "bin" / "python"
    code = "import importlib.metadata as m; print(m.version('litellm'))"
    return subprocess.run([str(python), "-c", code], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per measurement")
    parser.add_argument("--no-litellm", action="store_true")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16, 64])
    args = parser.parse_args()

    procs: list[subprocess.Popen] = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            upstream_proc, upstream_port = start_upstream()
            procs.append(upstream_proc)
            modelctl_proc, modelctl_port = start_modelctl(upstream_port, Path(tmp))
            procs.append(modelctl_proc)
            targets = {"direct": (upstream_port, "gpt-stub"),
                       "modelctl": (modelctl_port, "gpt-stub")}  # fmt: skip
            with contextlib.suppress(Exception):
                print(f"litellm {_litellm_version()}", file=sys.stderr)
            if not args.no_litellm:
                started = start_litellm(upstream_port, Path(tmp))
                if isinstance(started, str):
                    print(f"note: {started}; LiteLLM left out", file=sys.stderr)
                else:
                    procs.append(started[0])
                    targets["litellm"] = (started[1], "gpt-stub")
            report(targets, args)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                proc.wait(timeout=30)


def report(targets: dict[str, tuple[int, str]], args: argparse.Namespace) -> None:
    print(f"gateway overhead: one instant upstream; {args.seconds:g} s per cell; "
          f"{os.cpu_count()} CPUs shared by the client, the proxy and the upstream")  # fmt: skip
    print(f"{'mode':<10}{'clients':>8}  {'target':<9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
          f"{'+p50 ms':>9}{'+p99 ms':>9}")  # fmt: skip
    for stream in (False, True):
        for clients in args.clients:
            base = None
            for name, (port, model) in targets.items():
                got = measure(port, model, clients=clients, stream=stream, seconds=args.seconds,
                              key=None if name == "direct" else KEY)  # fmt: skip
                base = base or got
                added = (f"{got['p50'] - base['p50']:>9.2f}{got['p99'] - base['p99']:>9.2f}"
                         if name != "direct" else f"{'':>18}")  # fmt: skip
                print(f"{'stream' if stream else 'json':<10}{clients:>8}  {name:<9}"
                      f"{got['rps']:>9.0f}{got['p50']:>9.2f}{got['p99']:>9.2f}{added}",
                      flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
