"""Glance v2 subset over real HTTP, on SQLite and PostgreSQL.

Tokens are issued straight into the database (projects, users and role assignments
made here), so these tests exercise the image API alone, with several projects and
roles, without depending on the identity API.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import struct
from dataclasses import dataclass
from typing import Any

import pytest

from novalite.images.files import image_path
from novalite.store.images import get_image
from tests.functional.helpers import Who, make_person

PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
OCTET = {"Content-Type": "application/octet-stream"}


@dataclass
class People:
    admin: Who
    alice: Who  # member of alpha
    reed: Who  # reader of alpha
    bob: Who  # member of beta


@pytest.fixture
async def people(cloud: Any) -> People:
    return People(
        admin=await make_person(cloud, "admin", "admin", "admin"),
        alice=await make_person(cloud, "alice", "alpha", "member"),
        reed=await make_person(cloud, "reed", "alpha", "reader"),
        bob=await make_person(cloud, "bob", "beta", "member"),
    )


async def create(cloud: Any, who: Who, **attrs: Any) -> dict[str, Any]:
    attrs.setdefault("disk_format", "raw")
    attrs.setdefault("container_format", "bare")
    resp = await cloud.post("/image/v2/images", attrs, token=who.token)
    assert resp.status == 201, resp
    return resp.body


async def upload(cloud: Any, who: Who, image_id: str, data: bytes, **headers: str) -> Any:
    return await cloud.request(
        "PUT", f"/image/v2/images/{image_id}/file", data=data, token=who.token, headers={**OCTET, **headers}
    )


async def patch(cloud: Any, who: Who, image_id: str, ops: Any, headers: dict[str, str] | None = None) -> Any:
    return await cloud.request(
        "PATCH", f"/image/v2/images/{image_id}", data=json.dumps(ops), token=who.token, headers=headers or PATCH
    )


def qcow2_header(virtual_size: int) -> bytes:
    return b"QFI\xfb" + struct.pack(">I", 3) + b"\0" * 16 + struct.pack(">Q", virtual_size) + b"\0" * 72


# -- discovery --------------------------------------------------------------------------


async def test_version_discovery(cloud: Any) -> None:
    for path in ("/image", "/image/"):
        resp = await cloud.get(path, token=None)
        assert resp.status == 300
        versions = resp.body["versions"]
        assert versions[0] == {
            "id": "v2.16",
            "status": "CURRENT",
            "links": [{"rel": "self", "href": f"{cloud.base}/image/v2/"}],
        }
        assert {v["status"] for v in versions[1:]} == {"SUPPORTED"}
        assert versions[-1]["id"] == "v2.0"
    resp = await cloud.get("/image/versions", token=None)
    assert resp.status == 200 and resp.body["versions"][0]["id"] == "v2.16"


async def test_requires_token(cloud: Any) -> None:
    resp = await cloud.get("/image/v2/images", token=None)
    assert resp.status == 401


# -- create, upload, download -----------------------------------------------------------


async def test_create_upload_download(cloud: Any, people: People) -> None:
    alice = people.alice
    image = await create(cloud, alice, name="cirros", hw_disk_bus="virtio", kernel_id="k1", tags=["a", "a", "b"])
    assert image["status"] == "queued"
    assert image["visibility"] == "shared"
    assert image["owner"] == alice.project_id
    assert image["protected"] is False and image["os_hidden"] is False
    assert image["size"] is None and image["checksum"] is None
    assert image["hw_disk_bus"] == "virtio" and image["kernel_id"] == "k1"
    assert image["tags"] == ["a", "b"]
    assert image["self"] == f"/v2/images/{image['id']}"
    assert image["file"] == f"/v2/images/{image['id']}/file"
    assert image["schema"] == "/v2/schemas/image"
    assert image["created_at"].endswith("Z")

    data = os.urandom(3 * 1024 * 1024 + 17)
    resp = await upload(cloud, alice, image["id"], data)
    assert resp.status == 204, resp

    shown = (await cloud.get(f"/image/v2/images/{image['id']}", token=alice.token)).body
    assert shown["status"] == "active"
    assert shown["size"] == len(data) == shown["virtual_size"]
    assert shown["checksum"] == hashlib.md5(data).hexdigest()
    assert shown["os_hash_algo"] == "sha512"
    assert shown["os_hash_value"] == hashlib.sha512(data).hexdigest()
    assert image_path(cloud.rt.settings, image["id"]).read_bytes() == data

    resp = await cloud.get(f"/image/v2/images/{image['id']}/file", token=alice.token)
    assert resp.status == 200
    assert resp.body == data
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["Content-MD5"] == hashlib.md5(data).hexdigest()

    # Upload again to an active image: 409.
    resp = await upload(cloud, alice, image["id"], b"more")
    assert resp.status == 409 and "active" in resp.body["message"]
    assert resp.body["title"] == "Conflict" and resp.body["code"] == "409 Conflict"

    # The compute side's lookup.
    async with cloud.rt.db.connect() as conn:
        record = await get_image(conn, image["id"], alice.ctx())
        assert record is not None and record["properties"]["hw_disk_bus"] == "virtio"
        assert await get_image(conn, image["id"], people.bob.ctx()) is None


async def test_qcow2_virtual_size_and_supplied_id(cloud: Any, people: People) -> None:
    image_id = "6f0b1a6e-8c44-4c3c-9d8e-5a1e8e1c2b3a"
    image = await create(cloud, people.alice, id=image_id, name="q", disk_format="qcow2")
    assert image["id"] == image_id
    data = qcow2_header(10 * 1024**3) + os.urandom(1000)
    assert (await upload(cloud, people.alice, image_id, data)).status == 204
    shown = (await cloud.get(f"/image/v2/images/{image_id}", token=people.alice.token)).body
    assert shown["virtual_size"] == 10 * 1024**3 and shown["size"] == len(data)
    resp = await cloud.post("/image/v2/images", {"id": image_id}, token=people.alice.token)
    assert resp.status == 409


async def test_download_without_data_and_upload_checks(cloud: Any, people: People) -> None:
    image = await create(cloud, people.alice, name="empty")
    resp = await cloud.get(f"/image/v2/images/{image['id']}/file", token=people.alice.token)
    assert resp.status == 204
    # Wrong content type for data.
    resp = await cloud.request(
        "PUT",
        f"/image/v2/images/{image['id']}/file",
        data=b"x",
        token=people.alice.token,
        headers={"Content-Type": "text/plain"},
    )
    assert resp.status == 415
    # Announced size mismatch: back to queued, no file.
    resp = await upload(cloud, people.alice, image["id"], b"abc", **{"X-OpenStack-Image-Size": "5"})
    assert resp.status == 400
    shown = (await cloud.get(f"/image/v2/images/{image['id']}", token=people.alice.token)).body
    assert shown["status"] == "queued"
    assert not image_path(cloud.rt.settings, image["id"]).exists()
    # Formats are required before data.
    bare = (await cloud.post("/image/v2/images", {"name": "noformat"}, token=people.alice.token)).body
    resp = await upload(cloud, people.alice, bare["id"], b"abc")
    assert resp.status == 400 and "disk_format" in resp.body["message"]


async def test_import_glance_direct(cloud: Any, people: People) -> None:
    image = await create(cloud, people.alice, name="imported")
    data = os.urandom(5000)
    resp = await cloud.request(
        "PUT", f"/image/v2/images/{image['id']}/stage", data=data, token=people.alice.token, headers=OCTET
    )
    assert resp.status == 204
    shown = (await cloud.get(f"/image/v2/images/{image['id']}", token=people.alice.token)).body
    assert shown["status"] == "uploading"
    resp = await cloud.post(
        f"/image/v2/images/{image['id']}/import", {"method": {"name": "glance-direct"}}, token=people.alice.token
    )
    assert resp.status == 202
    resp = await cloud.get(f"/image/v2/images/{image['id']}/file", token=people.alice.token)
    assert resp.status == 200 and resp.body == data
    info = await cloud.get("/image/v2/info/import", token=people.alice.token)
    assert info.body["import-methods"]["value"] == ["glance-direct"]


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("attrs", "status", "word"),
    [
        ({"disk_format": "floppy"}, 400, "disk_format"),
        ({"container_format": "zip"}, 400, "container_format"),
        ({"visibility": "everyone"}, 400, "visibility"),
        ({"name": "x" * 256}, 400, "name"),
        ({"min_disk": "big"}, 400, "min_disk"),
        ({"min_ram": -1}, 400, "min_ram"),
        ({"protected": "yes"}, 400, "protected"),
        ({"hw_disk_bus": 3}, 400, "hw_disk_bus"),
        ({"tags": "a"}, 400, "tags"),
        ({"id": "not-a-uuid"}, 400, "id"),
        ({"status": "active"}, 403, "status"),
        ({"size": 3}, 403, "size"),
        ({"checksum": "abc"}, 403, "checksum"),
        ({"deleted": True}, 403, "deleted"),
        ({"os_glance_foo": "x"}, 403, "os_glance_foo"),
        ({"visibility": "public"}, 403, "publicize_image"),
    ],
)
async def test_create_rejects(cloud: Any, people: People, attrs: dict, status: int, word: str) -> None:
    resp = await cloud.post("/image/v2/images", attrs, token=people.alice.token)
    assert resp.status == status, resp
    assert word in resp.body["message"]
    assert resp.body["code"].startswith(str(status))


async def test_admin_may_publish_and_reader_may_not_create(cloud: Any, people: People) -> None:
    image = await create(cloud, people.admin, name="pub", visibility="public")
    assert image["visibility"] == "public"
    resp = await cloud.post("/image/v2/images", {"name": "r"}, token=people.reed.token)
    assert resp.status == 403
    resp = await cloud.post("/image/v2/images", {"owner": people.bob.project_id}, token=people.alice.token)
    assert resp.status == 403
    resp = await cloud.request(
        "POST", "/image/v2/images", data="{bad", token=people.alice.token, headers={"Content-Type": "application/json"}
    )
    assert resp.status == 400


# -- list -------------------------------------------------------------------------------


async def test_list_filters_and_paging(cloud: Any, people: People) -> None:
    alice = people.alice
    ids = []
    for i in range(7):
        image = await create(
            cloud,
            alice,
            name=f"img-{i}",
            disk_format="qcow2" if i % 2 else "raw",
            tags=["even"] if i % 2 == 0 else [],
            os_distro="ubuntu" if i < 3 else "debian",
        )
        ids.append(image["id"])
    await upload(cloud, alice, ids[0], b"data")

    async def names(query: str) -> list[str]:
        resp = await cloud.get(f"/image/v2/images{query}", token=alice.token)
        assert resp.status == 200, resp
        assert resp.body["first"] == "/v2/images" and resp.body["schema"] == "/v2/schemas/images"
        return [i["name"] for i in resp.body["images"]]

    assert await names("?sort_key=name&sort_dir=asc") == [f"img-{i}" for i in range(7)]
    assert await names("?sort=name:desc") == [f"img-{i}" for i in reversed(range(7))]
    assert await names("?name=img-3") == ["img-3"]
    assert sorted(await names(f"?id=in:{ids[1]},{ids[2]}")) == ["img-1", "img-2"]
    assert await names("?status=active") == ["img-0"]
    assert sorted(await names("?disk_format=qcow2")) == ["img-1", "img-3", "img-5"]
    assert sorted(await names("?tag=even")) == ["img-0", "img-2", "img-4", "img-6"]
    assert sorted(await names("?os_distro=ubuntu")) == ["img-0", "img-1", "img-2"]
    assert sorted(await names("?os_distro=debian&tag=even&sort_key=name&sort_dir=asc")) == ["img-4", "img-6"]
    assert await names(f"?owner={people.bob.project_id}") == []
    assert len(await names("?visibility=shared")) == 7
    assert await names("?visibility=private") == []

    # Paging follows "next" until exhausted, without duplicates or gaps.
    seen: list[str] = []
    url = "/v2/images?sort_key=name&sort_dir=asc&limit=3"
    pages = 0
    while url:
        resp = await cloud.get("/image" + url, token=alice.token)
        assert resp.status == 200
        seen += [i["name"] for i in resp.body["images"]]
        url = resp.body.get("next")
        pages += 1
    assert seen == [f"img-{i}" for i in range(7)] and pages == 3

    # Default order (created_at desc, id) pages consistently too.
    first = await cloud.get("/image/v2/images?limit=4", token=alice.token)
    rest = await cloud.get("/image" + first.body["next"], token=alice.token)
    all_names = [i["name"] for i in first.body["images"] + rest.body["images"]]
    assert sorted(all_names) == sorted(f"img-{i}" for i in range(7)) and "next" not in rest.body

    for bad in ("?limit=-1", "?sort_key=bogus", "?sort_dir=up", "?marker=nope", "?member_status=maybe"):
        resp = await cloud.get(f"/image/v2/images{bad}", token=alice.token)
        assert resp.status == 400, (bad, resp)


# -- patch ------------------------------------------------------------------------------


async def test_patch(cloud: Any, people: People) -> None:
    alice = people.alice
    image = await create(cloud, alice, name="before", hw_foo="1")
    ops = [
        {"op": "replace", "path": "/name", "value": "after"},
        {"op": "add", "path": "/hw_bar", "value": "2"},
        {"op": "replace", "path": "/hw_foo", "value": "3"},
        {"op": "add", "path": "/min_ram", "value": 512},
        {"op": "replace", "path": "/tags", "value": ["x", "y"]},
        {"op": "replace", "path": "/visibility", "value": "private"},
        {"op": "replace", "path": "/protected", "value": True},
        {"op": "add", "path": "/owner_specified.openstack~1md5", "value": "m"},
    ]
    resp = await patch(cloud, alice, image["id"], ops)
    assert resp.status == 200, resp
    body = resp.body
    assert body["name"] == "after" and body["hw_bar"] == "2" and body["hw_foo"] == "3"
    assert body["min_ram"] == 512 and body["tags"] == ["x", "y"]
    assert body["visibility"] == "private" and body["protected"] is True
    assert body["owner_specified.openstack/md5"] == "m"

    resp = await patch(cloud, alice, image["id"], [{"op": "remove", "path": "/hw_bar"}])
    assert resp.status == 200 and "hw_bar" not in resp.body

    cases = [
        ([{"op": "remove", "path": "/hw_bar"}], 409, "hw_bar"),
        ([{"op": "replace", "path": "/nope", "value": "x"}], 409, "nope"),
        ([{"op": "replace", "path": "/status", "value": "active"}], 403, "status"),
        ([{"op": "replace", "path": "/checksum", "value": "x"}], 403, "checksum"),
        ([{"op": "replace", "path": "/id", "value": "x"}], 403, "id"),
        ([{"op": "remove", "path": "/name"}], 403, "name"),
        ([{"op": "replace", "path": "/visibility", "value": "public"}], 403, "publicize_image"),
        ([{"op": "replace", "path": "/disk_format", "value": "floppy"}], 400, "disk_format"),
        ([{"op": "move", "path": "/name"}], 400, "op"),
        ([{"op": "add", "path": "/tags/-", "value": "z"}], 400, "/tags/-"),
        ({"op": "add"}, 400, "array"),
    ]
    for ops, status, word in cases:
        resp = await patch(cloud, alice, image["id"], ops)
        assert resp.status == status, (ops, resp)
        assert word in resp.body["message"], (ops, resp)
    resp = await patch(cloud, alice, image["id"], [], headers={"Content-Type": "application/json"})
    assert resp.status == 415

    # Tags sub-resource.
    assert (await cloud.put(f"/image/v2/images/{image['id']}/tags/z", token=alice.token)).status == 204
    assert (await cloud.put(f"/image/v2/images/{image['id']}/tags/z", token=alice.token)).status == 204
    assert (await cloud.delete(f"/image/v2/images/{image['id']}/tags/x", token=alice.token)).status == 204
    assert (await cloud.delete(f"/image/v2/images/{image['id']}/tags/x", token=alice.token)).status == 404
    shown = (await cloud.get(f"/image/v2/images/{image['id']}", token=alice.token)).body
    assert shown["tags"] == ["y", "z"]


# -- delete -----------------------------------------------------------------------------


async def test_delete_removes_file_and_respects_protected(cloud: Any, people: People) -> None:
    alice = people.alice
    image = await create(cloud, alice, name="doomed", protected=True)
    await upload(cloud, alice, image["id"], b"bytes")
    path = image_path(cloud.rt.settings, image["id"])
    assert path.exists()
    resp = await cloud.delete(f"/image/v2/images/{image['id']}", token=alice.token)
    assert resp.status == 403 and "protected" in resp.body["message"]
    await patch(cloud, alice, image["id"], [{"op": "replace", "path": "/protected", "value": False}])
    assert (await cloud.delete(f"/image/v2/images/{image['id']}", token=people.reed.token)).status == 403
    assert (await cloud.delete(f"/image/v2/images/{image['id']}", token=alice.token)).status == 204
    assert not path.exists()
    assert (await cloud.get(f"/image/v2/images/{image['id']}", token=alice.token)).status == 404
    assert (await cloud.delete(f"/image/v2/images/{image['id']}", token=alice.token)).status == 404


async def test_deactivate_reactivate(cloud: Any, people: People) -> None:
    alice = people.alice
    image = await create(cloud, alice, name="d", visibility="community")
    resp = await cloud.post(f"/image/v2/images/{image['id']}/actions/deactivate", token=alice.token)
    assert resp.status == 400  # still queued
    await upload(cloud, alice, image["id"], b"x")
    assert (await cloud.post(f"/image/v2/images/{image['id']}/actions/deactivate", token=alice.token)).status == 204
    resp = await cloud.get(f"/image/v2/images/{image['id']}/file", token=people.bob.token)
    assert resp.status == 403
    resp = await cloud.get(f"/image/v2/images/{image['id']}/file", token=people.admin.token)
    assert resp.status == 200 and resp.body == b"x"
    assert (await cloud.post(f"/image/v2/images/{image['id']}/actions/reactivate", token=alice.token)).status == 204
    assert (await cloud.get(f"/image/v2/images/{image['id']}/file", token=people.bob.token)).status == 200


# -- visibility between projects --------------------------------------------------------


async def test_visibility_between_projects(cloud: Any, people: People) -> None:
    alice, bob, reed, admin = people.alice, people.bob, people.reed, people.admin
    private = await create(cloud, alice, name="private", visibility="private")
    shared = await create(cloud, alice, name="shared")
    community = await create(cloud, alice, name="community", visibility="community")
    public = await create(cloud, admin, name="public", visibility="public")

    async def listed(who: Any, query: str = "") -> set[str]:
        resp = await cloud.get(f"/image/v2/images{query}", token=who.token)
        assert resp.status == 200, resp
        return {i["name"] for i in resp.body["images"]}

    assert await listed(alice) == {"private", "shared", "community", "public"}
    assert await listed(reed) == {"private", "shared", "community", "public"}
    assert await listed(bob) == {"public"}
    assert await listed(bob, "?visibility=community") == {"community"}
    assert await listed(admin) >= {"private", "shared", "community", "public"}

    # Another project's private (or not-yet-shared) image does not exist for bob.
    for image in (private, shared):
        resp = await cloud.get(f"/image/v2/images/{image['id']}", token=bob.token)
        assert resp.status == 404 and resp.body["title"] == "Not Found"
        resp = await patch(cloud, bob, image["id"], [{"op": "replace", "path": "/name", "value": "x"}])
        assert resp.status == 404
    # Community and public images are visible but not bob's to change.
    assert (await cloud.get(f"/image/v2/images/{community['id']}", token=bob.token)).status == 200
    resp = await patch(cloud, bob, public["id"], [{"op": "replace", "path": "/name", "value": "x"}])
    assert resp.status == 403
    assert (await cloud.delete(f"/image/v2/images/{community['id']}", token=bob.token)).status == 403

    # A reader of alpha reads but does not write.
    assert (await cloud.get(f"/image/v2/images/{private['id']}", token=reed.token)).status == 200
    resp = await patch(cloud, reed, private["id"], [{"op": "replace", "path": "/name", "value": "x"}])
    assert resp.status == 403

    # Sharing: alice adds beta as member; bob sees it, lists it once accepted.
    resp = await cloud.post(f"/image/v2/images/{shared['id']}/members", {"member": bob.project_id}, token=alice.token)
    assert resp.status == 200 and resp.body["status"] == "pending"
    resp = await cloud.post(f"/image/v2/images/{private['id']}/members", {"member": bob.project_id}, token=alice.token)
    assert resp.status == 403
    assert (await cloud.get(f"/image/v2/images/{shared['id']}", token=bob.token)).status == 200
    assert await listed(bob) == {"public"}
    assert await listed(bob, "?member_status=pending") == {"public", "shared"}
    resp = await cloud.put(
        f"/image/v2/images/{shared['id']}/members/{bob.project_id}", {"status": "accepted"}, token=alice.token
    )
    assert resp.status == 403
    resp = await cloud.put(
        f"/image/v2/images/{shared['id']}/members/{bob.project_id}", {"status": "accepted"}, token=bob.token
    )
    assert resp.status == 200 and resp.body["status"] == "accepted"
    assert await listed(bob) == {"public", "shared"}
    members = await cloud.get(f"/image/v2/images/{shared['id']}/members", token=alice.token)
    assert [m["member_id"] for m in members.body["members"]] == [bob.project_id]
    resp = await cloud.delete(f"/image/v2/images/{shared['id']}/members/{bob.project_id}", token=alice.token)
    assert resp.status == 204
    assert (await cloud.get(f"/image/v2/images/{shared['id']}", token=bob.token)).status == 404

    # Admin sees and may change everything.
    assert (await cloud.get(f"/image/v2/images/{private['id']}", token=admin.token)).status == 200
    resp = await patch(cloud, admin, private["id"], [{"op": "replace", "path": "/name", "value": "renamed"}])
    assert resp.status == 200 and resp.body["name"] == "renamed"


async def test_schemas(cloud: Any, people: People) -> None:
    resp = await cloud.get("/image/v2/schemas/image", token=people.alice.token)
    assert resp.status == 200 and resp.body["name"] == "image"
    resp = await cloud.get("/image/v2/schemas/images", token=people.alice.token)
    assert resp.status == 200 and resp.body["name"] == "images"


async def test_interrupted_upload_leaves_image_queued(cloud: Any, people: People) -> None:
    """A client that disconnects mid-upload leaves no data behind, and the upload can be retried."""
    image = await create(cloud, people.alice, name="interrupted")
    settings = cloud.rt.settings
    _reader, writer = await asyncio.open_connection(settings.listen_host, settings.listen_port)
    writer.write(
        (
            f"PUT /image/v2/images/{image['id']}/file HTTP/1.1\r\n"
            f"Host: {settings.listen}\r\nX-Auth-Token: {people.alice.token}\r\n"
            "Content-Type: application/octet-stream\r\nContent-Length: 1000000\r\n\r\n"
        ).encode()
        + b"x" * 1000
    )
    await writer.drain()
    for _ in range(50):  # wait until the server has started receiving
        shown = (await cloud.get(f"/image/v2/images/{image['id']}", token=people.alice.token)).body
        if shown["status"] == "saving":
            break
        await asyncio.sleep(0.05)
    assert shown["status"] == "saving"
    writer.close()
    for _ in range(100):
        shown = (await cloud.get(f"/image/v2/images/{image['id']}", token=people.alice.token)).body
        if shown["status"] == "queued":
            break
        await asyncio.sleep(0.05)
    assert shown["status"] == "queued"
    assert list(image_path(settings, image["id"]).parent.glob(f"*{image['id']}*")) == []
    assert (await upload(cloud, people.alice, image["id"], b"retry")).status == 204
