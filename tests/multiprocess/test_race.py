"""Two controllers race for hosts with room for exactly K servers: never an overcommit.

Both controller processes run api, conductor and scheduler on the same PostgreSQL
database and RabbitMQ vhost; 5xK creates go to both APIs at once. The placement claims
(a generation-checked UPDATE per provider) make the two schedulers' decisions safe even
though each caches its own, soon stale, view of the hosts.
"""

from __future__ import annotations

import asyncio
import collections

import asyncpg
import pytest

from tests.multiprocess.conftest import (
    NO_VALID_HOST,
    Deployment,
    create_server,
    make_image,
    unlimited_quota,
    wait_hosts_up,
    wait_settled,
)

pytestmark = [pytest.mark.rabbit, pytest.mark.postgres]

#: m1.tiny (flavor "1"): 1 vCPU, 512 MiB, 1 GB. RAM is the scarce resource.
ROOM = {"hv-a": 5, "hv-b": 3}
K = sum(ROOM.values())


async def test_two_controllers_never_overcommit(deployment: Deployment) -> None:
    dep = deployment
    # Not about failure detection: a generous down-time keeps a heartbeat delayed by a
    # loaded machine from taking a host out of the race.
    dep.common["NOVALITE_SERVICE_DOWN_TIME"] = "15"
    # Both start at once on the empty database: they take turns to migrate and bootstrap.
    ctl1, ctl2 = await asyncio.gather(dep.start_controller("ctl1"), dep.start_controller("ctl2"))
    for host, room in ROOM.items():
        dep.start_agent(host, driver_options={"memory_mb": 512 * room, "vcpus": 64, "local_gb": 1000})
    api1, api2 = dep.api(ctl1), dep.api(ctl2)
    await wait_hosts_up(api1, set(ROOM), timeout=45)
    image = await make_image(api1)
    await unlimited_quota(api2)

    results = await asyncio.gather(*(create_server(api1 if i % 2 else api2, image, f"race{i}") for i in range(5 * K)))
    assert all(status == 202 for status, _ in results), results
    ids = {body["server"]["id"] for _, body in results}
    settled = await wait_settled(api1, ids, timeout=90)

    by_status = collections.Counter(s["status"] for s in settled.values())
    assert by_status == {"ACTIVE": K, "ERROR": 4 * K}, by_status
    per_host = collections.Counter(s["OS-EXT-SRV-ATTR:host"] for s in settled.values() if s["status"] == "ACTIVE")
    assert per_host == ROOM, per_host
    for server in settled.values():
        if server["status"] == "ERROR":
            assert server["fault"]["message"] == NO_VALID_HOST, server["fault"]
    # Both schedulers took part (each conductor asks "scheduler", a shared queue).
    logs = [c.proc.log.read_text() for c in dep.controllers]
    assert all("scheduler.selected" in text or "scheduler.no_valid_host" in text for text in logs)

    conn = await asyncpg.connect(dep.db_url)
    try:
        rows = await conn.fetch(
            """
            SELECT rp.name, i.resource_class, i.total, i.reserved, i.allocation_ratio,
                   COALESCE(SUM(a.used), 0) AS used
            FROM resource_providers rp
            JOIN inventories i ON i.provider_uuid = rp.uuid
            LEFT JOIN allocations a ON a.provider_uuid = rp.uuid AND a.resource_class = i.resource_class
            GROUP BY rp.name, i.resource_class, i.total, i.reserved, i.allocation_ratio
            """
        )
        assert rows
        for r in rows:
            capacity = int((r["total"] - r["reserved"]) * r["allocation_ratio"])
            assert r["used"] <= capacity, dict(r)
        ram = {r["name"]: r["used"] for r in rows if r["resource_class"] == "MEMORY_MB"}
        assert ram == {h: 512 * n for h, n in ROOM.items()}, ram
        # Only the ACTIVE servers hold allocations; the failed ones released theirs.
        consumers = {r["consumer_uuid"] for r in await conn.fetch("SELECT DISTINCT consumer_uuid FROM allocations")}
        assert consumers == {i for i, s in settled.items() if s["status"] == "ACTIVE"}
    finally:
        await conn.close()
