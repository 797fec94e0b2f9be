"""Prometheus metrics of one broker: traffic per topic, request latency, log sizes, fsync latency.

Each broker (each app) has its own ``CollectorRegistry``, so tests can run several brokers in
one process and nothing is global. Log sizes are read from the log manager at scrape time
rather than updated on every append, which keeps the hot path free of metric work.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from millstream.broker.groups.coordinator import GroupCoordinator
    from millstream.broker.storage.log_manager import LogManager

_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class BrokerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self._records_in = Counter(
            "millstream_records_in", "Records appended", ["topic"], registry=r
        )
        self._bytes_in = Counter(
            "millstream_bytes_in", "Batch bytes appended", ["topic"], registry=r
        )
        self._records_out = Counter(
            "millstream_records_out", "Records served to consumers", ["topic"], registry=r
        )
        self._bytes_out = Counter(
            "millstream_bytes_out", "Batch bytes served to consumers", ["topic"], registry=r
        )
        self.request_duration = Histogram(
            "millstream_http_request_duration_seconds",
            "Time to serve an HTTP request, by route",
            ["method", "route", "code"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.fsync_duration = Histogram(
            "millstream_fsync_duration_seconds",
            "Time one fsync of a partition log took",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

    def records_in(self, topic: str, records: int, size: int) -> None:
        self._records_in.labels(topic).inc(records)
        self._bytes_in.labels(topic).inc(size)

    def records_out(self, topic: str, records: int, size: int) -> None:
        if records:
            self._records_out.labels(topic).inc(records)
            self._bytes_out.labels(topic).inc(size)

    def forget_topic(self, topic: str) -> None:
        """Drop a deleted topic's series; topics created and deleted would otherwise pile up."""
        for counter in (self._records_in, self._bytes_in, self._records_out, self._bytes_out):
            counter.remove(topic)

    def observe_fsync(self, seconds: float) -> None:
        self.fsync_duration.observe(seconds)

    def watch_logs(self, logs: LogManager) -> None:
        self.registry.register(_LogCollector(logs))

    def watch_groups(self, coordinator: GroupCoordinator) -> None:
        self.registry.register(_GroupCollector(coordinator))

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class _LogCollector(Collector):
    def __init__(self, logs: LogManager) -> None:
        self._logs = logs

    def collect(self) -> Iterator[Metric]:
        labels = ["topic", "partition"]
        size = GaugeMetricFamily("millstream_log_size_bytes", "Bytes on disk", labels=labels)
        start = GaugeMetricFamily("millstream_log_start_offset", "First offset", labels=labels)
        end = GaugeMetricFamily(
            "millstream_log_end_offset", "High watermark: next offset readable", labels=labels
        )
        for topic in self._logs.topic_names():
            for log in self._logs.topic_logs(topic):  # those hosted here
                key = [topic, str(log.partition)]
                size.add_metric(key, log.size_bytes)
                start.add_metric(key, log.log_start_offset)
                end.add_metric(key, log.high_watermark)
        yield from (size, start, end)


class _GroupCollector(Collector):
    """Groups, members, rebalances, committed offsets and lag, read at scrape time."""

    def __init__(self, coordinator: GroupCoordinator) -> None:
        self._coordinator = coordinator

    def collect(self) -> Iterator[Metric]:
        groups = GaugeMetricFamily("millstream_groups", "Consumer groups", labels=["state"])
        members = GaugeMetricFamily(
            "millstream_group_members", "Live members of a group", labels=["group"]
        )
        rebalances = CounterMetricFamily(
            "millstream_group_rebalances",
            "Rebalances started since the broker started",
            labels=["group"],
        )
        labels = ["group", "topic", "partition"]
        committed = GaugeMetricFamily(
            "millstream_group_committed_offset", "Committed offset", labels=labels
        )
        lag = GaugeMetricFamily(
            "millstream_group_lag", "Log end offset minus committed offset", labels=labels
        )
        states: dict[str, int] = {}
        for group_id in self._coordinator.group_ids():
            summary = self._coordinator.summary(group_id)
            states[summary["state"]] = states.get(summary["state"], 0) + 1
            members.add_metric([group_id], summary["members"])
            for row in self._coordinator.lag(group_id):
                key = [group_id, row["topic"], str(row["partition"])]
                if row["committed"] is not None:
                    committed.add_metric(key, row["committed"])
                if row["lag"] is not None:
                    lag.add_metric(key, row["lag"])
        for state, count in sorted(states.items()):
            groups.add_metric([state], count)
        for group_id, count in self._coordinator.rebalances().items():
            rebalances.add_metric([group_id], count)
        yield from (groups, members, rebalances, committed, lag)


def metrics_middleware(metrics: BrokerMetrics) -> Callable[..., object]:
    @web.middleware
    async def middleware(
        request: web.Request, handler: Callable[[web.Request], object]
    ) -> web.StreamResponse:
        started = time.perf_counter()
        response: web.StreamResponse = await handler(request)  # type: ignore[misc]
        resource = request.match_info.route.resource
        route = resource.canonical if resource is not None else "unmatched"
        metrics.request_duration.labels(request.method, route, str(response.status)).observe(
            time.perf_counter() - started
        )
        return response

    return middleware
