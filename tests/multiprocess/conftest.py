"""Fixtures for the split deployment: real ``novalite serve`` and ``novalite agent`` processes.

Every test gets a PostgreSQL database and a RabbitMQ vhost of its own (created before,
dropped after), and a :class:`Deployment` that starts controllers and agents as
subprocesses configured only through ``NOVALITE_*`` environment variables — the agents
get no database URL at all. Each process logs to ``<tmp>/<name>.log``; a failing test
prints the tail of every log.

Intervals are short so that "down within the down-time" takes seconds:
report every 0.5 s, down after 5 s, power-state sync every second.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import (
    ADMIN_PASSWORD,
    RABBIT_HOST,
    Cloud,
    create_pg_database,
    create_rabbit_vhost,
    delete_rabbit_vhost,
    drop_pg_database,
    free_port,
    rabbitmqctl,
)

REPORT_INTERVAL = 0.5
SERVICE_DOWN_TIME = 5.0
MV = "2.100"
NO_VALID_HOST = "No valid host was found. There are not enough hosts available."


@dataclass
class Proc:
    """One novalite subprocess and its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    argv: list[str]
    env: dict[str, str]

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def send(self, sig: int) -> None:
        if self.alive:
            self.popen.send_signal(sig)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        """Send ``sig`` and wait for the exit (SIGKILL after ``timeout``)."""
        if self.alive:
            self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)
        return self.popen.returncode

    def kill(self) -> None:
        self.stop(signal.SIGKILL)


@dataclass
class Controller:
    proc: Proc
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Deployment:
    """Controllers and agents of one test, sharing its database and vhost."""

    tmp: Path
    db_url: str
    vhost: str
    session: aiohttp.ClientSession
    #: NOVALITE_* settings every process gets (tests add to it before starting processes).
    common: dict[str, str] = field(default_factory=dict)
    procs: list[Proc] = field(default_factory=list)
    controllers: list[Controller] = field(default_factory=list)

    @property
    def transport_url(self) -> str:
        return f"rabbit://guest:guest@{RABBIT_HOST}/{self.vhost}"

    def _env(self, name: str, extra: dict[str, str]) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("NOVALITE_", "OS_"))}
        env.update(
            NOVALITE_TRANSPORT_URL=self.transport_url,
            NOVALITE_STATE_DIR=str(self.tmp / name),
            NOVALITE_REPORT_INTERVAL=str(REPORT_INTERVAL),
            NOVALITE_SERVICE_DOWN_TIME=str(SERVICE_DOWN_TIME),
            NOVALITE_SYNC_POWER_STATE_INTERVAL="1",
            NOVALITE_RPC_TIMEOUT="15",
            NOVALITE_LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
        )
        env.update(self.common)
        env.update(extra)
        return env

    def spawn(self, name: str, argv: list[str], env: dict[str, str]) -> Proc:
        log = self.tmp / f"{name}.log"
        with open(log, "ab") as fh:
            fh.write(f"==== start {time.strftime('%H:%M:%S')} {' '.join(argv)}\n".encode())
            popen = subprocess.Popen(
                [sys.executable, "-m", "novalite.cli", *argv], stdout=fh, stderr=subprocess.STDOUT, env=env
            )
        proc = Proc(name=name, popen=popen, log=log, argv=argv, env=env)
        self.procs.append(proc)
        return proc

    def respawn(self, proc: Proc) -> Proc:
        """Start the same command again (after ``proc`` stopped)."""
        assert not proc.alive
        self.procs.remove(proc)
        return self.spawn(proc.name, proc.argv, proc.env)

    async def start_controller(
        self, name: str = "ctl", services: str = "api,conductor,scheduler", **env: str
    ) -> Controller:
        port = free_port()
        extra = {
            "NOVALITE_DATABASE_URL": self.db_url,
            "NOVALITE_LISTEN": f"127.0.0.1:{port}",
            "NOVALITE_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "NOVALITE_HOST": name,
            **env,  # a test may override any of the above (an all-in-one on SQLite)
        }
        proc = self.spawn(name, ["serve", "--services", services], self._env(name, extra))
        ctl = Controller(proc, port)
        self.controllers.append(ctl)
        await self.wait_http(ctl)
        return ctl

    def start_agent(self, host: str, driver_options: dict[str, Any] | None = None, **env: str) -> Proc:
        extra = dict(env)
        if driver_options is not None:
            extra["NOVALITE_DRIVER_OPTIONS"] = json.dumps(driver_options)
        env_ = self._env(host, extra)
        assert "NOVALITE_DATABASE_URL" not in env_, "an agent must not be given a database URL"
        return self.spawn(host, ["agent", "--host", host, "--driver", "fake"], env_)

    async def wait_http(self, ctl: Controller, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not ctl.proc.alive:
                raise AssertionError(f"{ctl.proc.name} exited {ctl.proc.popen.returncode}:\n{ctl.proc.tail()}")
            try:
                async with self.session.get(f"{ctl.base}/identity/v3") as resp:
                    if resp.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
        raise AssertionError(f"{ctl.proc.name} did not serve HTTP within {timeout:g}s:\n{ctl.proc.tail()}")

    def api(self, ctl: Controller | None = None) -> Cloud:
        """A client of one controller's API (the first by default), logged in as admin."""
        ctl = ctl or self.controllers[0]
        return Cloud(node=None, session=self.session, base=ctl.base)  # type: ignore[arg-type]

    def logs(self) -> str:
        return "\n".join(f"---- {p.name} (rc={p.popen.poll()}) ----\n{p.tail()}" for p in self.procs)

    def stop_all(self) -> None:
        for proc in reversed(self.procs):
            proc.stop(signal.SIGTERM, timeout=15)


@pytest.fixture
async def pg_url() -> AsyncIterator[str]:
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@pytest.fixture
def vhost() -> Iterator[str]:
    name = create_rabbit_vhost()
    try:
        yield name
    finally:
        delete_rabbit_vhost(name)


@pytest.fixture
async def deployment(
    tmp_path: Path, pg_url: str, vhost: str, request: pytest.FixtureRequest
) -> AsyncIterator[Deployment]:
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60))
    dep = Deployment(tmp=tmp_path, db_url=pg_url, vhost=vhost, session=session)
    try:
        yield dep
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(dep.logs())
        dep.stop_all()
        await session.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep


