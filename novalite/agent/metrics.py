"""What a compute agent measures of itself, and the ``novalite agent`` process's ``/metrics``.

* :class:`TimedDriver` wraps an agent's driver once, in ``ComputeAgent.__init__``, and times
  every coroutine method of the driver interface it calls
  (``novalite_driver_call_duration_seconds{method,outcome}``): no call site needs to know.
* :func:`guest_counts` turns a power sync's states into ``novalite_guests{host,power_state}``.
* :class:`AgentMetricsServer` serves the process's registry on ``agent_metrics_listen`` for
  a split deployment, where the agent has no API to show them; it reads no database (there
  is none on this side of the line) and applies the API's ``metrics_allow_from`` rule.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from aiohttp import web
from novalite_drivers.base import ComputeDriver, PowerState
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from novalite.config import Settings
from novalite.log import get_logger
from novalite.metrics import AgentMetrics, Metrics, address_allowed

log = get_logger("novalite.agent.metrics")

#: The driver interface's coroutine methods: the ``method`` label's fixed set (a driver's own
#: extra coroutines are not timed, so the label never grows beyond the interface).
DRIVER_METHODS = frozenset(name for name, value in vars(ComputeDriver).items() if inspect.iscoroutinefunction(value))
#: Every power state's label (``running``, ``shutdown``...), for zero series.
POWER_STATES = tuple(state.name.lower() for state in PowerState)


def guest_counts(power_states: Mapping[str, int]) -> dict[str, int]:
    """Guests per power state label (every state, zeros included), from uuid -> power state."""
    counts = dict.fromkeys(POWER_STATES, 0)
    for value in power_states.values():
        try:
            name = PowerState(value).name.lower()
        except ValueError:
            name = PowerState.NOSTATE.name.lower()
        counts[name] += 1
    return counts


class TimedDriver:
    """The agent's view of its driver: the same object, with each interface coroutine timed.

    Attributes are read from and written to the wrapped driver (tests and the fake driver's
    knobs set ``driver.failures``, ``driver.boot_delay``, replace a method...), so the proxy
    is transparent; only a call of a method in :data:`DRIVER_METHODS` is observed.
    """

    def __init__(self, driver: ComputeDriver, metrics: AgentMetrics) -> None:
        object.__setattr__(self, "_driver", driver)
        object.__setattr__(self, "_metrics", metrics)
        metrics.driver_methods(DRIVER_METHODS)

    @property
    def wrapped(self) -> ComputeDriver:
        driver: ComputeDriver = object.__getattribute__(self, "_driver")
        return driver

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.wrapped, name)
        if name in DRIVER_METHODS and callable(value):
            return self._timed(name, value)
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.wrapped, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self.wrapped, name)

    def _timed(self, name: str, method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        metrics: AgentMetrics = object.__getattribute__(self, "_metrics")

        async def call(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            ok = False
            try:
                result = await method(*args, **kwargs)
                ok = True
                return result
            finally:
                metrics.observe_driver_call(name, time.perf_counter() - started, ok=ok)

        return call


def timed_driver(driver: ComputeDriver, metrics: AgentMetrics) -> ComputeDriver:
    """``driver`` behind a :class:`TimedDriver` (typed as the driver: it answers the same calls)."""
    if isinstance(driver, TimedDriver):
        return driver
    return cast(ComputeDriver, TimedDriver(driver, metrics))


class AgentMetricsServer:
    """``GET /metrics`` of a ``novalite agent`` process on ``agent_metrics_listen`` (host:port)."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._runner: web.AppRunner | None = None
        #: The port really bound (``agent_metrics_listen`` may say port 0).
        self.port: int | None = None

    async def handle(self, request: web.Request) -> web.Response:
        if not address_allowed(request.remote, self.settings.metrics_allow_from):
            message = f"{request.remote} may not read the metrics (metrics_allow_from)"
            return web.json_response({"forbidden": {"code": 403, "message": message}}, status=403)
        return web.Response(body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def start(self) -> None:
        host, _, port = self.settings.agent_metrics_listen.rpartition(":")
        app = web.Application()
        app.router.add_get("/metrics", self.handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host.strip("[]") or "127.0.0.1", int(port), reuse_address=True)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None)
        self.port = sockets[0].getsockname()[1] if sockets else int(port)
        log.info("agent.metrics_listening", listen=f"{host}:{self.port}")

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
