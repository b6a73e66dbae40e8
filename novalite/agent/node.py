"""The compute side of a process: the local hosts of ``novalite serve``, or all of ``novalite agent``.

:class:`ComputeHosts` prepares the machine for the driver (its ``prepare_host`` hook: the
process knows no driver by name) and starts one :class:`ComputeAgent` per host name.
:class:`AgentNode` is the ``novalite agent`` process: a bus and those agents, nothing
else; it lives on this side of the database line so that the import contracts cover it.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

from novalite_drivers.base import GuestNetwork

from novalite.agent.drivers import driver_class
from novalite.agent.manager import ComputeAgent
from novalite.agent.metrics import AgentMetricsServer
from novalite.bus import Bus, make_transport
from novalite.config import Settings
from novalite.log import get_logger
from novalite.metrics import Metrics
from novalite.runtime import Runtime

log = get_logger("novalite.agent.node")


def compute_hosts(settings: Settings) -> list[str]:
    """The compute host names this process serves (``<host>-N`` for several fake hosts)."""
    base = settings.host or socket.gethostname()
    if settings.driver == "fake" and settings.fake_hosts > 1:
        return [f"{base}-{i}" for i in range(1, settings.fake_hosts + 1)]
    return [base]


def driver_options(settings: Settings) -> dict[str, Any]:
    """The driver's config section, plus where guests' ports go on the hypervisor: ``network``
    (a port without one) and ``network_map`` (novalite's network name -> the hypervisor's),
    so the built-in network ``network_name`` (``private``) is the hypervisor's
    ``guest_network_name`` (``novalite``, as before the network service existed), or the
    driver section's own ``network`` when it names one."""
    guest = hypervisor_network(settings)
    return {**settings.driver_options, "network": guest, "network_map": {settings.network_name: guest}}


def hypervisor_network(settings: Settings) -> str:
    """The hypervisor's network of the built-in network's ports."""
    return str(settings.driver_options.get("network") or settings.guest_network_name)


class ComputeHosts:
    """The agents of one process, all with the same driver."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.hosts = compute_hosts(rt.settings)
        self.agents: list[ComputeAgent] = []
        #: What the driver's ``prepare_host`` found or did (for the banner).
        self.guest_network: str | None = None

    async def start(self) -> None:
        settings = self.rt.settings
        options = driver_options(settings)
        network = GuestNetwork(hypervisor_network(settings), settings.network_cidr)
        prepare = driver_class(settings.driver).prepare_host
        self.guest_network = await asyncio.to_thread(prepare, options, network)
        for host in self.hosts:
            agent = ComputeAgent(self.rt, host, options=options)
            await agent.start()
            self.agents.append(agent)
            self.rt.services.setdefault("ComputeAgent", []).append(agent)

    async def stop(self) -> None:
        for agent in reversed(self.agents):
            try:
                await agent.stop()
            except Exception:
                log.exception("agent.stop_failed", host=agent.host)
        self.agents.clear()


class AgentNode:
    """``novalite agent``: the bus and this host's agents; no database, no API."""

    roles = ("compute",)

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        metrics = Metrics(controller=False)
        bus = Bus(make_transport(settings.transport_url), metrics=metrics.bus)
        self.rt = Runtime(settings=settings, bus=bus, metrics=metrics)
        self.compute = ComputeHosts(self.rt)
        #: ``/metrics`` of this process (agent_metrics_listen), None when off.
        self.metrics_server = AgentMetricsServer(settings, metrics) if settings.agent_metrics_listen else None

    async def start(self) -> None:
        if self.metrics_server is not None:
            await self.metrics_server.start()  # first: scrapable while the agent waits for a conductor
        await self.rt.bus.start()
        await self.compute.start()

    async def stop(self) -> None:
        await self.compute.stop()
        await self.rt.bus.close()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
