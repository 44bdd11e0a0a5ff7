"""Profiles: how fast a model really is on this machine, measured with real requests.

`profile(model, n, requests=…, load=…, store=…)` runs n rounds of a few standard shapes: a
short chat, streamed (time to first token, generation tokens/s), a long prompt (prompt
tokens/s), or for embedding models a batch of texts. It records latency p50/p95, success rate
and the process's peak resident memory, stores the result with its date, and returns it.
`recommend` prefers these measured speeds over the catalog's guesses.
"""

from __future__ import annotations

import statistics
import threading
import time
from typing import TYPE_CHECKING, Any

from modelctl.record.errors import ModelctlError
from modelctl.store import profiles
from modelctl.store.ledger import percentile

if TYPE_CHECKING:
    from collections.abc import Callable

    from modelctl.record.model import Model
    from modelctl.runtime.requests import Requests
    from modelctl.store.database import Store

__all__ = ["profile"]

SHORT = [{"role": "user", "content": "Write one sentence about the sea."}]
SENTENCE = "The quick brown fox jumps over the lazy dog. "
TEXTS = ["a cat sat on the mat", "stock markets fell today", "how to bake bread"] * 3


class _PeakMemory:
    """The process's peak resident memory while the block runs (sampled every 10 ms)."""

    def __enter__(self) -> _PeakMemory:
        import psutil

        self.process, self.peak = psutil.Process(), 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def profile(
    model: Model,
    n: int = 10,
    *,
    requests: Requests,
    load: Callable[..., dict[str, Any]],
    store: Store,
    max_tokens: int = 32,
) -> dict:
    """Measure `model` with n rounds of real requests (through `requests`, after `load`);
    store and return the profile."""
    if n < 1:
        raise ModelctlError("n must be 1 or more")
    embedding = "embedding" in [str(t.value) for t in model.tasks] and "chat" not in [
        str(c.value) for c in model.capabilities
    ]
    latencies: list[float] = []
    first_tokens: list[float] = []
    generation: list[float] = []
    prompt_speeds: list[float] = []
    ok = failed = 0
    errors: list[str] = []
    slot = load(model.id, **({"embedding": True} if embedding else {}))
    context = (slot.get("options") or {}).get("context") or model.context_length or 2048
    # a long prompt that fits: half the context in characters (a token is one or more)
    long_prompt = (SENTENCE * 64)[: min(1800, min(context, 4096) // 2)]
    with _PeakMemory() as memory:
        for _ in range(n):
            shapes = ([lambda: _embed(requests, model.id, latencies)] if embedding else [
                lambda: _short(requests, model.id, max_tokens, latencies, first_tokens, generation),
                lambda: _long(requests, model.id, long_prompt, latencies, prompt_speeds),
            ])  # fmt: skip
            for shape in shapes:
                try:
                    shape()
                    ok += 1
                except ModelctlError as exc:
                    failed += 1
                    errors.append(exc.message)
    if not ok:
        raise ModelctlError(f"every profiling request to {model.id} failed: {errors[0]}")
    ordered = sorted(latencies)
    result = {
        "model": model.id,
        "at": time.time(),
        "n": n,
        "requests": ok + failed,
        "success_rate": ok / (ok + failed),
        "latency_p50_ms": percentile(ordered, 50) * 1000,
        "latency_p95_ms": percentile(ordered, 95) * 1000,
        "ttft_ms": statistics.median(first_tokens) * 1000 if first_tokens else None,
        "generation_tokens_per_second": statistics.median(generation) if generation else None,
        "prompt_tokens_per_second": statistics.median(prompt_speeds) if prompt_speeds else None,
        "peak_memory": memory.peak,
        "errors": errors[:5],
    }
    profiles.save(store, result)
    return result


def _short(requests: Requests, model_id: str, max_tokens: int, latencies: list[float],
           first_tokens: list[float], generation: list[float]) -> None:  # fmt: skip
    started = time.perf_counter()
    first, tokens = None, 0
    for chunk in requests.request("chat", model_id, SHORT, max_tokens=max_tokens, stream=True,
                                  temperature=0, client="profile"):  # fmt: skip
        choice = (chunk.get("choices") or [{}])[0]
        if (choice.get("delta") or {}).get("content"):
            tokens += 1
            first = first or time.perf_counter()
    ended = time.perf_counter()
    latencies.append(ended - started)
    if first is not None:
        first_tokens.append(first - started)
        if tokens > 1 and ended > first:
            generation.append((tokens - 1) / (ended - first))


def _long(
    requests: Requests, model_id: str, prompt: str, latencies: list[float], speeds: list[float]
) -> None:
    started = time.perf_counter()
    answer = requests.request("chat", model_id, [{"role": "user", "content": prompt}],
                              max_tokens=1, temperature=0, client="profile")  # fmt: skip
    elapsed = time.perf_counter() - started
    latencies.append(elapsed)
    prompt = ((answer or {}).get("usage") or {}).get("prompt_tokens")
    if prompt:
        speeds.append(prompt / elapsed)


def _embed(requests: Requests, model_id: str, latencies: list[float]) -> None:
    started = time.perf_counter()
    requests.request("embed", model_id, TEXTS, client="profile")
    latencies.append(time.perf_counter() - started)
