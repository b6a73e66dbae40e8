"""Resize, confirm and revert (issue 10), on the fake driver, SQLite and PostgreSQL.

What a user notices: the status goes RESIZE then VERIFY_RESIZE, the flavor shown changes,
confirm keeps the new size on the new host, revert brings the server back to its old host
with its old flavor; and what an admin notices: the hosts' usage (os-hypervisors, and the
allocations in the database) is exactly what the servers and the moves hold at every step.
"""

from __future__ import annotations

import asyncio
from typing import Any

import sqlalchemy as sa

from novalite.db import schema as t
from tests.conftest import make_settings, start_cloud
from tests.functional.helpers import create_server, make_image, make_person, wait_status

MV = "2.100"
# Default flavors: 1 = m1.tiny (1 vCPU, 512 MB, 1 GB), 2 = m1.small (1, 2048, 20), 3 = m1.medium (2, 4096, 40).


async def action(cloud: Any, sid: str, body: dict[str, Any], token: str | None = "admin", mv: str = MV) -> Any:
    return await cloud.post(f"/compute/v2.1/servers/{sid}/action", json=body, token=token, microversion=mv)


async def allocations(cloud: Any) -> dict[str, dict[str, dict[str, int]]]:
    """``{consumer: {host: {resource_class: used}}}`` from the database."""
    async with cloud.rt.db.connect() as conn:
        rows = await conn.execute(
            sa.select(
                t.allocations.c.consumer_uuid,
                t.resource_providers.c.name,
                t.allocations.c.resource_class,
                t.allocations.c.used,
            ).join(t.resource_providers, t.resource_providers.c.uuid == t.allocations.c.provider_uuid)
        )
        out: dict[str, dict[str, dict[str, int]]] = {}
        for consumer, host, rc, used in rows:
            out.setdefault(consumer, {}).setdefault(host, {})[rc] = int(used)
        return out


async def hypervisor_ram(cloud: Any) -> dict[str, int]:
    r = await cloud.get("/compute/v2.1/os-hypervisors/detail", microversion="2.27")
    assert r.status == 200, r
    return {h["hypervisor_hostname"]: h["memory_mb_used"] for h in r.body["hypervisors"]}


async def migration_rows(cloud: Any, sid: str) -> list[Any]:
    async with cloud.rt.db.connect() as conn:
        c = t.migrations.c
        return list(await conn.execute(sa.select(t.migrations).where(c.instance_uuid == sid).order_by(c.id)))


async def booted(cloud: Any, flavor: str = "1", name: str = "vm", token: str | None = "admin") -> dict[str, Any]:
    image = await make_image(cloud)
    r = await create_server(cloud, image, name=name, flavor=flavor, token=token)
    assert r.status == 202, r
    return await wait_status(cloud, r.body["server"]["id"], "ACTIVE", token=token)


async def resized(cloud: Any, sid: str, flavor: str) -> dict[str, Any]:
    r = await action(cloud, sid, {"resize": {"flavorRef": flavor}})
    assert r.status == 202, r
    return await wait_status(cloud, sid, {"VERIFY_RESIZE", "ACTIVE", "ERROR"})


