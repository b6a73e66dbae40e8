"""Soft delete (``reclaim_instance_interval`` > 0): DELETE keeps the server SOFT_DELETED, powered
off and holding its claim and quota; ``restore`` brings it back, ``forceDelete`` deletes it now,
and the conductor reclaims it after the interval. With the interval 0 delete is immediate.

On SQLite and PostgreSQL (the ``cloud`` fixture's ``db_url``), the fake driver.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from novalite_drivers.base import Instance, InstanceNotFound, PowerState

from novalite.conductor.reclaim import reclaim
from novalite.config import Settings
from tests.conftest import Cloud, make_settings
from tests.functional.helpers import create_server, make_image, wait_gone, wait_status

C = "/compute/v2.1"


@pytest.fixture
def reclaim_interval() -> int:
    """Long enough that nothing is reclaimed during a test; tests of the reclaim parametrize it."""
    return 3600


@pytest.fixture
def cloud_settings(tmp_path, db_url: str, reclaim_interval: int) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(tmp_path, db_url, reclaim_instance_interval=reclaim_interval)


async def active_server(cloud: Cloud, name: str = "vm") -> dict[str, Any]:
    image = await make_image(cloud)
    r = await create_server(cloud, image, name=name)
    assert r.status == 202, r
    return await wait_status(cloud, r.body["server"]["id"], "ACTIVE")


async def vcpus_used(cloud: Cloud) -> int:
    r = await cloud.get(C + "/os-hypervisors/statistics", microversion="2.1")
    assert r.status == 200, r
    used: int = r.body["hypervisor_statistics"]["vcpus_used"]
    return used


async def instances_used(cloud: Cloud) -> int:
    r = await cloud.get(C + "/limits")
    assert r.status == 200, r
    used: int = r.body["limits"]["absolute"]["totalInstancesUsed"]
    return used


async def guest_power(cloud: Cloud, server: dict[str, Any]) -> PowerState | None:
    """What the server's hypervisor says of its guest (None: no such guest)."""
    agent = next(a for a in cloud.rt.services["ComputeAgent"] if a.host == server["OS-EXT-SRV-ATTR:host"])
    try:
        return PowerState(await agent.driver.get_power_state(Instance(uuid=server["id"], name="")))
    except InstanceNotFound:
        return None


async def action(cloud: Cloud, server_id: str, name: str) -> Any:
    return await cloud.post(f"{C}/servers/{server_id}/action", json={name: None})


async def soft_delete(cloud: Cloud, server_id: str) -> dict[str, Any]:
    """DELETE, then the server once its power-off is done: SOFT_DELETED from then on, at once
    (not only after the conductor's reclaim task has been by)."""
    r = await cloud.delete(f"{C}/servers/{server_id}")
    assert r.status == 204, r
    deadline = asyncio.get_running_loop().time() + 10.0
    while True:
        server: dict[str, Any] = (await cloud.get(f"{C}/servers/{server_id}", microversion="2.100")).body["server"]
        assert server["status"] == "SOFT_DELETED", server
        if server["OS-EXT-STS:task_state"] is None:
            return server
        assert asyncio.get_running_loop().time() < deadline, server
        await asyncio.sleep(0.02)


async def test_soft_deleted_server_stays_listed_off_and_claimed_until_restored(cloud: Cloud) -> None:
    server = await active_server(cloud)
    sid = server["id"]
    used = await vcpus_used(cloud)
    assert used >= 1 and await instances_used(cloud) == 1

    deleted = await soft_delete(cloud, sid)
    assert deleted["OS-EXT-STS:vm_state"] == "soft-delete"
    assert deleted["OS-EXT-STS:power_state"] == int(PowerState.SHUTDOWN)
    assert await guest_power(cloud, server) == PowerState.SHUTDOWN  # off on the hypervisor, not destroyed
    listed = (await cloud.get(C + "/servers/detail", microversion="2.100")).body["servers"]
    assert [(s["id"], s["status"]) for s in listed] == [(sid, "SOFT_DELETED")]
    assert [s["id"] for s in (await cloud.get(C + "/servers")).body["servers"]] == [sid]
    assert await vcpus_used(cloud) == used  # the claim is held
    assert await instances_used(cloud) == 1  # and the quota counts it
    # The agent's power-off ends in SOFT_DELETED (not SHUTOFF): a status filter, which goes by
    # the row, finds it as soft-deleted at once, before any run of the reclaim task.
    assert (await cloud.get(C + "/servers?status=SHUTOFF")).body["servers"] == []
    soft = (await cloud.get(C + "/servers?status=SOFT_DELETED", microversion="2.100")).body["servers"]
    assert [s["id"] for s in soft] == [sid]
    # A run of the conductor's reclaim task leaves it alone (its interval has not passed).
    assert await reclaim(cloud.rt) == []
    again = await wait_status(cloud, sid, "SOFT_DELETED")
    assert again["OS-EXT-STS:vm_state"] == "soft-delete"
    r = await action(cloud, sid, "os-start")
    assert r.status == 409, r
    assert (
        r.body["conflictingRequest"]["message"] == f"Cannot 'start' instance {sid} while it is in vm_state soft-delete"
    )
    # A second delete changes nothing: the server stays restorable.
    assert (await cloud.delete(f"{C}/servers/{sid}")).status == 204
    await wait_status(cloud, sid, "SOFT_DELETED")

    r = await action(cloud, sid, "restore")
    assert r.status == 202, r
    restored = await wait_status(cloud, sid, "ACTIVE")
    assert restored["OS-EXT-STS:power_state"] == int(PowerState.RUNNING)
    assert await guest_power(cloud, server) == PowerState.RUNNING
    assert await vcpus_used(cloud) == used
    events = (await cloud.get(f"{C}/servers/{sid}/os-instance-actions")).body["instanceActions"]
    assert [a["action"] for a in events][:2] == ["restore", "delete"]


