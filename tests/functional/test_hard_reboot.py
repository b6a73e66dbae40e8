"""Hard reboot and start after a compute restart lost the guests, and failed actions (issue 9, defect 13).

The fake driver keeps its guests in memory, so a restarted agent has none. As in Nova, a
hard reboot recreates the guest from the instance's definition and a start (Nova's libvirt
``power_on`` is a hard reboot) does too. An action that fails ends its task state, adds an
instance fault (shown by the API when the server is in ERROR, as Nova shows it) and an
action event with result Error and the traceback.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from novalite_drivers.fake import FakeDriver

from novalite.context import RequestContext
from novalite.db import schema as t
from tests.functional.helpers import create_server, make_image, wait_status

MV = "2.100"


async def restart_computes_losing_guests(cloud: Any) -> None:
    """What a restart of ``novalite serve`` does to the fake hosts: each agent comes back
    with a new driver (every guest was in the old one's memory) and reconciles."""
    for agent in cloud.rt.services["ComputeAgent"]:
        old = agent.driver
        await old.cleanup_host()
        agent.driver = FakeDriver(agent.host, old.options)
        await agent.driver.init_host()
        agent.driver.set_lifecycle_callback(agent._on_lifecycle_event)
        await agent.reconcile(RequestContext.admin())
        assert await agent.driver.list_instances() == []


def agent_of(cloud: Any, server: dict[str, Any]) -> Any:
    host = server["OS-EXT-SRV-ATTR:host"]
    return next(a for a in cloud.rt.services["ComputeAgent"] if a.host == host)


async def action(cloud: Any, sid: str, body: dict[str, Any]) -> str:
    """POST the action (202) and return its request id, the key of its instance action."""
    r = await cloud.post(f"/compute/v2.1/servers/{sid}/action", json=body)
    assert r.status == 202, r
    return str(r.headers["x-openstack-request-id"])


async def events_of(cloud: Any, sid: str, request_id: str) -> dict[str, Any]:
    r = await cloud.get(f"/compute/v2.1/servers/{sid}/os-instance-actions/{request_id}", microversion=MV)
    assert r.status == 200, r
    return dict(r.body["instanceAction"])


async def active_server(cloud: Any) -> dict[str, Any]:
    image = await make_image(cloud)
    r = await create_server(cloud, image, name="keeper")
    assert r.status == 202, r
    return await wait_status(cloud, r.body["server"]["id"], "ACTIVE")


async def faults_of(cloud: Any, sid: str) -> list[str]:
    async with cloud.rt.db.connect() as conn:
        c = t.instance_faults.c
        rows = await conn.execute(sa.select(c.message).where(c.instance_uuid == sid).order_by(c.id))
        return [row.message for row in rows]


async def test_hard_reboot_recreates_a_guest_lost_in_a_restart(cloud):
    server = await active_server(cloud)
    sid = server["id"]
    await restart_computes_losing_guests(cloud)

    req = await action(cloud, sid, {"reboot": {"type": "HARD"}})
    s = await wait_status(cloud, sid, {"ACTIVE", "ERROR"})
    assert (s["status"], s["OS-EXT-STS:power_state"], s["OS-EXT-STS:task_state"]) == ("ACTIVE", 1, None)
    assert "fault" not in s
    agent = agent_of(cloud, s)
    assert await agent.driver.list_instances() == [sid]
    act = await events_of(cloud, sid, req)
    assert act["message"] is None
    assert [(e["event"], e["result"]) for e in act["events"]] == [("compute_reboot_instance", "Success")]
    # The guest is a working one again: its console answers, and it stops and starts.
    r = await cloud.post(f"/compute/v2.1/servers/{sid}/action", json={"os-getConsoleOutput": {}})
    assert r.status == 200 and "recreated" in r.body["output"]
    await action(cloud, sid, {"os-stop": None})
    await wait_status(cloud, sid, "SHUTOFF")
    await action(cloud, sid, {"os-start": None})
    assert (await wait_status(cloud, sid, "ACTIVE"))["OS-EXT-STS:power_state"] == 1


async def test_start_after_a_restart_brings_the_server_back(cloud):
    server = await active_server(cloud)
    sid = server["id"]
    await action(cloud, sid, {"os-stop": None})
    await wait_status(cloud, sid, "SHUTOFF")
    await restart_computes_losing_guests(cloud)

    req = await action(cloud, sid, {"os-start": None})
    s = await wait_status(cloud, sid, {"ACTIVE", "SHUTOFF", "ERROR"})
    assert (s["status"], s["OS-EXT-STS:power_state"]) == ("ACTIVE", 1), s
    act = await events_of(cloud, sid, req)
    assert [(e["event"], e["result"]) for e in act["events"]] == [("compute_start_instance", "Success")]
    assert await agent_of(cloud, s).driver.list_instances() == [sid]


async def test_failed_hard_reboot_of_a_stopped_server_is_error_with_its_fault(cloud):
    """Nova's reboot_instance: a guest left not running is ERROR; the fault is shown."""
    server = await active_server(cloud)
    sid = server["id"]
    await action(cloud, sid, {"os-stop": None})
    await wait_status(cloud, sid, "SHUTOFF")
    agent = agent_of(cloud, server)
    agent.driver.failures["reboot"] = "the hypervisor refused to reset the guest"

    req = await action(cloud, sid, {"reboot": {"type": "HARD"}})
    s = await wait_status(cloud, sid, {"ACTIVE", "SHUTOFF", "ERROR"})
    assert (s["status"], s["OS-EXT-STS:task_state"]) == ("ERROR", None), s
    assert s["fault"]["message"] == "the hypervisor refused to reset the guest"
    assert s["fault"]["code"] == 500
    act = await events_of(cloud, sid, req)
    assert act["message"] == "Error"
    (event,) = act["events"]
    assert (event["event"], event["result"]) == ("compute_reboot_instance", "Error")
    assert "the hypervisor refused to reset the guest" in event["traceback"]

    # Hard reboot is allowed from ERROR (Nova): once the hypervisor obeys, the server is back.
    del agent.driver.failures["reboot"]
    await action(cloud, sid, {"reboot": {"type": "HARD"}})
    s = await wait_status(cloud, sid, {"ACTIVE", "ERROR"})
    assert (s["status"], s["OS-EXT-STS:power_state"]) == ("ACTIVE", 1)
    assert "fault" not in s


async def test_failed_reboot_of_a_running_guest_stays_active_with_an_error_event(cloud):
    server = await active_server(cloud)
    sid = server["id"]
    agent_of(cloud, server).driver.failures["reboot"] = "reboot refused"
    req = await action(cloud, sid, {"reboot": {"type": "SOFT"}})
    s = await wait_status(cloud, sid, {"ACTIVE", "ERROR"})
    assert (s["status"], s["OS-EXT-STS:power_state"], s["OS-EXT-STS:task_state"]) == ("ACTIVE", 1, None)
    act = await events_of(cloud, sid, req)
    assert act["message"] == "Error" and act["events"][0]["result"] == "Error"
    assert "reboot refused" in await faults_of(cloud, sid)


async def test_failed_power_actions_end_their_task_with_a_fault_and_an_error_event(cloud):
    """stop/pause (Nova: reverts_task_state + wrap_instance_fault): the vm_state stays, the
    task ends, a fault is recorded and the event is Error — whatever the driver raised."""
    server = await active_server(cloud)
    sid = server["id"]
    driver = agent_of(cloud, server).driver
    driver.failures["power_off"] = "ACPI is broken"
    req = await action(cloud, sid, {"os-stop": None})
    s = await wait_status(cloud, sid, {"ACTIVE", "SHUTOFF", "ERROR"})
    assert (s["status"], s["OS-EXT-STS:task_state"], s["OS-EXT-STS:power_state"]) == ("ACTIVE", None, 1)
    act = await events_of(cloud, sid, req)
    assert [(e["event"], e["result"]) for e in act["events"]] == [("compute_stop_instance", "Error")]
    assert "ACPI is broken" in act["events"][0]["traceback"]

    async def crash(_inst: Any) -> None:
        raise RuntimeError("driver bug")

    driver.pause = crash  # not even a DriverError: still a fault, never a stuck task
    req = await action(cloud, sid, {"pause": None})
    s = await wait_status(cloud, sid, {"ACTIVE", "PAUSED", "ERROR"})
    assert (s["status"], s["OS-EXT-STS:task_state"]) == ("ACTIVE", None)
    act = await events_of(cloud, sid, req)
    assert [(e["event"], e["result"]) for e in act["events"]] == [("compute_pause_instance", "Error")]
    assert await faults_of(cloud, sid) == ["ACPI is broken", "RuntimeError: driver bug"]
