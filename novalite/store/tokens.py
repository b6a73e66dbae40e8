"""Tokens: random bearer strings, stored only as their SHA-256, expiring, revocable.

Validation is one indexed lookup, so revocation takes effect at once in every API
process sharing the database.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa

from novalite.db import Connection
from novalite.db import schema as t
from novalite.timeutil import utcnow

#: Keystone's default implied roles: holding a role grants the ones it implies, transitively.
IMPLIED_ROLES: dict[str, list[str]] = {"admin": ["manager"], "manager": ["member"], "member": ["reader"]}


@dataclass
class TokenInfo:
    user_id: str
    user_name: str
    project_id: str | None
    project_name: str | None
    roles: list[dict[str, str]] = field(default_factory=list)  # [{"id", "name"}]
    issued_at: datetime = field(default_factory=utcnow)
    expires_at: datetime = field(default_factory=utcnow)
    audit_id: str = ""

    @property
    def role_names(self) -> list[str]:
        return [r["name"] for r in self.roles]


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def project_roles(conn: Connection, user_id: str, project_id: str) -> list[dict[str, str]]:
    """The roles ``user_id`` holds on ``project_id``, with implied roles added.

    Keystone's default roles imply each other: admin ⊃ manager ⊃ member ⊃ reader.
    """
    rows = await conn.execute(
        sa.select(t.roles.c.id, t.roles.c.name)
        .join(t.role_assignments, t.role_assignments.c.role_id == t.roles.c.id)
        .where(t.role_assignments.c.user_id == user_id, t.role_assignments.c.project_id == project_id)
    )
    found = {r.name: r.id for r in rows}
    pending = list(found)
    while pending:
        for extra in IMPLIED_ROLES.get(pending.pop(), []):
            if extra not in found:
                rid = await conn.scalar(sa.select(t.roles.c.id).where(t.roles.c.name == extra))
                if rid:
                    found[extra] = rid
                    pending.append(extra)
    return [{"id": rid, "name": name} for name, rid in sorted(found.items())]


async def issue_token(
    conn: Connection,
    user_id: str,
    project_id: str | None,
    roles: list[dict[str, str]],
    ttl: int,
    *,
    expires_at: datetime | None = None,
) -> tuple[str, datetime, datetime, str]:
    """Create a token; returns (token, issued_at, expires_at, audit_id).

    ``expires_at`` caps the lifetime: a token re-scoped from another must not outlive
    it (as in Keystone), or re-scoping would extend a stolen token forever.
    """
    token = "nl" + secrets.token_urlsafe(32)
    issued = utcnow()
    expires = issued + timedelta(seconds=ttl)
    if expires_at is not None:
        expires = min(expires, expires_at)
    audit_id = uuid.uuid4().hex[:22]
    await conn.execute(
        t.tokens.insert().values(
            id_hash=token_hash(token),
            user_id=user_id,
            project_id=project_id,
            roles=roles,
            audit_id=audit_id,
            issued_at=issued,
            expires_at=expires,
        )
    )
    return token, issued, expires, audit_id


#: Built once: every API request validates its token (building the statement cost more
#: than SQLite's execution of it; docs/benchmarks.md).
_VALIDATE = (
    sa.select(
        t.tokens.c.user_id,
        t.tokens.c.project_id,
        t.tokens.c.roles,
        t.tokens.c.issued_at,
        t.tokens.c.expires_at,
        t.tokens.c.audit_id,
        t.users.c.name.label("user_name"),
        t.users.c.enabled,
        t.projects.c.name.label("project_name"),
        t.projects.c.enabled.label("project_enabled"),
    )
    .join(t.users, t.users.c.id == t.tokens.c.user_id)
    .outerjoin(t.projects, t.projects.c.id == t.tokens.c.project_id)
    .where(t.tokens.c.id_hash == sa.bindparam("id_hash"))
)


async def validate_token(conn: Connection, token: str | None) -> TokenInfo | None:
    """Return the token's identity, or None if it is unknown, expired or its user disabled."""
    if not token:
        return None
    row = (await conn.execute(_VALIDATE, {"id_hash": token_hash(token)})).first()
    if row is None or row.expires_at <= utcnow() or not row.enabled:
        return None
    if row.project_id and not row.project_enabled:
        return None
    return TokenInfo(
        user_id=row.user_id,
        user_name=row.user_name,
        project_id=row.project_id,
        project_name=row.project_name,
        roles=list(row.roles),
        issued_at=row.issued_at,
        expires_at=row.expires_at,
        audit_id=row.audit_id,
    )


async def revoke_token(conn: Connection, token: str) -> bool:
    result = await conn.execute(t.tokens.delete().where(t.tokens.c.id_hash == token_hash(token)))
    return result.rowcount > 0


async def revoke_user_tokens(conn: Connection, user_id: str, project_id: str | None = None) -> int:
    """Revoke a user's tokens (on one project only, if given).

    Called when a role is removed or a password changes: token roles are a snapshot
    taken at issue time, so without this a removed role would keep working until expiry.
    """
    query = t.tokens.delete().where(t.tokens.c.user_id == user_id)
    if project_id is not None:
        query = query.where(t.tokens.c.project_id == project_id)
    result = await conn.execute(query)
    return result.rowcount


async def revoke_project_tokens(conn: Connection, project_id: str) -> int:
    """Revoke every token scoped to a project (the project is being deleted)."""
    result = await conn.execute(t.tokens.delete().where(t.tokens.c.project_id == project_id))
    return result.rowcount


async def purge_expired(conn: Connection) -> int:
    result = await conn.execute(t.tokens.delete().where(t.tokens.c.expires_at <= utcnow()))
    return result.rowcount
