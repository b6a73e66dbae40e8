"""Issue 9, defect 10 (in-process): the quota check and the insert are one atomic step.

Concurrent creates of one member through real HTTP, the whole control plane in-process, on
SQLite and on PostgreSQL: exactly the quota is accepted, the others get Nova's 403, and the
limits then show the quota used, never more. On PostgreSQL the old check-then-insert let
concurrent transactions count the same usage and all pass. The two-API-process version of
this race is tests/multiprocess/test_quota_race.py.
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any

import sqlalchemy as sa

from novalite.db import schema as t
from novalite.store import servers as records
from novalite.store.quotas import set_limits
from tests.functional.helpers import create_server, make_image, make_person

C = "/compute/v2.1"
MV = "2.100"
FLAVOR_1 = {"vcpus": 1, "memory_mb": 512}  # m1.tiny, flavor "1"


def quota_message(used: int, limit: int, requested: int = 1) -> str:
    return f"Quota exceeded for instances: Requested {requested}, but already used {used} of {limit} instances"


async def member_with_quota(cloud: Any, instances: int) -> Any:
    """A member of a fresh project whose instances quota is ``instances``."""
    who = await make_person(cloud, "racer", "racers", "member")
    async with cloud.rt.db.begin() as conn:
        await set_limits(conn, who.project_id, {"instances": instances})
    return who


async def project_instances(cloud: Any, project_id: str) -> int:
    async with cloud.rt.db.connect() as conn:
        query = sa.select(sa.func.count()).where(t.instances.c.project_id == project_id)
        return int(await conn.scalar(query))


async def test_concurrent_creates_accept_exactly_the_quota(cloud):
    image = await make_image(cloud)
    who = await member_with_quota(cloud, 5)

    results = await asyncio.gather(
        *(create_server(cloud, image, name=f"q{i}", token=who.token, mv=MV) for i in range(30))
    )

    statuses = collections.Counter(r.status for r in results)
    assert statuses == {202: 5, 403: 25}, statuses
    for r in results:
        if r.status == 403:
            assert r.body == {"forbidden": {"code": 403, "message": quota_message(5, 5)}}, r
    r = await cloud.get(f"{C}/limits", token=who.token, microversion=MV)
    assert r.status == 200, r
    absolute = r.body["limits"]["absolute"]
    assert (absolute["maxTotalInstances"], absolute["totalInstancesUsed"]) == (5, 5), absolute
    r = await cloud.get(f"{C}/servers", token=who.token, microversion=MV)
    assert r.status == 200 and len(r.body["servers"]) == 5, r
    assert await project_instances(cloud, who.project_id) == 5


async def test_concurrent_multi_creates_share_the_headroom(cloud):
    """``max_count`` is "at most": concurrent multi-creates together get exactly the quota,
    each trimmed to what is left when its turn comes, and the rest are refused."""
    image = await make_image(cloud)
    who = await member_with_quota(cloud, 7)

    results = await asyncio.gather(
        *(create_server(cloud, image, name=f"m{i}", token=who.token, mv=MV, max_count=3) for i in range(10))
    )

    assert all(r.status in (202, 403) for r in results), results
    assert sum(r.status == 202 for r in results) == 3  # 3 + 3 + 1, in turn
    for r in results:
        if r.status == 403:
            assert r.body["forbidden"]["message"] == quota_message(7, 7), r
    assert await project_instances(cloud, who.project_id) == 7
    r = await cloud.get(f"{C}/limits", token=who.token, microversion=MV)
    assert r.body["limits"]["absolute"]["totalInstancesUsed"] == 7, r


async def test_a_second_check_waits_for_the_first_transaction(cloud):
    """The check holds the project until its transaction ends: a concurrent check of the same
    project waits (on PostgreSQL for the lock, on SQLite for the one connection), while a
    check of another project does not wait on PostgreSQL."""
    who = await member_with_quota(cloud, 5)
    other = await make_person(cloud, "bystander", "elsewhere", "member")
    settings = cloud.rt.settings
    first_checked = asyncio.Event()
    release = asyncio.Event()

    async def first() -> int:
        async with cloud.rt.db.begin() as conn:
            allowed = await records.instances_allowed(conn, settings, who.project_id, FLAVOR_1, 1, 1)
            first_checked.set()
            await release.wait()
            return allowed

    async def check(project_id: str) -> int:
        async with cloud.rt.db.begin() as conn:
            return await records.instances_allowed(conn, settings, project_id, FLAVOR_1, 1, 1)

    holder = asyncio.ensure_future(first())
    await first_checked.wait()
    same = asyncio.ensure_future(check(who.project_id))
    await asyncio.sleep(0.3)
    assert not same.done(), "a second check of the project ran while the first transaction was open"
    if not cloud.rt.db.is_sqlite:  # SQLite runs one transaction at a time whatever the project
        assert await asyncio.wait_for(check(other.project_id), 5) == 1
    release.set()
    assert await asyncio.wait_for(holder, 5) == 1
    assert await asyncio.wait_for(same, 5) == 1


async def test_concurrent_keypair_creates_accept_exactly_the_quota(cloud):
    who = await make_person(cloud, "keyracer", "keyracers", "member")
    async with cloud.rt.db.begin() as conn:
        await set_limits(conn, who.project_id, {"key_pairs": 3})
    results = await asyncio.gather(
        *(
            cloud.post(f"{C}/os-keypairs", json={"keypair": {"name": f"k{i}"}}, token=who.token, microversion="2.10")
            for i in range(20)
        )
    )
    statuses = collections.Counter(r.status for r in results)
    assert statuses == {201: 3, 403: 17}, statuses  # 2.10: the server generates each key
    r = await cloud.get(f"{C}/os-keypairs", token=who.token, microversion=MV)
    assert len(r.body["keypairs"]) == 3, r
