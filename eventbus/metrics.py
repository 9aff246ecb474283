"""The daemon's metrics in the Prometheus exposition format (the ``metrics`` extra: prometheus_client).

Nothing is counted twice: at each scrape :class:`ServiceCollector` reads the
counters and gauges the daemon keeps anyway (those of ``stats``) and the
distributor's timing histograms (:mod:`distributor.timings`). A scrape runs
on the event loop (``control.admin.metrics``, or the endpoint of
:mod:`eventbus.metrics_http`), so it sees one consistent state.

Names: ``eventbus_<stats key>_total`` for each counter of ``stats`` and
``eventbus_<stats key>`` for its gauges, so a number is found under the same
name in both; plus the labelled families below and the standard ``process_*``
metrics.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from distributor.models import CollectorStatus
from distributor.report import MAX_KEYS, OTHER
from distributor.timings import Histogram

if TYPE_CHECKING:
    from eventbus.service import Service

PREFIX = "eventbus_"

#: counters of ``stats`` exposed as ``eventbus_<key>_total``, with their help text
COUNTERS = {
    "tasks_submitted": "Tasks accepted by submit.",
    "tasks_distributed": "Attempts dispatched to collectors.",
    "tasks_succeeded": "Tasks that ended succeeded.",
    "tasks_failed": "Tasks that ended failed (retries used up, invalid result, or a dependency failed).",
    "tasks_expired": "Tasks that ended expired (their deadline passed).",
    "tasks_cancelled": "Tasks that ended cancelled.",
    "tasks_retried": "Failed attempts that were retried.",
    "tasks_redelivered": "Attempts requeued without using a retry (collector gone, unhealthy or declining).",
    "attempts_timed_out": "Attempts that exceeded their timeout_ms.",
    "stale_messages": "Attempt events for attempts that were no longer current (ignored).",
    "bad_frames": "Inbound frames that could not be read as a message.",
    "forbidden": "Requests refused by the access policy.",
    "messages_undelivered": "Outbound frames dropped: peer gone or over its send budget.",
    "messages_dropped": "Outbound frames dropped because the peer's send queue was over its budget.",
    "connections": "Connections vetted by the access policy.",
    "connections_refused": "Connections refused by the access policy.",
    "events_dropped": "Events a subscriber did not get because its connection was full (each gap is announced).",
    "tasks_recovered": "Unfinished tasks taken back from the state database at start.",
    "store_commits": "Transactions committed to the state database (each covers every change of one or more loop "
    "iterations).",
    "store_rows_written": "Task rows written to the state database.",
    "store_failed_writes": "Writes to the state database that failed (and were retried).",
    "store_finished_dropped": "Finished tasks dropped from the state database (result_ttl_s, max_results, "
    "max_result_bytes).",
    "tasks_spilled": "Attempts handed to other hosts of the cluster.",
}

#: gauges of ``stats`` exposed as ``eventbus_<key>``, with their help text
GAUGES = {
    "tasks_queued": "Tasks waiting in the queue.",
    "tasks_pending": "Tasks waiting for the tasks they depend on.",
    "tasks_scheduled": "Tasks waiting for their not_before time.",
    "tasks_in_flight": "Attempts dispatched and not finished.",
    "tasks_known": "Tasks the daemon keeps (unfinished, and finished ones kept for queries).",
    "unfinished_bytes": "Estimated memory of the tasks not finished yet.",
    "finished_bytes": "Estimated memory of the finished tasks kept for queries.",
    "subscribers": "Connections subscribed to events.",
    "waiting_requests": "Requests held until a task is final (long-poll gets).",
    "store_available": "1 while the state database can be written (0: submissions are refused storage_unavailable).",
    "store_finished_kept": "Finished tasks kept in the state database.",
    "store_finished_bytes": "Bytes of the finished tasks kept in the state database.",
    "tasks_remote": "Attempts handed to other hosts of the cluster and not finished.",
}

#: the timing histograms: (name, help, attribute of distributor.timings.OperationTimings)
HISTOGRAMS = (
    (
        "task_queue_wait_seconds",
        "Time from a task becoming ready (submitted, released by its dependencies, retried or requeued) "
        "to its dispatch; one observation per dispatch.",
        "queue_wait",
    ),
    (
        "task_run_seconds",
        "Time from a dispatch to the result its collector reported, success or failure.",
        "run",
    ),
    ("task_end_to_end_seconds", "Time from submission to success, per succeeded task.", "end_to_end"),
)


def _buckets(histogram: Histogram) -> list[tuple[str, float]]:
    return [("+Inf" if bound == float("inf") else repr(bound), n) for bound, n in histogram.cumulative()]


def _bounded(values: dict[str, int]) -> dict[str, int]:
    """The largest ``MAX_KEYS - 1`` entries by name, the rest summed under :data:`OTHER`."""
    if len(values) < MAX_KEYS:
        return values
    ranked = sorted(values.items(), key=lambda item: -item[1])
    kept = dict(ranked[: MAX_KEYS - 1])
    kept[OTHER] = kept.get(OTHER, 0) + sum(n for _, n in ranked[MAX_KEYS - 1 :])
    return kept


class ServiceCollector(Collector):
    """A prometheus_client collector reading the service's state at each scrape.

    ``transport_pending`` gives the bytes queued for slow peers and how many
    peers have some queued.
    """

    def __init__(self, service: Service, transport_pending: Callable[[], tuple[int, int]]) -> None:
        self._service = service
        self._transport_pending = transport_pending

    def collect(self) -> Iterator[Metric]:
        service = self._service
        snap = service.stats()
        for key, doc in COUNTERS.items():
            yield CounterMetricFamily(PREFIX + key, doc, value=snap.get(key, 0))
        rejected = CounterMetricFamily(
            PREFIX + "requests_rejected", "Requests answered with an error, by error code.", labels=["code"]
        )
        for code, n in sorted(service.rejected.items()):
            rejected.add_metric([code], n)
        yield rejected
        for key, doc in GAUGES.items():
            yield GaugeMetricFamily(PREFIX + key, doc, value=snap.get(key, 0))
        yield from self._labelled_gauges(snap["queue_depths"])
        yield from _limit_metrics(snap["limits"])
        yield from self._histograms()
        if self._service.cluster is not None:
            yield from _cluster_metrics(self._service.cluster.view())

    def _labelled_gauges(self, depths: dict[str, int]) -> Iterator[Metric]:
        depth = GaugeMetricFamily(PREFIX + "queue_depth", "Tasks queued, by operation.", labels=["operation"])
        for operation, n in sorted(_bounded(depths).items()):
            depth.add_metric([operation], n)
        yield depth
        statuses = dict.fromkeys(CollectorStatus, 0)
        for state in self._service.distributor.registry:
            statuses[state.status] += 1
        collectors = GaugeMetricFamily(PREFIX + "collectors", "Registered collectors, by status.", labels=["status"])
        for status, n in statuses.items():
            collectors.add_metric([status.value], n)
        yield collectors
        pending_bytes, peers = self._transport_pending()
        yield GaugeMetricFamily(
            PREFIX + "peer_pending_bytes", "Bytes queued for peers whose socket pipe is full.", value=pending_bytes
        )
        yield GaugeMetricFamily(PREFIX + "peers_pending", "Peers with messages queued in the daemon.", value=peers)

    def _histograms(self) -> Iterator[Metric]:
        operations = sorted(self._service.distributor.timings.operations().items())
        for name, doc, attribute in HISTOGRAMS:
            family = HistogramMetricFamily(PREFIX + name, doc, labels=["operation"])
            for operation, timings in operations:
                histogram: Histogram = getattr(timings, attribute)
                family.add_metric([operation], _buckets(histogram), histogram.sum)
            yield family


def _cluster_metrics(view: dict[str, Any]) -> Iterator[Metric]:
    """This daemon's link to the cluster; and, from the leader only (so a sum over daemons counts each once),
    the cluster's totals."""
    yield GaugeMetricFamily(PREFIX + "cluster_connected", "1 while connected to NATS.", value=int(view["connected"]))
    leading = int(view["is_leader"])
    yield GaugeMetricFamily(PREFIX + "cluster_leader", "1 while this daemon holds the lease.", value=leading)
    if not view["is_leader"]:
        return
    for key, value in view["totals"].items():
        doc = f"The cluster's {key.replace('_', ' ')}, summed over every host (exported by the leader only)."
        yield GaugeMetricFamily(PREFIX + "cluster_" + key, doc, value=value)
    doc = "Tasks in the cluster's stream, by operation (exported by the leader only)."
    stream = GaugeMetricFamily(PREFIX + "cluster_stream_depth", doc, labels=["operation"])
    for operation, n in sorted(_bounded(view["stream_depths"]).items()):
        stream.add_metric([operation], n)
    yield stream


