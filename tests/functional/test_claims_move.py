"""Claims that move atomically (issue 10): races of resizes and boots over small hosts, and
failures injected in the fake driver, on SQLite and PostgreSQL.

The invariants a user (or an admin reading os-hypervisors) relies on: no host is ever
allocated above its capacity, and every allocation belongs to a live server or to a move
still in progress (nothing leaked) — during the storm and after it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from novalite.db import schema as t
from novalite.store.migrations import IN_PROGRESS
from tests.conftest import make_settings, start_cloud
from tests.functional.helpers import create_server, make_image, wait_gone, wait_status
from tests.functional.test_resize import action, allocations, booted, migration_rows

SMALL_HOST = {"vcpus": 2, "memory_mb": 5120, "local_gb": 60}


async def overcommitted(cloud: Any) -> list[str]:
    """Providers whose allocations exceed (total - reserved) * ratio, for any class."""
    async with cloud.rt.db.connect() as conn:
        caps = {
            (r.provider_uuid, r.resource_class): int((r.total - r.reserved) * r.allocation_ratio)
            for r in await conn.execute(sa.select(t.inventories))
        }
        used = await conn.execute(
            sa.select(
                t.allocations.c.provider_uuid, t.allocations.c.resource_class, sa.func.sum(t.allocations.c.used)
            ).group_by(t.allocations.c.provider_uuid, t.allocations.c.resource_class)
        )
        return [f"{p}/{rc}: {total} > {caps.get((p, rc))}" for p, rc, total in used if total > caps.get((p, rc), 0)]


async def leaked(cloud: Any) -> list[str]:
    """Consumers that are neither a live instance nor a move in progress."""
    async with cloud.rt.db.connect() as conn:
        consumers = {r[0] for r in await conn.execute(sa.select(t.allocations.c.consumer_uuid).distinct())}
        live = {r[0] for r in await conn.execute(sa.select(t.instances.c.uuid).where(t.instances.c.deleted.is_(False)))}
        moving = {
            r[0]
            for r in await conn.execute(sa.select(t.migrations.c.uuid).where(t.migrations.c.status.in_(IN_PROGRESS)))
        }
    return sorted(consumers - live - moving)


async def settled(cloud: Any, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Every server once none has a task under way (or BUILD)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await cloud.get("/compute/v2.1/servers/detail", microversion="2.100")
        servers = r.body["servers"]
        if all(not s["OS-EXT-STS:task_state"] and s["status"] != "BUILD" for s in servers):
            return list(servers)
        assert asyncio.get_running_loop().time() < deadline, [
            (s["status"], s["OS-EXT-STS:task_state"]) for s in servers
        ]
        await asyncio.sleep(0.05)


async def watch(cloud: Any, stop: asyncio.Event, seen: list[str]) -> None:
    """Check capacity all along, not only at the end."""
    while not stop.is_set():
        seen.extend(await overcommitted(cloud))
        await asyncio.sleep(0.01)


async def test_resizes_and_boots_racing_never_overcommit_nor_leak(tmp_path, db_url):
    settings = make_settings(
        tmp_path, db_url, fake_hosts=3, driver_options={**SMALL_HOST, "migrate_delay": 0.05, "boot_delay": 0.05}
    )
    cloud = await start_cloud(settings)
    try:
        from tests.functional.helpers import unlimited_quota

        await unlimited_quota(cloud)
        image = await make_image(cloud)
        first = [await create_server(cloud, image, name=f"a{i}") for i in range(6)]
        ids = [r.body["server"]["id"] for r in first]
        for sid in ids:
            await wait_status(cloud, sid, "ACTIVE")
        stop, seen = asyncio.Event(), []
        watcher = asyncio.create_task(watch(cloud, stop, seen))
        # Six 512 MB servers over three 5 GB hosts; each resize to 2 GB needs room on another
        # host while the source is held: not all fit, and boots compete for the same room.
        results = await asyncio.gather(
            *(action(cloud, sid, {"resize": {"flavorRef": "2"}}) for sid in ids),
            *(create_server(cloud, image, name=f"b{i}") for i in range(6)),
        )
        assert all(r.status == 202 for r in results), results
        servers = await settled(cloud)
        assert not await overcommitted(cloud)
        assert not await leaked(cloud)
        verify = [s["id"] for s in servers if s["status"] == "VERIFY_RESIZE"]
        assert verify, [s["status"] for s in servers]
        allocs = await allocations(cloud)
        for sid in verify:
            (mig,) = [m for m in await migration_rows(cloud, sid) if m.status == "finished"]
            assert set(allocs[mig.uuid]) == {mig.source_compute}
            assert set(allocs[sid]) == {mig.dest_compute}
        for s in servers:
            if s["status"] == "ACTIVE":
                assert set(allocs[s["id"]]) == {s["OS-EXT-SRV-ATTR:host"]}

        # Now confirm half and revert half while more boots compete: a revert always finds
        # its room (the source is held by the migration), and nothing is left behind.
        half = len(verify) // 2
        results = await asyncio.gather(
            *(action(cloud, sid, {"confirmResize": None}) for sid in verify[:half]),
            *(action(cloud, sid, {"revertResize": None}) for sid in verify[half:]),
            *(create_server(cloud, image, name=f"c{i}") for i in range(4)),
        )
        assert all(r.status in (202, 204) for r in results), results
        servers = await settled(cloud)
        stop.set()
        await watcher
        assert seen == []
        assert not await overcommitted(cloud)
        assert not await leaked(cloud)
        allocs = await allocations(cloud)
        by_id = {s["id"]: s for s in servers}
        for sid in verify:
            assert by_id[sid]["status"] == "ACTIVE"
            assert set(allocs[sid]) == {by_id[sid]["OS-EXT-SRV-ATTR:host"]}
        for sid in verify[half:]:
            assert by_id[sid]["flavor"]["original_name"] == "m1.tiny"
        # Every allocation is now a server's own: no move holds anything.
        live = {s["id"] for s in servers if s["status"] != "ERROR"}
        assert set(allocs) <= live | {s["id"] for s in servers}
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_a_failed_disk_copy_frees_the_destination_and_keeps_the_server(tmp_path, db_url):
    options = {"fail": {"migrate_disk_and_power_off": "disk copy failed"}, "fail_name_prefix": "bad"}
    cloud = await start_cloud(make_settings(tmp_path, db_url, driver_options=options))
    try:
        server = await booted(cloud, name="bad-1")
        sid, source = server["id"], server["OS-EXT-SRV-ATTR:host"]
        r = await action(cloud, sid, {"resize": {"flavorRef": "2"}})
        assert r.status == 202
        request_id = r.headers["x-openstack-request-id"]
        s = await wait_status(cloud, sid, {"ACTIVE", "ERROR", "VERIFY_RESIZE"})
        # The guest was left running on the source (the driver's cleanup duty): still ACTIVE there.
        assert (s["status"], s["OS-EXT-SRV-ATTR:host"], s["flavor"]["original_name"]) == ("ACTIVE", source, "m1.tiny")
        assert await allocations(cloud) == {sid: {source: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}}}
        (mig,) = await migration_rows(cloud, sid)
        assert mig.status == "error"
        r = await cloud.get(f"/compute/v2.1/servers/{sid}/os-instance-actions/{request_id}", microversion="2.100")
        events = {e["event"]: e for e in r.body["instanceAction"]["events"]}
        assert events["compute_resize_instance"]["result"] == "Error"
        assert "disk copy failed" in events["compute_resize_instance"]["traceback"]
        # It can be resized again once the fault is gone... and is not stuck in a task.
        assert s["OS-EXT-STS:task_state"] is None
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_a_failed_finish_on_the_destination_is_error_there_with_only_its_claim(tmp_path, db_url):
    options = {"fail": {"finish_migration": "cannot define the guest"}, "fail_name_prefix": "bad"}
    cloud = await start_cloud(make_settings(tmp_path, db_url, driver_options=options))
    try:
        server = await booted(cloud, name="bad-2")
        sid, source = server["id"], server["OS-EXT-SRV-ATTR:host"]
        r = await action(cloud, sid, {"resize": {"flavorRef": "2"}})
        assert r.status == 202
        s = await wait_status(cloud, sid, {"ACTIVE", "ERROR", "VERIFY_RESIZE"})
        dest = s["OS-EXT-SRV-ATTR:host"]
        assert s["status"] == "ERROR" and dest != source
        assert s["fault"]["message"] == "cannot define the guest"
        # As Nova: the server is the destination's now (a hard reboot there recovers it); the
        # source's claim and its powered-off original are gone.
        assert await allocations(cloud) == {sid: {dest: {"VCPU": 1, "MEMORY_MB": 2048, "DISK_GB": 20}}}
        (mig,) = await migration_rows(cloud, sid)
        assert mig.status == "error"
        agents = {a.host: a for a in cloud.rt.services["ComputeAgent"]}
        deadline = asyncio.get_running_loop().time() + 5
        while sid in agents[source].driver.originals:
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        r = await action(cloud, sid, {"reboot": {"type": "HARD"}})
        assert r.status == 202
        s = await wait_status(cloud, sid, {"ACTIVE", "ERROR"})
        assert (s["status"], s["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", dest)
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_deleting_a_resized_server_frees_both_hosts(cloud):
    server = await booted(cloud)
    sid = server["id"]
    r = await action(cloud, sid, {"resize": {"flavorRef": "2"}})
    assert r.status == 202
    await wait_status(cloud, sid, "VERIFY_RESIZE")
    r = await cloud.delete(f"/compute/v2.1/servers/{sid}")
    assert r.status == 204
    deadline = asyncio.get_running_loop().time() + 10
    while await allocations(cloud):
        assert asyncio.get_running_loop().time() < deadline, await allocations(cloud)
        await asyncio.sleep(0.05)
    assert not await leaked(cloud)


async def test_deleting_a_server_while_its_disk_is_copied(tmp_path, db_url):
    cloud = await start_cloud(make_settings(tmp_path, db_url, driver_options={"migrate_delay": 1.0}))
    try:
        server = await booted(cloud)
        sid, source = server["id"], server["OS-EXT-SRV-ATTR:host"]
        r = await action(cloud, sid, {"resize": {"flavorRef": "2"}})
        assert r.status == 202
        deadline = asyncio.get_running_loop().time() + 10
        while (await cloud.get(f"/compute/v2.1/servers/{sid}")).body["server"]["OS-EXT-STS:task_state"] != (
            "resize_migrating"
        ):
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        r = await cloud.delete(f"/compute/v2.1/servers/{sid}")
        assert r.status == 204
        await wait_gone(cloud, sid)
        assert await allocations(cloud) == {}
        assert not await leaked(cloud)
        agents = {a.host: a for a in cloud.rt.services["ComputeAgent"]}
        deadline = asyncio.get_running_loop().time() + 5
        while any(sid in a.driver.originals or sid in a.driver.guests for a in agents.values()):
            assert asyncio.get_running_loop().time() < deadline, source
            await asyncio.sleep(0.02)
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_only_the_steps_host_may_report_it(cloud):
    """An agent speaks for its own host only: another host's agent cannot end a move."""
    import dataclasses

    import pytest

    from novalite.bus import NotAuthorized
    from novalite.context import RequestContext

    server = await booted(cloud)
    sid = server["id"]
    r = await action(cloud, sid, {"resize": {"flavorRef": "2"}})
    assert r.status == 202
    await wait_status(cloud, sid, "VERIFY_RESIZE")
    (mig,) = await migration_rows(cloud, sid)
    conductor = cloud.rt.services["ConductorManager"][0]
    intruder = dataclasses.replace(RequestContext.admin(), sender=f"novalite-agent-{mig.dest_compute}")
    with pytest.raises(NotAuthorized):
        await conductor.move_step(intruder, sid, mig.uuid, mig.source_compute, "confirm_resize")
    # Its own host's name, but not the step's host: a stale report, nothing changes.
    assert not await conductor.move_step(intruder, sid, mig.uuid, mig.dest_compute, "confirm_resize")
    assert (await migration_rows(cloud, sid))[0].status == "finished"
