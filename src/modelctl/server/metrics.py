"""Prometheus metrics, fed by the usage ledger (every recorded request) and read from the
scheduler when scraped (what is loaded, memory against the budget)."""

from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from modelctl.manager import ModelManager
from modelctl.store.ledger import Usage

__all__ = ["Metrics"]

LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120,
)  # fmt: skip


class Metrics:
    """One Prometheus registry per server (so two servers in one process do not collide)."""

    def __init__(self, manager: ModelManager) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("model", "kind", "status")
        self.requests = Counter(
            "modelctl_requests", "Requests answered, by model, kind and outcome", labels,
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "modelctl_request_duration_seconds", "Request latency, end to end",
            ("model", "kind"), buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.ttft = Histogram(
            "modelctl_time_to_first_token_seconds", "Time to the first streamed token",
            ("model",), buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.tokens = Counter(
            "modelctl_tokens", "Tokens in and out", ("model", "direction"), registry=self.registry
        )
        self.cost = Counter(
            "modelctl_cost", "Cost of requests, in the model's pricing currency", ("model",),
            registry=self.registry,
        )  # fmt: skip
        self.registry.register(_Loaded(manager))
        manager.usage.observers.append(self.observe)

    def observe(self, usage: Usage) -> None:
        status = "ok" if usage.ok else "error"
        self.requests.labels(usage.model, usage.kind, status).inc()
        self.latency.labels(usage.model, usage.kind).observe(usage.latency)
        if usage.ttft is not None:
            self.ttft.labels(usage.model).observe(usage.ttft)
        if usage.tokens_in:
            self.tokens.labels(usage.model, "in").inc(usage.tokens_in)
        if usage.tokens_out:
            self.tokens.labels(usage.model, "out").inc(usage.tokens_out)
        if usage.cost:
            self.cost.labels(usage.model).inc(usage.cost)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _Loaded(Collector):
    """Read at scrape time: loaded models, their memory, the budget."""

    def __init__(self, manager: ModelManager) -> None:
        self.manager = manager

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> Iterator[Any]:
        scheduler = self.manager.scheduler
        slots = scheduler.loaded()
        loaded = GaugeMetricFamily("modelctl_models_loaded", "Models loaded now")
        loaded.add_metric([], sum(1 for s in slots if s["state"] == "loaded"))
        yield loaded
        memory = GaugeMetricFamily(
            "modelctl_model_memory_bytes", "Memory counted for each loaded model", labels=["model"]
        )
        in_flight = GaugeMetricFamily(
            "modelctl_requests_in_flight", "Requests being served, by model", labels=["model"]
        )
        for slot in slots:
            memory.add_metric([slot["model"]], slot["size"])
            in_flight.add_metric([slot["model"]], slot["in_flight"])
        yield memory
        yield in_flight
        used = GaugeMetricFamily("modelctl_memory_used_bytes", "Memory used by loaded models")
        used.add_metric([], scheduler.used())
        yield used
        if scheduler.budget is not None:
            budget = GaugeMetricFamily("modelctl_memory_budget_bytes", "The memory budget")
            budget.add_metric([], scheduler.budget)
            yield budget
