"""Hostile request bodies (issue 9, defects 2 and 3), over real HTTP on SQLite and PostgreSQL.

Deeply nested JSON is a 400 in each API's own error format, never a crash; JSON bodies are
bounded by ``max_request_body_size`` (413 without being read, whether announced by
Content-Length or chunked); image data stays streamed, bounded by ``image_size_cap`` (413,
nothing left on disk, the image back to ``queued``).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest

from novalite.config import Settings
from novalite.images.files import images_dir
from tests.conftest import ADMIN_PASSWORD, make_settings

LIMIT = 114688  # Nova's default max_request_body_size, left at its default here
CAP = 4096  # a small image_size_cap
DEPTH = 50_000  # 100,000 bytes: under the body limit, far over the JSON decoder's recursion limit
NESTED = b"[" * DEPTH + b"]" * DEPTH
JSON = {"Content-Type": "application/json"}
OCTET = {"Content-Type": "application/octet-stream"}


@pytest.fixture
def cloud_settings(tmp_path, db_url: str) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(tmp_path, db_url, image_size_cap=CAP)


def login_body() -> dict[str, Any]:
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": ADMIN_PASSWORD}},
            },
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
        }
    }


def padded(body: Any, size: int) -> bytes:
    """``body`` as JSON padded with trailing whitespace to exactly ``size`` bytes (still valid JSON)."""
    raw = json.dumps(body).encode()
    assert len(raw) <= size
    return raw + b" " * (size - len(raw))


async def chunks(data: bytes, size: int = 8192) -> AsyncIterator[bytes]:
    """``data`` as a chunked body (no Content-Length), as a streaming client sends it."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def assert_nova(resp: Any, status: int, name: str) -> None:
    assert resp.status == status, resp
    assert resp.body[name]["code"] == status, resp


def assert_keystone(resp: Any, status: int) -> None:
    assert resp.status == status, resp
    assert resp.body["error"]["code"] == status, resp


def assert_glance(resp: Any, status: int) -> None:
    assert resp.status == status, resp
    assert resp.body["code"].startswith(f"{status} "), resp
    assert resp.body["message"], resp


async def create_image(cloud: Any) -> str:
    resp = await cloud.post("/image/v2/images", {"name": "img", "disk_format": "raw", "container_format": "bare"})
    assert resp.status == 201, resp
    image_id: str = resp.body["id"]
    return image_id


def files_left(cloud: Any) -> list[str]:
    """Every file (final or partial) in the images directory."""
    where = images_dir(cloud.rt.settings)
    return sorted(p.name for p in where.iterdir()) if where.exists() else []


# -- defect 2: deeply nested JSON ---------------------------------------------------------------------------


async def test_nested_json_is_a_nova_400(cloud: Any) -> None:
    resp = await cloud.request("POST", "/compute/v2.1/servers", data=NESTED, headers=JSON)
    assert_nova(resp, 400, "badRequest")
    # Nested inside an otherwise valid body too.
    deep = b'{"server": {"name": "x", "metadata": ' + NESTED + b"}}"
    resp = await cloud.request("POST", "/compute/v2.1/servers", data=deep, headers=JSON)
    assert_nova(resp, 400, "badRequest")


async def test_nested_json_is_a_keystone_400_even_without_a_token(cloud: Any) -> None:
    resp = await cloud.request("POST", "/identity/v3/auth/tokens", token=None, data=NESTED, headers=JSON)
    assert_keystone(resp, 400)
    resp = await cloud.request("POST", "/identity/v3/projects", data=NESTED, headers=JSON)
    assert_keystone(resp, 400)


async def test_nested_json_is_a_glance_400(cloud: Any) -> None:
    resp = await cloud.request("POST", "/image/v2/images", data=NESTED, headers=JSON)
    assert_glance(resp, 400)
    image_id = await create_image(cloud)
    patch = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
    resp = await cloud.request("PATCH", f"/image/v2/images/{image_id}", data=NESTED, headers=patch)
    assert_glance(resp, 400)


# -- defect 3: bounded JSON bodies ----------------------------------------------------------------------------