async def test_resize_up_then_confirm_moves_the_server_and_frees_the_source(cloud):
    server = await booted(cloud)
    sid, source = server["id"], server["OS-EXT-SRV-ATTR:host"]
    before = await hypervisor_ram(cloud)

    s = await resized(cloud, sid, "2")
    dest = s["OS-EXT-SRV-ATTR:host"]
    assert s["status"] == "VERIFY_RESIZE"
    assert s["OS-EXT-STS:vm_state"] == "resized"
    assert dest != source  # allow_resize_to_same_host is false by default, as Nova
    assert s["flavor"]["original_name"] == "m1.small"
    (mig,) = await migration_rows(cloud, sid)
    assert (mig.status, mig.migration_type, mig.source_compute, mig.dest_compute) == (
        "finished",
        "resize",
        source,
        dest,
    )
    # Both hosts hold the server while it waits: the source (old flavor) for the migration.
    allocs = await allocations(cloud)
    assert allocs[sid] == {dest: {"VCPU": 1, "MEMORY_MB": 2048, "DISK_GB": 20}}
    assert allocs[mig.uuid] == {source: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}}
    ram = await hypervisor_ram(cloud)
    assert ram[source] == before[source] and ram[dest] == before[dest] + 2048

    r = await action(cloud, sid, {"confirmResize": None})
    assert r.status == 204, r
    s = await wait_status(cloud, sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == dest and s["flavor"]["original_name"] == "m1.small"
    allocs = await allocations(cloud)
    assert mig.uuid not in allocs
    assert allocs[sid] == {dest: {"VCPU": 1, "MEMORY_MB": 2048, "DISK_GB": 20}}
    ram = await hypervisor_ram(cloud)
    assert ram[source] == before[source] - 512
    (mig,) = await migration_rows(cloud, sid)
    assert mig.status == "confirmed"
    # The fake hypervisors: the guest lives on the destination only.
    agents = {a.host: a for a in cloud.rt.services["ComputeAgent"]}
    assert sid in await agents[dest].driver.list_instances()
    assert sid not in await agents[source].driver.list_instances()
    assert sid not in agents[source].driver.originals


async def test_resize_down_then_revert_goes_back_with_the_old_flavor(cloud):
    server = await booted(cloud, flavor="2")
    sid, source = server["id"], server["OS-EXT-SRV-ATTR:host"]
    s = await resized(cloud, sid, "1")
    assert s["status"] == "VERIFY_RESIZE" and s["flavor"]["original_name"] == "m1.tiny"
    dest = s["OS-EXT-SRV-ATTR:host"]

    r = await action(cloud, sid, {"revertResize": None})
    assert r.status == 202, r
    s = await wait_status(cloud, sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == source
    assert s["flavor"]["original_name"] == "m1.small"
    assert s["OS-EXT-STS:power_state"] == 1
    (mig,) = await migration_rows(cloud, sid)
    assert mig.status == "reverted"
    allocs = await allocations(cloud)
    assert mig.uuid not in allocs
    assert allocs[sid] == {source: {"VCPU": 1, "MEMORY_MB": 2048, "DISK_GB": 20}}
    agents = {a.host: a for a in cloud.rt.services["ComputeAgent"]}
    assert sid in await agents[source].driver.list_instances()
    assert sid not in await agents[dest].driver.list_instances()
    # The instance actions: resize then revertResize, each with its events.
    r = await cloud.get(f"/compute/v2.1/servers/{sid}/os-instance-actions", microversion=MV)
    assert [a["action"] for a in r.body["instanceActions"]][:2] == ["revertResize", "resize"]


async def test_resize_state_checks_as_nova(cloud):
    server = await booted(cloud)
    sid = server["id"]
    r = await action(cloud, sid, {"resize": {"flavorRef": "1"}})
    assert r.status == 400 and r.body["badRequest"]["message"] == "When resizing, instances must change flavor!"
    r = await action(cloud, sid, {"resize": {"flavorRef": "nope"}})
    assert r.status == 400 and r.body["badRequest"]["message"] == "Flavor nope could not be found."
    r = await action(cloud, sid, {"resize": {}})
    assert r.status == 400
    r = await action(cloud, sid, {"confirmResize": None})
    assert r.status == 409
    assert (
        r.body["conflictingRequest"]["message"]
        == f"Cannot 'confirmResize' instance {sid} while it is in vm_state active"
    )
    r = await action(cloud, sid, {"revertResize": None})
    assert r.status == 409

    r = await action(cloud, sid, {"os-stop": None})
    assert r.status == 202
    await wait_status(cloud, sid, "SHUTOFF")
    r = await action(cloud, sid, {"pause": None})
    assert r.status == 409
    # A stopped server can be resized (Nova: ACTIVE or STOPPED); it stays off.
    s = await resized(cloud, sid, "2")
    assert s["status"] == "VERIFY_RESIZE" and s["OS-EXT-STS:power_state"] == 4
    r = await action(cloud, sid, {"resize": {"flavorRef": "3"}})
    assert r.status == 409
    assert r.body["conflictingRequest"]["message"] == f"Cannot 'resize' instance {sid} while it is in vm_state resized"
    # Nova's stop/start check vm_state ACTIVE/ERROR and STOPPED: not in VERIFY_RESIZE.
    for name, nova in (("os-stop", "stop"), ("os-start", "start")):
        r = await action(cloud, sid, {name: None})
        assert r.status == 409
        assert (
            r.body["conflictingRequest"]["message"] == f"Cannot '{nova}' instance {sid} while it is in vm_state resized"
        )
    r = await action(cloud, sid, {"confirmResize": None})
    assert r.status == 204
    s = await wait_status(cloud, sid, "SHUTOFF")
    assert s["flavor"]["original_name"] == "m1.small"


async def test_locked_member_and_quota(cloud):
    alice = await make_person(cloud, "alice", "lab", "member")
    server = await booted(cloud, token=alice.token)
    sid = server["id"]
    r = await action(cloud, sid, {"lock": None}, token=await cloud.admin_token())
    assert r.status == 202
    r = await action(cloud, sid, {"resize": {"flavorRef": "2"}}, token=alice.token)
    assert r.status == 409 and r.body["conflictingRequest"]["message"] == f"Instance {sid} is locked"
    r = await action(cloud, sid, {"unlock": None})
    assert r.status == 202
    # Cold migration is for admins only.
    r = await action(cloud, sid, {"migrate": None}, token=alice.token)
    assert r.status == 403, r
    # Quota: only the growth counts (cores +1 over a limit of 1 used).
    r = await cloud.put(
        f"/compute/v2.1/os-quota-sets/{alice.project_id}", json={"quota_set": {"cores": 1}}, microversion=MV
    )
    assert r.status == 200, r
    r = await action(cloud, sid, {"resize": {"flavorRef": "3"}}, token=alice.token)
    assert r.status == 403, r
    assert "cores" in r.body["forbidden"]["message"]
    # Within quota (same vCPUs, more RAM): allowed for the member.
    s = await resized(cloud, sid, "2")
    assert s["status"] == "VERIFY_RESIZE"


async def test_resize_with_the_host_down_is_refused(cloud):
    server = await booted(cloud)
    sid = server["id"]
    async with cloud.rt.db.begin() as conn:
        await conn.execute(
            t.services.update().where(t.services.c.host == server["OS-EXT-SRV-ATTR:host"]).values(forced_down=True)
        )
    r = await action(cloud, sid, {"resize": {"flavorRef": "2"}})
    assert r.status == 409 and r.body["conflictingRequest"]["message"] == "Service is unavailable at this time."


async def test_no_valid_destination_keeps_the_server_active(tmp_path, db_url):
    # One host, same-host resize not allowed (Nova's default): nowhere to go.
    cloud = await start_cloud(make_settings(tmp_path, db_url, fake_hosts=1))
    try:
        server = await booted(cloud)
        sid = server["id"]
        r = await action(cloud, sid, {"resize": {"flavorRef": "2"}})
        assert r.status == 202
        request_id = r.headers["x-openstack-request-id"]
        s = await wait_status(cloud, sid, {"ACTIVE", "ERROR"})
        assert s["status"] == "ACTIVE" and s["flavor"]["original_name"] == "m1.tiny"
        r = await cloud.get(f"/compute/v2.1/servers/{sid}/os-instance-actions/{request_id}", microversion=MV)
        events = {e["event"]: e for e in r.body["instanceAction"]["events"]}
        assert events["conductor_migrate_server"]["result"] == "Error"
        assert "No valid host was found" in events["conductor_migrate_server"]["traceback"]
        (mig,) = await migration_rows(cloud, sid)
        assert mig.status == "error"
        allocs = await allocations(cloud)
        assert set(allocs) == {sid}
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_same_host_resize_holds_both_on_one_host(tmp_path, db_url):
    cloud = await start_cloud(make_settings(tmp_path, db_url, fake_hosts=1, allow_resize_to_same_host=True))
    try:
        server = await booted(cloud)
        sid, host = server["id"], server["OS-EXT-SRV-ATTR:host"]
        s = await resized(cloud, sid, "2")
        assert s["status"] == "VERIFY_RESIZE" and s["OS-EXT-SRV-ATTR:host"] == host
        (mig,) = await migration_rows(cloud, sid)
        allocs = await allocations(cloud)
        assert allocs[sid] == {host: {"VCPU": 1, "MEMORY_MB": 2048, "DISK_GB": 20}}
        assert allocs[mig.uuid] == {host: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}}
        r = await action(cloud, sid, {"revertResize": None})
        assert r.status == 202
        s = await wait_status(cloud, sid, "ACTIVE")
        assert s["flavor"]["original_name"] == "m1.tiny" and s["OS-EXT-STS:power_state"] == 1
        assert await allocations(cloud) == {sid: {host: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}}}
        agent = cloud.rt.services["ComputeAgent"][0]
        assert await agent.driver.list_instances() == [sid] and not agent.driver.originals
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_resize_confirm_window_confirms_automatically(tmp_path, db_url):
    cloud = await start_cloud(make_settings(tmp_path, db_url, resize_confirm_window=1))
    try:
        server = await booted(cloud)
        sid = server["id"]
        s = await resized(cloud, sid, "2")
        assert s["status"] == "VERIFY_RESIZE"
        deadline = asyncio.get_running_loop().time() + 15
        while (await migration_rows(cloud, sid))[0].status != "confirmed":
            assert asyncio.get_running_loop().time() < deadline, "not confirmed automatically"
            await asyncio.sleep(0.1)
        s = await wait_status(cloud, sid, "ACTIVE")
        assert s["flavor"]["original_name"] == "m1.small"
        assert set(await allocations(cloud)) == {sid}
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_deleting_a_server_in_verify_resize_removes_the_original_on_the_source(cloud):
    """As Nova's _confirm_resize_on_deleting: no original guest (and its disks) left on the
    source, nothing held on either host."""
    server = await booted(cloud)
    sid, source = server["id"], server["OS-EXT-SRV-ATTR:host"]
    s = await resized(cloud, sid, "2")
    assert s["status"] == "VERIFY_RESIZE"
    dest = s["OS-EXT-SRV-ATTR:host"]
    agents = {a.host: a for a in cloud.rt.services["ComputeAgent"]}
    assert sid in agents[source].driver.originals  # kept for a revert

    r = await cloud.delete(f"/compute/v2.1/servers/{sid}")
    assert r.status == 204, r
    for _ in range(100):
        if (await cloud.get(f"/compute/v2.1/servers/{sid}")).status == 404:
            break
        await asyncio.sleep(0.05)
    else:
        raise AssertionError("the server was not deleted")
    for _ in range(100):  # the source's cleanup is its own message
        if sid not in agents[source].driver.originals:
            break
        await asyncio.sleep(0.05)
    assert sid not in agents[source].driver.originals
    assert sid not in await agents[source].driver.list_instances()
    assert sid not in await agents[dest].driver.list_instances()
    allocs = await allocations(cloud)
    (mig,) = await migration_rows(cloud, sid)
    assert sid not in allocs and mig.uuid not in allocs
