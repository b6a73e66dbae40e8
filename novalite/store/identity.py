"""Identity records: the one domain, projects, users, roles, role assignments, and the first start.

There is one domain, ``default`` (named ``Default``): the schema keeps a ``domain_id``
column so names stay unique per domain as in Keystone, but domains cannot be created.
A name already taken is refused with Keystone's Conflict message, also when a concurrent
create wins the race to the unique constraint. Tokens carry a snapshot of their roles,
so whatever takes a role away (a removed grant, a deleted user, project or role, a new
password) revokes the tokens concerned in the same transaction.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from novalite.db import Connection
from novalite.db import schema as t
from novalite.errors import Conflict
from novalite.identity.passwords import hash_password
from novalite.store.tokens import revoke_project_tokens, revoke_user_tokens
from novalite.timeutil import utcnow

DEFAULT_DOMAIN_ID = "default"
DEFAULT_DOMAIN_NAME = "Default"
DEFAULT_DOMAIN = {"id": DEFAULT_DOMAIN_ID, "name": DEFAULT_DOMAIN_NAME}

#: Keystone's default roles, made at the first start and immutable afterwards.
DEFAULT_ROLES = {
    "admin": "Full control of everything, in every project.",
    "manager": "Manages a project (implies member).",
    "member": "Creates and changes resources in a project (implies reader).",
    "reader": "Reads a project's resources, changes nothing.",
    "service": "Internal service accounts.",
}


def new_id() -> str:
    return uuid.uuid4().hex


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


@dataclass(frozen=True)
class NameFilters:
    """Keystone's list filters; None filters nothing. Roles have neither domain nor ``enabled``."""

    name: str | None = None
    domain_id: str | None = None
    enabled: bool | None = None


def duplicate(kind: str, name: str, domain_id: str | None = None) -> Conflict:
    """Keystone's message for a name already taken (in the domain, for projects and users)."""
    where = f" at domain ID {domain_id}" if domain_id is not None else ""
    return Conflict(f"Conflict occurred attempting to store {kind} - Duplicate entry found with name {name}{where}.")


async def _write_unique(conn: Connection, statement: Any, error: Conflict) -> None:
    """Run an INSERT or UPDATE whose name a concurrent writer may have taken meanwhile."""
    try:
        await conn.execute(statement)
    except IntegrityError:
        raise error from None


async def _one(conn: Connection, table: sa.Table, ident: str) -> sa.Row[Any]:
    return (await conn.execute(sa.select(table).where(table.c.id == ident))).one()


def _named_list(table: sa.Table, filters: NameFilters) -> sa.Select[Any]:
    """Projects and users are listed alike: by name, filtered on name, domain_id and enabled."""
    query = sa.select(table).order_by(table.c.name)
    if filters.name is not None:
        query = query.where(table.c.name == filters.name)
    if filters.domain_id is not None:
        query = query.where(table.c.domain_id == filters.domain_id)
    if filters.enabled is not None:
        query = query.where(table.c.enabled == filters.enabled)
    return query


# -- projects ----------------------------------------------------------------------------


class ProjectChanges(TypedDict, total=False):
    name: str
    description: str
    enabled: bool


async def get_project(conn: Connection, project_id: str) -> sa.Row[Any] | None:
    return (await conn.execute(sa.select(t.projects).where(t.projects.c.id == project_id))).first()


async def find_project(conn: Connection, name: str, domain_id: str = DEFAULT_DOMAIN_ID) -> sa.Row[Any] | None:
    query = sa.select(t.projects).where(t.projects.c.name == name, t.projects.c.domain_id == domain_id)
    return (await conn.execute(query)).first()


async def list_projects(conn: Connection, filters: NameFilters) -> list[sa.Row[Any]]:
    return list(await conn.execute(_named_list(t.projects, filters)))


async def create_project(
    conn: Connection, *, name: str, domain_id: str, description: str, enabled: bool
) -> sa.Row[Any]:
    """A new project; Conflict if the domain already has one of that name."""
    if await find_project(conn, name, domain_id) is not None:
        raise duplicate("project", name, domain_id)
    project_id = new_id()
    insert = t.projects.insert().values(
        id=project_id, name=name, domain_id=domain_id, description=description, enabled=enabled, created_at=utcnow()
    )
    await _write_unique(conn, insert, duplicate("project", name, domain_id))
    return await _one(conn, t.projects, project_id)


