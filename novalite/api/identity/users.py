"""``/v3/users``: list, show, create, update (incl. password), delete; own projects; password change.

Passwords are hashed (argon2) before a transaction opens: hashing is slow, and on
SQLite the one pooled connection must not be held meanwhile.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError

from novalite.api.errors import Conflict, Unauthorized
from novalite.api.http import json_response, runtime
from novalite.api.identity.common import (
    boolean,
    collection_links,
    description,
    enforce,
    list_query,
    name_schema,
    not_found,
    read_resource,
    self_link,
    token_info,
)
from novalite.api.identity.projects import project_view
from novalite.db import schema as t
from novalite.identity.passwords import hash_password, verify_password
from novalite.store import identity as store
from novalite.store.bootstrap import new_id
from novalite.store.tokens import revoke_user_tokens
from novalite.timeutil import utcnow

routes = web.RouteTableDef()

_password = {"type": ["string", "null"], "maxLength": 4096}
_properties: dict[str, Any] = {
    "name": name_schema(255),
    "password": _password,
    "default_project_id": {"type": ["string", "null"], "maxLength": 64},
    "domain_id": {"type": ["string", "null"]},
    "email": {"type": ["string", "null"], "maxLength": 255},
    "description": description,
    "enabled": boolean,
    "options": {"type": "object"},
}
CREATE_SCHEMA: dict[str, Any] = {"type": "object", "properties": _properties, "required": ["name"]}
UPDATE_SCHEMA: dict[str, Any] = {"type": "object", "properties": _properties, "minProperties": 1}
PASSWORD_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"password": {"type": "string", "maxLength": 4096}, "original_password": {"type": "string"}},
    "required": ["password", "original_password"],
}


def user_view(request: web.Request, row: Any) -> dict[str, Any]:
    view: dict[str, Any] = {
        "id": row.id,
        "name": row.name,
        "domain_id": row.domain_id,
        "enabled": bool(row.enabled),
        "password_expires_at": None,
        "options": {},
        "links": self_link(request, "users", row.id),
    }
    # Keystone shows these optional attributes only when set.
    for key in ("default_project_id", "email", "description"):
        value = getattr(row, key)
        if value is not None:
            view[key] = value
    return view


def _duplicate(name: str, domain_id: str) -> Conflict:
    return Conflict(
        f"Conflict occurred attempting to store user - Duplicate entry found with name {name} "
        f"at domain ID {domain_id}."
    )


@routes.get("/v3/users")
async def list_users(request: web.Request) -> web.Response:
    enforce(request, "list_users")
    query = list_query(request, t.users)
    async with runtime(request).db.connect() as conn:
        rows = list(await conn.execute(query))
    return json_response({"users": [user_view(request, r) for r in rows], "links": collection_links(request)})


@routes.get("/v3/users/{user_id}")
async def show_user(request: web.Request) -> web.Response:
    ident = request.match_info["user_id"]
    enforce(request, "get_user", allowed=token_info(request).user_id == ident)
    async with runtime(request).db.connect() as conn:
        row = await store.get_user(conn, ident)
    if row is None:
        raise not_found("user", ident)
    return json_response({"user": user_view(request, row)})


@routes.post("/v3/users")
async def create_user(request: web.Request) -> web.Response:
    enforce(request, "create_user")
    ref = await read_resource(request, "user", CREATE_SCHEMA)
    domain_id = ref.get("domain_id") or store.DEFAULT_DOMAIN_ID
    if domain_id != store.DEFAULT_DOMAIN_ID:
        raise not_found("domain", domain_id)
    password_hash = await hash_password(ref["password"]) if ref.get("password") is not None else None
    user_id = new_id()
    try:
        async with runtime(request).db.begin() as conn:
            if await store.find_user(conn, ref["name"], domain_id) is not None:
                raise _duplicate(ref["name"], domain_id)
            await conn.execute(
                t.users.insert().values(
                    id=user_id,
                    name=ref["name"],
                    domain_id=domain_id,
                    password_hash=password_hash,
                    default_project_id=ref.get("default_project_id"),
                    email=ref.get("email"),
                    description=ref.get("description"),
                    enabled=ref.get("enabled", True),
                    created_at=utcnow(),
                )
            )
            row = await store.get_user(conn, user_id)
    except IntegrityError:
        raise _duplicate(ref["name"], domain_id) from None
    return json_response({"user": user_view(request, row)}, status=201)


@routes.patch("/v3/users/{user_id}")
async def update_user(request: web.Request) -> web.Response:
    enforce(request, "update_user")
    ident = request.match_info["user_id"]
    ref = await read_resource(request, "user", UPDATE_SCHEMA)
    values: dict[str, Any] = {}
    if "password" in ref:
        values["password_hash"] = await hash_password(ref["password"]) if ref["password"] is not None else None
    try:
        async with runtime(request).db.begin() as conn:
            row = await store.get_user(conn, ident)
            if row is None:
                raise not_found("user", ident)
            if "name" in ref and ref["name"] != row.name:
                if await store.find_user(conn, ref["name"], row.domain_id) is not None:
                    raise _duplicate(ref["name"], row.domain_id)
                values["name"] = ref["name"]
            for key in ("default_project_id", "email", "description", "enabled"):
                if key in ref:
                    values[key] = ref[key]
            if values:
                await conn.execute(t.users.update().where(t.users.c.id == ident).values(**values))
            if "password_hash" in values:
                # A new password ends every session made with the old one.
                await revoke_user_tokens(conn, ident)
            row = await store.get_user(conn, ident)
    except IntegrityError:
        raise _duplicate(ref.get("name", ""), store.DEFAULT_DOMAIN_ID) from None
    return json_response({"user": user_view(request, row)})


@routes.delete("/v3/users/{user_id}")
async def delete_user(request: web.Request) -> web.Response:
    enforce(request, "delete_user")
    ident = request.match_info["user_id"]
    async with runtime(request).db.begin() as conn:
        if await store.get_user(conn, ident) is None:
            raise not_found("user", ident)
        await conn.execute(t.role_assignments.delete().where(t.role_assignments.c.user_id == ident))
        await revoke_user_tokens(conn, ident)
        await conn.execute(t.users.delete().where(t.users.c.id == ident))
    return web.Response(status=204)


@routes.post("/v3/users/{user_id}/password")
async def change_password(request: web.Request) -> web.Response:
    """Self-service password change (``openstack user password set``): the old password is required."""
    ident = request.match_info["user_id"]
    enforce(request, "change_password", allowed=token_info(request).user_id == ident)
    ref = await read_resource(request, "user", PASSWORD_SCHEMA)
    async with runtime(request).db.connect() as conn:
        row = await store.get_user(conn, ident)
    if row is None:
        raise not_found("user", ident)
    if not await verify_password(row.password_hash, ref["original_password"]):
        raise Unauthorized("The request you have made requires authentication.")
    new_hash = await hash_password(ref["password"])
    async with runtime(request).db.begin() as conn:
        await conn.execute(t.users.update().where(t.users.c.id == ident).values(password_hash=new_hash))
        await revoke_user_tokens(conn, ident)
    return web.Response(status=204)


@routes.get("/v3/users/{user_id}/projects")
async def list_user_projects(request: web.Request) -> web.Response:
    ident = request.match_info["user_id"]
    enforce(request, "list_user_projects", allowed=token_info(request).user_id == ident)
    async with runtime(request).db.connect() as conn:
        if await store.get_user(conn, ident) is None:
            raise not_found("user", ident)
        rows = await store.user_projects(conn, ident)
    return json_response({"projects": [project_view(request, r) for r in rows], "links": collection_links(request)})


@routes.get("/v3/users/{user_id}/groups")
async def list_user_groups(request: web.Request) -> web.Response:
    """Groups are not supported: every user is in none."""
    ident = request.match_info["user_id"]
    enforce(request, "list_groups_for_user", allowed=token_info(request).user_id == ident)
    return json_response({"groups": [], "links": collection_links(request)})
