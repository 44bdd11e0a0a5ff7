"""Profiles: how fast a model really is on this machine, measured with real requests.

`profile(manager, model, n)` runs n rounds of a few standard shapes: a short chat, streamed
(time to first token, generation tokens/s), a long prompt (prompt tokens/s), or for embedding
models a batch of texts. It records latency p50/p95, success rate and the process's peak
resident memory, stores the result with its date, and returns it. `recommend` prefers these
measured speeds over the catalog's guesses.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
from typing import TYPE_CHECKING, Any

from modelctl.errors import ModelctlError
from modelctl.usage import percentile

if TYPE_CHECKING:
    from modelctl.manager import ModelManager

__all__ = ["latest_profiles", "profile", "schema"]

SHORT = [{"role": "user", "content": "Write one sentence about the sea."}]
SENTENCE = "The quick brown fox jumps over the lazy dog. "
TEXTS = ["a cat sat on the mat", "stock markets fell today", "how to bake bread"] * 3


def schema(db: Any) -> None:
    """Migration step: the profiles table."""
    db.execute(
        """CREATE TABLE profiles (
  id INTEGER PRIMARY KEY, model TEXT NOT NULL, at REAL NOT NULL, data TEXT NOT NULL)"""
    )
    db.execute("CREATE INDEX profiles_model_at ON profiles(model, at)")


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


def profile(manager: ModelManager, ref: str, n: int = 10, *, max_tokens: int = 32) -> dict:
    """Measure `ref` with n rounds of real requests; store and return the profile."""
    if n < 1:
        raise ModelctlError("n must be 1 or more")
    model = manager.registry[ref]
    embedding = "embedding" in [str(t.value) for t in model.tasks] and "chat" not in [
        str(c.value) for c in model.capabilities
    ]
    latencies: list[float] = []
    first_tokens: list[float] = []
    generation: list[float] = []
    prompt_speeds: list[float] = []
    ok = failed = 0
    errors: list[str] = []
    slot = manager.load(model.id, **({"embedding": True} if embedding else {}))
    context = (slot.get("options") or {}).get("context") or model.context_length or 2048
    # a long prompt that fits: half the context in characters (a token is one or more)
    long_prompt = (SENTENCE * 64)[: min(1800, min(context, 4096) // 2)]
    with _PeakMemory() as memory:
        for _ in range(n):
            shapes = ([lambda: _embed(manager, model.id, latencies)] if embedding else [
                lambda: _short(manager, model.id, max_tokens, latencies, first_tokens, generation),
                lambda: _long(manager, model.id, long_prompt, latencies, prompt_speeds),
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
    with manager.registry.store.transaction() as db:
        db.execute(
            "INSERT INTO profiles (model, at, data) VALUES (?, ?, ?)",
            (model.id, result["at"], json.dumps(result)),
        )
    return result


def _short(manager: Any, model_id: str, max_tokens: int, latencies: list[float],
           first_tokens: list[float], generation: list[float]) -> None:  # fmt: skip
    started = time.perf_counter()
    first, tokens = None, 0
    for chunk in manager.chat(SHORT, model_id, max_tokens=max_tokens, stream=True,
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
    manager: Any, model_id: str, prompt: str, latencies: list[float], speeds: list[float]
) -> None:
    started = time.perf_counter()
    answer = manager.chat([{"role": "user", "content": prompt}], model_id, max_tokens=1,
                          temperature=0, client="profile")  # fmt: skip
    elapsed = time.perf_counter() - started
    latencies.append(elapsed)
    prompt = ((answer or {}).get("usage") or {}).get("prompt_tokens")
    if prompt:
        speeds.append(prompt / elapsed)


def _embed(manager: Any, model_id: str, latencies: list[float]) -> None:
    started = time.perf_counter()
    manager.embed(TEXTS, model_id, client="profile")
    latencies.append(time.perf_counter() - started)


def latest_profiles(manager: ModelManager, models: list[str] | None = None) -> dict[str, dict]:
    """The newest profile of each model (or of the given ones)."""
    rows = manager.registry.store.db.execute(
        "SELECT model, data FROM profiles p WHERE at = "
        "(SELECT MAX(at) FROM profiles q WHERE q.model = p.model)"
    ).fetchall()
    found = {model: json.loads(data) for model, data in rows}
    return {m: found[m] for m in models if m in found} if models is not None else found
