"""Workers benchmark: a real `modelctl serve` (each model in a worker process) under concurrent
streams, what a worker adds to a request, its load time and the memory an unload gives back,
and kill -9 of a worker in the middle of streams.

    python benchmarks/workers.py [--quick]

Targets (issue "Serving core v2"):
- 1, 16, 64 and 256 concurrent streaming clients on one tiny GGUF model, and on two models
  that must take turns in the budget: 0 errors other than documented 503s, /health under 50 ms
  at p99 throughout, the gateway's resident memory flat after the run;
- gateway → worker adds under 1 ms at p50 with one client, beside the same requests sent to
  the worker directly;
- a load (a process start included) within 1.2x of llama-cpp-python loading the same file in
  a fresh process; the machine's memory after an unload back within 5% of before;
- kill -9 of a worker in the middle of 16 streams, 20 times: every stream ends within 1 s,
  none hangs, the next request is served.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import httpx
import psutil

from modelctl.ops.demo import TinySpec, write_llama

HELLO = [{"role": "user", "content": "hello"}]


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class Server:
    """`modelctl serve --port 0` in a child process, with its own home and model folder."""

    def __init__(self, folder: Path, **settings: str) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "MODELCTL_HOME": str(folder / "home")}
        env |= {"MODELCTL_MODEL_DIRS": str(folder / "models")}
        env |= {"MODELCTL_CONFIG": str(folder / "none.toml")}
        env |= {f"MODELCTL_{k.upper()}": v for k, v in settings.items()}
        subprocess.run(
            [sys.executable, "-m", "modelctl", "sync", "--backend", "llamacpp"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "modelctl", "serve", "--port", "0", "--no-restore"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "serving on" in line:
                self.url = line.split("serving on ")[1].split()[0]
                break
        else:
            raise SystemExit("the server did not start")

    def rss(self) -> int:
        return psutil.Process(self.proc.pid).memory_info().rss

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=60)


async def stream(client: httpx.AsyncClient, model: str, tokens: int) -> str:
    """One streaming chat: "ok", "503" (a documented refusal), or what went wrong."""
    body = {"model": model, "messages": HELLO, "max_tokens": tokens, "stream": True}
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body) as answer:
            if answer.status_code == 503:
                return "503"
            if answer.status_code != 200:
                return f"http {answer.status_code}"
            finish = None
            async for line in answer.aiter_lines():
                if line.startswith("data: {"):
                    event = json.loads(line[6:])
                    if "error" in event:
                        return f"error {event['error'].get('code')}"
                    finish = (event.get("choices") or [{}])[0].get("finish_reason") or finish
            return "ok" if finish else "no finish"
    except httpx.HTTPError as exc:
        return type(exc).__name__


async def concurrency(server: Server, models: list[str], clients: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=clients + 8)
    health: list[float] = []
    async with httpx.AsyncClient(base_url=server.url, timeout=600, limits=limits) as client:
        done = asyncio.Event()

        async def poll_health() -> None:
            while not done.is_set():
                start = time.perf_counter()
                (await client.get("/health")).raise_for_status()
                health.append(time.perf_counter() - start)
                await asyncio.sleep(0.02)

        poller = asyncio.create_task(poll_health())
        start = time.perf_counter()
        results = await asyncio.gather(
            *(stream(client, models[i % len(models)], 8) for i in range(clients))
        )
        elapsed = time.perf_counter() - start
        done.set()
        await poller
    counts: dict[str, int] = {}
    for result in results:
        counts[result] = counts.get(result, 0) + 1
    return {"seconds": elapsed, "results": counts, "health_p99_ms": pct(health, 99) * 1000}


def latency(server: Server, runs: int) -> dict[str, float]:
    """One client, one-token chats: through the gateway, and to the worker directly."""
    body = {"model": "a", "messages": HELLO, "max_tokens": 1, "temperature": 0}
    with httpx.Client(timeout=60) as client:
        client.post(server.url + "/v1/chat/completions", json=body).raise_for_status()
        (slot,) = [
            s for s in client.get(server.url + "/api/v1/loaded").json()["models"]
            if s["model"] == "a"
        ]  # fmt: skip
        worker = psutil.Process(slot["pid"])
        port = next(c.laddr.port for c in worker.net_connections() if c.status == "LISTEN")
        direct = f"http://127.0.0.1:{port}/v1/chat/completions"
        gateway, own = [], []
        for _ in range(runs):  # interleaved: the machine's noise falls on both alike
            for url, samples in ((server.url + "/v1/chat/completions", gateway), (direct, own)):
                start = time.perf_counter()
                client.post(url, json=body).raise_for_status()
                samples.append(time.perf_counter() - start)
    return {
        "direct_p50_ms": statistics.median(own) * 1000,
        "gateway_p50_ms": statistics.median(gateway) * 1000,
        "added_p50_ms": (statistics.median(gateway) - statistics.median(own)) * 1000,
        "added_p99_ms": (pct(gateway, 99) - pct(own, 99)) * 1000,
    }


def load_times(server: Server, path: Path, runs: int) -> dict[str, float]:
    """A load through the server (a worker started, the model loaded, ready) beside
    llama-cpp-python loading the same file in a fresh process, its start included."""
    script = (
        f"import llama_cpp; llama_cpp.Llama(model_path={str(path)!r}, n_ctx=512, verbose=False)"
    )
    fresh, ours = [], []
    with httpx.Client(base_url=server.url, timeout=120) as client:
        for _ in range(runs):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-c", script], check=True)
            fresh.append(time.perf_counter() - start)
            start = time.perf_counter()
            client.post("/api/v1/loaded", json={"model": "big", "context": 512}).raise_for_status()
            ours.append(time.perf_counter() - start)
            client.request("DELETE", "/api/v1/loaded/big").raise_for_status()
    return {
        "fresh_process_s": statistics.median(fresh),
        "worker_s": statistics.median(ours),
        "ratio": statistics.median(ours) / statistics.median(fresh),
    }


def memory_back(server: Server) -> dict[str, float]:
    """The big model's worker (after a request, so its weights are paged in), and the machine's
    used memory (page cache not counted) before the load and after the unload."""
    with httpx.Client(base_url=server.url, timeout=120) as client:
        before = psutil.virtual_memory().used
        client.post("/api/v1/loaded", json={"model": "big", "context": 512}).raise_for_status()
        body = {"model": "big", "prompt": "Once upon", "max_tokens": 4}
        client.post("/v1/completions", json=body).raise_for_status()
        (slot,) = [s for s in client.get("/api/v1/loaded").json()["models"] if s["model"] == "big"]
        resident = psutil.Process(slot["pid"]).memory_info().rss
        client.request("DELETE", "/api/v1/loaded/big").raise_for_status()
        after = psutil.virtual_memory().used
    return {
        "worker_resident_mb": resident / 2**20,
        "used_after_unload_minus_before_mb": (after - before) / 2**20,
        "left_pct_of_worker": (after - before) / resident * 100,
    }


async def _one(
    client: httpx.AsyncClient,
    body: dict[str, Any],
    begun: asyncio.Event,
    killed: list[float],
    ends: list[float],
) -> str:
    """One stream on a model whose worker is about to be killed: how it ended."""
    try:
        async with client.stream(
            "POST", "/v1/chat/completions", json=body | {"stream": True}
        ) as answer:
            async for line in answer.aiter_lines():
                begun.set()
                if '"error"' in line:
                    if killed:
                        ends.append(time.perf_counter() - killed[0])
                    return "error event"
            if killed:
                ends.append(time.perf_counter() - killed[0])
            return "finished" if answer.status_code == 200 else str(answer.status_code)
    except httpx.HTTPError as exc:
        return type(exc).__name__


async def crashes(server: Server, rounds: int, streams: int) -> dict[str, Any]:
    """kill -9 of model a's worker while `streams` streams run on it, `rounds` times."""
    ends: list[float] = []
    outcomes: dict[str, int] = {}
    served_after = 0
    limits = httpx.Limits(max_connections=streams + 8)
    async with httpx.AsyncClient(base_url=server.url, timeout=30, limits=limits) as client:
        for _ in range(rounds):
            body = {"model": "a", "messages": HELLO, "max_tokens": 400}
            await client.post("/v1/chat/completions", json=body | {"max_tokens": 1})
            loaded = (await client.get("/api/v1/loaded")).json()["models"]
            slot = next(s for s in loaded if s["model"] == "a")
            pid = slot["pid"]
            if pid is None:
                raise SystemExit(f"model a is not in a worker: {slot}")
            begun = asyncio.Event()
            killed: list[float] = []

            tasks = [
                asyncio.create_task(_one(client, body, begun, killed, ends)) for _ in range(streams)
            ]
            await asyncio.wait_for(begun.wait(), 60)
            killed.append(time.perf_counter())
            os.kill(pid, signal.SIGKILL)
            for result in await asyncio.wait_for(asyncio.gather(*tasks), 120):
                outcomes[result] = outcomes.get(result, 0) + 1
            answer = await client.post("/v1/chat/completions", json=body | {"max_tokens": 1})
            served_after += answer.status_code == 200
    return {
        "outcomes": outcomes,
        "slowest_end_s": max(ends) if ends else None,
        "served_after": f"{served_after}/{rounds}",
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer runs and clients")
    parts = ("streams", "latency", "load", "memory", "crash", "turns")
    parser.add_argument("--only", choices=parts, action="append", help="run only these parts")
    args = parser.parse_args()
    quick, only = args.quick, set(args.only or parts)
    folder = Path(tempfile.mkdtemp(prefix="modelctl-workers-"))
    (folder / "models").mkdir()
    tiny = TinySpec(name="Tiny")
    write_llama(folder / "models" / "a.gguf", tiny)
    write_llama(folder / "models" / "b.gguf", tiny, seed=1)
    big = TinySpec(layers=8, embedding=1024, heads=16, kv_heads=4, feed_forward=2816,
                   extra_vocab=32000, dtype="F16", context_length=4096)  # fmt: skip
    big_path = write_llama(folder / "models" / "big.gguf", big)
    print(f"workers benchmark; {os.cpu_count()} CPUs; big model {big_path.stat().st_size >> 20} MB")

    if only - {"turns"}:
        server = Server(folder)
        try:
            if "streams" in only:
                print("\nconcurrent streams on one model (8 tokens each)")
                streams(server, ["a"], quick)
            if "latency" in only:
                print("\none client, one-token chats: gateway → worker beside the worker directly")
                show(latency(server, 40 if quick else 200))
            if "load" in only:
                print("\nload: a worker beside llama-cpp-python in a fresh process (big model)")
                show(load_times(server, big_path, 3 if quick else 7))
            if "memory" in only:
                print("\nthe machine's memory around a load and an unload of the big model")
                show(memory_back(server))
            if "crash" in only:
                print("\nkill -9 of a worker in the middle of 16 streams")
                print(f"  {asyncio.run(crashes(server, 5 if quick else 20, 16))}")
        finally:
            server.stop()
    if "turns" in only:  # two models that must take turns: a budget that holds one worker
        budget = 60 << 20
        server = Server(folder, memory_budget=str(budget))
        try:
            print(f"\ntwo models taking turns in a {budget >> 20} MB budget (8 tokens each)")
            streams(server, ["a", "b"], quick)
        finally:
            server.stop()


def show(figures: dict[str, float]) -> None:
    print("  " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()))


def streams(server: Server, models: list[str], quick: bool) -> None:
    rss_first = None
    for clients in (1, 16, 64) if quick else (1, 16, 64, 256):
        result = asyncio.run(concurrency(server, models, clients))
        rss_first = rss_first or server.rss()
        print(f"  {clients:>3} clients: {result['seconds']:.2f} s, {result['results']}, "
              f"/health p99 {result['health_p99_ms']:.1f} ms")  # fmt: skip
    print(f"  gateway resident: {rss_first >> 20} MB after the first run, "
          f"{server.rss() >> 20} MB after the last")  # fmt: skip


if __name__ == "__main__":
    main()