def close_connections(vhost: str) -> None:
    """Have the broker drop every client connection of ``vhost`` (not the whole server)."""
    rabbitmqctl("close_all_connections", "-p", vhost, "test: broker drops connections")


# -- API helpers -----------------------------------------------------------------------------


def tiny_qcow2() -> bytes:
    """A qcow2 header (magic, version 3, virtual size 64 MiB) padded to 64 KiB."""
    header = b"QFI\xfb" + struct.pack(">I", 3) + b"\0" * 16 + struct.pack(">Q", 64 * 1024 * 1024)
    return header + b"\0" * (65536 - len(header))


async def make_image(api: Cloud) -> str:
    r = await api.post(
        "/image/v2/images",
        json={"name": "tiny", "disk_format": "qcow2", "container_format": "bare", "visibility": "public"},
    )
    assert r.status == 201, r
    image_id = r.body["id"]
    r = await api.request(
        "PUT",
        f"/image/v2/images/{image_id}/file",
        data=tiny_qcow2(),
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status == 204, r
    return image_id


async def create_server(api: Cloud, image: str, name: str, flavor: str = "1") -> tuple[int, Any]:
    body = {"server": {"name": name, "imageRef": image, "flavorRef": flavor, "networks": "none"}}
    r = await api.post("/compute/v2.1/servers", json=body, microversion=MV)
    return r.status, r.body


async def unlimited_quota(api: Cloud) -> None:
    r = await api.get("/identity/v3/auth/projects")
    project = next(p["id"] for p in r.body["projects"] if p["name"] == "admin")
    body = {"quota_set": {"instances": -1, "cores": -1, "ram": -1}}
    r = await api.put(f"/compute/v2.1/os-quota-sets/{project}", json=body)
    assert r.status == 200, r


async def servers(api: Cloud) -> dict[str, dict[str, Any]]:
    r = await api.get("/compute/v2.1/servers/detail?all_tenants=1&limit=1000", microversion=MV)
    assert r.status == 200, r
    return {s["id"]: s for s in r.body["servers"]}


async def services(api: Cloud) -> dict[str, dict[str, Any]]:
    r = await api.get("/compute/v2.1/os-services?binary=nova-compute", microversion=MV)
    assert r.status == 200, r
    return {s["host"]: s for s in r.body["services"]}


async def hypervisors(api: Cloud) -> dict[str, dict[str, Any]]:
    r = await api.get("/compute/v2.1/os-hypervisors/detail", microversion=MV)
    assert r.status == 200, r
    return {h["hypervisor_hostname"]: h for h in r.body["hypervisors"]}


async def wait_for(check: Any, timeout: float, what: str, interval: float = 0.25, dep: Deployment | None = None) -> Any:
    """Await ``check()`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            logs = f"\n{dep.logs()}" if dep else ""
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}{logs}")
        await asyncio.sleep(interval)


async def wait_hosts_up(api: Cloud, hosts: set[str], timeout: float = 30.0, up: bool = True) -> None:
    wanted = "up" if up else "down"

    async def check() -> bool:
        svc = await services(api)
        return all(h in svc and svc[h]["state"] == wanted for h in hosts)

    await wait_for(check, timeout, f"hosts {sorted(hosts)} {wanted}")


async def wait_settled(api: Cloud, ids: set[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Wait until no server of ``ids`` is in BUILD (or has a task); return them all."""
    latest: dict[str, dict[str, Any]] = {}

    async def check() -> bool:
        nonlocal latest
        every = await servers(api)
        latest = {i: every[i] for i in ids if i in every}
        return all(s["status"] != "BUILD" and not s.get("OS-EXT-STS:task_state") for s in latest.values())

    try:
        await wait_for(check, timeout, "servers to leave BUILD", interval=0.5)
    except AssertionError:
        stuck = {i: (s["status"], s.get("OS-EXT-STS:task_state")) for i, s in latest.items() if s["status"] == "BUILD"}
        raise AssertionError(f"{len(stuck)} server(s) still in BUILD after {timeout:g}s: {stuck}") from None
    return latest