async def test_token_body_over_the_limit_is_a_keystone_413(cloud: Any) -> None:
    over = padded(login_body(), LIMIT + 1)
    resp = await cloud.request("POST", "/identity/v3/auth/tokens", token=None, data=over, headers=JSON)
    assert_keystone(resp, 413)
    # Chunked (no Content-Length): the read stops one byte past the limit.
    resp = await cloud.request("POST", "/identity/v3/auth/tokens", token=None, data=chunks(over), headers=JSON)
    assert_keystone(resp, 413)
    # Far over the limit, announced: refused without reading it.
    huge = b"[" + b"0," * (4 * LIMIT) + b"0]"
    resp = await cloud.request("POST", "/identity/v3/auth/tokens", token=None, data=huge, headers=JSON)
    assert_keystone(resp, 413)


async def test_token_body_at_the_limit_is_processed(cloud: Any) -> None:
    at = padded(login_body(), LIMIT)
    resp = await cloud.request("POST", "/identity/v3/auth/tokens", token=None, data=at, headers=JSON)
    assert resp.status == 201, resp
    resp = await cloud.request("POST", "/identity/v3/auth/tokens", token=None, data=chunks(at), headers=JSON)
    assert resp.status == 201, resp


async def test_compute_body_over_the_limit_is_a_nova_413_and_at_the_limit_is_processed(cloud: Any) -> None:
    over = padded({"keypair": {"name": "too-big"}}, LIMIT + 1)
    resp = await cloud.request("POST", "/compute/v2.1/os-keypairs", data=over, headers=JSON)
    assert_nova(resp, 413, "overLimit")
    resp = await cloud.request("POST", "/compute/v2.1/os-keypairs", data=chunks(over), headers=JSON)
    assert_nova(resp, 413, "overLimit")
    assert (await cloud.get("/compute/v2.1/os-keypairs/too-big")).status == 404

    at = padded({"keypair": {"name": "just-fits"}}, LIMIT)
    resp = await cloud.request("POST", "/compute/v2.1/os-keypairs", data=at, headers=JSON)
    assert resp.status == 200, resp
    assert resp.body["keypair"]["name"] == "just-fits"


async def test_image_json_bodies_over_the_limit_are_glance_413s(cloud: Any) -> None:
    over = padded({"name": "x", "disk_format": "raw", "container_format": "bare"}, LIMIT + 1)
    resp = await cloud.request("POST", "/image/v2/images", data=over, headers=JSON)
    assert_glance(resp, 413)
    image_id = await create_image(cloud)
    patch = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
    ops = padded([{"op": "replace", "path": "/name", "value": "y"}], LIMIT + 1)
    resp = await cloud.request("PATCH", f"/image/v2/images/{image_id}", data=ops, headers=patch)
    assert_glance(resp, 413)


# -- defect 3: image uploads bounded by image_size_cap ---------------------------------------------------------


async def test_image_upload_over_the_cap_is_a_413_and_leaves_nothing(cloud: Any) -> None:
    image_id = await create_image(cloud)
    url = f"/image/v2/images/{image_id}/file"
    over = b"x" * (CAP + 1)
    # Announced by Content-Length: refused before the upload starts.
    resp = await cloud.request("PUT", url, data=over, headers=OCTET)
    assert_glance(resp, 413)
    assert (await cloud.get(f"/image/v2/images/{image_id}")).body["status"] == "queued"
    assert files_left(cloud) == []
    # Announced by X-OpenStack-Image-Size.
    resp = await cloud.request("PUT", url, data=chunks(over), headers={**OCTET, "X-OpenStack-Image-Size": str(CAP + 1)})
    assert_glance(resp, 413)
    # Streamed (chunked): stopped at the first byte over the cap, the partial file removed.
    resp = await cloud.request("PUT", url, data=chunks(b"x" * (4 * CAP), size=1000), headers=OCTET)
    assert_glance(resp, 413)
    assert (await cloud.get(f"/image/v2/images/{image_id}")).body["status"] == "queued"
    assert files_left(cloud) == []
    # The same through the import API's staging.
    resp = await cloud.request("PUT", f"/image/v2/images/{image_id}/stage", data=chunks(over), headers=OCTET)
    assert_glance(resp, 413)
    assert (await cloud.get(f"/image/v2/images/{image_id}")).body["status"] == "queued"
    assert files_left(cloud) == []

    # An image of exactly the cap is stored: the client can simply retry with a smaller one.
    resp = await cloud.request("PUT", url, data=chunks(b"x" * CAP, size=1000), headers=OCTET)
    assert resp.status == 204, resp
    image = (await cloud.get(f"/image/v2/images/{image_id}")).body
    assert (image["status"], image["size"]) == ("active", CAP)
    assert files_left(cloud) == [image_id]
