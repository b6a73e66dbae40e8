"""shelve / shelveOffload / unshelve (issue 11) on the fake driver, SQLite and PostgreSQL:
offload frees the host's resources and unshelve claims them again, anew through the
scheduler, booting from the shelve image (so the disk is what it was), which is then deleted."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from novalite.config import Settings
from novalite.context import RequestContext
from tests.conftest import Cloud, make_settings
from tests.functional.helpers import make_person, wait_status
from tests.functional.test_snapshot import action, active_server, driver_of, upload_image, wait_image, wait_image_gone

C = "/compute/v2.1"


@pytest.fixture
def offload_time() -> int:
    return 0


@pytest.fixture
def cloud_settings(tmp_path, db_url: str, offload_time: int) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(tmp_path, db_url, driver_options={"image_files": True}, shelved_offload_time=offload_time)


async def vcpus_used(cloud: Cloud) -> int:
    r = await cloud.get(C + "/os-hypervisors/statistics", microversion="2.1")
    assert r.status == 200, r
    return int(r.body["hypervisor_statistics"]["vcpus_used"])


async def shelve_image(cloud: Cloud, server: dict[str, Any]) -> dict[str, Any]:
    r = await cloud.get("/image/v2/images")
    found = [i for i in r.body["images"] if i.get("instance_uuid") == server["id"]]
    assert len(found) == 1, found
    return dict(found[0])


async def test_shelve_offloads_and_unshelve_boots_from_the_image(cloud: Cloud) -> None:
    server = await active_server(cloud, await upload_image(cloud, b"BASE\n"), name="idle")
    sid = server["id"]
    driver_of(cloud, server).write_disk(sid, "work in progress\n")
    content = driver_of(cloud, server).disk_content(sid)
    used = await vcpus_used(cloud)
    assert used >= 1

    r = await action(cloud, sid, {"shelve": None})
    assert r.status == 202, r
    shelved = await wait_status(cloud, sid, "SHELVED_OFFLOADED")
    assert shelved["OS-EXT-STS:vm_state"] == "shelved_offloaded"
    assert shelved["OS-EXT-SRV-ATTR:host"] is None
    assert await vcpus_used(cloud) == used - 1  # the claim is freed
    assert sid not in await driver_of(cloud, server).list_instances()
    image = await shelve_image(cloud, server)
    assert image["name"] == "idle-shelved" and image["status"] == "active"

    r = await action(cloud, sid, {"unshelve": None})
    assert r.status == 202, r
    back = await wait_status(cloud, sid, "ACTIVE")
    assert back["OS-EXT-SRV-ATTR:host"]
    assert await vcpus_used(cloud) == used  # claimed again
    assert driver_of(cloud, back).disk_content(sid) == content
    await wait_image_gone(cloud, image["id"])
    actions = [a["action"] for a in (await cloud.get(f"{C}/servers/{sid}/os-instance-actions")).body["instanceActions"]]
    assert "shelve" in actions and "unshelve" in actions


@pytest.mark.parametrize("offload_time", [-1])
async def test_shelve_without_offload_then_offload(cloud: Cloud) -> None:
    alice = await make_person(cloud, "alice", "lab", "member")
    sid = (await active_server(cloud, await upload_image(cloud, b"BASE\n"), token=alice.token))["id"]
    server = await wait_status(cloud, sid, "ACTIVE")  # the admin's view: with its host
    used = await vcpus_used(cloud)
    r = await action(cloud, sid, {"shelve": None}, token=alice.token)
    assert r.status == 202, r
    shelved = await wait_status(cloud, sid, "SHELVED")
    assert shelved["OS-EXT-SRV-ATTR:host"] == server["OS-EXT-SRV-ATTR:host"]
    assert await vcpus_used(cloud) == used  # kept on its host
    image = await shelve_image(cloud, server)
    await wait_image(cloud, image["id"])

    # Unshelve a SHELVED server: the kept guest runs again, the image is deleted.
    r = await action(cloud, sid, {"unshelve": None}, token=alice.token)
    assert r.status == 202, r
    await wait_status(cloud, sid, "ACTIVE")
    await wait_image_gone(cloud, image["id"])

    r = await action(cloud, sid, {"shelve": None}, token=alice.token)
    assert r.status == 202, r
    await wait_status(cloud, sid, "SHELVED")
    r = await action(cloud, sid, {"shelveOffload": None}, token=alice.token)
    assert r.status == 403, r  # admin only, as Nova
    r = await action(cloud, sid, {"shelveOffload": None})
    assert r.status == 202, r
    await wait_status(cloud, sid, "SHELVED_OFFLOADED")
    assert await vcpus_used(cloud) == used - 1


async def test_shelve_state_checks(cloud: Cloud) -> None:
    server = await active_server(cloud, await upload_image(cloud, b"BASE\n"))
    sid = server["id"]
    r = await action(cloud, sid, {"unshelve": None})
    assert r.status == 409, r
    assert r.body["conflictingRequest"]["message"] == f"Cannot 'unshelve' instance {sid} while it is in vm_state active"
    r = await action(cloud, sid, {"shelveOffload": None})
    assert r.status == 409, r
    assert r.body["conflictingRequest"]["message"] == (
        f"Cannot 'shelveOffload' instance {sid} while it is in vm_state active"
    )
    assert (await action(cloud, sid, {"shelve": None})).status == 202
    await wait_status(cloud, sid, "SHELVED_OFFLOADED")
    r = await action(cloud, sid, {"shelve": None})
    assert r.status == 409, r
    assert r.body["conflictingRequest"]["message"] == (
        f"Cannot 'shelve' instance {sid} while it is in vm_state shelved_offloaded"
    )
    r = await action(cloud, sid, {"createImage": {"name": "x"}})
    assert r.status == 409, r
    # availability_zone is 2.77's.
    r = await action(cloud, sid, {"unshelve": {"availability_zone": "nova"}}, mv="2.76")
    assert r.status == 400, r
    r = await action(cloud, sid, {"unshelve": {"availability_zone": "nova"}}, mv="2.77")
    assert r.status == 202, r
    await wait_status(cloud, sid, "ACTIVE")

    alice = await make_person(cloud, "alice", "lab", "member")
    mine = await active_server(cloud, await upload_image(cloud, b"x"), token=alice.token)
    assert (await cloud.post(f"{C}/servers/{mine['id']}/action", json={"lock": None})).status == 202
    r = await action(cloud, mine["id"], {"shelve": None}, token=alice.token)
    assert r.status == 409 and r.body["conflictingRequest"]["message"] == f"Instance {mine['id']} is locked", r


async def test_unshelve_to_a_host_2_91(cloud: Cloud) -> None:
    server = await active_server(cloud, await upload_image(cloud, b"BASE\n"))
    sid = server["id"]
    other = "hv-2" if server["OS-EXT-SRV-ATTR:host"] == "hv-1" else "hv-1"
    assert (await action(cloud, sid, {"shelve": None})).status == 202
    await wait_status(cloud, sid, "SHELVED_OFFLOADED")
    r = await action(cloud, sid, {"unshelve": {"host": other}}, mv="2.90")
    assert r.status == 400, r
    r = await action(cloud, sid, {"unshelve": {"host": "no-such-host"}}, mv="2.91")
    assert r.status == 400 and r.body["badRequest"]["message"] == "Compute host no-such-host could not be found.", r
    alice = await make_person(cloud, "alice", "admin", "member")
    r = await action(cloud, sid, {"unshelve": {"host": other}}, mv="2.91", token=alice.token)
    assert r.status == 403, r
    r = await action(cloud, sid, {"unshelve": {"host": other}}, mv="2.91")
    assert r.status == 202, r
    back = await wait_status(cloud, sid, "ACTIVE")
    assert back["OS-EXT-SRV-ATTR:host"] == other


async def test_agent_dies_while_unshelving(cloud: Cloud) -> None:
    """The agent dies while it boots an unshelved server: at its next start the server is
    SHELVED_OFFLOADED again, on no host, its new claim freed, and can be unshelved again."""
    server = await active_server(cloud, await upload_image(cloud, b"BASE\n"))
    sid = server["id"]
    assert (await action(cloud, sid, {"shelve": None})).status == 202
    await wait_status(cloud, sid, "SHELVED_OFFLOADED")
    used = await vcpus_used(cloud)
    agents = cloud.rt.services["ComputeAgent"]
    for agent in agents:
        agent.driver.boot_delay = 60  # the boot never ends: the agent "dies" in it
    assert (await action(cloud, sid, {"unshelve": None})).status == 202
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        body = (await cloud.get(f"{C}/servers/{sid}", microversion="2.100")).body["server"]
        if body["OS-EXT-STS:task_state"] == "spawning":
            break
        assert asyncio.get_running_loop().time() < deadline, body
        await asyncio.sleep(0.02)
    agent = next(a for a in agents if a.host == body["OS-EXT-SRV-ATTR:host"])
    agent._locks.pop(sid, None)  # what a new agent process has: not the dead one's lock
    await agent.reconcile(RequestContext.admin())
    back = await wait_status(cloud, sid, "SHELVED_OFFLOADED")
    assert back["OS-EXT-SRV-ATTR:host"] is None
    assert await vcpus_used(cloud) == used
    for a in agents:
        a.driver.boot_delay = 0
    assert (await action(cloud, sid, {"unshelve": None})).status == 202
    await wait_status(cloud, sid, "ACTIVE")


@pytest.mark.parametrize("offload_time", [1])
async def test_periodic_offload_after_shelved_offload_time(cloud: Cloud) -> None:
    """``shelved_offload_time`` > 0: the server is SHELVED on its host first, then the
    conductor's periodic task offloads it once that many seconds have passed, freeing the
    host's resources; unshelve brings it back as from any offload."""
    server = await active_server(cloud, await upload_image(cloud, b"BASE\n"))
    sid = server["id"]
    used = await vcpus_used(cloud)
    assert (await action(cloud, sid, {"shelve": None})).status == 202
    shelved = await wait_status(cloud, sid, "SHELVED")
    assert shelved["OS-EXT-SRV-ATTR:host"] == server["OS-EXT-SRV-ATTR:host"]
    offloaded = await wait_status(cloud, sid, "SHELVED_OFFLOADED", timeout=20)
    assert offloaded["OS-EXT-SRV-ATTR:host"] is None and offloaded["OS-EXT-STS:task_state"] is None
    assert await vcpus_used(cloud) == used - 1
    assert sid not in await driver_of(cloud, server).list_instances()
    assert (await action(cloud, sid, {"unshelve": None})).status == 202
    await wait_status(cloud, sid, "ACTIVE")


