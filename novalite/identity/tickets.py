"""Image download tickets: short-lived, HMAC-signed grants to download one image.

Why not the user's token? A build's messages travel through the broker (persistent
RabbitMQ messages rest on its disk) and end up on a compute host. A Keystone token in
them is the user's whole identity for up to ``token_ttl``: whoever reads the queue or
owns a host could act as that user on every API. A ticket instead says only "project P
may download image I until T", signed by the controller: stolen, it yields one image for
``image_ticket_ttl`` seconds (minutes), and nothing else — the image API accepts it on
``GET /v2/images/{id}/file`` only (``X-Image-Ticket``), still applying P's visibility of I.

Only the controller holds the key, mints (the conductor) and verifies (the image API);
a compute agent just passes the ticket on, so it never needs the key. The key is the
``image_ticket_secret`` setting or, when that is empty, a random key generated once into
the database (``cloud_secrets``), so every controller process of the cloud shares it.

Format: ``nit1.<payload>.<signature>``, both parts URL-safe base64 without padding;
the payload is compact JSON ``{"i": image_id, "p": project_id, "e": expiry}`` (Unix
seconds); the signature is HMAC-SHA256 over ``nit1.<payload>``, compared in constant
time before the payload is even parsed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time

from novalite.runtime import ControllerRuntime
from novalite.store import secrets

#: Version and purpose tag: part of the signed text, so a signature made for anything
#: else with the same key (or by a future format) can never pass as a ticket.
PREFIX = "nit1"
#: The request header that carries a ticket.
HEADER = "X-Image-Ticket"
#: Longer headers are refused unread (a real ticket is ~200 characters).
MAX_TICKET_LEN = 2048


class ImageTicketError(Exception):
    """The ticket grants nothing; ``str(err)`` says why (safe to show the holder)."""


class ImageTicketInvalid(ImageTicketError):
    """Malformed, or not signed with this controller's key (forged, tampered, other key)."""


class ImageTicketExpired(ImageTicketError):
    """Correctly signed, but past its expiry."""


class ImageTicketWrongImage(ImageTicketError):
    """Correctly signed, but for another image."""


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, signed: str) -> str:
    return _b64encode(hmac.new(secret, signed.encode("ascii"), hashlib.sha256).digest())


def mint_image_ticket(
    secret: bytes, image_id: str, project_id: str, ttl: float, *, now: float | None = None, prefix: str = PREFIX
) -> str:
    """A ticket letting ``project_id`` download ``image_id`` for ``ttl`` seconds from ``now``.

    ``now`` (Unix seconds, default the current time) exists for tests and for callers that
    want several tickets with one expiry.
    """
    if not secret:
        raise ValueError("an image ticket needs a non-empty secret")
    if not image_id or not project_id:
        raise ValueError("an image ticket names an image and a project")
    if ttl <= 0:
        raise ValueError(f"an image ticket's ttl must be positive, not {ttl!r}")
    expiry = round((time.time() if now is None else now) + ttl, 3)
    body = json.dumps({"i": image_id, "p": project_id, "e": expiry}, separators=(",", ":"), sort_keys=True)
    signed = f"{prefix}.{_b64encode(body.encode())}"
    return f"{signed}.{_sign(secret, signed)}"


def verify_image_ticket(
    secret: bytes, ticket: str, image_id: str, *, now: float | None = None, prefix: str = PREFIX
) -> str:
    """The project a valid ``ticket`` for ``image_id`` was minted for (``prefix``: which kind
    of ticket is accepted, a download ticket by default).

    Raises :class:`ImageTicketInvalid` (malformed or bad signature),
    :class:`ImageTicketExpired` or :class:`ImageTicketWrongImage` — all
    :class:`ImageTicketError`. The signature is checked first, so nothing of an unsigned
    payload is trusted or even parsed.
    """
    if not ticket or len(ticket) > MAX_TICKET_LEN:
        raise ImageTicketInvalid("the image ticket is empty or too long")
    parts = ticket.split(".")
    if len(parts) != 3 or parts[0] != prefix:
        raise ImageTicketInvalid("the image ticket is malformed")
    signed = f"{parts[0]}.{parts[1]}"
    # Header values may hold any character: compare bytes, in constant time.
    given = parts[2].encode("utf-8", "replace")
    try:
        expected = _sign(secret, signed).encode("ascii")
    except UnicodeEncodeError:
        raise ImageTicketInvalid("the image ticket is malformed") from None
    if not hmac.compare_digest(expected, given):
        raise ImageTicketInvalid("the image ticket's signature is not valid")
    try:
        payload = json.loads(_b64decode(parts[1]))
    except (binascii.Error, ValueError):
        raise ImageTicketInvalid("the image ticket's payload is malformed") from None
    if not isinstance(payload, dict):
        raise ImageTicketInvalid("the image ticket's payload is malformed")
    ticket_image, project, expiry = payload.get("i"), payload.get("p"), payload.get("e")
    if not isinstance(ticket_image, str) or not isinstance(project, str) or not project:
        raise ImageTicketInvalid("the image ticket's payload is malformed")
    if isinstance(expiry, bool) or not isinstance(expiry, int | float):
        raise ImageTicketInvalid("the image ticket's payload is malformed")
    if (time.time() if now is None else now) >= expiry:
        raise ImageTicketExpired("the image ticket has expired")
    if ticket_image != image_id:
        raise ImageTicketWrongImage("the image ticket is for another image")
    return project


# -- upload tickets (issue 11) --------------------------------------------------------------

#: The tag of an upload ticket: "project P may PUT the data of image I until T", what a compute
#: host gets to upload a snapshot it took. Another tag than a download ticket's, inside the
#: signed text, so neither kind of ticket can ever pass as the other.
UPLOAD_PREFIX = "nut1"


#: The request key under which the API marks a request authenticated by an upload ticket
#: (its value: the one image the ticket opens).
UPLOAD_TICKET_KEY = "image_upload_ticket"


def mint_upload_ticket(secret: bytes, image_id: str, project_id: str, ttl: float, *, now: float | None = None) -> str:
    """A ticket letting ``project_id`` upload the data of ``image_id`` (``PUT .../file``) only."""
    return mint_image_ticket(secret, image_id, project_id, ttl, now=now, prefix=UPLOAD_PREFIX)


def verify_upload_ticket(secret: bytes, ticket: str, image_id: str, *, now: float | None = None) -> str:
    """The project a valid upload ``ticket`` for ``image_id`` was minted for; raises as
    :func:`verify_image_ticket` (a download ticket is :class:`ImageTicketInvalid` here)."""
    return verify_image_ticket(secret, ticket, image_id, now=now, prefix=UPLOAD_PREFIX)


#: The name of the ticket key in ``cloud_secrets``.
SECRET_NAME = "image_ticket"


async def ticket_key(rt: ControllerRuntime) -> bytes:
    """The controller's ticket key: the ``image_ticket_secret`` setting, else a key generated
    once into the database (shared by every controller process), cached in the runtime."""
    if rt.settings.image_ticket_secret:
        return rt.settings.image_ticket_secret.encode()
    key = rt.cache.get(SECRET_NAME)
    if key is None:
        async with rt.db.begin() as conn:
            key = rt.cache[SECRET_NAME] = (await secrets.get_or_create(conn, SECRET_NAME)).encode()
    return bytes(key)
