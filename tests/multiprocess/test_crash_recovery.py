"""A crash at the worst moment: every accepted request still ends in a state the API reports.

Real processes, killed with SIGKILL (no shutdown code runs):

* the split deployment's controller dies while it is scheduling a burst of builds; after
  its restart every server is ACTIVE within seconds (its build requests were not
  acknowledged, so the broker hands them back; no claim outlives its build);
* the all-in-one ``novalite serve`` (in-process queues, SQLite) dies while its guests
  boot; after the restart the builds start over on the same host and end ACTIVE.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from typing import Any

import asyncpg
import pytest

from tests.multiprocess.conftest import (
    Deployment,
    create_server,
    make_image,
    servers,
    unlimited_quota,
    wait_for,
    wait_hosts_up,
    wait_settled,
)

#: Long, so that no build ends by the watchdog's timeout: each must end by its own path.
BUILD_TIMEOUT = 300.0
#: What "within seconds of the restart" means here (the restart itself included).
SETTLE_AFTER_RESTART = 25.0


async def pg_rows(dep: Deployment, query: str) -> list[Any]:
    conn = await asyncpg.connect(dep.db_url)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


@pytest.mark.rabbit
@pytest.mark.postgres
async def test_controller_killed_while_scheduling(deployment: Deployment) -> None:
    dep = deployment
    # A slow scheduler round (a database far away) keeps builds in flight at the kill.
    ctl = await dep.start_controller(NOVALITE_BUILD_TIMEOUT=str(BUILD_TIMEOUT))
    for host in ("hv-a", "hv-b"):
        dep.start_agent(host, driver_options={"boot_delay": 0.2})
    api = dep.api(ctl)
    await wait_hosts_up(api, {"hv-a", "hv-b"}, timeout=45)
    image = await make_image(api)
    await unlimited_quota(api)

    creating = [asyncio.create_task(create_server(api, image, f"crash{i}")) for i in range(24)]
    # Kill the controller once the first servers are accepted: the rest are being
    # accepted, scheduled or handed to their hosts right now.
    await wait_for(
        lambda: asyncio.sleep(0, result=sum(t.done() for t in creating) >= 6), 30, "the first creates", dep=dep
    )
    ctl.proc.kill()
    results = await asyncio.gather(*creating, return_exceptions=True)
    accepted = {r[1]["server"]["id"] for r in results if isinstance(r, tuple) and r[0] == 202}
    assert len(accepted) >= 6, results

    ctl.proc = dep.respawn(ctl.proc)
    restarted = time.monotonic()
    await dep.wait_http(ctl)
    every = await servers(api)
    # Every server the database holds — accepted, or committed just before the kill
    # without its answer getting out — ends ACTIVE; none waits for the build timeout.
    ids = set(every)
    assert accepted <= ids
    settled = await wait_settled(api, ids, timeout=SETTLE_AFTER_RESTART)
    elapsed = time.monotonic() - restarted
    assert {s["status"] for s in settled.values()} == {"ACTIVE"}, {
        i: (s["status"], (s.get("fault") or {}).get("message")) for i, s in settled.items()
    }
    by_host: dict[str, int] = {}
    for server in settled.values():
        by_host[server["OS-EXT-SRV-ATTR:host"]] = by_host.get(server["OS-EXT-SRV-ATTR:host"], 0) + 1
    # Exactly one claim per server, on the host it runs on: none lost, none doubled.
    rows = await pg_rows(
        dep,
        "SELECT a.consumer_uuid, count(*) AS n, min(p.name) AS node FROM allocations a "
        "JOIN resource_providers p ON p.uuid = a.provider_uuid GROUP BY a.consumer_uuid",
    )
    claims = {r["consumer_uuid"]: (r["n"], r["node"]) for r in rows}
    assert set(claims) == ids
    for uuid, (n, node) in claims.items():
        assert n == 3, (uuid, n)  # VCPU, MEMORY_MB and DISK_GB, once each
        assert node == settled[uuid]["OS-EXT-SRV-ATTR:hypervisor_hostname"]
    assert (await pg_rows(dep, "SELECT count(*) AS n FROM outbox"))[0]["n"] == 0
    print(f"controller killed, {len(accepted)} accepted; all {len(ids)} ACTIVE {elapsed:.1f}s after restart: {by_host}")


async def test_all_in_one_killed_while_guests_boot(deployment: Deployment) -> None:
    dep = deployment
    db_path = dep.tmp / "aio" / "novalite.db"
    env = dict(
        NOVALITE_TRANSPORT_URL="memory://",
        NOVALITE_DATABASE_URL=f"sqlite:///{db_path}",
        NOVALITE_BUILD_TIMEOUT=str(BUILD_TIMEOUT),
        NOVALITE_DRIVER="fake",
        NOVALITE_DRIVER_OPTIONS='{"boot_delay": 3}',
    )
    ctl = await dep.start_controller("aio", services="api,conductor,scheduler,compute", **env)
    api = dep.api(ctl)
    await wait_hosts_up(api, {"aio"}, timeout=45)
    image = await make_image(api)
    await unlimited_quota(api)

    results = await asyncio.gather(*(create_server(api, image, f"boot{i}") for i in range(5)))
    assert all(status == 202 for status, _ in results), results
    ids = {body["server"]["id"] for _, body in results}

    async def spawning() -> bool:
        every = await servers(api)
        return all(every[i]["OS-EXT-STS:task_state"] == "spawning" for i in ids)

    await wait_for(spawning, 20, "the guests to boot", dep=dep)
    ctl.proc.kill()  # mid-boot: the in-process build messages die with the process

    ctl.proc = dep.respawn(ctl.proc)
    await dep.wait_http(ctl)
    settled = await wait_settled(api, ids, timeout=SETTLE_AFTER_RESTART)
    assert {s["status"] for s in settled.values()} == {"ACTIVE"}, {
        i: (s["status"], (s.get("fault") or {}).get("message")) for i, s in settled.items()
    }
    assert {s["OS-EXT-SRV-ATTR:host"] for s in settled.values()} == {"aio"}
    with sqlite3.connect(db_path) as db:
        assert db.execute("SELECT count(*) FROM outbox").fetchone()[0] == 0
        consumers = {r[0] for r in db.execute("SELECT DISTINCT consumer_uuid FROM allocations")}
    assert consumers == ids
