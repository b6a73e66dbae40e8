"""Evacuation (issue 10, second half), on the fake driver, SQLite and PostgreSQL.

An admin evacuates servers from a host whose compute service is down (or forced down):
each is rebuilt from its image on another host. The dead host's guest stays until that
host comes back — its agent removes it at start, never before, and never the new one — and
until then the dead host's room stays claimed by the evacuation (nothing leaks, nothing is
given away that the old guest still uses).
"""

from __future__ import annotations

from typing import Any

from novalite_drivers.fake import read_state_file

from novalite.context import RequestContext
from novalite.db import schema as t
from tests.conftest import make_settings, start_cloud
from tests.functional.helpers import wait_gone, wait_status
from tests.functional.test_claims_move import leaked
from tests.functional.test_live_migrate import TINY, events
from tests.functional.test_resize import action, allocations, booted, migration_rows


async def force_down(cloud: Any, host: str, down: bool = True) -> None:
    """``openstack compute service set --down`` (the agent itself may still run)."""
    async with cloud.rt.db.begin() as conn:
        await conn.execute(t.services.update().where(t.services.c.host == host).values(forced_down=down))


def agents(cloud: Any) -> dict[str, Any]:
    return {a.host: a for a in cloud.rt.services["ComputeAgent"]}


async def test_evacuate_rebuilds_elsewhere_and_the_old_host_cleans_up_when_back(tmp_path, db_url):
    cloud = await start_cloud(make_settings(tmp_path, db_url, fake_hosts=3))
    try:
        s = await booted(cloud)
        sid, source = s["id"], s["OS-EXT-SRV-ATTR:host"]
        r = await action(cloud, sid, {"evacuate": {}})
        assert r.status == 400
        assert r.body["badRequest"]["message"] == f"Compute service of {source} is still in use."

        await force_down(cloud, source)
        r = await action(cloud, sid, {"evacuate": {}}, mv="2.94")
        assert r.status == 200, r
        after = await wait_status(cloud, sid, {"ACTIVE", "ERROR"})
        dest = after["OS-EXT-SRV-ATTR:host"]
        assert after["status"] == "ACTIVE" and dest != source
        (mig,) = await migration_rows(cloud, sid)
        assert (mig.migration_type, mig.status, mig.source_compute, mig.dest_compute) == (
            "evacuation",
            "done",
            source,
            dest,
        )
        names = {e["event"] for e in await events(cloud, sid, "evacuate")}
        assert {"conductor_rebuild_server", "compute_rebuild_instance"} <= names
        # The dead host's guest is still there (never destroyed before its host is back),
        # and its room stays claimed by the evacuation.
        hosts = agents(cloud)
        assert sid in hosts[source].driver.guests and sid in hosts[dest].driver.guests
        assert await allocations(cloud) == {sid: {dest: TINY}, mig.uuid: {source: TINY}}
        assert await leaked(cloud) == []

        # The host comes back: its agent's reconcile at start removes the old guest only.
        await force_down(cloud, source, down=False)
        await hosts[source].reconcile(RequestContext.admin())
        assert sid not in hosts[source].driver.guests and sid in hosts[dest].driver.guests
        assert await allocations(cloud) == {sid: {dest: TINY}}
        (mig,) = await migration_rows(cloud, sid)
        assert mig.status == "completed"
        await hosts[dest].reconcile(RequestContext.admin())  # the new host keeps its guest
        assert sid in hosts[dest].driver.guests
        again = await wait_status(cloud, sid, "ACTIVE")
        assert again["OS-EXT-SRV-ATTR:host"] == dest
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_evacuate_checks_and_microversions(tmp_path, db_url):
    cloud = await start_cloud(make_settings(tmp_path, db_url, fake_hosts=3))
    try:
        s = await booted(cloud)
        sid, source = s["id"], s["OS-EXT-SRV-ATTR:host"]
        target = next(h for h in ("hv-1", "hv-2", "hv-3") if h != source)
        await force_down(cloud, source)
        r = await action(cloud, sid, {"evacuate": {"host": "nowhere"}})
        assert r.status == 404 and r.body["itemNotFound"]["message"] == "Compute host nowhere not found."
        r = await action(cloud, sid, {"evacuate": {"host": source}})
        assert r.status == 400 and r.body["badRequest"]["message"] == "The target host can't be the same one."
        r = await action(cloud, sid, {"evacuate": {"force": True}}, mv="2.29")
        assert r.status == 400 and r.body["badRequest"]["message"] == "Can't force to a non-provided destination"
        r = await action(cloud, sid, {"evacuate": {"host": target, "force": True}}, mv="2.68")
        assert r.status == 400  # force is gone at 2.68
        r = await action(cloud, sid, {"evacuate": {}}, mv="2.13")
        assert r.status == 400  # onSharedStorage is required before 2.14
        r = await action(cloud, sid, {"evacuate": {"onSharedStorage": True, "adminPass": "x"}}, mv="2.13")
        assert r.status == 400
        assert r.body["badRequest"]["message"] == "admin password can't be changed on existing disk"

        r = await action(cloud, sid, {"evacuate": {"host": target, "onSharedStorage": False}}, mv="2.13")
        assert r.status == 200, r
        assert isinstance(r.body["adminPass"], str) and r.body["adminPass"]
        after = await wait_status(cloud, sid, {"ACTIVE", "ERROR"})
        assert (after["status"], after["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", target)

        # 2.95: the evacuated server is stopped on its new host.
        await force_down(cloud, source, down=False)  # every other host is up again
        other = await booted(cloud, name="other")
        oid, ohost = other["id"], other["OS-EXT-SRV-ATTR:host"]
        await force_down(cloud, ohost)
        r = await action(cloud, oid, {"evacuate": {}}, mv="2.95")
        assert r.status == 200 and not r.body
        moved = await wait_status(cloud, oid, {"SHUTOFF", "ACTIVE", "ERROR"})
        assert moved["status"] == "SHUTOFF" and moved["OS-EXT-SRV-ATTR:host"] != ohost

        r = await action(cloud, oid, {"evacuate": {}})
        assert r.status == 400  # its new host is up
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_a_failed_evacuation_leaves_the_server_in_error_and_frees_the_destination(tmp_path, db_url):
    options = {"fail": {"spawn": "no disk"}, "fail_name_prefix": "doomed"}
    cloud = await start_cloud(make_settings(tmp_path, db_url, driver_options=options))
    try:
        s = await booted(cloud)
        sid, source = s["id"], s["OS-EXT-SRV-ATTR:host"]
        async with cloud.rt.db.begin() as conn:  # from now on its rebuild fails
            await conn.execute(t.instances.update().where(t.instances.c.uuid == sid).values(hostname="doomed"))
        await force_down(cloud, source)
        r = await action(cloud, sid, {"evacuate": {}})
        assert r.status == 200, r
        after = await wait_status(cloud, sid, {"ACTIVE", "ERROR"})
        assert (after["status"], after["OS-EXT-SRV-ATTR:host"]) == ("ERROR", source)
        assert after["fault"]["message"] == "no disk"
        (mig,) = await migration_rows(cloud, sid)
        assert mig.status == "failed"
        assert await allocations(cloud) == {sid: {source: TINY}}
        # Deleting it frees everything; nothing leaks.
        r = await cloud.request("DELETE", f"/compute/v2.1/servers/{sid}")
        assert r.status == 204
        await wait_gone(cloud, sid)
        assert await allocations(cloud) == {} and await leaked(cloud) == []
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_deleting_an_evacuated_server_before_its_old_host_returns_leaks_nothing(tmp_path, db_url):
    cloud = await start_cloud(make_settings(tmp_path, db_url))
    try:
        s = await booted(cloud)
        sid, source = s["id"], s["OS-EXT-SRV-ATTR:host"]
        await force_down(cloud, source)
        r = await action(cloud, sid, {"evacuate": {}}, mv="2.94")
        assert r.status == 200, r
        await wait_status(cloud, sid, "ACTIVE")
        r = await cloud.request("DELETE", f"/compute/v2.1/servers/{sid}")
        assert r.status == 204
        await wait_gone(cloud, sid)
        assert await allocations(cloud) == {} and await leaked(cloud) == []
        hosts = agents(cloud)
        assert sid in hosts[source].driver.guests  # the dead host's guest waits for its host
        await force_down(cloud, source, down=False)
        await hosts[source].reconcile(RequestContext.admin())
        assert sid not in hosts[source].driver.guests
        (mig,) = await migration_rows(cloud, sid)
        assert mig.status == "completed"
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_the_old_host_removes_the_evacuated_guest_when_its_agent_starts_again(tmp_path, db_url):
    state_file = tmp_path / "fake-hypervisor.json"
    settings = make_settings(tmp_path, db_url, driver_options={"state_file": str(state_file)})
    cloud = await start_cloud(settings)
    try:
        s = await booted(cloud)
        sid, source = s["id"], s["OS-EXT-SRV-ATTR:host"]
        await force_down(cloud, source)
        r = await action(cloud, sid, {"evacuate": {}}, mv="2.94")
        assert r.status == 200, r
        dest = (await wait_status(cloud, sid, "ACTIVE"))["OS-EXT-SRV-ATTR:host"]
        held = read_state_file(state_file)
        assert sid in held[source] and sid in held[dest]  # the old guest waits for its host
        await cloud.session.close()
        await cloud.node.stop()
        cloud = await start_cloud(settings)  # every agent starts again, the old host's too
        held = read_state_file(state_file)
        assert sid not in held[source] and sid in held[dest]
        assert await allocations(cloud) == {sid: {dest: TINY}}
        after = await wait_status(cloud, sid, "ACTIVE")
        assert after["OS-EXT-SRV-ATTR:host"] == dest and after["OS-EXT-STS:power_state"] == 1
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_no_host_to_evacuate_to_puts_the_server_in_error_as_nova(tmp_path, db_url):
    cloud = await start_cloud(make_settings(tmp_path, db_url, fake_hosts=1))
    try:
        await _no_host(cloud)
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def _no_host(cloud: Any) -> None:
    s = await booted(cloud)
    sid = s["id"]
    await force_down(cloud, s["OS-EXT-SRV-ATTR:host"])
    r = await action(cloud, sid, {"evacuate": {}}, mv="2.94")
    assert r.status == 200, r
    after = await wait_status(cloud, sid, {"ACTIVE", "ERROR"})
    assert (after["status"], after["OS-EXT-SRV-ATTR:host"]) == ("ERROR", s["OS-EXT-SRV-ATTR:host"])
    assert "No valid host was found" in after["fault"]["message"]
    (mig,) = await migration_rows(cloud, sid)
    assert mig.status == "error"
    assert await allocations(cloud) == {sid: {s["OS-EXT-SRV-ATTR:host"]: TINY}}
    (sched,) = [e for e in await events(cloud, sid, "evacuate") if e["event"] == "conductor_rebuild_server"]
    assert sched["result"] == "Error"
