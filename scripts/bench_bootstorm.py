#!/usr/bin/env python3
"""Boot-storm benchmark: all-in-one ``novalite serve`` (fake driver, N hosts), M servers at once.

Starts ``novalite serve`` as a subprocess on a fresh state dir (SQLite by default, or
``--database-url``), then through the HTTP API:

* creates M servers concurrently (at most ``--concurrency`` requests in flight),
* waits until every server is ACTIVE,
* times ``GET /servers/detail`` with M servers present (and with ``--cold-listing K`` the
  first listing after each of K restarts, when nothing is rendered or cached yet),
* deletes them all concurrently and waits until the list is empty.

It prints servers/s to all ACTIVE, create→ACTIVE p50/p95 (from the client's send time to
the server's ``OS-SRV-USG:launched_at``), /servers/detail p50, delete throughput, and
the server process's CPU seconds per boot, and the scheduler's claim conflicts per placement
(wasted claim transactions: generation conflicts plus claims on a host found full; from the
scheduler's ``scheduler.claim_stats`` log line at stop, so only with NOVALITE_LOG_LEVEL=INFO).
Nothing is asserted: the numbers go to docs/benchmarks.md.

``--storm-hosts 3 --servers 30`` runs the scheduler storm in-process instead (equal empty
hosts, every decision at once, optionally ``--schedulers 2`` sharing the database): servers
per host and claim conflicts per placement, for concurrent single decisions and for one
multi-create decision.

    python scripts/bench_bootstorm.py --hosts 10 --servers 50
    python scripts/bench_bootstorm.py --hosts 10 --servers 1000
    python scripts/bench_bootstorm.py --storm-hosts 3 --servers 30 [--schedulers 2] [--database-url ...]

``--out FILE.json`` also writes the figures to FILE.json with the raw samples behind them
(each server's create→ACTIVE latency, each listing's and each decision's time) and the run's
options, for ``scripts/plot_benchmarks.py``; stdout stays the same.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from benchlib import ADMIN_PASSWORD, admin_token, free_port, percentile, serve


def start_server(
    state: Path, port: int, hosts: int, database_url: str | None, extra_env: dict[str, str]
) -> subprocess.Popen:
    env = dict(
        os.environ,
        NOVALITE_STATE_DIR=str(state),
        NOVALITE_LISTEN=f"127.0.0.1:{port}",
        NOVALITE_FAKE_HOSTS=str(hosts),
        NOVALITE_ADMIN_PASSWORD=ADMIN_PASSWORD,
        NOVALITE_LOG_LEVEL=os.environ.get("NOVALITE_LOG_LEVEL", "WARNING"),
        NOVALITE_QUOTA_INSTANCES="-1",
        NOVALITE_QUOTA_CORES="-1",
        NOVALITE_QUOTA_RAM="-1",
        NOVALITE_DRIVER_OPTIONS=json.dumps({"vcpus": 256, "memory_mb": 1024 * 1024, "local_gb": 100000}),
        **extra_env,
    )
    if database_url:
        env["NOVALITE_DATABASE_URL"] = database_url
    return serve(state, env)


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.token = ""

    async def login(self) -> None:
        self.token = await admin_token(self.session, self.base)

    def headers(self) -> dict[str, str]:
        return {"X-Auth-Token": self.token, "OpenStack-API-Version": "compute 2.100"}

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        async with self.session.request(method, f"{self.base}{path}", headers=self.headers(), **kw) as resp:
            raw = await resp.read()
            return resp.status, (json.loads(raw) if raw else None)

    async def sql_statements(self) -> float | None:
        """The server's SQL statement count so far (``novalite_db_statements_total``, kept when
        the server runs with ``NOVALITE_COUNT_SQL_STATEMENTS=true``), or None."""
        async with self.session.get(f"{self.base}/metrics") as resp:
            if resp.status != 200:
                return None
            text = await resp.text()
        values = [
            float(line.split()[-1]) for line in text.splitlines() if line.startswith("novalite_db_statements_total")
        ]
        return sum(values) if values else None

    async def list_all(self, path: str) -> list[dict[str, Any]]:
        """Every server of a listing, following markers page by page."""
        servers: list[dict[str, Any]] = []
        marker = ""
        while True:
            _, body = await self.request("GET", f"{path}&limit=1000{marker}")
            servers += body["servers"]
            if len(body["servers"]) < 1000:
                return servers
            marker = f"&marker={servers[-1]['id']}"

    async def upload_image(self) -> str:
        status, image = await self.request(
            "POST",
            "/image/v2/images",
            json={"name": "bench", "disk_format": "raw", "container_format": "bare", "visibility": "public"},
        )
        assert status == 201, image
        async with self.session.put(
            f"{self.base}/image/v2/images/{image['id']}/file",
            data=b"\0" * 4096,
            headers={"X-Auth-Token": self.token, "Content-Type": "application/octet-stream"},
        ) as resp:
            assert resp.status == 204, await resp.text()
        return image["id"]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix="novalite-bench-"))
    port = free_port()
    proc = start_server(state, port, args.hosts, args.database_url, {})
    import psutil

    ps = psutil.Process(proc.pid)
    results: dict[str, Any] = {"hosts": args.hosts, "servers": args.servers, "state_dir": str(state)}
    try:
        async with contextlib.AsyncExitStack() as stack:
            session = await stack.enter_async_context(
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency))
            )
            api = Api(session, f"http://127.0.0.1:{port}")
            await api.login()
            image = await api.upload_image()
            sem = asyncio.Semaphore(args.concurrency)
            sent: dict[str, float] = {}

            async def create(i: int) -> None:
                body = {"server": {"name": f"bench-{i}", "imageRef": image, "flavorRef": "1", "networks": "none"}}
                async with sem:
                    t0 = time.time()
                    status, reply = await api.request("POST", "/compute/v2.1/servers", json=body)
                assert status == 202, reply
                sent[reply["server"]["id"]] = t0

            sql0 = await api.sql_statements()
            cpu0 = sum(ps.cpu_times()[:2])
            t_start = time.time()
            await asyncio.gather(*(create(i) for i in range(args.servers)))
            t_created = time.time()
            launched: dict[str, float] = {}
            errors = 0
            while len(launched) + errors < args.servers:
                # launched_at is stamped by the agent, so a slow poll costs no precision; it only
                # keeps the benchmark's own GETs from eating the server's CPU.
                await asyncio.sleep(args.poll)
                servers = await api.list_all("/compute/v2.1/servers/detail?status=ACTIVE")
                for s in servers:
                    if s["id"] in sent and s["id"] not in launched and s["OS-SRV-USG:launched_at"]:
                        when = datetime.fromisoformat(s["OS-SRV-USG:launched_at"]).replace(tzinfo=UTC).timestamp()
                        launched[s["id"]] = when
                _, err = await api.request("GET", "/compute/v2.1/servers?status=ERROR")
                errors = len(err["servers"])
                if time.time() - t_start > args.timeout:
                    raise RuntimeError(f"only {len(launched)} of {args.servers} ACTIVE after {args.timeout}s")
            t_all_active = max(launched.values())
            cpu1 = sum(ps.cpu_times()[:2])
            sql1 = await api.sql_statements()
            latencies = [launched[sid] - sent[sid] for sid in launched]
            if sql0 is not None and sql1 is not None:
                # Includes the benchmark's own progress listings (a few per second).
                results["sql_statements_per_boot"] = round((sql1 - sql0) / args.servers, 1)
            results.update(
                errors=errors,
                create_requests_per_s=round(args.servers / (t_created - t_start), 1),
                servers_per_s_to_all_active=round(len(launched) / (t_all_active - t_start), 1),
                create_to_active_p50_ms=round(percentile(latencies, 50) * 1000, 1),
                create_to_active_p95_ms=round(percentile(latencies, 95) * 1000, 1),
                server_cpu_s_per_boot=round((cpu1 - cpu0) / args.servers, 4),
            )
            samples: dict[str, list[float]] = {"create_to_active_ms": [round(v * 1000, 1) for v in sorted(latencies)]}

            detail_times = []
            for _ in range(args.detail_samples):
                t0 = time.perf_counter()
                status, body = await api.request("GET", "/compute/v2.1/servers/detail")
                detail_times.append(time.perf_counter() - t0)
                assert status == 200
            results["detail_count"] = len(body["servers"])
            results["servers_detail_p50_ms"] = round(percentile(detail_times, 50) * 1000, 1)
            samples["servers_detail_ms"] = [round(v * 1000, 2) for v in detail_times]
            results["server_rss_mb"] = round(ps.memory_info().rss / 2**20, 1)
            if args.cold_listing:
                # The first listing after a start, nothing rendered or cached yet: restart the
                # server on the same state each time and time its first GET /servers/detail.
                cold = []
                for _ in range(args.cold_listing):
                    proc.terminate()
                    proc.wait(timeout=30)
                    proc = start_server(state, port, args.hosts, args.database_url, {})
                    ps = psutil.Process(proc.pid)
                    # A new session: the pooled connections died with the old process.
                    session = await stack.enter_async_context(
                        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency))
                    )
                    api = Api(session, f"http://127.0.0.1:{port}")
                    await api.login()
                    t0 = time.perf_counter()
                    status, body = await api.request("GET", "/compute/v2.1/servers/detail")
                    cold.append(time.perf_counter() - t0)
                    assert status == 200 and len(body["servers"]) == results["detail_count"], status
                results["servers_detail_cold_p50_ms"] = round(percentile(cold, 50) * 1000, 1)
                samples["servers_detail_cold_ms"] = [round(v * 1000, 2) for v in cold]

            async def delete(sid: str) -> None:
                async with sem:
                    status, _ = await api.request("DELETE", f"/compute/v2.1/servers/{sid}")
                assert status == 204

            t0 = time.time()
            ids = list(sent)
            await asyncio.gather(*(delete(sid) for sid in ids))
            while True:
                _, body = await api.request("GET", "/compute/v2.1/servers?limit=1")
                if not body["servers"]:
                    break
                await asyncio.sleep(0.05)
            results["deletes_per_s"] = round(len(ids) / (time.time() - t0), 1)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    stats = scheduler_log_stats(state / "serve.log")
    results["claim_conflicts_per_placement"] = (
        stats["claim_conflicts_per_placement"] if stats else "n/a (run with NOVALITE_LOG_LEVEL=INFO)"
    )
    results["samples"] = samples  # main() keeps these out of stdout, for --out
    return results


async def _seed_hosts(db: Any, hosts: int, *, equal: bool) -> None:
    """``hosts`` compute nodes with services and inventories; ``equal``: all like a default fake host."""
    from novalite.db import schema as t
    from novalite.store import placement
    from novalite.store.hosts import node_uuid, upsert_service
    from novalite.timeutil import utcnow

    vcpus, ram, disk = (16, 32768, 500) if equal else (64, 262144, 2000)
    async with db.begin() as conn:
        for i in range(hosts):
            name = f"hv{i}"
            uuid_ = node_uuid(name)
            await upsert_service(conn, name, "nova-compute", "compute", "nova")
            await conn.execute(
                t.compute_nodes.insert().values(
                    uuid=uuid_,
                    host=name,
                    hypervisor_hostname=name,
                    hypervisor_type="fake",
                    hypervisor_version=1,
                    vcpus=vcpus,
                    memory_mb=ram,
                    local_gb=disk,
                    cpu_info={},
                    created_at=utcnow(),
                    updated_at=utcnow(),
                )
            )
            await placement.ensure_provider(conn, uuid_, name)
            await placement.set_inventories(
                conn,
                uuid_,
                {
                    placement.VCPU: placement.Inventory(total=vcpus, allocation_ratio=4.0),
                    placement.MEMORY_MB: placement.Inventory(total=ram if equal else ram - (i % 97) * 512),
                    placement.DISK_GB: placement.Inventory(total=disk),
                },
            )


async def _scheduler_db(database_url: str | None) -> tuple[Any, Any]:
    """Settings and a migrated, empty database (SQLite in a temp dir unless ``database_url``)."""
    from novalite.config import Settings
    from novalite.db import Database
    from novalite.db.migrate import upgrade

    state = Path(tempfile.mkdtemp(prefix="novalite-sched-"))
    settings = Settings(state_dir=state)
    db = Database(database_url or f"sqlite:///{state / 'db.sqlite'}", pool_size=20)
    await upgrade(db)
    return settings, db


async def scheduler_decision(hosts: int, samples: int) -> dict[str, Any]:
    """Time select_destinations over ``hosts`` compute nodes, in-process on SQLite."""
    from novalite.bus import Bus, make_transport
    from novalite.context import RequestContext
    from novalite.log import setup_logging
    from novalite.runtime import ControllerRuntime
    from novalite.scheduler.hoststate import RequestSpec
    from novalite.scheduler.manager import SchedulerManager

    setup_logging("WARNING")
    settings, db = await _scheduler_db(None)
    await _seed_hosts(db, hosts, equal=False)
    rt = ControllerRuntime(settings=settings, bus=Bus(make_transport("memory://")), db=db)
    sched = SchedulerManager(rt)
    await sched.refresh(force=True)
    flavor = {"vcpus": 1, "memory_mb": 512, "root_gb": 1, "ephemeral_gb": 0, "swap": 0}
    ctx = RequestContext.admin()
    rank_times, total_times = [], []
    for _ in range(samples):
        spec = {"instance_uuid": str(uuid.uuid4()), "project_id": "p", "flavor": flavor}
        t0 = time.perf_counter()
        sched.rank(RequestSpec.from_dict(spec))
        rank_times.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        await sched.select_destinations(ctx, spec)
        total_times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    await sched.refresh(force=True)
    refresh = time.perf_counter() - t0
    await db.close()
    return {
        "hosts": hosts,
        "filter_weigh_p50_ms": round(percentile(rank_times, 50) * 1000, 2),
        "select_and_claim_p50_ms": round(percentile(total_times, 50) * 1000, 2),
        "cache_refresh_ms": round(refresh * 1000, 1),
        "claim_conflicts_per_placement": (await sched.get_claim_stats())["claim_conflicts_per_placement"],
        "samples": {
            "filter_weigh_ms": [round(v * 1000, 3) for v in rank_times],
            "select_and_claim_ms": [round(v * 1000, 3) for v in total_times],
        },
    }


async def scheduler_storm(hosts: int, servers: int, schedulers: int, database_url: str | None) -> dict[str, Any]:
    """The issue-9 storm, in-process: ``servers`` m1.tiny on ``hosts`` equal empty hosts, all at once.

    Round 1: ``servers`` concurrent single decisions (what the conductor asks for a
    ``--min N --max N`` create today), spread over ``schedulers`` schedulers sharing the
    database (as schedulers in separate processes would). Round 2, after releasing
    everything: one multi-create decision of ``servers``. Reports the servers per host and
    the wasted claim transactions per placement of each round.
    """
    from collections import Counter

    from novalite.bus import Bus, make_transport
    from novalite.context import RequestContext
    from novalite.log import setup_logging
    from novalite.runtime import ControllerRuntime
    from novalite.scheduler.manager import SchedulerManager
    from novalite.store import placement

    setup_logging("WARNING")
    settings, db = await _scheduler_db(database_url)
    await _seed_hosts(db, hosts, equal=True)
    rt = ControllerRuntime(settings=settings, bus=Bus(make_transport("memory://")), db=db)
    scheds = [SchedulerManager(rt) for _ in range(schedulers)]
    flavor = {"vcpus": 1, "memory_mb": 512, "root_gb": 1, "ephemeral_gb": 0, "swap": 0}
    ctx = RequestContext.admin()
    # Count claim transactions at the source, whatever the scheduler reports (so that a
    # scheduler without counters of its own can be measured the same way): every
    # transaction beyond one per placement was wasted.
    counts = {"transactions": 0, "won": 0}
    claim_once = placement._claim_once

    async def counted(*args: Any, **kw: Any) -> bool:
        counts["transactions"] += 1
        won = bool(await claim_once(*args, **kw))
        counts["won"] += won
        return won

    placement._claim_once = counted  # type: ignore[assignment]

    def conflicts() -> tuple[int, int]:
        return counts["transactions"] - counts["won"], counts["won"]

    def per_host(dests: list[dict[str, Any]]) -> list[int]:
        counts = Counter(d["host"] for d in dests)
        return [counts.get(f"hv{i}", 0) for i in range(hosts)]

    uuids = [str(uuid.uuid4()) for _ in range(servers)]
    t0 = time.perf_counter()
    singles = await asyncio.gather(
        *(
            scheds[i % schedulers].select_destinations(ctx, {"instance_uuid": u, "project_id": "p", "flavor": flavor})
            for i, u in enumerate(uuids)
        )
    )
    single_s = time.perf_counter() - t0
    c1, p1 = conflicts()
    async with db.begin() as conn:
        for u in uuids:
            await placement.release(conn, u)
    for s in scheds:
        await s.refresh(force=True)
    uuids = [str(uuid.uuid4()) for _ in range(servers)]
    t0 = time.perf_counter()
    try:
        multi = await scheds[0].select_destinations(
            ctx, {"instance_uuid": uuids[0], "project_id": "p", "flavor": flavor}, instance_uuids=uuids
        )
    except TypeError:  # a scheduler without the multi-create form
        multi = []
    multi_s = time.perf_counter() - t0
    c2, p2 = conflicts()
    await db.close()
    return {
        "hosts": hosts,
        "servers": servers,
        "schedulers": schedulers,
        "database": "postgresql" if database_url else "sqlite",
        "single_decisions_per_host": per_host(list(singles)),
        "single_decisions_claim_conflicts_per_placement": round(c1 / max(p1, 1), 3),
        "single_decisions_s": round(single_s, 3),
        "multi_create_per_host": per_host(multi),
        "multi_create_claim_conflicts_per_placement": round((c2 - c1) / max(p2 - p1, 1), 3),
        "multi_create_s": round(multi_s, 3),
    }


def scheduler_log_stats(log_path: Path) -> dict[str, Any] | None:
    """The ``scheduler.claim_stats`` line a stopping scheduler logs (at INFO), if the log has it."""
    try:
        lines = log_path.read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if "scheduler.claim_stats" in line:
            try:
                return dict(json.loads(line))
            except ValueError:
                return None
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hosts", type=int, default=10)
    parser.add_argument("--servers", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=50, help="create/delete requests in flight")
    parser.add_argument("--detail-samples", type=int, default=20)
    parser.add_argument(
        "--cold-listing",
        type=int,
        default=0,
        help="also restart the server this many times and time each first GET /servers/detail",
    )
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between progress polls")
    parser.add_argument("--database-url", help="e.g. postgresql://postgres@127.0.0.1:5432/bench (must exist)")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument(
        "--scheduler-hosts", type=int, default=0, help="instead: time one scheduling decision over this many hosts"
    )
    parser.add_argument(
        "--storm-hosts",
        type=int,
        default=0,
        help="instead: the scheduler storm in-process (equal empty hosts, --servers at once): servers per host "
        "and claim conflicts per placement",
    )
    parser.add_argument("--schedulers", type=int, default=1, help="with --storm-hosts: schedulers sharing the DB")
    parser.add_argument(
        "--out", type=Path, help="also write the figures, their raw samples and the options here (JSON)"
    )
    args = parser.parse_args()
    if args.storm_hosts:
        kind = "scheduler_storm"
        result = asyncio.run(scheduler_storm(args.storm_hosts, args.servers, args.schedulers, args.database_url))
    elif args.scheduler_hosts:
        kind = "scheduler_decision"
        result = asyncio.run(scheduler_decision(args.scheduler_hosts, 50))
    else:
        kind = "bootstorm"
        result = asyncio.run(run(args))
    samples = result.pop("samples", {})
    print(json.dumps(result, indent=2))
    if args.out:
        options = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "out"}
        options.pop("database_url", None)  # may carry a password; the figures say which database below
        record = {
            "benchmark": kind,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "database": "postgresql" if args.database_url else "sqlite",
            "options": options,
            "results": result,
            "samples": samples,
        }
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
