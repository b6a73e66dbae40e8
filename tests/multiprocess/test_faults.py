"""Faults across processes: an agent killed mid-build, the broker dropping every connection."""

from __future__ import annotations

import asyncio
import collections
import time

import asyncpg
import pytest

from tests.multiprocess.conftest import (
    SERVICE_DOWN_TIME,
    Deployment,
    close_connections,
    create_server,
    make_image,
    servers,
    unlimited_quota,
    wait_for,
    wait_hosts_up,
    wait_settled,
)

pytestmark = [pytest.mark.rabbit, pytest.mark.postgres]

BUILD_TIMEOUT = 30.0


async def allocation_consumers(dep: Deployment) -> set[str]:
    conn = await asyncpg.connect(dep.db_url)
    try:
        return {r["consumer_uuid"] for r in await conn.fetch("SELECT DISTINCT consumer_uuid FROM allocations")}
    finally:
        await conn.close()


async def test_agent_killed_during_builds(deployment: Deployment) -> None:
    dep = deployment
    ctl = await dep.start_controller(NOVALITE_BUILD_TIMEOUT=str(BUILD_TIMEOUT))
    slow = dep.start_agent("hv-slow", driver_options={"boot_delay": 6})
    api = dep.api(ctl)
    await wait_hosts_up(api, {"hv-slow"}, timeout=45)
    image = await make_image(api)
    await unlimited_quota(api)

    results = await asyncio.gather(*(create_server(api, image, f"doomed{i}") for i in range(6)))
    assert all(status == 202 for status, _ in results), results
    ids = {body["server"]["id"] for _, body in results}

    async def all_spawning() -> bool:
        every = await servers(api)
        return all(every[i]["OS-EXT-SRV-ATTR:host"] == "hv-slow" for i in ids)

    await wait_for(all_spawning, 20, "the builds to reach hv-slow", dep=dep)
    await asyncio.sleep(1.0)  # the agent is in the middle of its 6-second boots
    slow.kill()
    killed_at = time.monotonic()

    # Down after SERVICE_DOWN_TIME, and the conductor's watchdog (every second) ends the builds.
    settled = await wait_settled(api, ids, timeout=SERVICE_DOWN_TIME + 10)
    elapsed = time.monotonic() - killed_at
    assert elapsed < BUILD_TIMEOUT, elapsed
    assert {s["status"] for s in settled.values()} == {"ERROR"}, settled
    for server in settled.values():
        assert "compute host hv-slow went down" in server["fault"]["message"], server["fault"]
    assert not (await allocation_consumers(dep)) & ids, "failed builds must give their room back"

    # The agent returns. The build messages it never acked are redelivered to it: they are
    # stale (the builds were already failed) and must not bring the servers back to life.
    slow = dep.respawn(slow)
    await wait_hosts_up(api, {"hv-slow"}, timeout=30)
    await wait_for(
        lambda: asyncio.sleep(0, result=slow.log.read_text().count("compute.stale_build_dropped") >= len(ids)),
        20,
        "the redelivered stale builds to be dropped",
        dep=dep,
    )
    every = await servers(api)
    assert {every[i]["status"] for i in ids} == {"ERROR"}
    assert not (await allocation_consumers(dep)) & ids

    # And the host builds new servers normally.
    status, body = await create_server(api, image, "after")
    assert status == 202, body
    after = await wait_settled(api, {body["server"]["id"]}, timeout=30)
    assert after[body["server"]["id"]]["status"] == "ACTIVE"


async def test_broker_drops_connections_during_creates(deployment: Deployment) -> None:
    dep = deployment
    ctl = await dep.start_controller(NOVALITE_BUILD_TIMEOUT=str(BUILD_TIMEOUT))
    for host in ("hv-x", "hv-y"):
        dep.start_agent(host, driver_options={"boot_delay": 0.5})
    api = dep.api(ctl)
    await wait_hosts_up(api, {"hv-x", "hv-y"}, timeout=45)
    image = await make_image(api)
    await unlimited_quota(api)

    async def burst(n: int, prefix: str) -> list[tuple[int, object]]:
        out = []
        for chunk in range(0, n, 5):
            out += await asyncio.gather(*(create_server(api, image, f"{prefix}{chunk + i}") for i in range(5)))
        return out

    creating = asyncio.create_task(burst(40, "storm"))
    await asyncio.sleep(0.5)
    assert not creating.done(), "the broker must drop the connections during the burst"
    close_connections(dep.vhost)
    await asyncio.sleep(0.7)
    close_connections(dep.vhost)
    results = await creating
    accepted = {body["server"]["id"] for status, body in results if status == 202}
    refused = [(status, body) for status, body in results if status != 202]
    assert len(accepted) >= 30, (len(accepted), refused[:3])
    # Every accepted request ends in a state the API reports truthfully, none stuck in BUILD.
    settled = await wait_settled(api, accepted, timeout=BUILD_TIMEOUT + 15)
    by_status = collections.Counter(s["status"] for s in settled.values())
    assert set(by_status) <= {"ACTIVE", "ERROR"}, by_status
    for server in settled.values():
        if server["status"] == "ERROR":
            assert server["fault"]["message"], server
    consumers = await allocation_consumers(dep)
    assert consumers == {i for i, s in settled.items() if s["status"] == "ACTIVE"}

    # Everything works afterwards: heartbeats resumed, new builds go ACTIVE.
    await wait_hosts_up(api, {"hv-x", "hv-y"}, timeout=15)
    later = await asyncio.gather(*(create_server(api, image, f"later{i}") for i in range(4)))
    assert all(status == 202 for status, _ in later), later
    later_ids = {body["server"]["id"] for _, body in later}
    done = await wait_settled(api, later_ids, timeout=30)
    assert {s["status"] for s in done.values()} == {"ACTIVE"}, done
    print(f"after the broker dropped connections: {dict(by_status)}, refused {len(refused)}")
