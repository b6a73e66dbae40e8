"""Crash soak (issue 9): a steady stream of boots while processes are SIGKILLed.

Two deployments, ~250 boots each, creates and some deletes arriving from ~10 concurrent
clients the whole time; a client whose request fails because the API is down retries it,
as a user would (counted):

* all-in-one ``novalite serve`` (SQLite, in-process bus, three fake hosts): the whole
  process is SIGKILLed and restarted twice, at random moments of the stream;
* split (PostgreSQL, RabbitMQ, three ``novalite agent`` processes): the controller is
  SIGKILLed and restarted once, one agent once, and the broker drops every connection of
  the vhost once.

The fake hypervisors keep their guests in a state file (the driver's ``state_file``), so a
killed process leaves its guests behind — a boot it died in included — as a real
hypervisor does. At the end, what a user and an operator would check:

* every server the API lists is ACTIVE or ERROR with no task, each ERROR one with a fault;
  servers whose boot always fails (``bad-*``) are ERROR with that failure;
* the allocations in the database are exactly the flavors of the ACTIVE servers, on
  their node (none leaked, none missing, none doubled); a failed build holds none;
* the guests on the hypervisors are exactly the ACTIVE servers, each on its host and
  running; no guest of a deleted or failed server is left behind.

Recovery time (kill → every build in flight at the kill settled) is printed per event.
The seed of the random moments is printed too (``NOVALITE_SOAK_SEED`` replays a run).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import os
import random
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from novalite_drivers.fake import read_state_file

from tests.conftest import Cloud
from tests.multiprocess.conftest import (
    MV,
    Controller,
    Deployment,
    Proc,
    close_connections,
    make_image,
    unlimited_quota,
    wait_for,
    wait_hosts_up,
)

#: Boots per part, and how many clients send them at once.
BOOTS = 250
CONCURRENCY = 10
#: Pause of each client between two requests: ~7 creates/s, so the stream lasts ~40 s
#: and every kill lands while builds are being scheduled, handed over and booted.
PACE = (0.8, 1.6)
#: Seconds each fake guest takes to boot: several are mid-boot at any moment.
BOOT_DELAY = 1.0
#: One create in DELETE_EVERY is deleted again 0-3 s later (often while it builds).
DELETE_EVERY = 8
#: One create in BAD_EVERY is named ``bad-*``: its boot fails on every host.
BAD_EVERY = 20
BAD_MESSAGE = "soak: injected spawn failure"
#: How a build ends that found no host left to try (the conductor's fault text, as Nova's).
NO_VALID_HOST = "No valid host was found. There are not enough hosts available."
#: Long, so that no build ends by the watchdog's timeout: each must end by its own path.
BUILD_TIMEOUT = 300.0
#: After a kill: everything in flight at the kill is settled within this (restart included).
RECOVERY_TIMEOUT = 60.0
#: After the stream: every server settled, then the invariants hold, within these.
SETTLE_TIMEOUT = 60.0
CONVERGE_TIMEOUT = 10.0
#: Hosts big enough that no boot fails for room: only ``bad-*`` ones and crashes may fail.
HOST_SIZE = {"vcpus": 64, "memory_mb": 1024 * 1024, "local_gb": 100000}
FLAVORS = ("1", "2")  # m1.tiny and m1.small: the sums tell a doubled claim from a missing one
#: Errors that mean "the API is not there right now" (killed, restarting).
DOWN = (aiohttp.ClientError, asyncio.TimeoutError, ConnectionError)


# -- the user's side: a stream of creates and deletes, retried while the API is down -------


@dataclass
class Stream:
    """~``total`` creates from ``concurrency`` clients, one in DELETE_EVERY deleted soon after."""

    api: Cloud
    image: str
    total: int
    rng: random.Random
    accepted: dict[str, str] = field(default_factory=dict)  # server id -> name
    deleted: set[str] = field(default_factory=set)
    #: Requests sent again because the API was down (connection refused/reset, 5xx).
    retries: collections.Counter[str] = field(default_factory=collections.Counter)
    issued: int = 0
    task: asyncio.Task[None] = field(init=False)
    _deletes: list[asyncio.Task[None]] = field(default_factory=list)

    async def _retrying(self, what: str, send: Callable[[], Awaitable[Any]]) -> Any:
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        while True:
            try:
                r = await send()
                if r.status < 500:
                    return r
                reason: Any = r
            except DOWN as exc:
                reason = exc
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: the API stayed down for {RECOVERY_TIMEOUT:g}s: {reason!r}")
            self.retries[what] += 1
            await asyncio.sleep(0.25)

    async def create(self, n: int) -> None:
        name = f"bad-{n}" if n % BAD_EVERY == BAD_EVERY - 1 else f"soak-{n}"
        body = {
            "server": {"name": name, "imageRef": self.image, "flavorRef": self.rng.choice(FLAVORS), "networks": "none"}
        }
        r = await self._retrying("create", lambda: self.api.post("/compute/v2.1/servers", json=body, microversion=MV))
        assert r.status == 202, (name, r)
        sid = r.body["server"]["id"]
        self.accepted[sid] = name
        if n % DELETE_EVERY == 3:
            self._deletes.append(asyncio.create_task(self.delete_later(sid)))

    async def delete_later(self, sid: str) -> None:
        await asyncio.sleep(self.rng.uniform(0, 3))
        r = await self._retrying("delete", lambda: self.api.delete(f"/compute/v2.1/servers/{sid}"))
        # 404: a retried delete whose first attempt got through (the server is gone).
        assert r.status in (204, 404), (sid, r)
        self.deleted.add(sid)

    async def client(self) -> None:
        while self.issued < self.total:
            n = self.issued
            self.issued += 1
            await self.create(n)
            await asyncio.sleep(self.rng.uniform(*PACE))

    async def _run(self) -> None:
        await asyncio.gather(*(self.client() for _ in range(CONCURRENCY)))
        await asyncio.gather(*self._deletes)

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def reach(self, accepted: int) -> None:
        """Wait until ``accepted`` creates were answered (raising what the stream raised)."""
        while len(self.accepted) < accepted:
            if self.task.done():
                self.task.result()
                raise AssertionError(f"the stream ended with {len(self.accepted)} creates, not {accepted}")
            await asyncio.sleep(0.05)


# -- reading the cloud: API, database, hypervisors -------------------------------------------


async def listed(api: Cloud) -> dict[str, dict[str, Any]]:
    r = await api.get("/compute/v2.1/servers/detail?all_tenants=1&limit=1000", microversion=MV)
    assert r.status == 200, r
    assert len(r.body["servers"]) < 1000, "more servers than one page"
    return {s["id"]: s for s in r.body["servers"]}


def settled(server: dict[str, Any]) -> bool:
    return server["status"] in ("ACTIVE", "ERROR") and not server.get("OS-EXT-STS:task_state")


def flavor_resources(server: dict[str, Any]) -> dict[str, int]:
    """What the server's flavor (as the API shows it) should hold in placement."""
    flavor = server["flavor"]
    disk = int(flavor["disk"]) + int(flavor.get("ephemeral") or 0) + (int(flavor.get("swap") or 0) + 1023) // 1024
    return {"VCPU": int(flavor["vcpus"]), "MEMORY_MB": int(flavor["ram"]), "DISK_GB": disk}


