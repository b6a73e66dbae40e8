"""The agent process dies mid-snapshot (issue 11): real ``novalite serve`` and ``novalite
agent`` processes, the agent killed with SIGKILL while its driver copies the guest's disk.

When the agent is back, the server is ACTIVE again with no task and a fault saying the
snapshot was interrupted; the half-made image is deleted (never left ``queued`` or
``saving``), and a new snapshot of the same server then works.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.conftest import Cloud
from tests.multiprocess.conftest import MV, Deployment, create_server, make_image, wait_for, wait_hosts_up
from tests.multiprocess.test_crash_recovery import pg_rows

pytestmark = [pytest.mark.rabbit, pytest.mark.postgres]

#: Long enough that the kill lands while the driver is copying the disk.
SNAPSHOT_DELAY = 20


async def server(api: Cloud, sid: str) -> dict[str, Any]:
    r = await api.get(f"/compute/v2.1/servers/{sid}", microversion=MV)
    assert r.status == 200, r
    return dict(r.body["server"])


async def snapshot_images(api: Cloud, sid: str) -> list[dict[str, Any]]:
    r = await api.get("/image/v2/images")
    assert r.status == 200, r
    return [i for i in r.body["images"] if i.get("instance_uuid") == sid]


async def test_agent_killed_mid_snapshot(deployment: Deployment) -> None:
    dep = deployment
    ctl = await dep.start_controller()
    # The guest outlives the killed agent, as a real hypervisor's does (the state file).
    state_file = str(dep.tmp / "hv-a.guests.json")
    options = {"image_files": True, "snapshot_delay": SNAPSHOT_DELAY, "state_file": state_file}
    # The agent fetches images and uploads the snapshot through the controller's API.
    agent = dep.start_agent("hv-a", driver_options=options, NOVALITE_PUBLIC_URL=ctl.base)
    api = dep.api(ctl)
    await wait_hosts_up(api, {"hv-a"}, timeout=45)
    image = await make_image(api)
    status, body = await create_server(api, image, "precious")
    assert status == 202, body
    sid = body["server"]["id"]
    await wait_for(lambda: _status_is(api, sid, "ACTIVE"), 30, "the server to be ACTIVE", dep=dep)

    r = await api.post(f"/compute/v2.1/servers/{sid}/action", json={"createImage": {"name": "half"}}, microversion=MV)
    assert r.status == 202, r
    image_id = r.body["image_id"]

    async def copying() -> bool:
        return (await server(api, sid))["OS-EXT-STS:task_state"] == "image_snapshot"

    await wait_for(copying, 20, "the snapshot to start", dep=dep)
    agent.kill()
    r = await api.get(f"/image/v2/images/{image_id}")
    assert r.status == 200 and r.body["status"] == "queued", r  # the half image, as the agent left it

    agent = dep.respawn(agent)

    async def recovered() -> dict[str, Any] | None:
        s = await server(api, sid)
        return s if s["status"] == "ACTIVE" and s["OS-EXT-STS:task_state"] is None else None

    await wait_for(recovered, 45, "the server to be ACTIVE with no task again", dep=dep)
    # The fault: the createImage action's event is an Error saying why (Nova shows a
    # server's fault only in ERROR, so this is where a user sees it), and it is recorded.
    r = await api.get(f"/compute/v2.1/servers/{sid}/os-instance-actions", microversion=MV)
    create = next(a for a in r.body["instanceActions"] if a["action"] == "createImage")
    r = await api.get(f"/compute/v2.1/servers/{sid}/os-instance-actions/{create['request_id']}", microversion=MV)
    events = r.body["instanceAction"]["events"]
    assert [e["result"] for e in events] == ["Error"], events
    assert "interrupted" in events[0]["traceback"], events
    assert r.body["instanceAction"]["message"] == "Error", r.body
    faults = await pg_rows(dep, f"SELECT message FROM instance_faults WHERE instance_uuid = '{sid}'")
    assert [f["message"] for f in faults] == ["The snapshot was interrupted: the compute agent of hv-a restarted."]

    async def image_gone() -> bool:
        return (await api.get(f"/image/v2/images/{image_id}")).status == 404

    await wait_for(image_gone, 20, "the half image to be deleted", dep=dep)
    assert await snapshot_images(api, sid) == []
    # The broker hands the dead agent's snapshot message back: it must not start a copy
    # that ends the server's state again nor leave an image behind; the server stays as is.
    for _ in range(8):
        s = await server(api, sid)
        assert s["status"] == "ACTIVE" and s["OS-EXT-STS:task_state"] is None, s
        await asyncio.sleep(0.25)
    assert await snapshot_images(api, sid) == []

    # And the server can be snapshotted again (its next snapshot is slow too: wait it out).
    r = await api.post(f"/compute/v2.1/servers/{sid}/action", json={"createImage": {"name": "whole"}}, microversion=MV)
    assert r.status == 202, r
    again = r.body["image_id"]

    async def active_image() -> bool:
        r = await api.get(f"/image/v2/images/{again}")
        return r.status == 200 and r.body["status"] == "active"

    await wait_for(active_image, SNAPSHOT_DELAY + 30, "the new snapshot to be active", dep=dep)


async def _status_is(api: Cloud, sid: str, status: str) -> bool:
    return (await server(api, sid))["status"] == status
