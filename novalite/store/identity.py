"""Identity lookups shared by the token and admin APIs.

There is one domain, ``default`` (named ``Default``): the schema keeps a ``domain_id``
column so names stay unique per domain as in Keystone, but domains cannot be created.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Row

from novalite.db import Connection
from novalite.db import schema as t

DEFAULT_DOMAIN_ID = "default"
DEFAULT_DOMAIN_NAME = "Default"
DEFAULT_DOMAIN = {"id": DEFAULT_DOMAIN_ID, "name": DEFAULT_DOMAIN_NAME}


def resolve_domain(ref: dict[str, Any] | None) -> str | None:
    """The domain id a ``{"id": ...}`` / ``{"name": ...}`` reference names, if it exists.

    Names are matched case-insensitively: clouds.yaml files say ``Default`` and
    ``default`` interchangeably, and Keystone on MySQL compares names that way.
    """
    if not isinstance(ref, dict):
        return None
    if ref.get("id") is not None:
        return DEFAULT_DOMAIN_ID if ref["id"] == DEFAULT_DOMAIN_ID else None
    name = ref.get("name")
    if isinstance(name, str) and name.lower() == DEFAULT_DOMAIN_NAME.lower():
        return DEFAULT_DOMAIN_ID
    return None


async def get_project(conn: Connection, project_id: str) -> Row | None:
    return (await conn.execute(sa.select(t.projects).where(t.projects.c.id == project_id))).first()


async def find_project(conn: Connection, name: str, domain_id: str = DEFAULT_DOMAIN_ID) -> Row | None:
    query = sa.select(t.projects).where(t.projects.c.name == name, t.projects.c.domain_id == domain_id)
    return (await conn.execute(query)).first()


async def get_user(conn: Connection, user_id: str) -> Row | None:
    return (await conn.execute(sa.select(t.users).where(t.users.c.id == user_id))).first()


async def find_user(conn: Connection, name: str, domain_id: str = DEFAULT_DOMAIN_ID) -> Row | None:
    query = sa.select(t.users).where(t.users.c.name == name, t.users.c.domain_id == domain_id)
    return (await conn.execute(query)).first()


async def get_role(conn: Connection, role_id: str) -> Row | None:
    return (await conn.execute(sa.select(t.roles).where(t.roles.c.id == role_id))).first()


async def user_projects(conn: Connection, user_id: str) -> list[Row]:
    """Projects the user holds at least one role on, by name."""
    has_role = sa.exists().where(
        t.role_assignments.c.user_id == user_id, t.role_assignments.c.project_id == t.projects.c.id
    )
    return list(await conn.execute(sa.select(t.projects).where(has_role).order_by(t.projects.c.name)))


async def assignments(
    conn: Connection,
    *,
    user_id: str | None = None,
    project_id: str | None = None,
    role_id: str | None = None,
) -> list[Row]:
    """Direct role assignments with the user, project and role names."""
    ra = t.role_assignments
    query = (
        sa.select(
            ra.c.user_id,
            ra.c.project_id,
            ra.c.role_id,
            t.users.c.name.label("user_name"),
            t.users.c.domain_id.label("user_domain_id"),
            t.projects.c.name.label("project_name"),
            t.projects.c.domain_id.label("project_domain_id"),
            t.roles.c.name.label("role_name"),
        )
        .join(t.users, t.users.c.id == ra.c.user_id)
        .join(t.projects, t.projects.c.id == ra.c.project_id)
        .join(t.roles, t.roles.c.id == ra.c.role_id)
        .order_by(t.users.c.name, t.projects.c.name, t.roles.c.name)
    )
    if user_id is not None:
        query = query.where(ra.c.user_id == user_id)
    if project_id is not None:
        query = query.where(ra.c.project_id == project_id)
    if role_id is not None:
        query = query.where(ra.c.role_id == role_id)
    return list(await conn.execute(query))
