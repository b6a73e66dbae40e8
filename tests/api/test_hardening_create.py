"""Issue 9, defects 1 and 5 (create): a huge ``max_count`` is answered at once without stalling
the API, counts are validated, and ``host``/``hypervisor_hostname`` follow Nova's 2.74 rules.

Both backends (SQLite and PostgreSQL) through real HTTP, the whole control plane in-process.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from novalite.db import schema as t
from novalite.errors import QuotaExceeded
from novalite.store import servers as records
from novalite.store.quotas import UNLIMITED, instances_that_fit, quota_overs, set_limits
from tests.functional.helpers import create_server, make_image, make_person, unlimited_quota, wait_status

C = "/compute/v2.1"
HUGE = 1180591620717411303424  # 2**70, from the report


async def admin_project(cloud: Any) -> str:
    async with cloud.rt.db.connect() as conn:
        return str(await conn.scalar(sa.select(t.projects.c.id).where(t.projects.c.name == "admin")))


async def count_instances(cloud: Any) -> int:
    async with cloud.rt.db.connect() as conn:
        return int(await conn.scalar(sa.select(sa.func.count()).select_from(t.instances)))


async def create_while_pinging(cloud: Any, image: str, *, within: float, **extra: Any) -> Any:
    """Create with ``extra`` and, while that request is in flight, ask ``GET /``: both must be
    answered within ``within`` seconds (a timeout fails the test instead of hanging it)."""
    await cloud.admin_token()  # log in first: the timing is about the create alone
    create = asyncio.ensure_future(create_server(cloud, image, **extra))
    await asyncio.sleep(0.05)  # let the create reach the server
    root = await asyncio.wait_for(cloud.get("/", token=None), within)
    assert root.status in (200, 300), root
    return await asyncio.wait_for(create, within)


# -- defect 1: counts ------------------------------------------------------------------------


async def test_huge_max_count_is_trimmed_at_once_and_the_api_stays_responsive(cloud):
    image = await make_image(cloud)
    r = await create_while_pinging(cloud, image, within=3.0, max_count=HUGE)
    assert r.status == 202, r
    assert await count_instances(cloud) == 10  # the default instances quota

    # The same as a numeric string, and beyond what int() parses: answered, not 500.
    r = await create_while_pinging(cloud, image, within=3.0, max_count="9" * 5000, name="again")
    assert r.status == 403 and r.body["forbidden"]["message"] == (
        "Quota exceeded for instances: Requested 1, but already used 10 of 10 instances"
    ), r


async def test_max_count_20000_at_a_full_quota_is_refused_fast(cloud):
    image = await make_image(cloud)
    project = await admin_project(cloud)  # before begin(): SQLite has one writer connection
    async with cloud.rt.db.begin() as conn:
        await set_limits(conn, project, {"instances": 2})
    r = await create_server(cloud, image, min_count=2, max_count=2)
    assert r.status == 202, r
    r = await create_while_pinging(cloud, image, within=1.5, max_count=20000)
    assert r.status == 403, r
    assert (
        r.body["forbidden"]["message"] == "Quota exceeded for instances: Requested 1, but already used 2 of 2 instances"
    )
    r = await create_while_pinging(cloud, image, within=1.5, min_count=HUGE, max_count=HUGE)
    assert r.status == 403 and r.body["forbidden"]["message"].startswith("Quota exceeded for cores, instances, ram"), r
    assert await count_instances(cloud) == 2


async def test_counts_are_validated(cloud):
    image = await make_image(cloud)
    for field in ("min_count", "max_count"):
        for bad in (0, -1, "0", "-1", "", "a", "1.5", 1.5, True, None, [1]):
            r = await create_server(cloud, image, **{field: bad})
            assert r.status == 400 and field in r.body["badRequest"]["message"], (field, bad, r)
    r = await create_server(cloud, image, min_count=3, max_count=2)
    assert r.status == 400 and r.body["badRequest"]["message"] == "min_count must be <= max_count"
    r = await create_server(cloud, image, min_count=HUGE, max_count="5")
    assert r.status == 400 and r.body["badRequest"]["message"] == "min_count must be <= max_count"
    assert await count_instances(cloud) == 0
    r = await create_server(cloud, image, min_count="2", max_count="3")  # numeric strings, as Nova
    assert r.status == 202, r
    assert await count_instances(cloud) == 3


async def test_min_count_beyond_fit_reports_the_resource_over(cloud):
    image = await make_image(cloud)
    project = await admin_project(cloud)  # before begin(): SQLite has one writer connection
    async with cloud.rt.db.begin() as conn:
        await set_limits(conn, project, {"cores": 5})
    r = await create_server(cloud, image, flavor="3", min_count=3, max_count=4)  # 2 vCPUs each
    assert r.status == 403
    assert r.body["forbidden"]["message"] == "Quota exceeded for cores: Requested 6, but already used 0 of 5 cores"
    r = await create_server(cloud, image, flavor="3", min_count=1, max_count=HUGE)
    assert r.status == 202, r
    assert await count_instances(cloud) == 2  # floor(5 / 2)


async def test_an_unlimited_project_is_bounded_per_request(cloud):
    await unlimited_quota(cloud)
    project = await admin_project(cloud)
    flavor = {"vcpus": 1, "memory_mb": 512}
    async with cloud.rt.db.connect() as conn:
        allowed = await records.instances_allowed(conn, cloud.rt.settings, project, flavor, 1, HUGE)
        assert allowed == records.MAX_INSTANCES_PER_REQUEST
        assert await records.instances_allowed(conn, cloud.rt.settings, project, flavor, 2, 7) == 7
    image = await make_image(cloud)
    r = await create_server(cloud, image, min_count=records.MAX_INSTANCES_PER_REQUEST + 1, max_count=HUGE)
    assert r.status == 400
    assert r.body["badRequest"]["message"] == f"min_count must be <= {records.MAX_INSTANCES_PER_REQUEST}"
    assert await count_instances(cloud) == 0


def test_headroom_arithmetic():
    limits = {"instances": 10, "cores": 20, "ram": 51200}
    usage = {"instances": 3, "cores": 5, "ram": 2048}
    assert instances_that_fit(limits, usage, vcpus=4, memory_mb=512) == 3  # cores: 15 // 4
    assert instances_that_fit(limits, usage, vcpus=1, memory_mb=16384) == 3  # ram: 49152 // 16384
    assert instances_that_fit(limits, usage, vcpus=1, memory_mb=1) == 7  # instances
    assert instances_that_fit({**limits, "instances": 2}, usage, vcpus=1, memory_mb=1) == 0  # over already
    unlimited = dict.fromkeys(limits, UNLIMITED)
    assert instances_that_fit(unlimited, usage, vcpus=1, memory_mb=1) is None
    assert instances_that_fit({**unlimited, "ram": 4096}, usage, vcpus=1, memory_mb=0) is None  # uses no RAM
    assert quota_overs(limits, usage, {"instances": 7, "cores": 15, "ram": 0}) is None
    error = quota_overs(limits, usage, {"instances": 8, "cores": 16, "ram": 0})
    assert isinstance(error, QuotaExceeded)
    assert (
        str(error)
        == "Quota exceeded for cores, instances: Requested 16, 8, but already used 5, 3 of 20, 10 cores, instances"
    )


# -- defect 5: requested destination ---------------------------------------------------------


async def compute_nodes(cloud: Any, count: int = 2, within: float = 10.0) -> list[Any]:
    """The fake hosts' compute nodes, once they have registered."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        async with cloud.rt.db.connect() as conn:
            nodes = list(await conn.execute(sa.select(t.compute_nodes).order_by(t.compute_nodes.c.host)))
        if len(nodes) >= count:
            return nodes
        assert asyncio.get_running_loop().time() < deadline, "compute hosts did not register"
        await asyncio.sleep(0.05)


