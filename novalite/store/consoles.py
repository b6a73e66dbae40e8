"""Console auth tokens: what a console URL carries, and what the proxy checks before connecting.

A token is 256 random bits (URL-safe base64). Only its SHA-256 is stored, in
``console_auth_tokens``, bound to one instance, the VNC address its compute host reported
(host, port) and that compute host. A token is valid until ``expires_at``
(``console_token_ttl``, 600 s by default like Nova) and only while the instance exists and
is still on that compute host: deleting the instance deletes its tokens
(``records.finalize_delete``), and a moved instance no longer matches ``compute_host``.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from novalite.db import Connection
from novalite.db import schema as t
from novalite.log import get_logger
from novalite.timeutil import utcnow

log = get_logger("novalite.store.consoles")

#: Random bytes in a token (256 bits; the issue asks for at least 128).
TOKEN_BYTES = 32
#: A token is URL-safe base64 of TOKEN_BYTES; anything else is refused before a lookup.
_TOKEN_FORMAT = re.compile(r"^[A-Za-z0-9_-]{16,128}$")


class TokenRefused(Exception):
    """The token is unknown, expired, or no longer matches its instance. ``str()`` says which."""


@dataclass(frozen=True)
class ConsoleAuth:
    """What a valid token grants: the console of one instance at one address."""

    instance_uuid: str
    instance_name: str
    project_id: str
    console_type: str
    host: str
    port: int
    compute_host: str | None
    expires_at: datetime


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def issue(
    conn: Connection,
    *,
    instance_uuid: str,
    console_type: str,
    host: str,
    port: int,
    compute_host: str | None,
    ttl: float,
) -> str:
    """Store a new token for the instance's console at ``host:port``; return the token itself."""
    now = utcnow()
    await purge_expired(conn, now)
    token = new_token()
    await conn.execute(
        t.console_auth_tokens.insert().values(
            token_hash=hash_token(token),
            instance_uuid=instance_uuid,
            console_type=console_type,
            host=host,
            port=int(port),
            compute_host=compute_host,
            expires_at=now + timedelta(seconds=ttl),
            created_at=now,
        )
    )
    return token


async def purge_expired(conn: Connection, now: datetime | None = None) -> None:
    await conn.execute(t.console_auth_tokens.delete().where(t.console_auth_tokens.c.expires_at <= (now or utcnow())))


async def check(conn: Connection, token: str | None, now: datetime | None = None) -> ConsoleAuth:
    """The console the token grants, or :class:`TokenRefused` saying why not."""
    if not token or not _TOKEN_FORMAT.match(token):
        raise TokenRefused("malformed or missing token")
    tok, inst = t.console_auth_tokens, t.instances
    row = (
        await conn.execute(
            sa.select(
                tok,
                inst.c.display_name,
                inst.c.project_id,
                inst.c.host.label("instance_host"),
                inst.c.deleted,
            )
            .select_from(tok.outerjoin(inst, inst.c.uuid == tok.c.instance_uuid))
            .where(tok.c.token_hash == hash_token(token))
        )
    ).first()
    if row is None:
        raise TokenRefused("unknown token")
    if row.expires_at <= (now or utcnow()):
        raise TokenRefused("expired token")
    if row.deleted is None or row.deleted:
        raise TokenRefused("the instance no longer exists")
    if row.instance_host != row.compute_host:
        raise TokenRefused("the instance moved to another host")
    return ConsoleAuth(
        instance_uuid=row.instance_uuid,
        instance_name=row.display_name or "",
        project_id=row.project_id,
        console_type=row.console_type,
        host=row.host,
        port=row.port,
        compute_host=row.compute_host,
        expires_at=row.expires_at,
    )


async def lookup(conn: Connection, token: str | None) -> ConsoleAuth | None:
    """Like :func:`check`, None instead of the reason."""
    try:
        return await check(conn, token)
    except TokenRefused as exc:
        log.info("console.token_refused", reason=str(exc))
        return None