def _limit_metrics(limits: list[dict[str, Any]]) -> Iterator[Metric]:
    """Per rate limit (``kind`` operation or collector_type, ``name``): what it holds and what it held back."""
    labels = ["kind", "name"]
    in_flight = GaugeMetricFamily(PREFIX + "limit_in_flight", "Attempts in flight under a rate limit.", labels=labels)
    tokens = GaugeMetricFamily(PREFIX + "limit_tokens", "Tokens in a rate limit's bucket.", labels=labels)
    held = GaugeMetricFamily(
        PREFIX + "limit_held", "1 while an operation's limit holds its tasks back with a collector free.", labels=labels
    )
    waited = CounterMetricFamily(
        PREFIX + "limit_waited_seconds", "Seconds dispatched tasks waited on an operation's limit.", labels=labels
    )
    for view in limits[: MAX_KEYS - 1]:
        key = [view["kind"], view["name"]]
        in_flight.add_metric(key, view["in_flight"])
        if view["tokens"] is not None:
            tokens.add_metric(key, view["tokens"])
        if "held" in view:
            held.add_metric(key, 1 if view["held"] else 0)
            waited.add_metric(key, view["waited_s"])
    yield from (in_flight, tokens, held, waited)


class Exporter:
    """A registry of its own (never prometheus_client's global one) with the service's and the process's metrics."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, service: Service, transport_pending: Callable[[], tuple[int, int]]) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(ServiceCollector(service, transport_pending))
        ProcessCollector(registry=self.registry)

    def exposition(self) -> bytes:
        """Every metric in the text exposition format of :attr:`content_type`."""
        return generate_latest(self.registry)