ALLOCATIONS_SQL = (
    "SELECT a.consumer_uuid, p.name, a.resource_class, sum(a.used), count(*) FROM allocations a "
    "JOIN resource_providers p ON p.uuid = a.provider_uuid GROUP BY a.consumer_uuid, p.name, a.resource_class"
)
#: Instances not settled (in the database): what a kill leaves in flight.
IN_FLIGHT_SQL = "SELECT uuid FROM instances WHERE NOT deleted AND (vm_state = 'building' OR task_state IS NOT NULL)"


@dataclass
class Backend:
    """Where one deployment keeps its rows (SQLite file or PostgreSQL) and its guests."""

    sqlite_path: Path | None = None
    pg_url: str | None = None
    state_files: list[Path] = field(default_factory=list)

    async def rows(self, sql: str) -> list[tuple[Any, ...]]:
        if self.sqlite_path is not None:
            return await asyncio.to_thread(self._sqlite_rows, sql)
        assert self.pg_url is not None
        conn = await asyncpg.connect(self.pg_url)
        try:
            return [tuple(r) for r in await conn.fetch(sql)]
        finally:
            await conn.close()

    def _sqlite_rows(self, sql: str) -> list[tuple[Any, ...]]:
        assert self.sqlite_path is not None
        with contextlib.closing(sqlite3.connect(self.sqlite_path, timeout=30)) as db:
            return list(db.execute(sql).fetchall())

    async def allocations(self) -> dict[str, dict[str, Any]]:
        """consumer -> {resource class: used} and the providers it is on; a doubled row shows
        as a count above one."""
        out: dict[str, dict[str, Any]] = {}
        for consumer, node, rc, used, count in await self.rows(ALLOCATIONS_SQL):
            entry = out.setdefault(consumer, {"nodes": set(), "used": {}, "rows": 0})
            entry["nodes"].add(node)
            entry["used"][rc] = entry["used"].get(rc, 0) + int(used)
            entry["rows"] += int(count)
        return out

    def guests(self) -> dict[str, list[tuple[str, int]]]:
        """uuid -> [(host, power state)] over every fake hypervisor."""
        out: dict[str, list[tuple[str, int]]] = {}
        for path in self.state_files:
            for host, guests in read_state_file(path).items():
                for uuid, record in guests.items():
                    out.setdefault(uuid, []).append((host, int(record["state"])))
        return out