async def test_host_fields_need_2_74(cloud):
    image = await make_image(cloud)
    nodes = await compute_nodes(cloud)
    for field, value in (("host", nodes[0].host), ("hypervisor_hostname", nodes[0].hypervisor_hostname)):
        r = await create_server(cloud, image, mv="2.73", **{field: value})
        assert r.status == 400, r
        assert r.body["badRequest"]["message"] == (
            "Invalid input for field/attribute server. Additional properties are not allowed "
            f"('{field}' was unexpected)"
        )
    assert await count_instances(cloud) == 0


async def test_host_fields_are_admin_only_from_2_74(cloud):
    image = await make_image(cloud)
    nodes = await compute_nodes(cloud)
    alice = await make_person(cloud, "alice", "alpha", "member")
    for field, value in (("host", nodes[0].host), ("hypervisor_hostname", nodes[0].hypervisor_hostname)):
        r = await create_server(cloud, image, mv="2.74", token=alice.token, **{field: value})
        assert r.status == 403, r
        assert r.body["forbidden"]["message"] == (
            "Policy doesn't allow compute:servers:create:requested_destination to be performed."
        )
    assert await count_instances(cloud) == 0


async def test_admin_requested_destination_is_honoured(cloud):
    image = await make_image(cloud)
    nodes = await compute_nodes(cloud)
    target = nodes[-1]
    cases: list[dict[str, Any]] = [
        {"host": target.host},
        {"hypervisor_hostname": target.hypervisor_hostname},
        {"host": target.host, "hypervisor_hostname": target.hypervisor_hostname},
    ]
    for i, destination in enumerate(cases):
        r = await create_server(cloud, image, name=f"pinned{i}", mv="2.74", min_count=3, **destination)
        assert r.status == 202, (destination, r)
    async with cloud.rt.db.connect() as conn:
        uuids = [row.uuid for row in await conn.execute(sa.select(t.instances.c.uuid))]
    assert len(uuids) == 9
    for uuid in uuids:
        server = await wait_status(cloud, uuid, "ACTIVE")
        assert server["OS-EXT-SRV-ATTR:host"] == target.host
        assert server["OS-EXT-SRV-ATTR:hypervisor_hostname"] == target.hypervisor_hostname

    other = nodes[0]
    for destination in (
        {"host": "no-such-host"},
        {"hypervisor_hostname": "no-such-node"},
        {"host": other.host, "hypervisor_hostname": target.hypervisor_hostname},
    ):
        r = await create_server(cloud, image, mv="2.74", **destination)
        assert r.status == 400 and r.body["badRequest"]["message"].endswith("could not be found."), (destination, r)
    assert await count_instances(cloud) == 9
