"""``/v3/users``: list, show, create, update (incl. password), delete; own projects; password change.

Passwords are hashed (argon2) before a transaction opens: hashing is slow, and on
SQLite the one pooled connection must not be held meanwhile.
"""

from __future__ import annotations

from typing import Any, cast

from aiohttp import web

from novalite.api.errors import Unauthorized
from novalite.api.http import json_response, runtime
from novalite.api.identity.common import (
    Resource,
    boolean,
    collection_links,
    description,
    domain_of,
    enforce,
    name_schema,
    not_found,
    read_resource,
    self_link,
    token_info,
)
from novalite.api.identity.projects import project_view
from novalite.identity.passwords import hash_password, verify_password
from novalite.store import identity as store
from novalite.store.tokens import TokenInfo

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


#: What a PATCH may change as given (the password is hashed first).
_CHANGEABLE = ("name", "default_project_id", "email", "description", "enabled")


async def _hashed(password: str | None) -> str | None:
    return await hash_password(password) if password is not None else None


async def _new_user(ref: dict[str, Any]) -> dict[str, Any]:
    domain_id = domain_of(ref)
    return {
        "name": ref["name"],
        "domain_id": domain_id,
        "password_hash": await _hashed(ref.get("password")),
        "default_project_id": ref.get("default_project_id"),
        "email": ref.get("email"),
        "description": ref.get("description"),
        "enabled": ref.get("enabled", True),
    }


async def _changes(ref: dict[str, Any]) -> store.UserChanges:
    changes = cast(store.UserChanges, {key: ref[key] for key in _CHANGEABLE if key in ref})
    if "password" in ref:
        changes["password_hash"] = await _hashed(ref["password"])
    return changes


def _own_user(token: TokenInfo, ident: str) -> bool:
    return token.user_id == ident


USERS = Resource(
    kind="user",
    view=user_view,
    get=store.get_user,
    list_rows=store.list_users,
    create=store.create_user,
    update=store.update_user,
    delete=store.delete_user,
    create_schema=CREATE_SCHEMA,
    update_schema=UPDATE_SCHEMA,
    prepare_create=_new_user,
    prepare_update=_changes,
    owns=_own_user,
)
routes = USERS.routes()


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
        await store.replace_password(conn, ident, new_hash)
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