def grep_logs(dep: Deployment, needles: list[str], limit: int = 12) -> str:
    """The log lines of every process that mention one of ``needles`` (the failing servers)."""
    out: list[str] = []
    for log in sorted({p.log for p in dep.procs}):
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            continue
        hits = [ln for ln in lines if any(n in ln for n in needles)]
        if hits:
            out.append(f"---- {log.name}: {len(hits)} line(s), last {limit}")
            out.extend(hits[-limit:])
    return "\n".join(out)


def check_invariants(
    every: dict[str, dict[str, Any]],
    allocations: dict[str, dict[str, Any]],
    guests: dict[str, list[tuple[str, int]]],
    outbox: int,
    stream: Stream,
) -> list[str]:
    """Every way the end state is wrong, one line each (empty: all invariants hold)."""
    problems: list[str] = []
    for sid, s in every.items():
        state = (s["status"], s.get("OS-EXT-STS:task_state"))
        if not settled(s):
            problems.append(f"{sid} {s['name']}: not settled {state}")
        if s["status"] == "ERROR" and not (s.get("fault") or {}).get("message"):
            problems.append(f"{sid} {s['name']}: ERROR without a fault")
        if s["name"].startswith("bad-") and s["status"] != "ERROR":
            problems.append(f"{sid} {s['name']}: its boot always fails, yet it is {state}")
        if s["name"].startswith("bad-") and s["status"] == "ERROR":
            message = (s.get("fault") or {}).get("message")
            # Its boot fails on every host, so after a reschedule "no valid host" is a truthful
            # end too: the hosts left untried were full or had not yet reported after a restart
            # (seen once in CI: the third host, right after the all-in-one's second SIGKILL).
            if message not in (BAD_MESSAGE, NO_VALID_HOST):
                problems.append(f"{sid} {s['name']}: ERROR with fault {message!r}, not the injected failure")
    for sid in stream.deleted & set(every):
        problems.append(f"{sid}: deleted (answered 204/404) but still listed as {every[sid]['status']}")
    for sid in set(stream.accepted) - stream.deleted - set(every):
        problems.append(f"{sid} {stream.accepted[sid]}: accepted, never deleted, but not listed")

    active = {sid: s for sid, s in every.items() if s["status"] == "ACTIVE"}
    # Placement: exactly the ACTIVE servers' flavors on their nodes. A failed build gave its
    # claim back (ERROR holds nothing); a deleted server's claim went with it.
    for sid, s in active.items():
        held = allocations.get(sid)
        node = s.get("OS-EXT-SRV-ATTR:hypervisor_hostname")
        if held is None:
            problems.append(f"{sid} {s['name']}: ACTIVE on {node} with no allocation (missing claim)")
            continue
        if held["used"] != flavor_resources(s) or held["rows"] != 3 or held["nodes"] != {node}:
            problems.append(
                f"{sid} {s['name']}: ACTIVE on {node}, flavor {flavor_resources(s)}, but holds {held['used']} "
                f"in {held['rows']} row(s) on {sorted(held['nodes'])}"
            )
    for sid in set(allocations) - set(active):
        what = every[sid]["status"] if sid in every else "deleted" if sid in stream.deleted else "unknown"
        problems.append(f"{sid}: {what} server holds {allocations[sid]['used']} on {sorted(allocations[sid]['nodes'])}")

    # Hypervisors: exactly the ACTIVE servers' guests, each on its host and running.
    for sid, s in active.items():
        host = s.get("OS-EXT-SRV-ATTR:host")
        found = guests.get(sid, [])
        if found != [(host, 1)]:
            power = s["OS-EXT-STS:power_state"]
            problems.append(f"{sid} {s['name']}: ACTIVE on {host} (power {power}), guests {found}")
    for sid in set(guests) - set(active):
        if sid in every:
            s = every[sid]
            what = f"{s['status']} server {s['name']} (host {s.get('OS-EXT-SRV-ATTR:host')})"
        else:
            what = "deleted server" if sid in stream.deleted else "server the API does not list"
        problems.append(f"{sid}: guest {guests[sid]} of a {what} (orphaned)")
    if outbox:
        problems.append(f"{outbox} message(s) still in the outbox")
    return problems


