"""First start: Keystone's default roles, the admin project and the admin user.

Idempotent: later starts change nothing (the admin's password is set only when the
user is created, or when ``reset_password`` is passed).
"""

from __future__ import annotations

import secrets
import uuid

import sqlalchemy as sa

from novalite.db import Connection
from novalite.db import schema as t
from novalite.identity.passwords import hash_password
from novalite.timeutil import utcnow

DEFAULT_ROLES = {
    "admin": "Full control of everything, in every project.",
    "manager": "Manages a project (implies member).",
    "member": "Creates and changes resources in a project (implies reader).",
    "reader": "Reads a project's resources, changes nothing.",
    "service": "Internal service accounts.",
}


def new_id() -> str:
    return uuid.uuid4().hex


async def ensure_roles(conn: Connection) -> dict[str, str]:
    existing = {r.name: r.id for r in await conn.execute(sa.select(t.roles.c.id, t.roles.c.name))}
    for name, description in DEFAULT_ROLES.items():
        if name not in existing:
            existing[name] = new_id()
            await conn.execute(t.roles.insert().values(id=existing[name], name=name, description=description))
    return existing


async def bootstrap_identity(conn: Connection, admin_password: str = "") -> str | None:
    """Create roles, project ``admin`` and user ``admin``; return the password if generated now."""
    roles = await ensure_roles(conn)
    project_id = await conn.scalar(sa.select(t.projects.c.id).where(t.projects.c.name == "admin"))
    if project_id is None:
        project_id = new_id()
        await conn.execute(
            t.projects.insert().values(
                id=project_id, name="admin", description="Bootstrap project for the admin", created_at=utcnow()
            )
        )
    user_id = await conn.scalar(sa.select(t.users.c.id).where(t.users.c.name == "admin"))
    generated = None
    if user_id is None:
        password = admin_password or secrets.token_urlsafe(18)
        generated = password if not admin_password else None
        user_id = new_id()
        await conn.execute(
            t.users.insert().values(
                id=user_id,
                name="admin",
                password_hash=await hash_password(password),
                default_project_id=project_id,
                created_at=utcnow(),
            )
        )
    has_role = await conn.scalar(
        sa.select(sa.func.count()).where(
            t.role_assignments.c.user_id == user_id,
            t.role_assignments.c.project_id == project_id,
            t.role_assignments.c.role_id == roles["admin"],
        )
    )
    if not has_role:
        await conn.execute(
            t.role_assignments.insert().values(user_id=user_id, project_id=project_id, role_id=roles["admin"])
        )
    return generated


async def set_password(conn: Connection, user_name: str, password: str) -> None:
    await conn.execute(
        t.users.update().where(t.users.c.name == user_name).values(password_hash=await hash_password(password))
    )
