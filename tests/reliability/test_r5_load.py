"""R5: many clients at once through a real `modelctl serve`, for a while, on a tiny GGUF model
(in its worker process) and on a remote OpenAI-compatible backend.

Protocol test for the remote part: the backend is a loopback server that speaks the OpenAI API
(tests/protocol_servers.py). Every request must succeed or be a documented 503 (a full queue),
every stream must end with its finish reason, and the server's resident memory (the gateway, and
the worker beside it) must stay flat: within 10% from the end of the warm-up to the end.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil

from tests.live import serve_process
from tests.protocol_servers import FakeOpenAI, serve
from tests.reliability.conftest import scale

HELLO = [{"role": "user", "content": "hello"}]


async def one(session: Any, url: str, model: str, stream: bool) -> str:
    """'ok', 'busy' (a 503) or what went wrong."""
    body = {"model": model, "messages": HELLO, "max_tokens": 8, "stream": stream}
    async with session.post(url + "/v1/chat/completions", json=body) as response:
        if response.status == 503:
            await response.read()
            return "busy"
        if response.status != 200:
            return f"status {response.status}: {(await response.text())[:200]}"
        if not stream:
            answer = await response.json()
            return "ok" if answer["choices"][0]["finish_reason"] else "no finish reason"
        finish = None
        async for raw in response.content:
            line = raw.decode().strip()
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            event = json.loads(line[5:])
            if "error" in event:
                return f"stream error: {event['error']['message']}"
            finish = event["choices"][0].get("finish_reason") or finish
        return "ok" if finish else "stream without a finish reason"


async def load(url: str, clients: int, seconds: float, sample: Any) -> dict[str, Any]:
    import aiohttp

    outcomes: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    rng = random.Random(5)

    async def client() -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
            while time.monotonic() < deadline:
                model, stream = rng.choice(("tiny", "gpt-4o")), rng.random() < 0.5
                try:
                    outcome = await one(session, url, model, stream=stream)
                except (aiohttp.ClientError, TimeoutError) as exc:  # which request, and how
                    kind = "stream" if stream else "json"
                    outcome = f"{model} {kind}: {type(exc).__name__}: {exc}"
                outcomes[outcome] = outcomes.get(outcome, 0) + 1

    async def sampler() -> None:
        while time.monotonic() < deadline:
            sample()
            await asyncio.sleep(1)  # a sampling period, not a wait for an event

    await asyncio.gather(sampler(), *(client() for _ in range(clients)))
    return outcomes


def tree_rss(pid: int) -> int:
    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)])


def test_many_clients_for_a_while_get_answers_and_memory_stays_flat(
    tiny_models: Path, figures
) -> None:
    clients, seconds, warmup = scale((200, 20.0, 8.0), (200, 180.0, 60.0))
    stub = FakeOpenAI(key="sk-test", models=["gpt-4o"])
    with serve(stub) as stub_url:
        env = {
            **os.environ, "OPENAI_BASE_URL": stub_url + "/v1", "OPENAI_API_KEY": "sk-test",
            "MODELCTL_LOG_LEVEL": "warning", "PYTHONUNBUFFERED": "1",
        }  # fmt: skip
        subprocess.run([sys.executable, "-m", "modelctl", "sync"], env=env, check=True)
        proc, url = serve_process(env)
        try:
            gateway = psutil.Process(proc.pid)
            samples: list[tuple[float, int, int]] = []
            started = time.monotonic()

            def sample() -> None:
                total = tree_rss(proc.pid)
                mine = gateway.memory_info().rss
                samples.append((time.monotonic() - started, mine, total - mine))

            outcomes = asyncio.run(load(url, clients, seconds, sample))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    requests = sum(outcomes.values())
    failures = {k: v for k, v in outcomes.items() if k not in ("ok", "busy")}
    after = [s for s in samples if s[0] >= warmup]
    assert len(after) >= 3, samples
    base_gateway, base_worker = after[0][1], after[0][2]
    growth_gateway = max(s[1] for s in after) / base_gateway - 1
    growth_worker = max(s[2] for s in after) / base_worker - 1 if base_worker else 0.0
    figures(
        "R5 load", clients=clients, seconds=seconds, requests=requests,
        requests_per_s=round(requests / seconds, 1), busy_503=outcomes.get("busy", 0),
        errors=sum(failures.values()),
        gateway_mb=f"{base_gateway >> 20}->{max(s[1] for s in after) >> 20}",
        gateway_growth=f"{growth_gateway:+.1%}",
        worker_mb=f"{base_worker >> 20}->{max(s[2] for s in after) >> 20}",
        worker_growth=f"{growth_worker:+.1%}",
    )  # fmt: skip
    assert not failures, failures
    assert outcomes.get("ok", 0) > requests // 2  # served, not only refused
    assert growth_gateway < 0.10 and growth_worker < 0.10
