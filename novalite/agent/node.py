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
from novalite.bus import Bus, make_transport
from novalite.config import Settings
from novalite.log import get_logger
from novalite.runtime import Runtime

log = get_logger("novalite.agent.node")


def compute_hosts(settings: Settings) -> list[str]:
    """The compute host names this process serves (``<host>-N`` for several fake hosts)."""
    base = settings.host or socket.gethostname()
    if settings.driver == "fake" and settings.fake_hosts > 1:
        return [f"{base}-{i}" for i in range(1, settings.fake_hosts + 1)]
    return [base]


def driver_options(settings: Settings) -> dict[str, Any]:
    """The driver's config section; ``network`` (where ports without one go) defaults to the
    guest network, whose name every port carries anyway."""
    return {"network": settings.network_name, **settings.driver_options}


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
        network = GuestNetwork(settings.network_name, settings.network_cidr)
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
        self.rt = Runtime(settings=settings, bus=Bus(make_transport(settings.transport_url)))
        self.compute = ComputeHosts(self.rt)

    async def start(self) -> None:
        await self.rt.bus.start()
        await self.compute.start()

    async def stop(self) -> None:
        await self.compute.stop()
        await self.rt.bus.close()
