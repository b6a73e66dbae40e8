"""One novalite process: starts the services its settings name, in one event loop.

``novalite serve`` runs a :class:`Node` with api, conductor, scheduler, console and
(all-in-one) local compute agents; ``novalite agent`` runs a Node with only the compute
role and no database. Services only ever talk through the bus, so the same roles can
be spread over processes and hosts by configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from aiohttp import web

from novalite import cloudsyaml
from novalite.bus import Bus, make_transport
from novalite.config import Settings
from novalite.log import get_logger
from novalite.runtime import Runtime

log = get_logger("novalite.node")

CONTROLLER_ROLES = {"api", "conductor", "scheduler", "console"}


@dataclass
class StartupInfo:
    """What ``novalite serve`` tells the user at start."""

    state_dir: str
    api_url: str
    clouds_yaml: str | None
    generated_password: str | None
    admin_password_source: str


class Node:
    def __init__(self, settings: Settings, services: list[str] | None = None) -> None:
        self.settings = settings
        self.roles = list(services or settings.services)
        self.rt: Runtime | None = None
        self._runner: web.AppRunner | None = None
        self._stoppables: list[object] = []
        self.port: int | None = None
        self.startup: StartupInfo | None = None

    @property
    def api_url(self) -> str:
        return self.settings.public_base

    async def start(self) -> StartupInfo:
        settings = self.settings
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        bus = Bus(make_transport(settings.transport_url))
        await bus.start()
        db = None
        generated = None
        clouds = None
        password_source = "unchanged"
        if CONTROLLER_ROLES & set(self.roles):
            from novalite.db import Database
            from novalite.db.migrate import upgrade

            db = Database(settings.db_url, settings.database_pool_size)
            await upgrade(db)
        self.rt = rt = Runtime(settings=settings, bus=bus, db=db)

        if "api" in self.roles:
            generated, clouds, password_source = await self._bootstrap_identity(rt)
            await self._seed_catalog_data(rt)
        if "scheduler" in self.roles:
            from novalite.scheduler.manager import SchedulerManager

            await self._start(SchedulerManager(rt))
        if "conductor" in self.roles:
            from novalite.conductor.manager import ConductorManager

            await self._start(ConductorManager(rt))
        if "api" in self.roles:
            await self._start_api(rt)
        if "console" in self.roles:
            with contextlib.suppress(ImportError):
                from novalite.console.proxy import ConsoleProxy

                await self._start(ConsoleProxy(rt))
        if "compute" in self.roles:
            from novalite.compute.agent import ComputeAgent

            for host in self.compute_hosts():
                await self._start(ComputeAgent(rt, host))
        self.startup = StartupInfo(
            state_dir=str(settings.state_dir),
            api_url=self.api_url,
            clouds_yaml=str(clouds) if clouds else None,
            generated_password=generated,
            admin_password_source=password_source,
        )
        return self.startup

    def compute_hosts(self) -> list[str]:
        import socket

        base = self.settings.host or socket.gethostname()
        if self.settings.driver == "fake" and self.settings.fake_hosts > 1:
            return [f"{base}-{i}" for i in range(1, self.settings.fake_hosts + 1)]
        return [base]

    async def _start(self, service: object) -> None:
        await service.start()  # type: ignore[attr-defined]
        self._stoppables.append(service)
        assert self.rt is not None
        self.rt.services.setdefault(type(service).__name__, []).append(service)

    async def _bootstrap_identity(self, rt: Runtime) -> tuple[str | None, object, str]:
        from novalite.identity.bootstrap import bootstrap_identity, set_password

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

    async def _seed_catalog_data(self, rt: Runtime) -> None:
        from novalite.compute.flavors import ensure_default_flavors

        async with rt.db.begin() as conn:
            await ensure_default_flavors(conn)

    async def _start_api(self, rt: Runtime) -> None:
        from novalite.api.app import build_app

        app = build_app(rt)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, rt.settings.listen_host, rt.settings.listen_port, reuse_address=True)
        await site.start()
        server = site._server
        if server is not None and server.sockets:  # the real port when listen asked for :0
            self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        for service in reversed(self._stoppables):
            try:
                await service.stop()  # type: ignore[attr-defined]
            except Exception:
                log.exception("node.stop_failed", service=type(service).__name__)
        self._stoppables.clear()
        if self._runner is not None:
            await self._runner.cleanup()
        if self.rt is not None:
            await self.rt.bus.close()
            if self.rt.db is not None:
                await self.rt.db.close()

    async def run_forever(self) -> None:
        try:
            await asyncio.Event().wait()
        finally:
            await self.stop()
