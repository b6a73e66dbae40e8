"""Live migration (issue 10, second half), on the fake driver, SQLite and PostgreSQL.

What a user notices: the server goes MIGRATING (task ``migrating``) and comes back ACTIVE
on another host without ever stopping; ``GET /servers/{id}/migrations`` shows the copy's
progress while it runs; a failure leaves it ACTIVE on its source. What an admin notices:
while it moves, the destination is claimed for the server and the source held by the
migration, and afterwards only the destination is — or only the source after a failure.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import make_settings, start_cloud
from tests.functional.helpers import create_server, make_image, make_person, unlimited_quota, wait_gone, wait_status
from tests.functional.test_claims_move import SMALL_HOST, leaked, overcommitted, settled, watch
from tests.functional.test_resize import MV, action, allocations, booted, migration_rows

TINY = {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}


def live(host: str | None = None, block: Any = "auto", **extra: Any) -> dict[str, Any]:
    return {"os-migrateLive": {"host": host, "block_migration": block, **extra}}


async def server(cloud: Any, sid: str) -> dict[str, Any]:
    r = await cloud.get(f"/compute/v2.1/servers/{sid}", microversion=MV)
    assert r.status == 200, r
    return dict(r.body["server"])


async def wait_running_migration(cloud: Any, sid: str, timeout: float = 10.0) -> dict[str, Any]:
    """The server's in-progress live migration once it is copying and has reported progress."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await cloud.get(f"/compute/v2.1/servers/{sid}/migrations", microversion=MV)
        assert r.status == 200, r
        running = [m for m in r.body["migrations"] if m["status"] == "running" and m["memory_processed_bytes"]]
        if running:
            return dict(running[0])
        assert asyncio.get_running_loop().time() < deadline, r.body
        await asyncio.sleep(0.02)


async def events(cloud: Any, sid: str, action_name: str) -> list[dict[str, Any]]:
    r = await cloud.get(f"/compute/v2.1/servers/{sid}/os-instance-actions", microversion=MV)
    assert r.status == 200, r
    (act,) = [a for a in r.body["instanceActions"] if a["action"] == action_name]
    r = await cloud.get(f"/compute/v2.1/servers/{sid}/os-instance-actions/{act['request_id']}", microversion=MV)
    assert r.status == 200, r
    return list(r.body["instanceAction"]["events"])