async def update_project(conn: Connection, project: sa.Row[Any], changes: ProjectChanges) -> sa.Row[Any]:
    """Apply ``changes`` to ``project`` (read in this transaction); Conflict if the new name is taken.

    Disabling needs nothing more: token validation checks that the project is enabled.
    """
    values: dict[str, Any] = dict(changes)
    if values.get("name", project.name) == project.name:
        values.pop("name", None)
    elif await find_project(conn, values["name"], project.domain_id) is not None:
        raise duplicate("project", values["name"], project.domain_id)
    if values:
        update = t.projects.update().where(t.projects.c.id == project.id).values(**values)
        await _write_unique(conn, update, duplicate("project", values.get("name", ""), DEFAULT_DOMAIN_ID))
    return await _one(conn, t.projects, project.id)


async def delete_project(conn: Connection, project_id: str) -> None:
    """The project, its role assignments and every token scoped to it."""
    await conn.execute(t.role_assignments.delete().where(t.role_assignments.c.project_id == project_id))
    await revoke_project_tokens(conn, project_id)
    await conn.execute(t.projects.delete().where(t.projects.c.id == project_id))


async def user_projects(conn: Connection, user_id: str) -> list[sa.Row[Any]]:
    """Projects the user holds at least one role on, by name."""
    has_role = sa.exists().where(
        t.role_assignments.c.user_id == user_id, t.role_assignments.c.project_id == t.projects.c.id
    )
    return list(await conn.execute(sa.select(t.projects).where(has_role).order_by(t.projects.c.name)))


# -- users -------------------------------------------------------------------------------


class UserChanges(TypedDict, total=False):
    name: str
    password_hash: str | None
    default_project_id: str | None
    email: str | None
    description: str | None
    enabled: bool


async def get_user(conn: Connection, user_id: str) -> sa.Row[Any] | None:
    return (await conn.execute(sa.select(t.users).where(t.users.c.id == user_id))).first()


async def find_user(conn: Connection, name: str, domain_id: str = DEFAULT_DOMAIN_ID) -> sa.Row[Any] | None:
    query = sa.select(t.users).where(t.users.c.name == name, t.users.c.domain_id == domain_id)
    return (await conn.execute(query)).first()


async def list_users(conn: Connection, filters: NameFilters) -> list[sa.Row[Any]]:
    return list(await conn.execute(_named_list(t.users, filters)))


async def create_user(
    conn: Connection,
    *,
    name: str,
    domain_id: str,
    password_hash: str | None,
    default_project_id: str | None,
    email: str | None,
    description: str | None,
    enabled: bool,
) -> sa.Row[Any]:
    """A new user (the password already hashed); Conflict if the domain already has one of that name."""
    if await find_user(conn, name, domain_id) is not None:
        raise duplicate("user", name, domain_id)
    user_id = new_id()
    insert = t.users.insert().values(
        id=user_id,
        name=name,
        domain_id=domain_id,
        password_hash=password_hash,
        default_project_id=default_project_id,
        email=email,
        description=description,
        enabled=enabled,
        created_at=utcnow(),
    )
    await _write_unique(conn, insert, duplicate("user", name, domain_id))
    return await _one(conn, t.users, user_id)


async def update_user(conn: Connection, user: sa.Row[Any], changes: UserChanges) -> sa.Row[Any]:
    """Apply ``changes`` to ``user`` (read in this transaction); Conflict if the new name is taken.

    A new password ends every session made with the old one. Enabling the user or
    setting a password unlocks a locked-out user (as Keystone's ``enabled`` setter does):
    that is how an admin lifts a lockout early.
    """
    values: dict[str, Any] = dict(changes)
    if values.get("name", user.name) == user.name:
        values.pop("name", None)
    elif await find_user(conn, values["name"], user.domain_id) is not None:
        raise duplicate("user", values["name"], user.domain_id)
    if values.get("enabled") or "password_hash" in values:
        values.update(_UNLOCKED)
    if values:
        update = t.users.update().where(t.users.c.id == user.id).values(**values)
        await _write_unique(conn, update, duplicate("user", values.get("name", ""), DEFAULT_DOMAIN_ID))
    if "password_hash" in values:
        await revoke_user_tokens(conn, user.id)
    return await _one(conn, t.users, user.id)