# -- the soak --------------------------------------------------------------------------------


@dataclass
class Event:
    """One crash (or connection drop) and how long the cloud took to recover from it."""

    what: str
    at_accepted: int
    in_flight: int = 0
    api_back: float | None = None  # seconds after the event until the API answered again
    settled: float | None = None  # ... until every build in flight at the event settled


@dataclass
class Soak:
    dep: Deployment
    api: Cloud
    backend: Backend
    stream: Stream
    events: list[Event] = field(default_factory=list)
    _monitors: list[asyncio.Task[None]] = field(default_factory=list)

    async def crash(
        self, what: str, kill: Callable[[], Awaitable[None]], restart: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        """``kill`` something, note what it left in flight (the database says), ``restart``
        it, and watch (in the background) how long until all of that has settled."""
        event = Event(what, len(self.stream.accepted))
        self.events.append(event)
        t0 = time.monotonic()
        await kill()
        in_flight = {r[0] for r in await self.backend.rows(IN_FLIGHT_SQL)}
        event.in_flight = len(in_flight)
        self._monitors.append(asyncio.create_task(self._monitor(event, t0, in_flight)))
        if restart is not None:
            await restart()

    async def _monitor(self, event: Event, t0: float, ids: set[str]) -> None:
        deadline = t0 + RECOVERY_TIMEOUT
        pending = set(ids)
        while True:
            try:
                every = await listed(self.api)
            except DOWN:
                await asyncio.sleep(0.25)
                continue
            if event.api_back is None:
                event.api_back = time.monotonic() - t0
            pending = {i for i in pending if i in every and not settled(every[i])}
            if not pending:
                event.settled = time.monotonic() - t0
                return
            if time.monotonic() > deadline:
                stuck = {i: (every[i]["status"], every[i].get("OS-EXT-STS:task_state")) for i in pending}
                raise AssertionError(
                    f"{event.what}: {len(pending)} build(s) in flight at the event not settled after "
                    f"{RECOVERY_TIMEOUT:g}s: {stuck}\n{grep_logs(self.dep, sorted(pending)[:5])}"
                )
            await asyncio.sleep(0.5)

    async def kill_controller(self, what: str, ctl: Controller) -> None:
        """SIGKILL a controller (or the all-in-one) and start it again at once."""

        async def kill() -> None:
            ctl.proc.kill()

        async def restart() -> None:
            ctl.proc = self.dep.respawn(ctl.proc)
            await self.dep.wait_http(ctl)

        await self.crash(what, kill, restart)

    async def kill_agent(self, what: str, agents: dict[str, Proc], host: str) -> None:
        """SIGKILL one ``novalite agent`` and start it again at once."""

        async def kill() -> None:
            agents[host].kill()

        async def restart() -> None:
            agents[host] = self.dep.respawn(agents[host])

        await self.crash(what, kill, restart)

    async def finish(self, label: str, seed: int, started: float) -> None:
        """Wait for the stream and every recovery, then check the end state."""
        await self.stream.task
        await asyncio.gather(*self._monitors)
        stream_done = time.monotonic()

        async def all_settled() -> dict[str, dict[str, Any]] | None:
            every = await listed(self.api)
            return every if all(settled(s) for s in every.values()) else None

        await wait_for(all_settled, SETTLE_TIMEOUT, "every server to settle", interval=0.5, dep=self.dep)
        settle_time = time.monotonic() - stream_done
        # Power syncs and deletes run on their own clocks: give them a few seconds to converge.
        deadline = time.monotonic() + CONVERGE_TIMEOUT
        while True:
            every = await listed(self.api)
            problems = check_invariants(
                every,
                await self.backend.allocations(),
                self.backend.guests(),
                int((await self.backend.rows("SELECT count(*) FROM outbox"))[0][0]),
                self.stream,
            )
            if not problems or time.monotonic() > deadline:
                break
            await asyncio.sleep(1.0)
        statuses = collections.Counter(s["status"] for s in every.values())
        names = collections.Counter(s["name"] for s in every.values())
        doubled = sum(n - 1 for n in names.values() if n > 1)
        print(
            f"\n[{label}] seed {seed}: {len(self.stream.accepted)} creates accepted, "
            f"{len(self.stream.deleted)} deleted, {dict(self.stream.retries)} retried while the API was down, "
            f"{doubled} created twice (a retried create whose first answer was lost); "
            f"end: {dict(statuses)}; settled {settle_time:.1f}s after the stream, "
            f"{time.monotonic() - started:.0f}s in all"
        )
        for e in self.events:
            api_back = f"{e.api_back:.1f}s" if e.api_back is not None else "-"
            done = f"{e.settled:.1f}s" if e.settled is not None else "-"
            print(
                f"[{label}]   {e.what} at {e.at_accepted} accepted: {e.in_flight} in flight; "
                f"API answering after {api_back}, all of them settled after {done}"
            )
        unexpected = {
            sid: (s["name"], (s.get("fault") or {}).get("message"))
            for sid, s in every.items()
            if s["status"] == "ERROR" and not s["name"].startswith("bad-")
        }
        if unexpected:
            print(f"[{label}]   ERROR though their boot should succeed: {unexpected}")
        assert not problems, (
            f"{len(problems)} invariant violation(s) after the soak (seed {seed}):\n"
            + "\n".join(problems[:40])
            + "\n"
            + grep_logs(self.dep, [p.split()[0].rstrip(":") for p in problems[:6]])
        )


def soak_rng() -> tuple[int, random.Random]:
    seed = int(os.environ.get("NOVALITE_SOAK_SEED") or random.SystemRandom().randrange(1 << 30))
    return seed, random.Random(seed)


# -- (a) all-in-one ---------------------------------------------------------------------------


@pytest.fixture
async def local_deployment(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Deployment]:
    """A Deployment for processes on SQLite and the in-process bus: no PostgreSQL, no broker."""
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
    dep = Deployment(tmp=tmp_path, db_url="unused", vhost="unused", session=session)
    try:
        yield dep
    finally:
        failed = getattr(request.node, "rep_call", None)
        if failed is not None and failed.failed:
            print(dep.logs())
        dep.stop_all()
        await session.close()


async def test_all_in_one_soak(local_deployment: Deployment) -> None:
    dep = local_deployment
    started = time.monotonic()
    seed, rng = soak_rng()
    state_dir = dep.tmp / "aio"
    db_path = state_dir / "novalite.db"
    state_file = state_dir / "fake-guests.json"
    options = {
        "boot_delay": BOOT_DELAY,
        "state_file": str(state_file),
        "fail": {"spawn": BAD_MESSAGE},
        "fail_name_prefix": "bad-",
        **HOST_SIZE,
    }
    ctl = await dep.start_controller(
        "aio",
        services="api,conductor,scheduler,compute",
        NOVALITE_TRANSPORT_URL="memory://",
        NOVALITE_DATABASE_URL=f"sqlite:///{db_path}",
        NOVALITE_BUILD_TIMEOUT=str(BUILD_TIMEOUT),
        NOVALITE_DRIVER="fake",
        NOVALITE_FAKE_HOSTS="3",
        NOVALITE_DRIVER_OPTIONS=json.dumps(options),
    )
    api = dep.api(ctl)
    await wait_hosts_up(api, {"aio-1", "aio-2", "aio-3"}, timeout=45)
    image = await make_image(api)
    await unlimited_quota(api)

    backend = Backend(sqlite_path=db_path, state_files=[state_file])
    stream = Stream(api, image, BOOTS, rng)
    soak = Soak(dep, api, backend, stream)
    stream.start()
    for n, at in enumerate(sorted(rng.sample(range(BOOTS // 5, 4 * BOOTS // 5), 2)), 1):
        await stream.reach(at)
        await soak.kill_controller(f"SIGKILL {n} of the all-in-one", ctl)
    await soak.finish("all-in-one", seed, started)


# -- (b) split ---------------------------------------------------------------------------------

AGENTS = ("hv-a", "hv-b", "hv-c")


@pytest.mark.rabbit
@pytest.mark.postgres
async def test_split_soak(deployment: Deployment) -> None:
    dep = deployment
    started = time.monotonic()
    seed, rng = soak_rng()
    ctl = await dep.start_controller(NOVALITE_BUILD_TIMEOUT=str(BUILD_TIMEOUT))
    state_files = {host: dep.tmp / host / "fake-guests.json" for host in AGENTS}
    agents = {
        host: dep.start_agent(
            host,
            driver_options={
                "boot_delay": BOOT_DELAY,
                "state_file": str(state_files[host]),
                "fail": {"spawn": BAD_MESSAGE},
                "fail_name_prefix": "bad-",
                **HOST_SIZE,
            },
        )
        for host in AGENTS
    }
    api = dep.api(ctl)
    await wait_hosts_up(api, set(AGENTS), timeout=45)
    image = await make_image(api)
    await unlimited_quota(api)

    backend = Backend(pg_url=dep.db_url, state_files=list(state_files.values()))
    stream = Stream(api, image, BOOTS, rng)
    soak = Soak(dep, api, backend, stream)
    victim = rng.choice(AGENTS)

    async def drop_connections() -> None:
        await asyncio.to_thread(close_connections, dep.vhost)

    crashes: list[tuple[str, Callable[[str], Awaitable[None]]]] = [
        ("SIGKILL of the controller", lambda what: soak.kill_controller(what, ctl)),
        (f"SIGKILL of agent {victim}", lambda what: soak.kill_agent(what, agents, victim)),
        ("broker closes every connection", lambda what: soak.crash(what, drop_connections)),
    ]
    rng.shuffle(crashes)
    stream.start()
    moments = sorted(rng.sample(range(BOOTS // 6, 5 * BOOTS // 6), len(crashes)))
    for at, (what, crash) in zip(moments, crashes, strict=True):
        await stream.reach(at)
        await crash(what)
    await soak.finish("split", seed, started)
