"""One novalite process: starts the services its settings name, in one event loop.

``novalite serve`` runs a :class:`Node` with api, conductor, scheduler, console and
(all-in-one) local compute agents; ``novalite agent`` runs a Node with only the compute
role and no database. Services only ever talk through the bus, so the same roles can
be spread over processes and hosts by configuration.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

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


#: Key of the PostgreSQL advisory lock that serializes controllers' start-up.
STARTUP_LOCK_KEY = 0x4E4F56414C495445  # "NOVALITE"


@contextlib.asynccontextmanager
async def _startup_lock(db: Any) -> AsyncIterator[None]:
    """Controllers starting at once on one PostgreSQL database take turns to migrate the
    schema and create the admin user and default flavors (else one dies on a duplicate key)."""
    if db.is_sqlite:
        yield
        return
    import sqlalchemy as sa

    async with db.connect() as conn:
        await conn.execute(sa.text("SELECT pg_advisory_lock(:key)"), {"key": STARTUP_LOCK_KEY})
        await conn.commit()
        try:
            yield
        finally:
            await conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": STARTUP_LOCK_KEY})
            await conn.commit()


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def prepare_libvirt_host(settings: Settings) -> str:
    """Before the libvirt driver's agents start: make sure guests' ports have a network.

    Ports are on the libvirt network ``settings.network_name`` with fixed IPs from
    ``settings.network_cidr`` (see novalite.network). If that network does not exist, it is
    created **isolated** (no ``<forward>``: guests reach each other and this host, nothing
    else; NAT is an operator's choice, see docs/libvirt.md), with this host at the subnet's
    first address (novalite's gateway) on a bridge named after the network. Driver option
    ``create_network = false`` turns that off. An existing network is used as it is, but
    its subnet must be ``network_cidr``. Also makes the driver's ``network`` option (ports
    without a network) default to ``network_name``. Blocking; returns a line for the banner.
    """
    import ipaddress
    import zlib

    opts = settings.driver_options
    opts.setdefault("network", settings.network_name)
    name, cidr = settings.network_name, ipaddress.ip_network(settings.network_cidr)
    uri = opts.get("uri") or "qemu:///system"
    try:
        import libvirt
        from novalite_drivers.libvirt import ensure_event_loop
        from novalite_drivers.libvirt.network import ensure_network
    except ImportError:
        return f"{name} {cidr} (not checked: libvirt-python is missing)"  # init_host says more
    ensure_event_loop()  # before any connection, so the driver's later ones get events
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return f"{name} {cidr} (not checked: libvirt is unreachable)"  # init_host says more
    try:
        try:
            net = conn.networkLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                raise
            net = None
        if net is None:
            if not _as_bool(opts.get("create_network", True)):
                raise RuntimeError(
                    f"the libvirt network {name!r} (network_name) does not exist and create_network is off"
                )
            bridge = f"nlbr{zlib.crc32(name.encode()):08x}"
            gateway = next(cidr.hosts())
            ensure_network(conn, name, bridge, f"{gateway}/{cidr.prefixlen}", nat=False)
            log.info("node.libvirt_network_created", network=name, cidr=str(cidr), bridge=bridge)
            return f"{name} {cidr} (isolated libvirt network on {bridge}, created now)"
        import xml.etree.ElementTree as ET

        root = ET.fromstring(net.XMLDesc(0))
        subnets = []
        for ip in root.findall("./ip"):
            if ip.get("address") and (ip.get("family") or "ipv4") == "ipv4":
                mask = ip.get("prefix") or ip.get("netmask") or "32"
                subnets.append(ipaddress.ip_interface(f"{ip.get('address')}/{mask}").network)
        if cidr not in subnets:
            raise RuntimeError(
                f"the libvirt network {name!r} serves {', '.join(map(str, subnets)) or 'no IPv4 subnet'}, "
                f"but network_cidr is {cidr}: make them the same"
            )
        if not net.isActive():
            net.create()
        forward = root.find("./forward")
        kind = "isolated" if forward is None else f"forward mode {forward.get('mode') or 'nat'}"
        return f"{name} {cidr} ({kind} libvirt network on {net.bridgeName()})"
    finally:
        conn.close()


class Node:
    def __init__(self, settings: Settings, services: list[str] | None = None) -> None:
        self.settings = settings
        self.roles = list(services or settings.services)
        self.rt: Runtime | None = None
        self._runner: web.AppRunner | None = None
        self._stoppables: list[object] = []
        self.port: int | None = None
        self.startup: StartupInfo | None = None
        #: What :func:`prepare_libvirt_host` found or did (for the banner).
        self.guest_network: str | None = None

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
        self._startup = contextlib.AsyncExitStack()
        if CONTROLLER_ROLES & set(self.roles):
            from novalite.db import Database
            from novalite.db.migrate import upgrade

            db = Database(settings.db_url, settings.database_pool_size)
            await self._startup.enter_async_context(_startup_lock(db))
            await upgrade(db)
        self.rt = rt = Runtime(settings=settings, bus=bus, db=db)

        try:
            if "api" in self.roles:
                generated, clouds, password_source = await self._bootstrap_identity(rt)
                await self._seed_catalog_data(rt)
        finally:
            await self._startup.aclose()
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

            if settings.driver == "libvirt":
                self.guest_network = await asyncio.to_thread(prepare_libvirt_host, settings)
            for host in self.compute_hosts():
                await self._start(ComputeAgent(rt, host))
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
