"""Prometheus metrics for delivery: counters and latencies of this process, queue state from the database."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from perkflow.core.context import AppContext

if TYPE_CHECKING:
    from perkflow.sync.integrations import Integration
    from perkflow.sync.worker import Item, Outcome


class Metrics:
    def __init__(self, ctx: AppContext) -> None:
        self.registry = CollectorRegistry()
        labels = ["integration", "kind"]
        self.requests = Counter(
            "perkflow_sync_requests",
            "Requests sent to platforms, by verdict",
            [*labels, "verdict"],
            registry=self.registry,
        )
        self.objects = Counter(
            "perkflow_sync_objects",
            "Objects (attribute objects and events) sent",
            labels,
            registry=self.registry,
        )
        self.items = Counter(
            "perkflow_sync_items",
            "Outbox items settled, by result",
            [*labels, "result"],
            registry=self.registry,
        )
        self.attributes_sent = Counter(
            "perkflow_sync_attributes_sent", "Attribute values acknowledged", labels, registry=self.registry
        )
        self.attributes_full = Counter(
            "perkflow_sync_attributes_full_equivalent",
            "Attribute values full mode would have sent for the same flushes (delta mode's saving)",
            labels,
            registry=self.registry,
        )
        self.latency = Histogram(
            "perkflow_sync_request_seconds",
            "Platform request latency",
            labels,
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.registry.register(QueueCollector(ctx))


class QueueCollector(Collector):
    """Queue depth, in-flight, dead letters and oldest lag per destination, read at scrape time."""

    def __init__(self, ctx: AppContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Any]:
        from perkflow.sync.deliveries import delivery_stats

        queued = GaugeMetricFamily("perkflow_sync_queued", "Items waiting", labels=["integration", "kind"])
        in_flight = GaugeMetricFamily(
            "perkflow_sync_in_flight", "Items being sent", labels=["integration", "kind"]
        )
        dead = GaugeMetricFamily("perkflow_sync_dead", "Dead letters", labels=["integration", "kind"])
        lag = GaugeMetricFamily(
            "perkflow_sync_oldest_lag_seconds",
            "Age of the oldest waiting item",
            labels=["integration", "kind"],
        )
        try:
            stats = delivery_stats(self.ctx, recent=0)
        except Exception:
            stats = []
        for s in stats:
            key = [s["integration_id"], s["kind"]]
            queued.add_metric(key, s["queued"])
            in_flight.add_metric(key, s["in_flight"])
            dead.add_metric(key, s["dead"])
            lag.add_metric(key, s["oldest_lag_s"] or 0.0)
        yield from (queued, in_flight, dead, lag)


def of(ctx: AppContext) -> Metrics:
    found = ctx.caches.get("metrics")
    if found is None:
        found = ctx.caches["metrics"] = Metrics(ctx)
    return found


def observe_request(
    ctx: AppContext, integration: Integration, verdict: str, seconds: float, objects: int
) -> None:
    m = of(ctx)
    m.requests.labels(integration.id, integration.kind, verdict).inc()
    m.latency.labels(integration.id, integration.kind).observe(seconds)
    if verdict == "ok":
        m.objects.labels(integration.id, integration.kind).inc(objects)


def count_outcome(
    ctx: AppContext, integration: Integration, outcome: Outcome, max_attempts: int, items: dict[int, Item]
) -> None:
    m = of(ctx)
    labels = (integration.id, integration.kind)
    m.attributes_sent.labels(*labels).inc(outcome.attributes_sent)
    m.attributes_full.labels(*labels).inc(outcome.attributes_full)
    m.items.labels(*labels, "delivered").inc(len([i for i in outcome.delivered if i not in outcome.release]))
    m.items.labels(*labels, "dead").inc(len(outcome.dead))
    gave_up = sum(1 for i in outcome.retry if items[i].attempts + 1 >= max_attempts)
    m.items.labels(*labels, "retried").inc(len(outcome.retry) - gave_up)
    m.items.labels(*labels, "dead").inc(gave_up)
