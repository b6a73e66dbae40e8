"""Controlling a live migration (issue 10, second half): abort (``DELETE
/servers/{id}/migrations/{mid}``, 2.24; queued/preparing ones from 2.65) and
``force_complete`` (2.22), with Nova's status codes and messages, on SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import make_settings, start_cloud
from tests.functional.helpers import wait_status
from tests.functional.test_live_migrate import TINY, live, server, wait_running_migration
from tests.functional.test_resize import MV, action, allocations, booted, migration_rows


async def slow_cloud(tmp_path: Any, db_url: str, **options: Any) -> Any:
    return await start_cloud(make_settings(tmp_path, db_url, driver_options={"live_migration_delay": 20.0, **options}))


def path(sid: str, mid: Any) -> str:
    return f"/compute/v2.1/servers/{sid}/migrations/{mid}"


async def test_abort_a_running_live_migration(tmp_path, db_url):
    cloud = await slow_cloud(tmp_path, db_url)
    try:
        s = await booted(cloud)
        sid, source = s["id"], s["OS-EXT-SRV-ATTR:host"]
        r = await cloud.request("DELETE", path(sid, 1), microversion=MV)
        assert r.status == 409
        assert r.body["conflictingRequest"]["message"] == (
            f"Cannot 'abort live migration' instance {sid} while it is in task_state None"
        )
        r = await action(cloud, sid, live())
        assert r.status == 202, r
        mig = await wait_running_migration(cloud, sid)
        r = await cloud.request("DELETE", path(sid, 999999), microversion=MV)
        assert r.status == 404
        assert r.body["itemNotFound"]["message"] == f"Migration 999999 not found for instance {sid}"
        r = await cloud.request("DELETE", path(sid, mig["id"]), microversion="2.23")
        assert r.status == 404  # abort came with 2.24
        r = await cloud.request("DELETE", path(sid, mig["id"]), microversion="2.24")
        assert r.status == 202, r
        after = await wait_status(cloud, sid, {"ACTIVE", "ERROR"})
        assert (after["status"], after["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", source)
        (row,) = await migration_rows(cloud, sid)
        assert row.status == "cancelled"
        assert await allocations(cloud) == {sid: {source: TINY}}
        r = await cloud.get(f"/compute/v2.1/servers/{sid}/os-instance-actions", microversion=MV)
        assert {"live-migration", "live-migration-cancel"} <= {a["action"] for a in r.body["instanceActions"]}
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_abort_while_the_destination_prepares_needs_2_65(tmp_path, db_url):
    cloud = await slow_cloud(tmp_path, db_url, pre_live_migration_delay=1.0)
    try:
        s = await booted(cloud)
        sid, source = s["id"], s["OS-EXT-SRV-ATTR:host"]
        r = await action(cloud, sid, live())
        assert r.status == 202, r
        for _ in range(200):
            (row,) = await migration_rows(cloud, sid)
            if row.status == "preparing":
                break
            await asyncio.sleep(0.01)
        assert row.status == "preparing"
        r = await cloud.request("DELETE", path(sid, row.id), microversion="2.64")
        assert r.status == 400
        assert r.body["badRequest"]["message"] == (
            f"Migration {row.id} state of instance {sid} is preparing. "
            "Cannot abort live migration while the migration is in this state."
        )
        r = await cloud.request("DELETE", path(sid, row.id), microversion="2.65")
        assert r.status == 202, r
        after = await wait_status(cloud, sid, {"ACTIVE", "ERROR"})
        assert (after["status"], after["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", source)
        (row,) = await migration_rows(cloud, sid)
        assert row.status == "cancelled"
        assert await allocations(cloud) == {sid: {source: TINY}}
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_force_complete_finishes_a_long_live_migration_now(tmp_path, db_url):
    cloud = await slow_cloud(tmp_path, db_url)
    try:
        s = await booted(cloud)
        sid, source = s["id"], s["OS-EXT-SRV-ATTR:host"]
        body = {"force_complete": None}
        r = await cloud.post(f"{path(sid, 1)}/action", json=body, microversion=MV)
        assert r.status == 409
        assert r.body["conflictingRequest"]["message"] == (
            f"Cannot 'force_complete' instance {sid} while it is in task_state None"
        )
        r = await action(cloud, sid, live())
        assert r.status == 202, r
        mig = await wait_running_migration(cloud, sid)
        r = await cloud.post(f"{path(sid, mig['id'])}/action", json=body, microversion="2.21")
        assert r.status == 404
        r = await cloud.post(f"{path(sid, mig['id'])}/action", json={"force_complete": 1}, microversion=MV)
        assert r.status == 400
        r = await cloud.post(f"{path(sid, mig['id'])}/action", json=body, microversion="2.22")
        assert r.status == 202, r
        # 20 s of copy left: only the forced completion ends it within the wait.
        after = await wait_status(cloud, sid, {"ACTIVE", "ERROR"}, timeout=5.0)
        assert after["status"] == "ACTIVE" and after["OS-EXT-SRV-ATTR:host"] == mig["dest_compute"] != source
        (row,) = await migration_rows(cloud, sid)
        assert row.status == "completed"
        assert await allocations(cloud) == {sid: {mig["dest_compute"]: TINY}}
        r = await cloud.post(f"{path(sid, mig['id'])}/action", json=body, microversion=MV)
        assert r.status == 409  # nothing is migrating any more
        shown = await server(cloud, sid)
        assert shown["status"] == "ACTIVE"
    finally:
        await cloud.session.close()
        await cloud.node.stop()