async def test_force_delete_deletes_a_soft_deleted_server_and_frees_its_claim(cloud: Cloud) -> None:
    before = await vcpus_used(cloud)
    server = await active_server(cloud)
    sid = server["id"]
    assert await vcpus_used(cloud) > before
    await soft_delete(cloud, sid)

    r = await action(cloud, sid, "forceDelete")
    assert r.status == 202, r
    await wait_gone(cloud, sid)
    assert await vcpus_used(cloud) == before
    assert await instances_used(cloud) == 0
    assert await guest_power(cloud, server) is None  # terminated on its host
    assert (await action(cloud, sid, "restore")).status == 404


async def test_restore_and_force_delete_refused_unless_soft_deleted(cloud: Cloud) -> None:
    server = await active_server(cloud)
    sid = server["id"]
    for name in ("restore", "forceDelete"):
        r = await action(cloud, sid, name)
        assert r.status == 409, (name, r)
        assert r.body["conflictingRequest"]["message"] == (
            f"Cannot '{name}' instance {sid} while it is in vm_state active"
        )
    again = await wait_status(cloud, sid, "ACTIVE")
    assert await guest_power(cloud, server) == PowerState.RUNNING and again["OS-EXT-STS:power_state"] == 1


async def force_down(cloud: Cloud, host: str) -> None:
    """Mark the host's compute service down, as an operator does (``openstack compute service set --down``)."""
    services = await cloud.get(f"{C}/os-services?binary=nova-compute&host={host}", microversion="2.53")
    service_id = services.body["services"][0]["id"]
    r = await cloud.put(f"{C}/os-services/{service_id}", json={"forced_down": True}, microversion="2.53")
    assert r.status == 200, r


async def test_a_server_on_a_down_host_is_deleted_at_once(cloud: Cloud) -> None:
    """As Nova: with its compute host down there is no guest to power off, so delete is final."""
    before = await vcpus_used(cloud)
    server = await active_server(cloud)
    sid = server["id"]
    await force_down(cloud, server["OS-EXT-SRV-ATTR:host"])
    assert (await cloud.delete(f"{C}/servers/{sid}")).status == 204
    assert (await cloud.get(f"{C}/servers/{sid}")).status == 404
    assert await vcpus_used(cloud) == before


@pytest.mark.parametrize("reclaim_interval", [1])
async def test_reclaim_deletes_soft_deleted_servers_after_the_interval(cloud: Cloud) -> None:
    before = await vcpus_used(cloud)
    server = await active_server(cloud)
    sid = server["id"]
    kept = (await active_server(cloud, name="kept"))["id"]
    loop = asyncio.get_running_loop()
    deleted_at = loop.time()
    await soft_delete(cloud, sid)
    await wait_gone(cloud, sid, timeout=15.0)
    assert loop.time() - deleted_at >= 1.0  # not before the interval
    assert await guest_power(cloud, server) is None  # terminated on its host by the reclaim
    assert (await vcpus_used(cloud)) - before == 1  # only the kept server's claim is left
    assert [s["id"] for s in (await cloud.get(C + "/servers")).body["servers"]] == [kept]
    await wait_status(cloud, kept, "ACTIVE")  # the reclaim touches only soft-deleted servers


@pytest.mark.parametrize("reclaim_interval", [1])
async def test_reclaim_deletes_locally_when_the_host_is_down(cloud: Cloud) -> None:
    """A soft-deleted server whose host died is still reclaimed (locally), its claim freed."""
    before = await vcpus_used(cloud)
    server = await active_server(cloud)
    sid = server["id"]
    await soft_delete(cloud, sid)
    await force_down(cloud, server["OS-EXT-SRV-ATTR:host"])
    await wait_gone(cloud, sid, timeout=15.0)
    assert await vcpus_used(cloud) == before
    assert await instances_used(cloud) == 0
    # Deleted here, not by the (down) host's agent: the powered-off guest is left to the host.
    assert await guest_power(cloud, server) == PowerState.SHUTDOWN


@pytest.mark.parametrize("reclaim_interval", [0])
async def test_interval_zero_deletes_at_once(cloud: Cloud) -> None:
    before = await vcpus_used(cloud)
    server = await active_server(cloud)
    sid = server["id"]
    r = await cloud.delete(f"{C}/servers/{sid}")
    assert r.status == 204, r
    shown = await cloud.get(f"{C}/servers/{sid}", microversion="2.100")
    assert shown.status == 404 or shown.body["server"]["status"] != "SOFT_DELETED", shown
    await wait_gone(cloud, sid)
    assert await vcpus_used(cloud) == before
    assert await guest_power(cloud, server) is None
    assert (await action(cloud, sid, "restore")).status == 404