async def test_live_migration_moves_a_running_server_with_its_claims(tmp_path, db_url):
    cloud = await start_cloud(make_settings(tmp_path, db_url, driver_options={"live_migration_delay": 1.0}))
    try:
        s = await booted(cloud)
        sid, source = s["id"], s["OS-EXT-SRV-ATTR:host"]
        r = await action(cloud, sid, live())
        assert r.status == 202, r
        assert r.body is None or r.body == ""

        mig = await wait_running_migration(cloud, sid)
        during = await server(cloud, sid)
        assert (during["status"], during["OS-EXT-STS:task_state"]) == ("MIGRATING", "migrating")
        dest = mig["dest_compute"]
        assert dest != source and mig["source_compute"] == source
        assert mig["memory_total_bytes"] == 512 * 1024 * 1024
        assert 0 < mig["memory_processed_bytes"] <= mig["memory_total_bytes"]
        assert mig["memory_remaining_bytes"] == mig["memory_total_bytes"] - mig["memory_processed_bytes"]
        assert {"uuid", "user_id", "project_id"} <= set(mig)
        old = await cloud.get(f"/compute/v2.1/servers/{sid}/migrations/{mig['id']}", microversion="2.58")
        assert old.status == 200 and "uuid" not in old.body["migration"]
        # The destination is the server's, the source the migration's, while it copies.
        (row,) = await migration_rows(cloud, sid)
        assert row.migration_type == "live-migration"
        assert await allocations(cloud) == {sid: {dest: TINY}, row.uuid: {source: TINY}}

        done = await wait_status(cloud, sid, "ACTIVE")
        assert done["OS-EXT-SRV-ATTR:host"] == dest
        assert await allocations(cloud) == {sid: {dest: TINY}}
        (row,) = await migration_rows(cloud, sid)
        assert row.status == "completed"
        r = await cloud.get(f"/compute/v2.1/servers/{sid}/migrations", microversion=MV)
        assert r.body == {"migrations": []}
        listed = await cloud.get("/compute/v2.1/os-migrations?migration_type=live-migration", microversion=MV)
        assert [m["status"] for m in listed.body["migrations"]] == ["completed"]
        names = {e["event"] for e in await events(cloud, sid, "live-migration")}
        assert {"conductor_live_migrate_instance", "compute_live_migration"} <= names
        agents = {a.host: a for a in cloud.rt.services["ComputeAgent"]}
        assert sid in agents[dest].driver.guests and sid not in agents[source].driver.guests
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_a_failed_live_migration_leaves_the_server_active_on_its_source(tmp_path, db_url):
    options = {"live_migration_delay": 0.2, "fail": {"live_migration": "memory copy failed"}}
    cloud = await start_cloud(make_settings(tmp_path, db_url, driver_options=options))
    try:
        s = await booted(cloud)
        sid, source = s["id"], s["OS-EXT-SRV-ATTR:host"]
        r = await action(cloud, sid, live())
        assert r.status == 202, r
        after = await wait_status(cloud, sid, {"ACTIVE", "ERROR"})
        assert (after["status"], after["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", source)
        assert await allocations(cloud) == {sid: {source: TINY}}
        (row,) = await migration_rows(cloud, sid)
        assert row.status == "error"
        (failed,) = [e for e in await events(cloud, sid, "live-migration") if e["event"] == "compute_live_migration"]
        assert failed["result"] == "Error"
        agents = {a.host: a for a in cloud.rt.services["ComputeAgent"]}
        assert sid in agents[source].driver.guests
        assert all(sid not in a.driver.guests for h, a in agents.items() if h != source)
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_a_destination_that_cannot_prepare_frees_its_claim(tmp_path, db_url):
    options = {"fail": {"pre_live_migration": "no room for the disks"}}
    cloud = await start_cloud(make_settings(tmp_path, db_url, driver_options=options))
    try:
        s = await booted(cloud)
        sid, source = s["id"], s["OS-EXT-SRV-ATTR:host"]
        r = await action(cloud, sid, live())
        assert r.status == 202, r
        after = await wait_status(cloud, sid, {"ACTIVE", "ERROR"})
        assert (after["status"], after["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", source)
        assert await allocations(cloud) == {sid: {source: TINY}}
        (row,) = await migration_rows(cloud, sid)
        assert row.status == "error"
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_no_valid_destination_keeps_the_server_active(tmp_path, db_url):
    cloud = await start_cloud(make_settings(tmp_path, db_url, fake_hosts=1))
    try:
        s = await booted(cloud)
        sid = s["id"]
        r = await action(cloud, sid, live())
        assert r.status == 202, r
        after = await wait_status(cloud, sid, {"ACTIVE", "ERROR"})
        assert after["status"] == "ACTIVE"
        (row,) = await migration_rows(cloud, sid)
        assert row.status == "error"
        (sched,) = [
            e for e in await events(cloud, sid, "live-migration") if e["event"] == "conductor_live_migrate_instance"
        ]
        assert sched["result"] == "Error"
        assert await allocations(cloud) == {sid: {s["OS-EXT-SRV-ATTR:host"]: TINY}}
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_live_migrate_checks_as_nova(tmp_path, db_url):
    cloud = await start_cloud(make_settings(tmp_path, db_url, fake_hosts=3))
    try:
        s = await booted(cloud)
        sid, source = s["id"], s["OS-EXT-SRV-ATTR:host"]
        other = next(h for h in ("hv-1", "hv-2", "hv-3") if h != source)
        assert (await action(cloud, sid, live(other), mv="2.1")).status == 400  # 2.1 needs disk_over_commit

        async def bad(body: Any, mv: str = MV) -> str:
            r = await action(cloud, sid, body, mv=mv)
            assert r.status == 400, r
            return str(r.body["badRequest"]["message"])

        # Before 2.25: disk_over_commit is required, "auto" is not a block_migration.
        assert "'disk_over_commit' is a required property" in await bad(live(block=False), mv="2.24")
        assert "is not one of" in await bad(live(block="auto", disk_over_commit=False), mv="2.24")
        # From 2.25: disk_over_commit is gone.
        assert "Additional properties" in await bad(live(disk_over_commit=False), mv="2.25")
        # 2.30 .. 2.67: force needs a host; 2.68 removed it.
        assert await bad(live(force=True), mv="2.30") == "Can't force to a non-provided destination"
        assert "Additional properties" in await bad(live(other, force=True), mv="2.68")
        assert await bad(live("nowhere")) == "Compute host nowhere could not be found."
        assert await bad(live(source)) == f"Unable to migrate instance ({sid}) to current host ({source})."

        alice = await make_person(cloud, "alice", "lab", "member")
        mine = await booted(cloud, name="hers", token=alice.token)
        r = await action(cloud, mine["id"], live(), token=alice.token)
        assert r.status == 403
        assert r.body["forbidden"]["message"] == (
            "Policy doesn't allow os_compute_api:os-migrate-server:migrate_live to be performed."
        )

        r = await action(cloud, sid, {"os-stop": None})
        assert r.status == 202
        await wait_status(cloud, sid, "SHUTOFF")
        r = await action(cloud, sid, live())
        assert r.status == 409
        assert r.body["conflictingRequest"]["message"] == (
            f"Cannot 'os-migrateLive' instance {sid} while it is in vm_state stopped"
        )
        # Forced to a named host (2.30): it goes there.
        was = (await server(cloud, mine["id"]))["OS-EXT-SRV-ATTR:host"]
        target = next(h for h in ("hv-1", "hv-2", "hv-3") if h != was)
        r = await action(cloud, mine["id"], live(target, block=True, force=True), mv="2.30")
        assert r.status == 202, r
        moved = await wait_status(cloud, mine["id"], "ACTIVE")
        assert moved["OS-EXT-SRV-ATTR:host"] == target
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_a_paused_server_stays_paused_across_a_live_migration(cloud):
    s = await booted(cloud)
    sid, source = s["id"], s["OS-EXT-SRV-ATTR:host"]
    r = await action(cloud, sid, {"pause": None})
    assert r.status == 202
    await wait_status(cloud, sid, "PAUSED")
    r = await action(cloud, sid, live())
    assert r.status == 202, r
    after = await wait_status(cloud, sid, {"PAUSED", "ERROR", "ACTIVE"})
    assert after["status"] == "PAUSED" and after["OS-EXT-SRV-ATTR:host"] != source


async def test_deleting_a_server_while_it_live_migrates_leaves_nothing_behind(tmp_path, db_url):
    options = {"live_migration_delay": 0.5, "pre_live_migration_delay": 0.3}
    cloud = await start_cloud(make_settings(tmp_path, db_url, driver_options=options))
    try:
        for phase in ("preparing", "running"):
            s = await booted(cloud, name=f"vm-{phase}")
            sid = s["id"]
            r = await action(cloud, sid, live())
            assert r.status == 202, r
            for _ in range(300):
                (row,) = await migration_rows(cloud, sid)
                if row.status == phase:
                    break
                await asyncio.sleep(0.01)
            assert row.status == phase
            r = await cloud.request("DELETE", f"/compute/v2.1/servers/{sid}")
            assert r.status == 204, r
            await wait_gone(cloud, sid)
            for _ in range(300):  # the destination's cleanup is a cast after the delete
                hosts = cloud.rt.services["ComputeAgent"]
                if all(sid not in a.driver.guests and sid not in a.driver.incoming for a in hosts):
                    break
                await asyncio.sleep(0.01)
            for agent in cloud.rt.services["ComputeAgent"]:
                assert sid not in agent.driver.guests and sid not in agent.driver.incoming, agent.host
            assert await allocations(cloud) == {}
            assert await leaked(cloud) == []
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_live_migrations_and_boots_racing_never_overcommit_nor_leak(tmp_path, db_url):
    options = {**SMALL_HOST, "live_migration_delay": 0.1, "boot_delay": 0.05}
    cloud = await start_cloud(make_settings(tmp_path, db_url, fake_hosts=3, driver_options=options))
    try:
        await unlimited_quota(cloud)
        image = await make_image(cloud)
        # Two vCPUs per host: 3 servers of 1 vCPU leave 3 free; live migrations and boots
        # compete for them while every moving server holds its source too.
        first = [await create_server(cloud, image, name=f"a{i}") for i in range(3)]
        ids = [r.body["server"]["id"] for r in first]
        for sid in ids:
            await wait_status(cloud, sid, "ACTIVE")
        stop, seen = asyncio.Event(), []
        watcher = asyncio.create_task(watch(cloud, stop, seen))
        results = await asyncio.gather(
            *(action(cloud, sid, live()) for sid in ids),
            *(create_server(cloud, image, name=f"b{i}") for i in range(3)),
        )
        assert all(r.status == 202 for r in results), results
        servers = await settled(cloud)
        stop.set()
        await watcher
        assert seen == []
        assert not await overcommitted(cloud)
        assert not await leaked(cloud)
        allocs = await allocations(cloud)
        for s in servers:
            if s["status"] == "ACTIVE":
                assert allocs[s["id"]] == {s["OS-EXT-SRV-ATTR:host"]: TINY}
        assert set(allocs) <= {s["id"] for s in servers}  # no migration holds anything now
        moved = [s for s in servers if s["id"] in ids and s["status"] == "ACTIVE"]
        assert len(moved) == 3
    finally:
        await cloud.session.close()
        await cloud.node.stop()
