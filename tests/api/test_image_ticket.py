"""Image download tickets: minting and checking them, and downloading image data with one.

The unit tests hold the ticket format to its promises (tampering, expiry, other image,
other key all refused). The HTTP tests run the real in-process cloud: a ticket minted with
the running controller's key downloads exactly its image through ``X-Image-Ticket`` and
opens no other route.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import os
import time
from typing import Any

import pytest

from novalite.bus import Bus, MemoryTransport
from novalite.config import Settings
from novalite.db import Database
from novalite.db.migrate import upgrade
from novalite.identity.tickets import (
    HEADER,
    ImageTicketError,
    ImageTicketExpired,
    ImageTicketInvalid,
    ImageTicketWrongImage,
    mint_image_ticket,
    ticket_key,
    verify_image_ticket,
)
from novalite.runtime import ControllerRuntime
from tests.functional.helpers import Who, make_person

SECRET = b"k" * 32
IMAGE = "7d4c2b8e-1f3a-4c5d-9e6f-0a1b2c3d4e5f"
PROJECT = "0123456789abcdef0123456789abcdef"
OCTET = {"Content-Type": "application/octet-stream"}


# -- mint and verify ------------------------------------------------------------------------------


def test_valid_ticket_names_its_project() -> None:
    ticket = mint_image_ticket(SECRET, IMAGE, PROJECT, 900)
    assert verify_image_ticket(SECRET, ticket, IMAGE) == PROJECT


def test_ticket_fits_a_header_and_a_url() -> None:
    ticket = mint_image_ticket(SECRET, IMAGE, PROJECT, 900)
    assert set(ticket) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.")
    assert len(ticket) < 300


def _payload(ticket: str) -> dict[str, Any]:
    part = ticket.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def _with_payload(ticket: str, payload: dict[str, Any]) -> str:
    prefix, _, sig = ticket.split(".")
    body = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    return f"{prefix}.{body}.{sig}"


@pytest.mark.parametrize(
    "change",
    [
        {"p": "another-project"},
        {"i": "11111111-2222-3333-4444-555555555555"},
        {"e": 9999999999},
    ],
    ids=["project", "image", "expiry"],
)
def test_tampered_payload_is_refused(change: dict[str, Any]) -> None:
    ticket = mint_image_ticket(SECRET, IMAGE, PROJECT, 900)
    forged = _with_payload(ticket, {**_payload(ticket), **change})
    target = change.get("i", IMAGE)
    with pytest.raises(ImageTicketInvalid, match="signature"):
        verify_image_ticket(SECRET, forged, target)


def test_tampered_signature_is_refused() -> None:
    ticket = mint_image_ticket(SECRET, IMAGE, PROJECT, 900)
    last = "A" if ticket[-1] != "A" else "B"
    with pytest.raises(ImageTicketInvalid, match="signature"):
        verify_image_ticket(SECRET, ticket[:-1] + last, IMAGE)


def test_ticket_of_another_key_is_refused() -> None:
    ticket = mint_image_ticket(b"another-controller-key", IMAGE, PROJECT, 900)
    with pytest.raises(ImageTicketInvalid, match="signature"):
        verify_image_ticket(SECRET, ticket, IMAGE)


def test_expired_ticket_is_refused() -> None:
    now = 1_700_000_000.0
    ticket = mint_image_ticket(SECRET, IMAGE, PROJECT, 900, now=now)
    assert verify_image_ticket(SECRET, ticket, IMAGE, now=now + 899) == PROJECT
    with pytest.raises(ImageTicketExpired, match="expired"):
        verify_image_ticket(SECRET, ticket, IMAGE, now=now + 900)
    with pytest.raises(ImageTicketExpired):
        verify_image_ticket(SECRET, ticket, IMAGE)  # the real clock: long past


def test_ticket_for_another_image_is_refused() -> None:
    ticket = mint_image_ticket(SECRET, IMAGE, PROJECT, 900)
    with pytest.raises(ImageTicketWrongImage, match="another image"):
        verify_image_ticket(SECRET, ticket, "11111111-2222-3333-4444-555555555555")


@pytest.mark.parametrize(
    "ticket",
    ["", "garbage", "nit1.abc", "nit2.a.b", "nit1.a.b.c", "nit1.é.ü", "x" * 5000, "nit1..", "token-not-a-ticket"],
)
def test_malformed_ticket_is_refused(ticket: str) -> None:
    with pytest.raises(ImageTicketInvalid):
        verify_image_ticket(SECRET, ticket, IMAGE)


def test_signed_but_unreadable_payload_is_refused() -> None:
    """Even a correctly signed payload must be a ticket (guards the parser, not only the HMAC)."""
    body = base64.urlsafe_b64encode(b'["not", "a", "dict"]').rstrip(b"=").decode()
    signed = f"nit1.{body}"
    sig = base64.urlsafe_b64encode(hmac.new(SECRET, signed.encode(), hashlib.sha256).digest()).rstrip(b"=").decode()
    with pytest.raises(ImageTicketInvalid, match="payload"):
        verify_image_ticket(SECRET, f"{signed}.{sig}", IMAGE)


def test_all_refusals_share_one_base() -> None:
    assert issubclass(ImageTicketInvalid, ImageTicketError)
    assert issubclass(ImageTicketExpired, ImageTicketError)
    assert issubclass(ImageTicketWrongImage, ImageTicketError)


@pytest.mark.parametrize(
    ("secret", "image", "project", "ttl"),
    [(b"", IMAGE, PROJECT, 900), (SECRET, "", PROJECT, 900), (SECRET, IMAGE, "", 900), (SECRET, IMAGE, PROJECT, 0)],
)
def test_mint_refuses_useless_tickets(secret: bytes, image: str, project: str, ttl: float) -> None:
    with pytest.raises(ValueError):
        mint_image_ticket(secret, image, project, ttl)


# -- the key ----------------------------------------------------------------------------------------


async def test_generated_key_lives_in_the_database_and_is_shared(tmp_path: Any) -> None:
    """Two controller processes of one cloud (two runtimes on one database) sign with one key."""
    url = f"sqlite:///{tmp_path / 'cloud.db'}"
    first_db, second_db = Database(url), Database(url)
    try:
        await upgrade(first_db)
        first = ControllerRuntime(Settings(state_dir=tmp_path / "a"), Bus(MemoryTransport()), db=first_db)
        second = ControllerRuntime(Settings(state_dir=tmp_path / "b"), Bus(MemoryTransport()), db=second_db)
        keys = await asyncio.gather(*(ticket_key(first) for _ in range(4)))
        assert len(set(keys)) == 1 and len(keys[0]) >= 32
        assert await ticket_key(second) == keys[0]
        assert not any((tmp_path / "a").glob("*")), "nothing written to the state dir"
    finally:
        await first_db.close()
        await second_db.close()


async def test_configured_secret_wins(tmp_path: Any) -> None:
    db = Database(f"sqlite:///{tmp_path / 'cloud.db'}")
    try:
        settings = Settings(state_dir=tmp_path, image_ticket_secret="shared-by-all-controllers")
        rt = ControllerRuntime(settings, Bus(MemoryTransport()), db=db)
        assert await ticket_key(rt) == b"shared-by-all-controllers"
    finally:
        await db.close()


def test_short_configured_secret_is_refused(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="16 characters"):
        Settings(state_dir=tmp_path, image_ticket_secret="short")


def test_default_ttl() -> None:
    assert Settings().image_ticket_ttl == 900


# -- over HTTP, against the running cloud --------------------------------------------------------------


async def new_image(cloud: Any, who: Who, data: bytes) -> str:
    resp = await cloud.post("/image/v2/images", {"disk_format": "raw", "container_format": "bare"}, token=who.token)
    assert resp.status == 201, resp
    image_id: str = resp.body["id"]
    put = await cloud.request("PUT", f"/image/v2/images/{image_id}/file", data=data, token=who.token, headers=OCTET)
    assert put.status == 204, put
    return image_id


async def ticket_for(cloud: Any, image_id: str, project_id: str, **kw: Any) -> str:
    return mint_image_ticket(await ticket_key(cloud.rt), image_id, project_id, 900, **kw)


async def with_ticket(cloud: Any, method: str, path: str, ticket: str, **kw: Any) -> Any:
    return await cloud.request(method, path, token=None, headers={HEADER: ticket, **kw.pop("headers", {})}, **kw)


def assert_refused(resp: Any) -> None:
    """401 with the body every image API 401 has (keystonemiddleware's, as real Glance answers)."""
    assert resp.status == 401, resp
    assert resp.body["error"]["code"] == 401, resp
    assert resp.body["error"]["title"] == "Unauthorized"
    assert "Keystone uri=" in resp.headers["WWW-Authenticate"]


@pytest.fixture
async def alice(cloud: Any) -> Who:
    return await make_person(cloud, "alice", "alpha", "member")


async def test_download_with_ticket(cloud: Any, alice: Who) -> None:
    data = os.urandom(300_000)
    image_id = await new_image(cloud, alice, data)
    with_token = await cloud.get(f"/image/v2/images/{image_id}/file", token=alice.token)
    resp = await with_ticket(
        cloud, "GET", f"/image/v2/images/{image_id}/file", await ticket_for(cloud, image_id, alice.project_id)
    )
    assert resp.status == 200, resp
    assert resp.body == data
    assert resp.headers["Content-MD5"] == hashlib.md5(data).hexdigest() == with_token.headers["Content-MD5"]
    assert resp.headers["Content-Type"] == "application/octet-stream"
    assert resp.headers["x-openstack-request-id"].startswith("req-")


async def test_ticket_is_for_one_image_only(cloud: Any, alice: Who) -> None:
    first = await new_image(cloud, alice, b"first image")
    second = await new_image(cloud, alice, b"second image")
    ticket = await ticket_for(cloud, first, alice.project_id)
    resp = await with_ticket(cloud, "GET", f"/image/v2/images/{second}/file", ticket)
    assert_refused(resp)
    assert "another image" in resp.body["error"]["message"]
    assert (await with_ticket(cloud, "GET", f"/image/v2/images/{first}/file", ticket)).body == b"first image"


async def test_expired_forged_or_garbage_ticket_is_refused(cloud: Any, alice: Who) -> None:
    image_id = await new_image(cloud, alice, b"data")
    path = f"/image/v2/images/{image_id}/file"
    expired = await ticket_for(cloud, image_id, alice.project_id, now=time.time() - 901)
    resp = await with_ticket(cloud, "GET", path, expired)
    assert_refused(resp)
    assert "expired" in resp.body["error"]["message"]
    forged = mint_image_ticket(b"not-this-clouds-key-at-all", image_id, alice.project_id, 900)
    assert_refused(await with_ticket(cloud, "GET", path, forged))
    assert_refused(await with_ticket(cloud, "GET", path, "nit1.garbage.garbage"))
    # A user's token in the ticket header is no ticket either.
    assert_refused(await with_ticket(cloud, "GET", path, alice.token))


async def test_ticket_opens_no_other_route(cloud: Any, alice: Who) -> None:
    image_id = await new_image(cloud, alice, b"original")
    ticket = await ticket_for(cloud, image_id, alice.project_id)
    assert_refused(await with_ticket(cloud, "GET", "/image/v2/images", ticket))
    assert_refused(await with_ticket(cloud, "GET", f"/image/v2/images/{image_id}", ticket))
    head = await with_ticket(cloud, "HEAD", f"/image/v2/images/{image_id}/file", ticket)
    assert head.status == 401, head  # HEAD answers carry no body
    assert_refused(await with_ticket(cloud, "DELETE", f"/image/v2/images/{image_id}", ticket))
    put = await with_ticket(cloud, "PUT", f"/image/v2/images/{image_id}/file", ticket, data=b"x", headers=OCTET)
    assert_refused(put)
    compute = await with_ticket(cloud, "GET", "/compute/v2.1/servers", ticket)
    assert compute.status == 401, compute
    identity = await with_ticket(cloud, "GET", "/identity/v3/auth/projects", ticket)
    assert identity.status == 401, identity
    # Nothing was changed through the refused requests.
    after = await cloud.get(f"/image/v2/images/{image_id}/file", token=alice.token)
    assert after.status == 200 and after.body == b"original"


async def test_ticket_still_needs_the_project_to_see_the_image(cloud: Any, alice: Who) -> None:
    """The ticket acts as its project: another project's private image stays 404 (not found)."""
    bob = await make_person(cloud, "bob", "beta", "member")
    image_id = await new_image(cloud, alice, b"alpha's private image")
    resp = await with_ticket(
        cloud, "GET", f"/image/v2/images/{image_id}/file", await ticket_for(cloud, image_id, bob.project_id)
    )
    assert resp.status == 404, resp


async def test_ticket_cannot_download_a_deactivated_image(cloud: Any, alice: Who) -> None:
    image_id = await new_image(cloud, alice, b"data")
    admin = await make_person(cloud, "admin", "admin", "admin")
    assert (await cloud.post(f"/image/v2/images/{image_id}/actions/deactivate", token=admin.token)).status == 204
    resp = await with_ticket(
        cloud, "GET", f"/image/v2/images/{image_id}/file", await ticket_for(cloud, image_id, alice.project_id)
    )
    assert resp.status == 403, resp
    assert "deactivated" in resp.body["message"]


async def test_a_token_still_works_beside_a_ticket(cloud: Any, alice: Who) -> None:
    """With both headers the token decides (a bad ticket does not spoil a good token)."""
    image_id = await new_image(cloud, alice, b"data")
    resp = await cloud.get(f"/image/v2/images/{image_id}/file", token=alice.token, headers={HEADER: "nit1.bad.bad"})
    assert resp.status == 200 and resp.body == b"data"
