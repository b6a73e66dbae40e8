"""``/v3/projects``: list, show, create, update (rename, enable/disable), delete.

Projects are flat and live in the default domain: ``parent_id`` is always the domain,
as for Keystone's top-level projects.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from sqlalchemy.exc import IntegrityError

from novalite.api.errors import BadRequest, Conflict
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
from novalite.db import schema as t
from novalite.store import identity as store
from novalite.store.bootstrap import new_id
from novalite.store.tokens import revoke_project_tokens
from novalite.timeutil import utcnow

routes = web.RouteTableDef()

_properties: dict[str, Any] = {
    "name": name_schema(64),
    "description": description,
    "domain_id": {"type": ["string", "null"]},
    "parent_id": {"type": ["string", "null"]},
    "enabled": boolean,
    "is_domain": boolean,
    "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 0},
    "options": {"type": "object"},
}
CREATE_SCHEMA: dict[str, Any] = {"type": "object", "properties": _properties, "required": ["name"]}
UPDATE_SCHEMA: dict[str, Any] = {"type": "object", "properties": _properties, "minProperties": 1}


def project_view(request: web.Request, row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "name": row.name,
        "domain_id": row.domain_id,
        "description": row.description or "",
        "enabled": bool(row.enabled),
        "parent_id": row.domain_id,
        "is_domain": False,
        "tags": [],
        "options": {},
        "links": self_link(request, "projects", row.id),
    }


def _duplicate(name: str, domain_id: str) -> Conflict:
    return Conflict(
        f"Conflict occurred attempting to store project - Duplicate entry found with name {name} "
        f"at domain ID {domain_id}."
    )


def _check_placement(ref: dict[str, Any], domain_id: str) -> None:
    """Refuse what this flat, single-domain model cannot store instead of dropping it."""
    if ref.get("is_domain"):
        raise BadRequest("Invalid input for field 'is_domain': projects acting as domains are not supported")
    parent = ref.get("parent_id")
    if parent not in (None, domain_id):
        raise BadRequest("Invalid input for field 'parent_id': hierarchical projects are not supported")


@routes.get("/v3/projects")
async def list_projects(request: web.Request) -> web.Response:
    enforce(request, "list_projects")
    query = list_query(request, t.projects)
    async with runtime(request).db.connect() as conn:
        rows = list(await conn.execute(query))
    return json_response({"projects": [project_view(request, r) for r in rows], "links": collection_links(request)})


@routes.get("/v3/projects/{project_id}")
async def show_project(request: web.Request) -> web.Response:
    ident = request.match_info["project_id"]
    enforce(request, "get_project", allowed=token_info(request).project_id == ident)
    async with runtime(request).db.connect() as conn:
        row = await store.get_project(conn, ident)
    if row is None:
        raise not_found("project", ident)
    return json_response({"project": project_view(request, row)})


@routes.post("/v3/projects")
async def create_project(request: web.Request) -> web.Response:
    enforce(request, "create_project")
    ref = await read_resource(request, "project", CREATE_SCHEMA)
    domain_id = ref.get("domain_id") or store.DEFAULT_DOMAIN_ID
    if domain_id != store.DEFAULT_DOMAIN_ID:
        raise not_found("domain", domain_id)
    _check_placement(ref, domain_id)
    project_id = new_id()
    try:
        async with runtime(request).db.begin() as conn:
            if await store.find_project(conn, ref["name"], domain_id) is not None:
                raise _duplicate(ref["name"], domain_id)
            await conn.execute(
                t.projects.insert().values(
                    id=project_id,
                    name=ref["name"],
                    domain_id=domain_id,
                    description=ref.get("description") or "",
                    enabled=ref.get("enabled", True),
                    created_at=utcnow(),
                )
            )
            row = await store.get_project(conn, project_id)
    except IntegrityError:  # a concurrent create won the race
        raise _duplicate(ref["name"], domain_id) from None
    return json_response({"project": project_view(request, row)}, status=201)


@routes.patch("/v3/projects/{project_id}")
async def update_project(request: web.Request) -> web.Response:
    enforce(request, "update_project")
    ident = request.match_info["project_id"]
    ref = await read_resource(request, "project", UPDATE_SCHEMA)
    values: dict[str, Any] = {}
    try:
        async with runtime(request).db.begin() as conn:
            row = await store.get_project(conn, ident)
            if row is None:
                raise not_found("project", ident)
            if ref.get("domain_id") not in (None, row.domain_id):
                raise BadRequest("Invalid input for field 'domain_id': a project cannot change domain")
            _check_placement(ref, row.domain_id)
            if "name" in ref and ref["name"] != row.name:
                if await store.find_project(conn, ref["name"], row.domain_id) is not None:
                    raise _duplicate(ref["name"], row.domain_id)
                values["name"] = ref["name"]
            if "description" in ref:
                values["description"] = ref["description"] or ""
            if "enabled" in ref:
                # Disabling is enough to stop its tokens: validation checks the project.
                values["enabled"] = ref["enabled"]
            if values:
                await conn.execute(t.projects.update().where(t.projects.c.id == ident).values(**values))
            row = await store.get_project(conn, ident)
    except IntegrityError:
        raise _duplicate(ref.get("name", ""), store.DEFAULT_DOMAIN_ID) from None
    return json_response({"project": project_view(request, row)})


@routes.delete("/v3/projects/{project_id}")
async def delete_project(request: web.Request) -> web.Response:
    enforce(request, "delete_project")
    ident = request.match_info["project_id"]
    async with runtime(request).db.begin() as conn:
        if await store.get_project(conn, ident) is None:
            raise not_found("project", ident)
        await conn.execute(t.role_assignments.delete().where(t.role_assignments.c.project_id == ident))
        await revoke_project_tokens(conn, ident)
        await conn.execute(t.projects.delete().where(t.projects.c.id == ident))
    return web.Response(status=204)
