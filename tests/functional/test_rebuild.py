"""rebuild (issue 11) on the fake driver, SQLite and PostgreSQL: a new root disk from a new
image on the same host, the server's new definition handed to the driver (hostname, metadata,
key, user data: what a config drive is made of), and Nova's microversion boundaries."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import pytest

from tests.conftest import Cloud
from tests.functional.helpers import make_person, wait_status
from tests.functional.test_snapshot import (  # noqa: F401  (fixtures)
    action,
    active_server,
    cloud_settings,
    driver_of,
    fake_options,
    upload_image,
)

C = "/compute/v2.1"


def guest_definition(cloud: Cloud, server: dict[str, Any]) -> Any:
    return driver_of(cloud, server).guests[server["id"]].instance


async def test_rebuild_replaces_the_disk(cloud: Cloud) -> None:
    old = await upload_image(cloud, b"OLD-IMAGE\n")
    new = await upload_image(cloud, b"NEW-IMAGE\n")
    server = await active_server(cloud, old)
    sid = server["id"]
    host = server["OS-EXT-SRV-ATTR:host"]
    driver_of(cloud, server).write_disk(sid, "scribbles\n")
    r = await cloud.post(f"{C}/servers/{sid}/metadata", json={"metadata": {"old": "1"}})
    assert r.status == 200, r

    body = {"rebuild": {"imageRef": new, "name": "renewed", "adminPass": "s3cret", "metadata": {"role": "db"}}}
    r = await action(cloud, sid, body)
    assert r.status == 202, r
    shown = r.body["server"]
    assert shown["status"] == "REBUILD"
    assert shown["image"]["id"] == new
    assert shown["name"] == "renewed"
    assert shown["adminPass"] == "s3cret"
    assert shown["metadata"] == {"role": "db"}
    assert shown["OS-EXT-STS:task_state"] == "rebuilding"
    assert r.headers["Location"].endswith(f"/servers/{sid}")

    done = await wait_status(cloud, sid, "ACTIVE")
    assert done["OS-EXT-SRV-ATTR:host"] == host
    assert done["image"]["id"] == new
    assert driver_of(cloud, done).disk_content(sid) == "NEW-IMAGE\n"
    definition = guest_definition(cloud, done)
    assert definition.metadata == {"role": "db"} and definition.image.id == new
    actions = (await cloud.get(f"{C}/servers/{sid}/os-instance-actions")).body["instanceActions"]
    assert "rebuild" in [a["action"] for a in actions]


async def test_rebuild_of_a_stopped_server_ends_shutoff(cloud: Cloud) -> None:
    image = await upload_image(cloud, b"IMG\n")
    server = await active_server(cloud, image)
    sid = server["id"]
    assert (await cloud.post(f"{C}/servers/{sid}/action", json={"os-stop": None})).status == 202
    await wait_status(cloud, sid, "SHUTOFF")
    r = await action(cloud, sid, {"rebuild": {"imageRef": image}})
    assert r.status == 202, r
    assert r.body["server"]["status"] == "REBUILD"
    done = await wait_status(cloud, sid, "SHUTOFF")
    assert done["OS-EXT-STS:power_state"] == 4


async def test_rebuild_state_and_lock_checks(cloud: Cloud) -> None:
    alice = await make_person(cloud, "alice", "lab", "member")
    image = await upload_image(cloud, b"IMG\n")
    server = await active_server(cloud, image, token=alice.token)
    sid = server["id"]
    assert (await cloud.post(f"{C}/servers/{sid}/action", json={"lock": None})).status == 202
    r = await action(cloud, sid, {"rebuild": {"imageRef": image}}, token=alice.token)
    assert r.status == 409, r
    assert r.body["conflictingRequest"]["message"] == f"Instance {sid} is locked"
    assert (await cloud.post(f"{C}/servers/{sid}/action", json={"unlock": None})).status == 202

    assert (await cloud.post(f"{C}/servers/{sid}/action", json={"pause": None})).status == 202
    await wait_status(cloud, sid, "PAUSED")
    r = await action(cloud, sid, {"rebuild": {"imageRef": image}})
    assert r.status == 409, r
    assert r.body["conflictingRequest"]["message"] == f"Cannot 'rebuild' instance {sid} while it is in vm_state paused"
    assert (await cloud.post(f"{C}/servers/{sid}/action", json={"unpause": None})).status == 202
    await wait_status(cloud, sid, "ACTIVE")

    r = await action(cloud, sid, {"rebuild": {"imageRef": "00000000-0000-0000-0000-000000000000"}})
    assert r.status == 400 and r.body["badRequest"]["message"] == "Cannot find image for rebuild", r
    r = await action(cloud, sid, {"rebuild": {}})
    assert r.status == 400 and "'imageRef' is a required property" in r.body["badRequest"]["message"], r

    # An ERROR server can be rebuilt (Nova's way out of ERROR).
    await cloud.post(f"{C}/servers/{sid}/action", json={"os-resetState": {"state": "error"}})
    r = await action(cloud, sid, {"rebuild": {"imageRef": image}})
    assert r.status == 202, r
    await wait_status(cloud, sid, "ACTIVE")


def unexpected(field: str) -> str:
    return f"Additional properties are not allowed ('{field}' was unexpected)"


async def test_rebuild_microversions(cloud: Cloud) -> None:
    image = await upload_image(cloud, b"IMG\n")
    server = await active_server(cloud, image)
    sid = server["id"]
    r = await cloud.post(f"{C}/os-keypairs", json={"keypair": {"name": "k2"}}, microversion="2.10")
    assert r.status in (200, 201), r

    async def rebuild(mv: str, **extra: Any) -> Any:
        resp = await action(cloud, sid, {"rebuild": {"imageRef": image, **extra}}, mv=mv)
        if resp.status == 202:
            await wait_status(cloud, sid, "ACTIVE")
        return resp

    for mv, field, value in (
        ("2.53", "key_name", "k2"),
        ("2.56", "user_data", base64.b64encode(b"#!/bin/sh\n").decode()),
        ("2.62", "trusted_image_certificates", ["cert"]),
        ("2.89", "hostname", "new-host"),
    ):
        r = await rebuild(mv, **{field: value})
        assert r.status == 400, (mv, r)
        assert unexpected(field) in r.body["badRequest"]["message"], r

    r = await rebuild("2.54", key_name="k2")
    assert r.status == 202, r
    assert r.body["server"]["key_name"] == "k2"
    assert guest_definition(cloud, server).key_name == "k2"
    assert "user_data" not in r.body["server"]
    assert "OS-EXT-STS:vm_state" not in r.body["server"]  # hidden before 2.75, as Nova

    data = base64.b64encode(b"#!/bin/sh\necho hi\n").decode()
    r = await rebuild("2.57", user_data=data)
    assert r.status == 202, r
    assert r.body["server"]["user_data"] == data
    assert guest_definition(cloud, server).user_data == data
    r = await rebuild("2.57", user_data="not base64!")
    assert r.status == 400 and r.body["badRequest"]["message"] == "User data needs to be valid base 64.", r

    r = await rebuild("2.63", trusted_image_certificates=["cert-1"])
    assert r.status == 400, r
    assert "not supported" in r.body["badRequest"]["message"]
    r = await rebuild("2.63", trusted_image_certificates=None)
    assert r.status == 202, r

    r = await rebuild("2.90", hostname="fresh-name")
    assert r.status == 202, r
    assert r.body["server"]["OS-EXT-SRV-ATTR:hostname"] == "fresh-name"
    assert r.body["server"]["OS-EXT-STS:vm_state"] == "active"
    assert guest_definition(cloud, server).hostname == "fresh-name"

    r = await rebuild("2.54", key_name="no-such-key")
    assert r.status == 400 and r.body["badRequest"]["message"] == "Invalid key_name provided.", r
    r = await rebuild("2.54", key_name=None)
    assert r.status == 202 and r.body["server"]["key_name"] is None, r


@pytest.fixture
def failing_rebuild(fake_options: dict[str, Any]) -> None:  # noqa: F811
    fake_options.update(fail={"rebuild": "no room for the new disk"}, fail_name_prefix="bad")


@pytest.mark.usefixtures("failing_rebuild")
async def test_failed_rebuild_goes_to_error(cloud: Cloud) -> None:
    image = await upload_image(cloud, b"IMG\n")
    server = await active_server(cloud, image, name="bad-vm")
    r = await action(cloud, server["id"], {"rebuild": {"imageRef": image}})
    assert r.status == 202, r
    done = await wait_status(cloud, server["id"], "ERROR")
    assert "no room for the new disk" in done["fault"]["message"]
    await asyncio.sleep(0)
