"""Soft delete of shelved servers (issue 11): the ``<name>-shelved`` image goes with the server
whichever way a soft-deleted server ends — the conductor's reclaim after
``reclaim_instance_interval``, ``forceDelete``, or ``restore`` (the server runs again, so its
shelve image is no use) — as it does with a plain delete. While soft-deleted the server's
vm_state is ``soft-delete`` (or, after a shelve that was finishing when the delete came,
``shelved_offloaded``): its shelve image is known by ``shelved_image_id`` only.

On SQLite and PostgreSQL, the fake driver booting from the image's bytes.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from novalite import states
from novalite.conductor.reclaim import reclaim
from novalite.config import Settings
from novalite.store import servers as records
from tests.conftest import Cloud, make_settings
from tests.functional.helpers import wait_gone, wait_status
from tests.functional.test_shelve import shelve_image
from tests.functional.test_snapshot import action, active_server, upload_image, wait_image, wait_image_gone

C = "/compute/v2.1"


@pytest.fixture
def reclaim_interval() -> int:
    return 3600


@pytest.fixture
def offload_time() -> int:
    """-1: shelve keeps the server SHELVED on its host (so a DELETE of it is a soft delete);
    shelveOffload offloads it on demand."""
    return -1


@pytest.fixture
def cloud_settings(tmp_path, db_url: str, reclaim_interval: int, offload_time: int) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(
        tmp_path,
        db_url,
        driver_options={"image_files": True},
        shelved_offload_time=offload_time,
        reclaim_instance_interval=reclaim_interval,
    )


def agent_of(cloud: Cloud, host: str) -> Any:
    return next(a for a in cloud.rt.services["ComputeAgent"] if a.host == host)


async def shelved_server(cloud: Cloud, name: str = "idle") -> tuple[dict[str, Any], str]:
    """An ACTIVE server shelved (SHELVED, on its host) and the id of its active shelve image."""
    server = await active_server(cloud, await upload_image(cloud, b"BASE\n"), name=name)
    assert (await action(cloud, server["id"], {"shelve": None})).status == 202
    await wait_status(cloud, server["id"], "SHELVED")
    image = await shelve_image(cloud, server)
    await wait_image(cloud, image["id"])
    return server, str(image["id"])


async def soft_deleted(cloud: Cloud, sid: str) -> dict[str, Any]:
    """DELETE the server, then wait until its power-off is over: SOFT_DELETED, no task."""
    assert (await cloud.delete(f"{C}/servers/{sid}")).status == 204
    deadline = asyncio.get_running_loop().time() + 10.0
    while True:
        server: dict[str, Any] = (await cloud.get(f"{C}/servers/{sid}", microversion="2.100")).body["server"]
        assert server["status"] == "SOFT_DELETED", server
        if server["OS-EXT-STS:task_state"] is None:
            return server
        assert asyncio.get_running_loop().time() < deadline, server
        await asyncio.sleep(0.02)


async def image_status(cloud: Cloud, image_id: str) -> str | None:
    r = await cloud.get(f"/image/v2/images/{image_id}")
    return str(r.body["status"]) if r.status == 200 else None


async def test_force_delete_of_a_soft_deleted_shelved_server_deletes_its_shelve_image(cloud: Cloud) -> None:
    server, image_id = await shelved_server(cloud)
    sid = server["id"]
    shown = await soft_deleted(cloud, sid)
    assert shown["OS-EXT-STS:vm_state"] == "soft-delete"
    assert await image_status(cloud, image_id) == "active"  # kept while the server can be restored
    r = await action(cloud, sid, {"forceDelete": None})
    assert r.status == 202, r
    await wait_gone(cloud, sid)
    await wait_image_gone(cloud, image_id)


@pytest.mark.parametrize("reclaim_interval", [1])
async def test_reclaim_of_a_soft_deleted_shelved_server_deletes_its_shelve_image(cloud: Cloud) -> None:
    """The periodic reclaim (``terminate_instance`` on the live host) takes the image too."""
    server, image_id = await shelved_server(cloud)
    sid = server["id"]
    await soft_deleted(cloud, sid)
    await wait_gone(cloud, sid, timeout=15.0)
    await wait_image_gone(cloud, image_id)


async def offloaded_while_soft_deleted(cloud: Cloud) -> tuple[str, str]:
    """A SHELVED server whose offload is under way when its owner deletes it: the soft delete
    lands first (the agent is busy with the server: its lock is held here), then the offload
    ends, which leaves the soft-deleted server SHELVED_OFFLOADED, on no host, its shelve image
    the only copy of its disk. Returns the server's and the image's ids."""
    server, image_id = await shelved_server(cloud)
    sid = server["id"]
    agent = agent_of(cloud, server["OS-EXT-SRV-ATTR:host"])
    lock = agent._lock(sid)
    await lock.acquire()
    try:
        assert (await action(cloud, sid, {"shelveOffload": None})).status == 202
        assert (await cloud.delete(f"{C}/servers/{sid}")).status == 204
    finally:
        lock.release()
    deadline = asyncio.get_running_loop().time() + 10.0
    while True:
        async with cloud.rt.db.connect() as conn:
            row = await records.get_instance(conn, sid)
        assert row is not None and row.deleted_at is not None
        if row.host is None and row.task_state is None:
            break
        assert asyncio.get_running_loop().time() < deadline, row
        await asyncio.sleep(0.02)
    shown = (await cloud.get(f"{C}/servers/{sid}", microversion="2.100")).body["server"]
    assert shown["status"] == "SOFT_DELETED", shown
    assert await image_status(cloud, image_id) == "active"
    return sid, image_id


@pytest.mark.parametrize("reclaim_interval", [1])
async def test_reclaim_of_a_soft_deleted_offloaded_server_deletes_its_shelve_image(cloud: Cloud) -> None:
    """No host: the reclaim deletes the server locally, and its shelve image with it."""
    sid, image_id = await offloaded_while_soft_deleted(cloud)
    await wait_gone(cloud, sid, timeout=15.0)
    await wait_image_gone(cloud, image_id)


async def test_force_delete_of_a_soft_deleted_offloaded_server_deletes_its_shelve_image(cloud: Cloud) -> None:
    sid, image_id = await offloaded_while_soft_deleted(cloud)
    # The reclaim task's repair (vm_state back to soft-delete) runs first here, as it does
    # within seconds on any cloud with a reclaim interval; the server is not yet due.
    assert await reclaim(cloud.rt) == []
    async with cloud.rt.db.connect() as conn:
        row = await records.get_instance(conn, sid)
    assert row is not None and row.vm_state == states.SOFT_DELETED
    r = await action(cloud, sid, {"forceDelete": None})
    assert r.status == 202, r
    await wait_gone(cloud, sid)
    await wait_image_gone(cloud, image_id)


async def test_restore_of_a_soft_deleted_shelved_server_deletes_its_shelve_image(cloud: Cloud) -> None:
    """Restore powers the kept guest on (ACTIVE, as Nova): the server is no longer shelved, so
    its shelve image goes and is forgotten (a later delete has none to delete)."""
    server, image_id = await shelved_server(cloud)
    sid = server["id"]
    await soft_deleted(cloud, sid)
    r = await action(cloud, sid, {"restore": None})
    assert r.status == 202, r
    await wait_status(cloud, sid, "ACTIVE")
    await wait_image_gone(cloud, image_id)
    async with cloud.rt.db.connect() as conn:
        row = await records.get_instance(conn, sid)
    assert row is not None and "shelved_image_id" not in (row.system_metadata or {})
    # Shelved again, it makes a new image, which a delete then takes as usual.
    assert (await action(cloud, sid, {"shelve": None})).status == 202
    await wait_status(cloud, sid, "SHELVED")
    await wait_image(cloud, (await shelve_image(cloud, server))["id"])


@pytest.mark.parametrize("offload_time", [3600])
async def test_periodic_offload_leaves_a_soft_deleted_server_alone(cloud: Cloud) -> None:
    """A soft-deleted server whose row says SHELVED (a shelve's last report overwrote the soft
    delete's vm_state) keeps its host and claim: the periodic offload is for shelved servers,
    not for soft-deleted ones (which are the reclaim's)."""
    server, _ = await shelved_server(cloud)
    sid = server["id"]
    await soft_deleted(cloud, sid)
    async with cloud.rt.db.begin() as conn:
        await records.update_instance(conn, sid, vm_state=states.SHELVED)
    async with cloud.rt.db.begin() as conn:
        row = await records.get_instance(conn, sid)
        assert row is not None
        sysmeta = dict(row.system_metadata or {})
        sysmeta["shelved_at"] = "2000-01-01T00:00:00+00:00"  # due for an offload long ago
        await records.update_instance(conn, sid, system_metadata=sysmeta)
    assert await cloud.rt.services["ConductorManager"][0].offload_shelved() == []
    async with cloud.rt.db.connect() as conn:
        row = await records.get_instance(conn, sid)
    assert row is not None and row.host == server["OS-EXT-SRV-ATTR:host"] and row.task_state is None
