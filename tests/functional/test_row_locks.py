"""Two writers of one instance are ordered by its row lock, on PostgreSQL.

Found by the split crash soak (PostgreSQL, READ COMMITTED): each writer read the row, then
wrote what its read decided, so the other's change in between was overwritten:

* a build failure report read "no task", the user's delete set DELETING and sent the
  terminate to the host, then the report rescheduled the server away from that delete:
  the delete had answered 204, yet the server ended in ERROR and stayed listed;
* a delete of a server waiting for a host freed its claims, a scheduler's claim committed
  between, then the delete marked the row: the deleted server kept its claim for good.

Each test holds the first writer's transaction open while the second one starts, then
commits it, exactly the interleaving of the soak. SQLite is not run: its writers are
serialized, so the interleaving cannot happen there.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import sqlalchemy as sa

from novalite import states
from novalite.context import RequestContext
from novalite.db import schema as t
from novalite.store import placement
from novalite.store import servers as records
from tests.conftest import Cloud, create_pg_database, drop_pg_database, make_settings, start_cloud
from tests.functional.helpers import create_server, make_image
from tests.functional.test_durable_builds import conductor, wait_spawning

pytestmark = pytest.mark.postgres

#: Long enough that the second writer has certainly reached the row before the first commits.
OVERLAP = 0.5


@pytest.fixture
async def pg_cloud(tmp_path: Any) -> AsyncIterator[Cloud]:
    url = await create_pg_database()
    cloud = await start_cloud(make_settings(tmp_path, url, fake_hosts=2, driver_options={"boot_delay": 30}))
    try:
        yield cloud
    finally:
        await cloud.session.close()
        await cloud.node.stop()
        await drop_pg_database(url)


async def row(cloud: Cloud, uuid: str) -> Any:
    async with cloud.rt.db.connect() as conn:
        return await records.get_instance(conn, uuid)


async def held(cloud: Cloud, uuid: str) -> int:
    async with cloud.rt.db.connect() as conn:
        query = sa.select(sa.func.count()).where(t.allocations.c.consumer_uuid == uuid)
        return int((await conn.execute(query)).scalar_one())


async def test_failure_report_during_a_delete_does_not_reschedule_the_server(pg_cloud: Cloud) -> None:
    cloud = pg_cloud
    image = await make_image(cloud)
    r = await create_server(cloud, image, name="slow")
    assert r.status == 202, r
    uuid = r.body["server"]["id"]
    host = (await wait_spawning(cloud, uuid))["OS-EXT-SRV-ATTR:host"]
    attempt = (await row(cloud, uuid)).build_attempt

    report: asyncio.Task[None] | None = None
    async with cloud.rt.db.begin() as conn:  # the user's delete, not yet committed
        await records.update_instance(conn, uuid, task_state=states.DELETING)
        report = asyncio.create_task(
            conductor(cloud).build_failed(RequestContext.admin(), uuid, host, "spawn failed", build_attempt=attempt)
        )
        await asyncio.sleep(OVERLAP)
        assert not report.done(), "the failure report did not wait for the delete's transaction"
    await asyncio.wait_for(report, 10)

    after = await row(cloud, uuid)
    # The delete stands: the server stays on its host for the delete to finish there.
    assert (after.task_state, after.host, after.vm_state) == (states.DELETING, host, states.BUILDING)
    assert await held(cloud, uuid) > 0, "the claim is the delete's to free"


async def test_delete_while_a_claim_commits_frees_that_claim(pg_cloud: Cloud) -> None:
    cloud = pg_cloud
    image = await make_image(cloud)
    r = await create_server(cloud, image, name="waiting")
    assert r.status == 202, r
    uuid = r.body["server"]["id"]
    await wait_spawning(cloud, uuid)
    # Put the server back to "waiting for a host" in a new attempt, as a reschedule does.
    async with cloud.rt.db.begin() as conn:
        await placement.release(conn, uuid)
        await records.update_instance(conn, uuid, host=None, node=None, task_state=states.SCHEDULING)
        attempt = int((await records.get_instance(conn, uuid)).build_attempt) + 1
        await records.update_instance(conn, uuid, build_attempt=attempt)
        provider = (await conn.execute(sa.select(t.resource_providers.c.uuid).limit(1))).scalar_one()
    assert await held(cloud, uuid) == 0

    delete: asyncio.Task[None] | None = None
    async with cloud.rt.db.begin() as conn:  # the scheduler's claim, not yet committed
        claimed = await placement._claim_once(
            conn, uuid, provider, {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}, build_attempt=attempt
        )
        assert claimed
        delete = asyncio.create_task(_local_delete(cloud, uuid))
        await asyncio.sleep(OVERLAP)
        assert not delete.done(), "the delete did not wait for the claim's transaction"
    await asyncio.wait_for(delete, 10)

    assert (await row(cloud, uuid)).deleted
    assert await held(cloud, uuid) == 0, "the deleted server kept the claim committed during its delete"


async def _local_delete(cloud: Cloud, uuid: str) -> None:
    async with cloud.rt.db.begin() as conn:
        await records.finalize_delete(conn, uuid)
