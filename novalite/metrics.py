"""The process's Prometheus instruments, in a registry of its own (see docs/metrics.md).

Each :class:`Metrics` owns a :class:`~prometheus_client.CollectorRegistry` instead of
using prometheus-client's global one, so several clouds in one process (the tests run
many) never share or clash over a counter. The runtime holds it (``rt.metrics``); the bus
gets its part (:class:`BusMetrics`) at construction, so the agent side, which has no
runtime of the controller's, counts its messages the same way.

This module imports nothing of novalite: the bus and the agent import it, and it must
never pull the database side in with it. What is read from the database at scrape time
(hosts, services, servers) is collected by :mod:`novalite.api.metrics`.

Label values are bounded: bus topics are counted by their kind (``compute.hv1`` is
``compute``), API requests by their route template, never by a raw path or a host name.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Buckets of in-process decisions and handlers: milliseconds matter.
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Buckets of a build, from the API's accept to ACTIVE (fake guests take well under a second).
BUILD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: The outcomes a build is counted under (a fixed set: a label must not grow without bound).
BUILD_OUTCOMES = frozenset({"active", "error", "rescheduled"})


def topic_kind(topic: str) -> str:
    """``compute.hv1`` -> ``compute``: one series per kind of consumer, not one per host."""
    return topic.split(".", 1)[0]


class BusMetrics:
    """Messages through one :class:`~novalite.bus.Bus`, by topic kind and method.

    Built with ``registry=None`` (a bus made without metrics) the instruments still count
    but are registered nowhere, so the bus never has to ask whether it is measured.
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        labels = ["topic", "method"]
        self.sent = Counter(
            "novalite_bus_messages_sent_total",
            "Messages this process sent on the bus (casts, calls, fan-outs, outbox sends).",
            labels,
            registry=registry,
        )
        self.handled = Counter(
            "novalite_bus_messages_handled_total",
            "Messages this process's consumers handled without an error.",
            labels,
            registry=registry,
        )
        self.failed = Counter(
            "novalite_bus_messages_failed_total",
            "Messages whose handler in this process raised (the caller of a call gets the error).",
            labels,
            registry=registry,
        )
        self.handle_seconds = Histogram(
            "novalite_bus_handle_duration_seconds",
            "Time a consumer in this process took to handle a message.",
            labels,
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.calls_in_flight = Gauge(
            "novalite_bus_calls_in_flight",
            "Calls this process sent and still waits on for a reply.",
            labels,
            registry=registry,
        )

    def message_sent(self, topic: str, method: str) -> None:
        self.sent.labels(topic=topic_kind(topic), method=method).inc()

    def call_started(self, topic: str, method: str) -> None:
        self.message_sent(topic, method)
        self.calls_in_flight.labels(topic=topic_kind(topic), method=method).inc()

    def call_finished(self, topic: str, method: str) -> None:
        self.calls_in_flight.labels(topic=topic_kind(topic), method=method).dec()

    def message_handled(self, topic: str, method: str, seconds: float, *, failed: bool = False) -> None:
        kind = topic_kind(topic)
        (self.failed if failed else self.handled).labels(topic=kind, method=method).inc()
        self.handle_seconds.labels(topic=kind, method=method).observe(seconds)


class Metrics:
    """Every instrument of one process (one cloud), and the registry ``/metrics`` renders."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.bus = BusMetrics(registry)
        self.api_requests = Counter(
            "novalite_api_requests_total",
            "API requests by route template, method and response status.",
            ["route", "method", "status"],
            registry=registry,
        )
        self.api_request_seconds = Histogram(
            "novalite_api_request_duration_seconds",
            "API request latency by route template and method, until the response was ready.",
            ["route", "method"],
            registry=registry,
        )
        self.scheduler_decision_seconds = Histogram(
            "novalite_scheduler_decision_duration_seconds",
            "Time to choose and claim a host for one instance; outcome placed or no_valid_host.",
            ["outcome"],
            buckets=FAST_BUCKETS,
            registry=registry,
        )
        self.scheduler_no_valid_host = Counter(
            "novalite_scheduler_no_valid_host_total",
            "Instances for which the scheduler found no valid host.",
            registry=registry,
        )
        self.builds = Counter(
            "novalite_builds_total",
            "Builds that ended, by outcome: active, error, or rescheduled to another host.",
            ["outcome"],
            registry=registry,
        )
        self.build_seconds = Histogram(
            "novalite_build_duration_seconds",
            "Time from a server's creation to its build's outcome.",
            ["outcome"],
            buckets=BUILD_BUCKETS,
            registry=registry,
        )
        # Zero series for the fixed label sets, so a dashboard sees 0 rather than no data.
        for outcome in ("placed", "no_valid_host"):
            self.scheduler_decision_seconds.labels(outcome=outcome)
        for outcome in BUILD_OUTCOMES:
            self.builds.labels(outcome=outcome)
            self.build_seconds.labels(outcome=outcome)

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        self.api_requests.labels(route=route, method=method, status=str(status)).inc()
        self.api_request_seconds.labels(route=route, method=method).observe(seconds)

    def observe_decision(self, seconds: float, *, placed: bool) -> None:
        """One scheduling decision for one instance (a multi-create counts each instance)."""
        self.scheduler_decision_seconds.labels(outcome="placed" if placed else "no_valid_host").observe(seconds)
        if not placed:
            self.scheduler_no_valid_host.inc()

    def observe_build(self, outcome: str, seconds: float | None = None) -> None:
        """A build ended: ``outcome`` one of :data:`BUILD_OUTCOMES`; ``seconds`` since the server's creation."""
        if outcome not in BUILD_OUTCOMES:
            raise ValueError(f"build outcome {outcome!r} is not one of {sorted(BUILD_OUTCOMES)}")
        self.builds.labels(outcome=outcome).inc()
        if seconds is not None:
            self.build_seconds.labels(outcome=outcome).observe(seconds)