async def replace_password(conn: Connection, user_id: str, password_hash: str) -> None:
    """A user's new password (already hashed); their tokens are revoked with the old one, the lockout lifted."""
    await conn.execute(t.users.update().where(t.users.c.id == user_id).values(password_hash=password_hash, **_UNLOCKED))
    await revoke_user_tokens(conn, user_id)


# -- failed logins (the lockout) -----------------------------------------------------------
# Kept in the users table, not in memory: every API process sharing the database counts
# the same failures, so spreading guesses over processes gains an attacker nothing.

#: The column values of a user with no failed login since the last success.
_UNLOCKED: dict[str, Any] = {"failed_auth_count": 0, "failed_auth_at": None}


async def failed_auth(conn: Connection, user_id: str) -> tuple[int, datetime | None]:
    """(consecutive failed logins, time of the last one) as stored now; (0, None) for no such user."""
    row = (
        await conn.execute(
            sa.select(t.users.c.failed_auth_count, t.users.c.failed_auth_at).where(t.users.c.id == user_id)
        )
    ).first()
    return (row.failed_auth_count, row.failed_auth_at) if row is not None else (0, None)


async def record_failed_auth(conn: Connection, user_id: str, *, attempts: int, duration: float) -> None:
    """Count one more failed login, atomically (concurrent failures in other processes all count).

    A lockout that has run out starts the count afresh (Keystone resets it when the
    locked user next tries), so one more typo after the lockout does not lock again.
    """
    now = utcnow()
    users = t.users
    count: Any = users.c.failed_auth_count + 1
    if attempts and duration:
        expired = sa.and_(
            users.c.failed_auth_count >= attempts,
            users.c.failed_auth_at <= now - timedelta(seconds=duration),
        )
        count = sa.case((expired, 1), else_=count)
    await conn.execute(users.update().where(users.c.id == user_id).values(failed_auth_count=count, failed_auth_at=now))


async def reset_failed_auth(conn: Connection, user_id: str) -> None:
    """A successful login clears the count (writing only if there is one to clear)."""
    users = t.users
    await conn.execute(users.update().where(users.c.id == user_id, users.c.failed_auth_count > 0).values(**_UNLOCKED))


async def delete_user(conn: Connection, user_id: str) -> None:
    """The user, their role assignments and their tokens."""
    await conn.execute(t.role_assignments.delete().where(t.role_assignments.c.user_id == user_id))
    await revoke_user_tokens(conn, user_id)
    await conn.execute(t.users.delete().where(t.users.c.id == user_id))


# -- roles -------------------------------------------------------------------------------


class RoleChanges(TypedDict, total=False):
    name: str
    description: str | None


async def get_role(conn: Connection, role_id: str) -> sa.Row[Any] | None:
    return (await conn.execute(sa.select(t.roles).where(t.roles.c.id == role_id))).first()


async def find_role(conn: Connection, name: str) -> sa.Row[Any] | None:
    return (await conn.execute(sa.select(t.roles).where(t.roles.c.name == name))).first()


async def role_ids(conn: Connection) -> dict[str, str]:
    """Every role's id by its name."""
    return {r.name: r.id for r in await conn.execute(sa.select(t.roles.c.id, t.roles.c.name))}


async def list_roles(conn: Connection, filters: NameFilters) -> list[sa.Row[Any]]:
    """Roles by name; a domain filter matches none, as roles here are global."""
    if filters.domain_id is not None:
        return []
    query = sa.select(t.roles).order_by(t.roles.c.name)
    if filters.name is not None:
        query = query.where(t.roles.c.name == filters.name)
    return list(await conn.execute(query))


