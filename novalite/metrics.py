"""The process's Prometheus instruments, in a registry of its own (see docs/metrics.md).

Each :class:`Metrics` owns a :class:`~prometheus_client.CollectorRegistry` instead of
using prometheus-client's global one, so several clouds in one process (the tests run
many) never share or clash over a counter. The runtime holds it (``rt.metrics``); the bus
gets its part (:class:`BusMetrics`) at construction, so the agent side, which has no
runtime of the controller's, counts its messages the same way.

This module imports nothing of novalite: the bus and the agent import it, and it must
never pull the database side in with it. What is read from the database at scrape time
(hosts, services, servers, the connection pool) is collected by :mod:`novalite.api.metrics`;
an agent's own ``/metrics`` listener is :mod:`novalite.agent.metrics`.

Label values are bounded: bus topics are counted by their kind (``compute.hv1`` is
``compute``), API requests by their route template, never by a raw path or a host name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

#: Buckets of in-process decisions and handlers: milliseconds matter.
FAST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
#: Buckets of a build, from the API's accept to ACTIVE (fake guests take well under a second).
BUILD_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
#: The outcomes a build is counted under (a fixed set: a label must not grow without bound).
BUILD_OUTCOMES = frozenset({"active", "error", "rescheduled"})
#: Buckets of one server action's event on its host (a stop waits up to a minute for the guest).
ACTION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0)
#: Buckets of one driver call (a power state read is microseconds, a live migration minutes).
DRIVER_BUCKETS = (0.0001, 0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Nova's action event names -> the ``action`` label (the server action as the API names it).
#: A fixed set: an event not listed counts as ``other``, so the label never grows.
SERVER_ACTION_EVENTS = {
    "compute__do_build_and_run_instance": "create",
    "compute_stop_instance": "stop",
    "compute_start_instance": "start",
    "compute_reboot_instance": "reboot",
    "compute_pause_instance": "pause",
    "compute_unpause_instance": "unpause",
    "compute_suspend_instance": "suspend",
    "compute_resume_instance": "resume",
    "compute_soft_delete_instance": "soft_delete",
    "compute_terminate_instance": "delete",
    "compute_rebuild_instance": "rebuild",
    "compute_snapshot_instance": "snapshot",
    "compute_backup_instance": "backup",
    "compute_shelve_instance": "shelve",
    "compute_shelve_offload_instance": "shelve_offload",
    "compute_unshelve_instance": "unshelve",
    "compute_attach_interface": "attach_interface",
    "compute_detach_interface": "detach_interface",
}
OTHER_ACTION = "other"
#: An action event's ``result`` -> the ``outcome`` label.
ACTION_OUTCOMES = {"Success": "success", "Error": "error"}
#: Outcomes of a driver call, and of a console session.
DRIVER_OUTCOMES = ("success", "error")
CONSOLE_OUTCOMES = ("connected", "refused", "vnc_unreachable")


def address_allowed(remote: str | None, networks: Iterable[str]) -> bool:
    """Whether a client address is in one of the allowed networks (``metrics_allow_from``).

    Here rather than in the API so that an agent's own ``/metrics`` listener applies the
    same rule without importing anything of the database side.
    """
    try:
        address = ipaddress.ip_address(remote or "")
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(n, strict=False) for n in networks)


def server_action(event: str) -> str:
    """The ``action`` label of an action event (``compute_stop_instance`` -> ``stop``)."""
    return SERVER_ACTION_EVENTS.get(event, OTHER_ACTION)


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


class AgentMetrics:
    """What a compute agent measures itself: its driver's calls and its guests' power states.

    In ``novalite serve`` they land in the process's registry beside the controller's
    instruments; ``novalite agent`` serves them on its own listener (``agent_metrics_listen``).
    """

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.driver_call_seconds = Histogram(
            "novalite_driver_call_duration_seconds",
            "Time of each hypervisor driver call this process's agents made, by driver method and outcome.",
            ["method", "outcome"],
            buckets=DRIVER_BUCKETS,
            registry=registry,
        )
        self.guests = Gauge(
            "novalite_guests",
            "Guests on the hypervisor by power state, as of the host's last power-state sync.",
            ["host", "power_state"],
            registry=registry,
        )

    def driver_methods(self, methods: Iterable[str]) -> None:
        """Zero series for the driver's methods (a dashboard sees 0 rather than no data)."""
        for method in methods:
            for outcome in DRIVER_OUTCOMES:
                self.driver_call_seconds.labels(method=method, outcome=outcome)

    def observe_driver_call(self, method: str, seconds: float, *, ok: bool) -> None:
        self.driver_call_seconds.labels(method=method, outcome="success" if ok else "error").observe(seconds)

    def observe_guests(self, host: str, counts: Mapping[str, int]) -> None:
        """One host's guests per power state; ``counts`` names every state (zeros included)."""
        for power_state, count in counts.items():
            self.guests.labels(host=host, power_state=power_state).set(count)


class Metrics:
    """Every instrument of one process (one cloud), and the registry ``/metrics`` renders.

    ``controller=False`` (the ``novalite agent`` process) registers only the bus's and the
    agent's instruments: the API, scheduler, build and console ones still count (nothing
    there calls them) but do not show as zero series on the agent's page.
    """

    def __init__(self, *, controller: bool = True) -> None:
        self.registry = CollectorRegistry()
        registry: CollectorRegistry | None = self.registry
        self.bus = BusMetrics(registry)
        self.agent = AgentMetrics(registry)
        if not controller:
            registry = None
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
        self.server_actions = Counter(
            "novalite_server_actions_total",
            "Server actions that ended on their host, by action and outcome (one per action event).",
            ["action", "outcome"],
            registry=registry,
        )
        self.server_action_seconds = Histogram(
            "novalite_server_action_duration_seconds",
            "Time of a server action's event, from its start on the host to its outcome.",
            ["action", "outcome"],
            buckets=ACTION_BUCKETS,
            registry=registry,
        )
        for action in [*SERVER_ACTION_EVENTS.values(), OTHER_ACTION]:
            for outcome in ACTION_OUTCOMES.values():
                self.server_actions.labels(action=action, outcome=outcome)
                self.server_action_seconds.labels(action=action, outcome=outcome)
        self.console_sessions_open = Gauge(
            "novalite_console_sessions_open",
            "Browser console sessions (websocket to a guest's VNC server) open now in this process's proxy.",
            registry=registry,
        )
        self.console_sessions = Counter(
            "novalite_console_sessions_total",
            "Console websocket requests by outcome: connected to the guest, refused (origin or token), "
            "or the guest's VNC server unreachable.",
            ["outcome"],
            registry=registry,
        )
        for outcome in CONSOLE_OUTCOMES:
            self.console_sessions.labels(outcome=outcome)

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

    def observe_server_action(self, event: str, result: str | None, seconds: float | None) -> None:
        """One action event ended (``result`` Success or Error; anything else is not an end).

        ``seconds`` from the event's start on the host (clamped at 0: the host's clock may
        be a little ahead of the conductor's).
        """
        outcome = ACTION_OUTCOMES.get(result or "")
        if outcome is None:
            return
        action = server_action(event)
        self.server_actions.labels(action=action, outcome=outcome).inc()
        if seconds is not None:
            self.server_action_seconds.labels(action=action, outcome=outcome).observe(max(0.0, seconds))
