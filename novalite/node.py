"""The ``novalite serve`` process: the services its settings name, in one event loop.

All-in-one it runs api, conductor, scheduler, console and local compute hosts
(:class:`novalite.agent.node.ComputeHosts`); ``--services`` picks a subset, e.g. a
controller without compute. ``novalite agent`` runs :class:`novalite.agent.node.AgentNode`
instead, which imports nothing of this module's database side. Services only ever talk
through the bus, so the same roles spread over processes and hosts by configuration.
"""

from __future__ import annotations

import asyncio
import gc
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from aiohttp import web

from novalite import cloudsyaml
from novalite.agent.node import ComputeHosts
from novalite.api.app import build_app
from novalite.bus import Bus, make_transport
from novalite.conductor.manager import ConductorManager
from novalite.config import Settings
from novalite.console.proxy import ConsoleProxy
from novalite.db import Database
from novalite.db.migrate import startup_lock, upgrade
from novalite.log import get_logger
from novalite.metrics import Metrics
from novalite.relay import OutboxRelay
from novalite.runtime import ControllerRuntime, Runtime
from novalite.scheduler.manager import SchedulerManager
from novalite.store.flavors import ensure_default_flavors
from novalite.store.identity import bootstrap_identity, set_password
from novalite.store.networks import ensure_default_network

log = get_logger("novalite.node")

CONTROLLER_ROLES = {"api", "conductor", "scheduler", "console"}


class Service(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...


@dataclass
class StartupInfo:
    """What ``novalite serve`` tells the user at start."""

    state_dir: str
    api_url: str
    clouds_yaml: str | None
    generated_password: str | None
    admin_password_source: str
    #: Schema migrations this start applied (the first start applies them all).
    migrations_applied: list[str]


class Node:
    def __init__(self, settings: Settings, services: list[str] | None = None) -> None:
        self.settings = settings
        self.roles = list(services or settings.services)
        self.rt: Runtime | None = None
        self.compute: ComputeHosts | None = None
        self._runner: web.AppRunner | None = None
        self._stoppables: list[Service] = []
        self.port: int | None = None
        self.startup: StartupInfo | None = None

    @property
    def api_url(self) -> str:
        return self.settings.public_base

    @property
    def guest_network(self) -> str | None:
        """What the driver's ``prepare_host`` found or did (for the banner)."""
        return self.compute.guest_network if self.compute else None

    async def start(self) -> StartupInfo:
        settings = self.settings
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        metrics = Metrics()
        bus = Bus(make_transport(settings.transport_url), metrics=metrics.bus)
        await bus.start()
        generated, clouds, password_source = None, None, "unchanged"
        migrated: list[str] = []
        if CONTROLLER_ROLES & set(self.roles):
            db = Database(settings.db_url, settings.database_pool_size)
            if settings.count_sql_statements:
                db.count_statements()
            self.rt = crt = ControllerRuntime(settings, bus, db=db, metrics=metrics)
            async with startup_lock(db):
                migrated = await upgrade(
                    db, progress=lambda rev, doc: log.info("db.migration_applied", revision=rev, what=doc)
                )
                if "api" in self.roles:
                    generated, clouds, password_source = await self._bootstrap_identity(crt)
                    async with db.begin() as conn:
                        await ensure_default_flavors(conn)
                        await ensure_default_network(conn, settings)  # devstack's `private` (issue 12)
            if "scheduler" in self.roles:
                await self._start(SchedulerManager(crt))
            if "conductor" in self.roles:
                await self._start(ConductorManager(crt))
            # Every controller process empties the outbox (rows its own services commit, and
            # rows another process committed before it died).
            await self._start(OutboxRelay(crt))
            if "api" in self.roles:
                await self._start_api(crt)
            if "console" in self.roles:
                await self._start(ConsoleProxy(crt))
        else:
            self.rt = Runtime(settings=settings, bus=bus, metrics=metrics)
        if "compute" in self.roles:
            self.compute = ComputeHosts(self.rt)
            await self.compute.start()
            self._stoppables.append(self.compute)
        # Everything allocated so far (modules, app, engine) lives as long as the process:
        # take it out of the cyclic GC's view, so that a request building thousands of
        # short-lived dicts (a 1,000-server listing) does not pay for scanning it.
        gc.freeze()
        self.startup = StartupInfo(
            state_dir=str(settings.state_dir),
            api_url=self.api_url,
            clouds_yaml=str(clouds) if clouds else None,
            generated_password=generated,
            admin_password_source=password_source,
            migrations_applied=migrated,
        )
        return self.startup

    def compute_hosts(self) -> list[str]:
        return self.compute.hosts if self.compute else []

    async def _start(self, service: Service) -> None:
        await service.start()
        self._stoppables.append(service)
        assert self.rt is not None
        self.rt.services.setdefault(type(service).__name__, []).append(service)

    async def _bootstrap_identity(self, rt: ControllerRuntime) -> tuple[str | None, Path | None, str]:
        settings = rt.settings
        async with rt.db.begin() as conn:
            generated = await bootstrap_identity(conn, settings.admin_password)
            if settings.admin_password and generated is None:
                await set_password(conn, "admin", settings.admin_password)
        if settings.admin_password:
            password, source = settings.admin_password, "NOVALITE_ADMIN_PASSWORD / admin_password setting"
        elif generated:
            password, source = generated, "generated on first start (shown once here; kept in clouds.yaml)"
        else:
            password = cloudsyaml.read_password(settings) or ""
            source = "kept from the first start (in clouds.yaml)"
        clouds = cloudsyaml.write(settings, password) if password else None
        return generated, clouds, source

    async def _start_api(self, rt: ControllerRuntime) -> None:
        app = build_app(rt)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=rt.settings.stop_timeout)
        await self._runner.setup()
        site = web.TCPSite(self._runner, rt.settings.listen_host, rt.settings.listen_port, reuse_address=True)
        await site.start()
        server = site._server
        if isinstance(server, asyncio.Server) and server.sockets:  # the real port when listen asked for :0
            self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for service in reversed(self._stoppables):
            try:
                await service.stop()
            except Exception:
                log.exception("node.stop_failed", service=type(service).__name__)
        self._stoppables.clear()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.rt is not None:
            await self.rt.bus.close()
            if isinstance(self.rt, ControllerRuntime):
                await self.rt.db.close()
