"""``/v3/roles``: list, show, create, update, delete; ``/v3/role_inferences``.

The default roles (admin, manager, member, reader, service) are immutable, as
``keystone-manage bootstrap`` makes them: the APIs' policies are written in their
names, so renaming or deleting one would silently change who may do what.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.exc import IntegrityError

from novalite.api.errors import BadRequest, Conflict, Forbidden
from novalite.api.http import json_response, runtime
from novalite.api.identity.common import (
    collection_links,
    description,
    enforce,
    name_schema,
    not_found,
    read_resource,
    self_link,
)
from novalite.db import schema as t
from novalite.store import identity as store
from novalite.store.bootstrap import DEFAULT_ROLES, new_id
from novalite.store.tokens import IMPLIED_ROLES, revoke_user_tokens

routes = web.RouteTableDef()

_properties: dict[str, Any] = {
    "name": name_schema(255),
    "description": description,
    "domain_id": {"type": "null"},
    "options": {"type": "object"},
}
CREATE_SCHEMA: dict[str, Any] = {"type": "object", "properties": _properties, "required": ["name"]}
UPDATE_SCHEMA: dict[str, Any] = {"type": "object", "properties": _properties, "minProperties": 1}


def role_view(request: web.Request, row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "domain_id": None,
        "description": row.description,
        "options": {"immutable": True} if row.name in DEFAULT_ROLES else {},
        "links": self_link(request, "roles", row.id),
    }


def _duplicate(name: str) -> Conflict:
    return Conflict(f"Conflict occurred attempting to store role - Duplicate entry found with name {name}.")


def _immutable(row: Any) -> Forbidden:
    return Forbidden(f"Unable to change or delete immutable role resource `{row.id}` ({row.name}).")


@routes.get("/v3/roles")
async def list_roles(request: web.Request) -> web.Response:
    enforce(request, "list_roles")
    query = sa.select(t.roles).order_by(t.roles.c.name)
    if "name" in request.query:
        query = query.where(t.roles.c.name == request.query["name"])
    if request.query.get("domain_id"):
        return json_response({"roles": [], "links": collection_links(request)})  # no domain-specific roles
    async with runtime(request).db.connect() as conn:
        rows = list(await conn.execute(query))
    return json_response({"roles": [role_view(request, r) for r in rows], "links": collection_links(request)})


@routes.get("/v3/roles/{role_id}")
async def show_role(request: web.Request) -> web.Response:
    enforce(request, "get_role")
    ident = request.match_info["role_id"]
    async with runtime(request).db.connect() as conn:
        row = await store.get_role(conn, ident)
    if row is None:
        raise not_found("role", ident)
    return json_response({"role": role_view(request, row)})


@routes.post("/v3/roles")
async def create_role(request: web.Request) -> web.Response:
    enforce(request, "create_role")
    ref = await read_resource(request, "role", CREATE_SCHEMA)
    role_id = new_id()
    try:
        async with runtime(request).db.begin() as conn:
            if await conn.scalar(sa.select(t.roles.c.id).where(t.roles.c.name == ref["name"])):
                raise _duplicate(ref["name"])
            await conn.execute(
                t.roles.insert().values(id=role_id, name=ref["name"], description=ref.get("description"))
            )
            row = await store.get_role(conn, role_id)
    except IntegrityError:
        raise _duplicate(ref["name"]) from None
    return json_response({"role": role_view(request, row)}, status=201)


@routes.patch("/v3/roles/{role_id}")
async def update_role(request: web.Request) -> web.Response:
    enforce(request, "update_role")
    ident = request.match_info["role_id"]
    ref = await read_resource(request, "role", UPDATE_SCHEMA)
    if ref.get("options"):
        raise BadRequest("Invalid input for field 'options': role options cannot be changed")
    try:
        async with runtime(request).db.begin() as conn:
            row = await store.get_role(conn, ident)
            if row is None:
                raise not_found("role", ident)
            values = {k: ref[k] for k in ("name", "description") if k in ref}
            if row.name in DEFAULT_ROLES and values.get("name", row.name) != row.name:
                raise _immutable(row)
            if "name" in values and values["name"] != row.name:
                if await conn.scalar(sa.select(t.roles.c.id).where(t.roles.c.name == values["name"])):
                    raise _duplicate(values["name"])
            if values:
                await conn.execute(t.roles.update().where(t.roles.c.id == ident).values(**values))
            row = await store.get_role(conn, ident)
    except IntegrityError:
        raise _duplicate(ref.get("name", "")) from None
    return json_response({"role": role_view(request, row)})


@routes.delete("/v3/roles/{role_id}")
async def delete_role(request: web.Request) -> web.Response:
    enforce(request, "delete_role")
    ident = request.match_info["role_id"]
    async with runtime(request).db.begin() as conn:
        row = await store.get_role(conn, ident)
        if row is None:
            raise not_found("role", ident)
        if row.name in DEFAULT_ROLES:
            raise _immutable(row)
        # Tokens carry a snapshot of their roles: end those that hold this one.
        for held in await store.assignments(conn, role_id=ident):
            await revoke_user_tokens(conn, held.user_id, held.project_id)
        await conn.execute(t.role_assignments.delete().where(t.role_assignments.c.role_id == ident))
        await conn.execute(t.roles.delete().where(t.roles.c.id == ident))
    return web.Response(status=204)


@routes.get("/v3/role_inferences")
async def list_role_inferences(request: web.Request) -> web.Response:
    """The fixed implications admin → manager → member → reader (``openstack implied role list``)."""
    enforce(request, "list_role_inference_rules")
    async with runtime(request).db.connect() as conn:
        ids = {r.name: r.id for r in await conn.execute(sa.select(t.roles.c.id, t.roles.c.name))}

    def ref(name: str) -> dict[str, Any]:
        return {"id": ids[name], "name": name, "links": self_link(request, "roles", ids[name])}

    inferences = [
        {"prior_role": ref(prior), "implies": [ref(n) for n in implied if n in ids]}
        for prior, implied in IMPLIED_ROLES.items()
        if prior in ids
    ]
    return json_response({"role_inferences": inferences, "links": collection_links(request)})