@pytest.mark.parametrize("offload_time", [0, -1])
async def test_deleting_a_shelved_server_deletes_its_shelve_image(cloud: Cloud, offload_time: int) -> None:
    """As Nova: the ``<name>-shelved`` image goes with a deleted SHELVED server (its host's
    agent deletes it) or SHELVED_OFFLOADED one (no host: the API's local delete)."""
    server = await active_server(cloud, await upload_image(cloud, b"BASE\n"), name="gone")
    sid = server["id"]
    assert (await action(cloud, sid, {"shelve": None})).status == 202
    await wait_status(cloud, sid, "SHELVED_OFFLOADED" if offload_time == 0 else "SHELVED")
    image = await shelve_image(cloud, server)
    await wait_image(cloud, image["id"])
    assert (await cloud.delete(f"{C}/servers/{sid}")).status == 204
    await wait_image_gone(cloud, image["id"])
    deadline = asyncio.get_running_loop().time() + 10
    while (await cloud.get(f"{C}/servers/{sid}")).status != 404:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)


async def listed(cloud: Cloud, status: str) -> set[str]:
    r = await cloud.get(f"{C}/servers?status={status}", microversion="2.100")
    assert r.status == 200, r
    return {s["id"] for s in r.body["servers"]}


@pytest.mark.parametrize("offload_time", [-1])
async def test_status_filters_of_shelve_and_rebuild(cloud: Cloud) -> None:
    """``?status=SHELVED``, ``SHELVED_OFFLOADED`` and ``REBUILD`` list the servers in those
    states (Nova maps them to vm_state / task_state), not a 400."""
    image = await upload_image(cloud, b"BASE\n")
    a = (await active_server(cloud, image, name="a"))["id"]
    b = (await active_server(cloud, image, name="b"))["id"]
    c = (await active_server(cloud, image, name="c"))["id"]
    assert (await action(cloud, a, {"shelve": None})).status == 202
    assert (await action(cloud, b, {"shelve": None})).status == 202
    await wait_status(cloud, a, "SHELVED")
    await wait_status(cloud, b, "SHELVED")
    assert (await action(cloud, b, {"shelveOffload": None})).status == 202
    await wait_status(cloud, b, "SHELVED_OFFLOADED")
    assert await listed(cloud, "SHELVED") == {a}
    assert await listed(cloud, "SHELVED_OFFLOADED") == {b}
    assert await listed(cloud, "REBUILD") == set()

    for agent in cloud.rt.services["ComputeAgent"]:
        agent.driver.boot_delay = 60  # the rebuild's boot lasts: REBUILD while we look
    try:
        assert (await action(cloud, c, {"rebuild": {"imageRef": image}})).status == 202
        deadline = asyncio.get_running_loop().time() + 10
        while (await cloud.get(f"{C}/servers/{c}", microversion="2.100")).body["server"][
            "OS-EXT-STS:task_state"
        ] != "rebuild_spawning":
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        assert await listed(cloud, "REBUILD") == {c}  # rebuild_spawning counts too
    finally:
        for agent in cloud.rt.services["ComputeAgent"]:
            agent.driver.boot_delay = 0
