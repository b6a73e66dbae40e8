"""createImage and createBackup (issue 11) on the fake driver, SQLite and PostgreSQL.

The fake hosts boot from the image's bytes (``image_files``), so a guest's disk is its
image's content plus what a test writes on it, and a server booted from a snapshot must
show the original's disk. The agent uploads the snapshot with an upload ticket for that one
image; the ticket opens nothing else.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from typing import Any

import pytest
import sqlalchemy as sa

from novalite.bus.errors import NotAuthorized
from novalite.config import Settings
from novalite.context import RequestContext
from novalite.db import schema as t
from novalite.identity import tickets
from tests.conftest import Cloud, make_settings
from tests.functional.helpers import create_server, make_person, wait_status

C = "/compute/v2.1"
G = "/image/v2"
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def fake_options() -> dict[str, Any]:
    return {"image_files": True}


@pytest.fixture
def cloud_settings(tmp_path, db_url: str, fake_options: dict[str, Any]) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(tmp_path, db_url, driver_options=fake_options)


async def upload_image(cloud: Cloud, data: bytes, token: str | None = "admin", **props: str) -> str:
    """An active public image with ``data``, through the image API."""
    body = {"name": "base", "disk_format": "raw", "container_format": "bare", "visibility": "public", **props}
    r = await cloud.post(f"{G}/images", json=body, token=token)
    assert r.status == 201, r
    image_id: str = r.body["id"]
    r = await cloud.put(f"{G}/images/{image_id}/file", data=data, headers=OCTET, token=token)
    assert r.status == 204, r
    return image_id


async def active_server(cloud: Cloud, image: str, name: str = "vm", token: str | None = "admin") -> dict[str, Any]:
    r = await create_server(cloud, image, name=name, token=token)
    assert r.status == 202, r
    return await wait_status(cloud, r.body["server"]["id"], "ACTIVE", token=token)


def driver_of(cloud: Cloud, server: dict[str, Any]) -> Any:
    return next(a for a in cloud.rt.services["ComputeAgent"] if a.host == server["OS-EXT-SRV-ATTR:host"]).driver


async def action(cloud: Cloud, server_id: str, body: dict[str, Any], mv: str = "2.100", **kw: Any) -> Any:
    return await cloud.post(f"{C}/servers/{server_id}/action", json=body, microversion=mv, **kw)


async def wait_image(cloud: Cloud, image_id: str, status: str = "active", timeout: float = 10.0) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await cloud.get(f"{G}/images/{image_id}")
        if r.status == 200 and r.body["status"] == status:
            return dict(r.body)
        assert asyncio.get_running_loop().time() < deadline, r
        await asyncio.sleep(0.02)


async def wait_image_gone(cloud: Cloud, image_id: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await cloud.get(f"{G}/images/{image_id}")).status != 404:
        assert asyncio.get_running_loop().time() < deadline, f"image {image_id} still there"
        await asyncio.sleep(0.02)


async def test_create_image_end_to_end(cloud: Cloud) -> None:
    base = await upload_image(cloud, b"BASE-DISK\n", os_distro="cirros")
    server = await active_server(cloud, base)
    driver_of(cloud, server).write_disk(server["id"], "marker written before the snapshot\n")
    original = driver_of(cloud, server).disk_content(server["id"])

    r = await action(cloud, server["id"], {"createImage": {"name": "snap1", "metadata": {"purpose": "experiment"}}})
    assert r.status == 202, r
    assert "Location" not in r.headers
    image_id = r.body["image_id"]
    image = await wait_image(cloud, image_id)
    assert image["name"] == "snap1"
    assert image["image_type"] == "snapshot"
    assert image["instance_uuid"] == server["id"]
    assert image["base_image_ref"] == base
    assert image["os_distro"] == "cirros"  # the server's image properties are inherited
    assert image["purpose"] == "experiment"
    assert image["owner"] == server["tenant_id"]
    assert image["visibility"] == "private"
    assert image["size"] == len(original.encode("latin-1"))

    done = await wait_status(cloud, server["id"], "ACTIVE")
    assert done["OS-EXT-STS:task_state"] is None
    events = (await cloud.get(f"{C}/servers/{server['id']}/os-instance-actions")).body["instanceActions"]
    assert "createImage" in [e["action"] for e in events]

    # A server booted from the snapshot has the original's disk, marker included.
    clone = await active_server(cloud, image_id, name="clone")
    assert driver_of(cloud, clone).disk_content(clone["id"]) == original


async def test_create_image_location_before_2_45(cloud: Cloud) -> None:
    server = await active_server(cloud, await upload_image(cloud, b"disk"))
    r = await action(cloud, server["id"], {"createImage": {"name": "old-style"}}, mv="2.44")
    assert r.status == 202, r
    assert not r.body
    location = r.headers["Location"]
    image_id = location.rsplit("/", 1)[-1]
    assert location.endswith(f"/images/{image_id}")
    await wait_image(cloud, image_id)


@pytest.fixture
def slow_snapshot(fake_options: dict[str, Any]) -> None:
    fake_options["snapshot_delay"] = 1.0


@pytest.mark.usefixtures("slow_snapshot")
async def test_task_states_and_conflicts(cloud: Cloud) -> None:
    server = await active_server(cloud, await upload_image(cloud, b"disk"))
    sid = server["id"]
    r = await action(cloud, sid, {"createImage": {"name": "slow"}})
    assert r.status == 202, r
    seen: list[Any] = []
    image_seen: set[str] = set()
    tried = False
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        body = (await cloud.get(f"{C}/servers/{sid}", microversion="2.100")).body["server"]
        task = body["OS-EXT-STS:task_state"]
        if not seen or seen[-1] != task:
            seen.append(task)
        assert body["status"] == "ACTIVE", body
        img = await cloud.get(f"{G}/images/{r.body['image_id']}")
        image_seen.add(img.body["status"])
        if task == "image_snapshot" and not tried:
            # Another snapshot or a backup meanwhile: 409 with Nova's words (the driver copies
            # the disk for a second; the state may have moved on by the time we ask).
            tried = True
            again = await action(cloud, sid, {"createImage": {"name": "again"}})
            assert again.status == 409, again
            assert re.fullmatch(
                f"Cannot 'createImage' instance {sid} while it is in task_state "
                "image_(snapshot|pending_upload|uploading)",
                again.body["conflictingRequest"]["message"],
            ), again
            backup = await action(cloud, sid, {"createBackup": {"name": "b", "backup_type": "daily", "rotation": 1}})
            assert backup.status == 409, backup
        if task is None and len(seen) > 1:
            break
        assert asyncio.get_running_loop().time() < deadline, seen
        await asyncio.sleep(0.01)
    order = ["image_snapshot_pending", "image_snapshot", "image_pending_upload", "image_uploading", None]
    assert "image_snapshot" in seen
    assert [s for s in order if s in seen] == seen, seen
    assert "queued" in image_seen
    await wait_image(cloud, r.body["image_id"])


async def test_state_checks(cloud: Cloud) -> None:
    server = await active_server(cloud, await upload_image(cloud, b"disk"))
    sid = server["id"]
    r = await cloud.post(f"{C}/servers/{sid}/action", json={"os-resetState": {"state": "error"}})
    assert r.status == 202, r
    for body, name in (
        ({"createImage": {"name": "x"}}, "createImage"),
        ({"createBackup": {"name": "x", "backup_type": "daily", "rotation": 1}}, "createBackup"),
    ):
        r = await action(cloud, sid, body)
        assert r.status == 409, r
        assert (
            r.body["conflictingRequest"]["message"] == f"Cannot '{name}' instance {sid} while it is in vm_state error"
        )
    # Validation as Nova's schema.
    r = await action(cloud, sid, {"createImage": {}})
    assert r.status == 400 and "'name' is a required property" in r.body["badRequest"]["message"], r
    r = await action(cloud, sid, {"createBackup": {"name": "x", "backup_type": "daily", "rotation": -1}})
    assert r.status == 400, r
    # A stopped server can be snapshotted (and stays SHUTOFF).
    await cloud.post(f"{C}/servers/{sid}/action", json={"os-resetState": {"state": "active"}})
    assert (await cloud.post(f"{C}/servers/{sid}/action", json={"os-stop": None})).status == 202
    await wait_status(cloud, sid, "SHUTOFF")
    r = await action(cloud, sid, {"createImage": {"name": "off"}})
    assert r.status == 202, r
    await wait_image(cloud, r.body["image_id"])
    assert (await wait_status(cloud, sid, "SHUTOFF"))["OS-EXT-STS:vm_state"] == "stopped"


async def test_image_metadata_quota_before_2_39(cloud: Cloud) -> None:
    server = await active_server(cloud, await upload_image(cloud, b"disk"))
    many = {f"k{i}": "v" for i in range(cloud.rt.settings.quota_metadata_items + 1)}
    r = await action(cloud, server["id"], {"createImage": {"name": "m", "metadata": many}}, mv="2.38")
    assert r.status == 403, r
    assert r.body["forbidden"]["message"] == "Image metadata limit exceeded"
    r = await action(cloud, server["id"], {"createImage": {"name": "m", "metadata": many}}, mv="2.39")
    assert r.status == 202, r


@pytest.fixture
def failing_snapshot(fake_options: dict[str, Any]) -> None:
    fake_options.update(fail={"snapshot": "disk read error"}, fail_name_prefix="bad")


@pytest.mark.usefixtures("failing_snapshot")
async def test_snapshot_failure_deletes_the_half_image(cloud: Cloud) -> None:
    server = await active_server(cloud, await upload_image(cloud, b"disk"), name="bad-vm")
    sid = server["id"]
    r = await action(cloud, sid, {"createImage": {"name": "doomed"}})
    assert r.status == 202, r
    await wait_image_gone(cloud, r.body["image_id"])
    done = await wait_status(cloud, sid, "ACTIVE")
    assert done["OS-EXT-STS:task_state"] is None
    actions = (await cloud.get(f"{C}/servers/{sid}/os-instance-actions")).body["instanceActions"]
    snap = next(a for a in actions if a["action"] == "createImage")
    detail = (await cloud.get(f"{C}/servers/{sid}/os-instance-actions/{snap['request_id']}", microversion="2.51")).body
    event = next(e for e in detail["instanceAction"]["events"] if e["event"] == "compute_snapshot_instance")
    assert event["result"] == "Error"
    assert "disk read error" in (event.get("traceback") or "")
    listed = (await cloud.get(f"{G}/images")).body["images"]
    assert all(i.get("instance_uuid") != sid for i in listed)


async def test_backup_rotation(cloud: Cloud) -> None:
    server = await active_server(cloud, await upload_image(cloud, b"disk"))
    sid = server["id"]
    made = []
    for n in range(3):
        r = await action(cloud, sid, {"createBackup": {"name": f"b{n}", "backup_type": "daily", "rotation": 2}})
        assert r.status == 202, r
        made.append(r.body["image_id"])
        await wait_status(cloud, sid, "ACTIVE")
    weekly = await action(cloud, sid, {"createBackup": {"name": "w", "backup_type": "weekly", "rotation": "1"}})
    assert weekly.status == 202, weekly
    await wait_status(cloud, sid, "ACTIVE")
    await wait_image_gone(cloud, made[0])
    for image_id in made[1:]:
        image = await wait_image(cloud, image_id)
        assert image["image_type"] == "backup" and image["backup_type"] == "daily"
    assert (await wait_image(cloud, weekly.body["image_id"]))["backup_type"] == "weekly"

    # Before 2.45: Location when rotation > 0, none for rotation 0 (which deletes them all).
    r = await action(cloud, sid, {"createBackup": {"name": "z", "backup_type": "daily", "rotation": 0}}, mv="2.44")
    assert r.status == 202 and "Location" not in r.headers, r
    await wait_status(cloud, sid, "ACTIVE")
    for image_id in made[1:]:
        await wait_image_gone(cloud, image_id)
    assert (await cloud.get(f"{G}/images/{weekly.body['image_id']}")).status == 200
    r = await action(cloud, sid, {"createBackup": {"name": "y", "backup_type": "daily", "rotation": 3}}, mv="2.44")
    assert r.status == 202, r
    assert re.search(r"/images/[0-9a-f-]{36}$", r.headers["Location"]), r.headers


async def queued_image(cloud: Cloud, token: str | None = "admin") -> str:
    r = await cloud.post(
        f"{G}/images", json={"name": "q", "disk_format": "raw", "container_format": "bare"}, token=token
    )
    assert r.status == 201, r
    return str(r.body["id"])


async def test_upload_ticket_opens_one_upload_only(cloud: Cloud) -> None:
    """The agent's credential: PUT of that image's data, nothing else (401/403 otherwise)."""
    mine, other = await queued_image(cloud), await queued_image(cloud)
    owner = (await cloud.get(f"{G}/images/{mine}")).body["owner"]
    key = await tickets.ticket_key(cloud.rt)
    ticket = tickets.mint_upload_ticket(key, mine, owner, 60)
    hdr = {**OCTET, "X-Image-Ticket": ticket}

    assert (await cloud.put(f"{G}/images/{other}/file", data=b"x", headers=hdr, token=None)).status == 401
    assert (await cloud.put(f"{G}/images/{mine}/stage", data=b"x", headers=hdr, token=None)).status == 401
    assert (await cloud.get(f"{G}/images/{mine}/file", headers=hdr, token=None)).status == 401
    assert (await cloud.get(f"{G}/images/{mine}", headers=hdr, token=None)).status == 401
    assert (await cloud.delete(f"{G}/images/{mine}", headers=hdr, token=None)).status == 401
    assert (await cloud.get(f"{C}/servers", headers=hdr, token=None)).status == 401
    # A download ticket is no upload ticket, and an upload ticket of another project is refused.
    download = tickets.mint_image_ticket(key, mine, owner, 60)
    r = await cloud.put(f"{G}/images/{mine}/file", data=b"x", headers={**OCTET, "X-Image-Ticket": download}, token=None)
    assert r.status == 401, r
    stranger = await make_person(cloud, "eve", "elsewhere", "member")
    foreign = tickets.mint_upload_ticket(key, mine, stranger.project_id, 60)
    r = await cloud.put(f"{G}/images/{mine}/file", data=b"x", headers={**OCTET, "X-Image-Ticket": foreign}, token=None)
    assert r.status in (403, 404), r
    expired = tickets.mint_upload_ticket(key, mine, owner, 1, now=0)
    r = await cloud.put(f"{G}/images/{mine}/file", data=b"x", headers={**OCTET, "X-Image-Ticket": expired}, token=None)
    assert r.status == 401, r
    # What it is for.
    assert (await cloud.put(f"{G}/images/{mine}/file", data=b"data", headers=hdr, token=None)).status == 204
    assert (await cloud.get(f"{G}/images/{mine}")).body["status"] == "active"
    assert (await cloud.get(f"{G}/images/{other}")).body["status"] == "queued"


async def test_member_snapshots_own_server(cloud: Cloud) -> None:
    """A project member's snapshot is that project's private image; another project sees nothing."""
    alice = await make_person(cloud, "alice", "lab", "member")
    server = await active_server(cloud, await upload_image(cloud, b"disk"), token=alice.token)
    r = await action(cloud, server["id"], {"createImage": {"name": "mine"}}, token=alice.token)
    assert r.status == 202, r
    image = await wait_image(cloud, r.body["image_id"])
    assert image["owner"] == alice.project_id and image["user_id"] == alice.user_id
    eve = await make_person(cloud, "eve", "elsewhere", "member")
    assert (await cloud.get(f"{G}/images/{image['id']}", token=eve.token)).status == 404
    r = await action(cloud, server["id"], {"createImage": {"name": "theirs"}}, token=eve.token)
    assert r.status == 404, r


@pytest.fixture
def stuck_snapshot(fake_options: dict[str, Any]) -> None:
    fake_options["snapshot_delay"] = 60


@pytest.mark.usefixtures("stuck_snapshot")
async def test_agent_dies_mid_snapshot(cloud: Cloud) -> None:
    """The agent dies while the driver copies the disk: at its next start the server is ACTIVE
    again with the fault recorded, and the half image is deleted."""
    server = await active_server(cloud, await upload_image(cloud, b"disk"))
    sid = server["id"]
    r = await action(cloud, sid, {"createImage": {"name": "interrupted"}})
    assert r.status == 202, r
    image_id = r.body["image_id"]
    deadline = asyncio.get_running_loop().time() + 10
    while (await cloud.get(f"{C}/servers/{sid}", microversion="2.100")).body["server"][
        "OS-EXT-STS:task_state"
    ] != "image_snapshot":
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    # The agent dies: its operation is gone with it (the copy never finishes), the guest stays.
    agent = next(a for a in cloud.rt.services["ComputeAgent"] if a.host == server["OS-EXT-SRV-ATTR:host"])
    agent.driver.snapshot_delay = 0
    await agent.reconcile(RequestContext.admin())

    done = await wait_status(cloud, sid, "ACTIVE")
    assert done["OS-EXT-STS:task_state"] is None
    await wait_image_gone(cloud, image_id)
    async with cloud.rt.db.connect() as conn:
        faults = await conn.execute(
            sa.select(t.instance_faults.c.message).where(t.instance_faults.c.instance_uuid == sid)
        )
        assert any("interrupted" in m for (m,) in faults)


async def test_conductor_mints_upload_tickets_for_its_hosts_snapshots_only(cloud: Cloud) -> None:
    """A host gets an upload ticket only for a queued snapshot image of a server on that host,
    of the server's project: not another host's, nor an image a user made naming the server."""
    server = await active_server(cloud, await upload_image(cloud, b"disk"))
    sid, host = server["id"], server["OS-EXT-SRV-ATTR:host"]
    other = "hv-2" if host == "hv-1" else "hv-1"
    conductor = cloud.rt.services["ConductorManager"][0]
    alice = await make_person(cloud, "alice", "lab", "member")
    body = {"name": "fake", "disk_format": "raw", "container_format": "bare", "instance_uuid": sid}
    r = await cloud.post(f"{G}/images", json=body, token=alice.token)
    assert r.status == 201, r
    forged = r.body["id"]
    as_host = dataclasses.replace(RequestContext.admin(), sender=f"novalite-agent-{host}")
    as_other = dataclasses.replace(RequestContext.admin(), sender=f"novalite-agent-{other}")
    with pytest.raises(PermissionError):
        await conductor.image_upload_ticket(as_host, instance_uuid=sid, host=host, image_id=forged)
    with pytest.raises(NotAuthorized):
        await conductor.image_upload_ticket(as_other, instance_uuid=sid, host=host, image_id=forged)
    with pytest.raises(PermissionError):
        await conductor.image_upload_ticket(as_other, instance_uuid=sid, host=other, image_id=forged)


@pytest.fixture
def slowish_snapshot(fake_options: dict[str, Any]) -> None:
    fake_options["snapshot_delay"] = 10  # longer than the conductor's check (every 5 s)


async def force_down(cloud: Cloud, host: str, down: bool) -> None:
    async with cloud.rt.db.begin() as conn:
        await conn.execute(t.services.update().where(t.services.c.host == host).values(forced_down=down))


@pytest.mark.usefixtures("slowish_snapshot")
async def test_host_down_mid_snapshot(cloud: Cloud) -> None:
    """The host goes down while its driver copies the disk (and its agent never says more):
    the conductor ends the snapshot as the agent's restart would — ACTIVE, no task, the
    action's Error event says why, the half image is deleted. When the agent's copy ends
    after all, it finds the task gone and drops its snapshot: nothing changes again."""
    server = await active_server(cloud, await upload_image(cloud, b"disk"))
    sid, host = server["id"], server["OS-EXT-SRV-ATTR:host"]
    r = await action(cloud, sid, {"createImage": {"name": "cut-off"}})
    assert r.status == 202, r
    image_id = r.body["image_id"]
    deadline = asyncio.get_running_loop().time() + 10
    while (await cloud.get(f"{C}/servers/{sid}", microversion="2.100")).body["server"][
        "OS-EXT-STS:task_state"
    ] != "image_snapshot":
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.02)
    await force_down(cloud, host, True)
    done = await wait_status(cloud, sid, "ACTIVE", timeout=15)
    assert done["OS-EXT-STS:task_state"] is None
    await wait_image_gone(cloud, image_id)
    r = await cloud.get(f"{C}/servers/{sid}/os-instance-actions", microversion="2.100")
    request_id = next(a["request_id"] for a in r.body["instanceActions"] if a["action"] == "createImage")
    r = await cloud.get(f"{C}/servers/{sid}/os-instance-actions/{request_id}", microversion="2.100")
    events = r.body["instanceAction"]["events"]
    assert [e["result"] for e in events] == ["Error"], events
    assert f"the compute host {host} went down" in events[0]["traceback"]

    await force_down(cloud, host, False)
    # The copy ends (snapshot_delay): the agent drops the stale snapshot, records nothing.
    deadline = asyncio.get_running_loop().time() + 10
    while asyncio.get_running_loop().time() < deadline:
        body = (await cloud.get(f"{C}/servers/{sid}", microversion="2.100")).body["server"]
        assert body["status"] == "ACTIVE" and body["OS-EXT-STS:task_state"] is None, body
        await asyncio.sleep(0.2)
    r = await cloud.get(f"{C}/servers/{sid}/os-instance-actions/{request_id}", microversion="2.100")
    assert [e["result"] for e in r.body["instanceAction"]["events"]] == ["Error"], r.body
    assert (await cloud.get(f"{G}/images/{image_id}")).status == 404
    # And it can be snapshotted again.
    r = await action(cloud, sid, {"createImage": {"name": "whole"}})
    assert r.status == 202, r
    await wait_image(cloud, r.body["image_id"], timeout=15)
