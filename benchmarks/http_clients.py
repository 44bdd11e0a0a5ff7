"""Why the gateway's HTTP runtimes use aiohttp: httpx's async client beside aiohttp's, on the
same instant upstream (benchmarks/gateway.py's), one request at a time and 16 at once.

    python benchmarks/http_clients.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import time

from gateway import start_upstream

BODY = {"model": "gpt-stub", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 16}


async def with_httpx(port: int, n: int, clients: int) -> float:
    import httpx

    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}/v1") as client:

        async def one(count: int) -> None:
            for _ in range(count):
                (await client.post("/chat/completions", json=BODY)).json()

        await one(100)  # warm the connections
        started = time.perf_counter()
        await asyncio.gather(*(one(n // clients) for _ in range(clients)))
        return time.perf_counter() - started


async def with_aiohttp(port: int, n: int, clients: int) -> float:
    import aiohttp

    async with aiohttp.ClientSession(f"http://127.0.0.1:{port}") as session:

        async def one(count: int) -> None:
            for _ in range(count):
                async with session.post("/v1/chat/completions", json=BODY) as reply:
                    await reply.json()

        await one(100)
        started = time.perf_counter()
        await asyncio.gather(*(one(n // clients) for _ in range(clients)))
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    upstream, port = start_upstream()
    try:
        print(f"{'client':<9}{'clients':>8}{'ms/request':>12}{'req/s':>9}")
        for clients in (1, 16):
            n = args.requests - args.requests % clients
            for name, run in (("httpx", with_httpx), ("aiohttp", with_aiohttp)):
                elapsed = asyncio.run(run(port, n, clients))
                print(f"{name:<9}{clients:>8}{elapsed / n * 1000 * clients:>12.2f}"
                      f"{n / elapsed:>9.0f}", flush=True)  # fmt: skip
    finally:
        upstream.terminate()
        upstream.wait()


if __name__ == "__main__":
    main()
