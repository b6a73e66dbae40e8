"""Moves interrupted by a restart of the all-in-one process (issue 10): with the in-process
bus their messages die with it, so the conductor ends them at start and the API tells the
truth within seconds — back to ACTIVE on the source with the claims restored (a fault
says why), not MIGRATING or RESIZE for ever. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.conftest import make_settings, start_cloud
from tests.functional.helpers import wait_status
from tests.functional.test_claims_move import leaked
from tests.functional.test_evacuate import force_down
from tests.functional.test_live_migrate import TINY, live, wait_running_migration
from tests.functional.test_resize import action, allocations, booted, migration_rows


def settings_for(tmp_path: Any, db_url: str) -> Any:
    options = {
        "state_file": str(tmp_path / "fake-hypervisor.json"),  # the guests outlive the process
        "live_migration_delay": 30.0,
        "migrate_delay": 30.0,
    }
    return make_settings(tmp_path, db_url, driver_options=options)


async def restarted(cloud: Any, settings: Any) -> Any:
    await cloud.session.close()
    await cloud.node.stop()
    return await start_cloud(settings)


async def test_a_live_migration_interrupted_by_a_restart_ends_active_on_its_source(tmp_path, db_url):
    settings = settings_for(tmp_path, db_url)
    cloud = await start_cloud(settings)
    try:
        s = await booted(cloud)
        sid, source = s["id"], s["OS-EXT-SRV-ATTR:host"]
        r = await action(cloud, sid, live())
        assert r.status == 202, r
        await wait_running_migration(cloud, sid)
        cloud = await restarted(cloud, settings)
        after = await wait_status(cloud, sid, {"ACTIVE", "ERROR"}, timeout=5.0)
        assert (after["status"], after["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", source)
        assert after["OS-EXT-STS:power_state"] == 1
        (row,) = await migration_rows(cloud, sid)
        assert row.status == "error"
        assert await allocations(cloud) == {sid: {source: TINY}}
        assert await leaked(cloud) == []
        # And it can move again.
        r = await action(cloud, sid, live())
        assert r.status == 202, r
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_a_cold_migration_interrupted_by_a_restart_goes_back_to_its_source(tmp_path, db_url):
    settings = settings_for(tmp_path, db_url)
    cloud = await start_cloud(settings)
    try:
        s = await booted(cloud)
        sid, source = s["id"], s["OS-EXT-SRV-ATTR:host"]
        r = await action(cloud, sid, {"resize": {"flavorRef": "2"}})
        assert r.status == 202, r
        for _ in range(300):
            (row,) = await migration_rows(cloud, sid)
            if row.status == "migrating":
                break
            await asyncio.sleep(0.01)
        assert row.status == "migrating"
        cloud = await restarted(cloud, settings)
        after = await wait_status(cloud, sid, {"ACTIVE", "ERROR", "SHUTOFF"}, timeout=5.0)
        assert (after["status"], after["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", source)
        assert after["flavor"]["original_name"] == "m1.tiny"
        (row,) = await migration_rows(cloud, sid)
        assert row.status == "error"
        assert await allocations(cloud) == {sid: {source: TINY}}
        assert await leaked(cloud) == []
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_an_evacuation_interrupted_by_a_restart_ends_in_error_and_can_be_retried(tmp_path, db_url):
    options = {"state_file": str(tmp_path / "fake-hypervisor.json")}
    settings = make_settings(tmp_path, db_url, driver_options=options)
    cloud = await start_cloud(settings)
    try:
        s = await booted(cloud)
        sid, source = s["id"], s["OS-EXT-SRV-ATTR:host"]
        await force_down(cloud, source)
        for agent in cloud.rt.services["ComputeAgent"]:
            agent.driver.boot_delay = 30.0  # the rebuild on the destination takes long
        r = await action(cloud, sid, {"evacuate": {}}, mv="2.94")
        assert r.status == 200, r
        for _ in range(300):
            (row,) = await migration_rows(cloud, sid)
            if row.status == "pre-migrating":
                break
            await asyncio.sleep(0.01)
        assert row.status == "pre-migrating"
        cloud = await restarted(cloud, settings)
        after = await wait_status(cloud, sid, {"ACTIVE", "ERROR"}, timeout=5.0)
        assert (after["status"], after["OS-EXT-SRV-ATTR:host"]) == ("ERROR", source)
        (row,) = await migration_rows(cloud, sid)
        assert row.status == "failed"
        assert await allocations(cloud) == {sid: {source: TINY}}
        assert await leaked(cloud) == []
        # Evacuated again (the destination's half-built guest is cleaned up first).
        r = await action(cloud, sid, {"evacuate": {}}, mv="2.94")
        assert r.status == 200, r
        again = await wait_status(cloud, sid, {"ACTIVE", "ERROR"})
        assert again["status"] == "ACTIVE" and again["OS-EXT-SRV-ATTR:host"] != source
    finally:
        await cloud.session.close()
        await cloud.node.stop()