async def create_role(conn: Connection, *, name: str, description: str | None) -> sa.Row[Any]:
    """A new role; Conflict if one has that name."""
    if await find_role(conn, name) is not None:
        raise duplicate("role", name)
    role_id = new_id()
    insert = t.roles.insert().values(id=role_id, name=name, description=description)
    await _write_unique(conn, insert, duplicate("role", name))
    return await _one(conn, t.roles, role_id)


async def update_role(conn: Connection, role: sa.Row[Any], changes: RoleChanges) -> sa.Row[Any]:
    """Apply ``changes`` to ``role`` (read in this transaction); Conflict if the new name is taken."""
    values: dict[str, Any] = dict(changes)
    if values.get("name", role.name) == role.name:
        values.pop("name", None)
    elif await find_role(conn, values["name"]) is not None:
        raise duplicate("role", values["name"])
    if values:
        update = t.roles.update().where(t.roles.c.id == role.id).values(**values)
        await _write_unique(conn, update, duplicate("role", values.get("name", "")))
    return await _one(conn, t.roles, role.id)


async def delete_role(conn: Connection, role_id: str) -> None:
    """The role and its assignments; the tokens that held it are revoked."""
    for held in await assignments(conn, role_id=role_id):
        await revoke_user_tokens(conn, held.user_id, held.project_id)
    await conn.execute(t.role_assignments.delete().where(t.role_assignments.c.role_id == role_id))
    await conn.execute(t.roles.delete().where(t.roles.c.id == role_id))


# -- role assignments --------------------------------------------------------------------


def _grant(project_id: str, user_id: str, role_id: str) -> sa.ColumnElement[bool]:
    ra = t.role_assignments
    return sa.and_(ra.c.project_id == project_id, ra.c.user_id == user_id, ra.c.role_id == role_id)


async def has_grant(conn: Connection, project_id: str, user_id: str, role_id: str) -> bool:
    query = sa.select(sa.func.count()).select_from(t.role_assignments).where(_grant(project_id, user_id, role_id))
    return bool(await conn.scalar(query))


async def grant_role(conn: Connection, project_id: str, user_id: str, role_id: str) -> None:
    """Give ``user_id`` the role on ``project_id``; granting it twice changes nothing."""
    if not await has_grant(conn, project_id, user_id, role_id):
        await conn.execute(t.role_assignments.insert().values(project_id=project_id, user_id=user_id, role_id=role_id))


async def revoke_grant(conn: Connection, project_id: str, user_id: str, role_id: str) -> bool:
    """Take the role away and revoke the user's tokens on the project; False if it was not granted."""
    result = await conn.execute(t.role_assignments.delete().where(_grant(project_id, user_id, role_id)))
    if result.rowcount == 0:
        return False
    await revoke_user_tokens(conn, user_id, project_id)
    return True


async def granted_roles(conn: Connection, project_id: str, user_id: str) -> list[sa.Row[Any]]:
    """The roles granted directly to ``user_id`` on ``project_id`` (no implied ones), by name."""
    query = (
        sa.select(t.roles)
        .join(t.role_assignments, t.role_assignments.c.role_id == t.roles.c.id)
        .where(t.role_assignments.c.project_id == project_id, t.role_assignments.c.user_id == user_id)
        .order_by(t.roles.c.name)
    )
    return list(await conn.execute(query))


async def assignments(
    conn: Connection,
    *,
    user_id: str | None = None,
    project_id: str | None = None,
    role_id: str | None = None,
) -> list[sa.Row[Any]]:
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


# -- first start -------------------------------------------------------------------------
# Idempotent: later starts change nothing (the admin's password is set only when the user
# is created, or when the operator resets it with ``set_password``).


async def ensure_roles(conn: Connection) -> dict[str, str]:
    """Create the default roles that are missing; every role's id by name."""
    existing = await role_ids(conn)
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
    await grant_role(conn, project_id, user_id, roles["admin"])
    return generated


async def set_password(conn: Connection, user_name: str, password: str) -> None:
    """The operator's reset (``novalite`` CLI): hash and store, by user name; lifts a lockout too."""
    await conn.execute(
        t.users.update()
        .where(t.users.c.name == user_name)
        .values(password_hash=await hash_password(password), **_UNLOCKED)
    )
