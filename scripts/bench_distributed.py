#!/usr/bin/env python3
"""Distributed boot storm: a controller and 3 ``novalite agent`` processes on RabbitMQ and PostgreSQL.

Creates a throw-away PostgreSQL database and RabbitMQ vhost, starts
``novalite serve --services api,conductor,scheduler`` and ``--agents`` agent processes
(fake driver), creates M servers concurrently through the HTTP API and waits until all
are ACTIVE. Prints servers/s to all ACTIVE and create→ACTIVE p50/p95 (client send time
to the server's ``OS-SRV-USG:launched_at``). With ``--compare`` it then runs the same
storm against an all-in-one ``novalite serve`` (in-process bus, same number of fake
hosts, a fresh database on the same PostgreSQL) on the same machine.

    python scripts/bench_distributed.py --servers 200 --compare

Needs PostgreSQL at 127.0.0.1:5432 (trust auth, user postgres) and RabbitMQ at
127.0.0.1:5672 (guest/guest) with ``rabbitmqctl`` usable (root).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
from benchlib import ADMIN_PASSWORD, admin_token, free_port, percentile

PG_ADMIN = os.environ.get("NOVALITE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
BIG_HOST = {"vcpus": 256, "memory_mb": 1024 * 1024, "local_gb": 100000}


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=60)


def delete_vhost(vhost: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=60)


async def create_db() -> str:
    name = f"novalite_bench_{uuid.uuid4().hex[:10]}"
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return PG_ADMIN.rsplit("/", 1)[0] + "/" + name


async def drop_db(url: str) -> None:
    conn = await asyncpg.connect(PG_ADMIN)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{url.rsplit("/", 1)[1]}" WITH (FORCE)')
    finally:
        await conn.close()


def base_env(state: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOVALITE_", "OS_"))}
    env.update(
        NOVALITE_STATE_DIR=str(state),
        NOVALITE_LOG_LEVEL=os.environ.get("NOVALITE_LOG_LEVEL", "WARNING"),
        NOVALITE_DRIVER_OPTIONS=json.dumps(BIG_HOST),
        NOVALITE_REPORT_INTERVAL="2",
        **extra,
    )
    return env


def spawn(state: Path, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    log = open(state / f"{name}.log", "wb")  # lives as long as the process
    return subprocess.Popen([sys.executable, "-m", "novalite.cli", *argv], stdout=log, stderr=log, env=env)


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session, self.base, self.token = session, base, ""

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, Any]:
        headers = {"X-Auth-Token": self.token, "OpenStack-API-Version": "compute 2.100", **kw.pop("headers", {})}
        async with self.session.request(method, f"{self.base}{path}", headers=headers, **kw) as resp:
            raw = await resp.read()
            try:
                return resp.status, (json.loads(raw) if raw else None)
            except ValueError:
                return resp.status, raw

    async def wait_ready(self, procs: list[subprocess.Popen[bytes]], timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError("a novalite process exited during start-up")
            try:
                self.token = await admin_token(self.session, self.base)
                return
            except aiohttp.ClientError:  # not listening yet, or identity not bootstrapped yet
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not come up")
            await asyncio.sleep(0.2)

    async def wait_hypervisors(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            status, body = await self.request("GET", "/compute/v2.1/os-hypervisors/detail")
            if status == 200 and sum(h["state"] == "up" for h in body["hypervisors"]) >= count:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"fewer than {count} hypervisors up")
            await asyncio.sleep(0.3)

    async def prepare(self) -> str:
        _, projects = await self.request("GET", "/identity/v3/auth/projects")
        project = next(p["id"] for p in projects["projects"] if p["name"] == "admin")
        quota = {"quota_set": {"instances": -1, "cores": -1, "ram": -1}}
        status, body = await self.request("PUT", f"/compute/v2.1/os-quota-sets/{project}", json=quota)
        assert status == 200, body
        image = {"name": "bench", "disk_format": "raw", "container_format": "bare", "visibility": "public"}
        status, body = await self.request("POST", "/image/v2/images", json=image)
        assert status == 201, body
        status, _ = await self.request(
            "PUT",
            f"/image/v2/images/{body['id']}/file",
            data=b"\0" * 4096,
            headers={"Content-Type": "application/octet-stream"},
        )
        assert status == 204
        return body["id"]


async def storm(api: Api, image: str, servers: int, concurrency: int, timeout: float) -> dict[str, Any]:
    sem = asyncio.Semaphore(concurrency)
    sent: dict[str, float] = {}

    async def create(i: int) -> None:
        body = {"server": {"name": f"bench-{i}", "imageRef": image, "flavorRef": "1", "networks": "none"}}
        async with sem:
            t0 = time.time()
            status, reply = await api.request("POST", "/compute/v2.1/servers", json=body)
        assert status == 202, reply
        sent[reply["server"]["id"]] = t0

    t_start = time.time()
    await asyncio.gather(*(create(i) for i in range(servers)))
    t_created = time.time()
    launched: dict[str, float] = {}
    errors = 0
    while len(launched) + errors < servers:
        await asyncio.sleep(0.5)
        _, body = await api.request("GET", "/compute/v2.1/servers/detail?limit=1000")
        errors = 0
        for s in body["servers"]:
            if s["status"] == "ERROR":
                errors += 1
            elif s["id"] in sent and s["id"] not in launched and s["OS-SRV-USG:launched_at"]:
                when = datetime.fromisoformat(s["OS-SRV-USG:launched_at"]).replace(tzinfo=UTC).timestamp()
                launched[s["id"]] = when
        if time.time() - t_start > timeout:
            raise RuntimeError(f"only {len(launched)} of {servers} ACTIVE after {timeout:g}s")
    latencies = [launched[i] - sent[i] for i in launched]
    return {
        "servers": servers,
        "errors": errors,
        "create_requests_per_s": round(servers / (t_created - t_start), 1),
        "servers_per_s_to_all_active": round(len(launched) / (max(launched.values()) - t_start), 1),
        "create_to_active_p50_ms": round(percentile(latencies, 50) * 1000, 1),
        "create_to_active_p95_ms": round(percentile(latencies, 95) * 1000, 1),
    }


async def run(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    state = Path(tempfile.mkdtemp(prefix=f"novalite-bench-{mode}-"))
    db_url = await create_db()
    vhost = f"novalite-bench-{uuid.uuid4().hex[:8]}"
    port = free_port()
    procs: list[subprocess.Popen[bytes]] = []
    common = dict(
        NOVALITE_DATABASE_URL=db_url,
        NOVALITE_LISTEN=f"127.0.0.1:{port}",
        NOVALITE_ADMIN_PASSWORD=ADMIN_PASSWORD,
        NOVALITE_HOST="ctl" if mode == "distributed" else "hv",
    )
    try:
        if mode == "distributed":
            rabbitmqctl("add_vhost", vhost)
            rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
            transport = {"NOVALITE_TRANSPORT_URL": f"rabbit://guest:guest@127.0.0.1:5672/{vhost}"}
            procs.append(
                spawn(
                    state,
                    "ctl",
                    ["serve", "--services", "api,conductor,scheduler"],
                    base_env(state, {**common, **transport}),
                )
            )
            for n in range(1, args.agents + 1):
                procs.append(
                    spawn(
                        state, f"hv{n}", ["agent", "--host", f"hv{n}", "--driver", "fake"], base_env(state, transport)
                    )
                )
        else:
            argv = ["serve", "--services", "api,conductor,scheduler,compute", "--fake-hosts", str(args.agents)]
            procs.append(spawn(state, "serve", argv, base_env(state, common)))
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency)) as session:
            api = Api(session, f"http://127.0.0.1:{port}")
            await api.wait_ready(procs)
            await api.wait_hypervisors(args.agents)
            image = await api.prepare()
            result = await storm(api, image, args.servers, args.concurrency, args.timeout)
        return {"mode": mode, "hosts": args.agents, **result}
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        await drop_db(db_url)
        if mode == "distributed":
            delete_vhost(vhost)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=100)
    parser.add_argument("--agents", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=20, help="create requests in flight at once")
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--compare", action="store_true", help="also run all-in-one on the same machine")
    args = parser.parse_args()
    modes = ["distributed", "all-in-one"] if args.compare else ["distributed"]
    for mode in modes:
        print(json.dumps(asyncio.run(run(mode, args))), flush=True)


if __name__ == "__main__":
    main()
