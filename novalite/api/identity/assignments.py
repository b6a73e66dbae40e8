"""Role assignments: grants of a role to a user on a project, and ``/v3/role_assignments``.

Only user-on-project grants exist (no groups, no domain or system scope); queries for
the other kinds answer with an empty list, as Keystone would when there are none.
Removing a grant revokes the user's tokens on that project, because tokens carry
the roles they were issued with.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.errors import NotFound
from novalite.api.http import json_response, runtime
from novalite.api.identity.common import collection_links, enforce, not_found, query_bool, v3_base
from novalite.api.identity.roles import role_view
from novalite.store import Connection
from novalite.store import identity as store
from novalite.store.tokens import IMPLIED_ROLES

routes = web.RouteTableDef()

GRANT = "/v3/projects/{project_id}/users/{user_id}/roles/{role_id}"


async def _check_actors(conn: Connection, project_id: str, user_id: str, role_id: str | None = None) -> None:
    """404 naming the first of role, user, project that does not exist."""
    if role_id is not None and await store.get_role(conn, role_id) is None:
        raise not_found("role", role_id)
    if await store.get_user(conn, user_id) is None:
        raise not_found("user", user_id)
    if await store.get_project(conn, project_id) is None:
        raise not_found("project", project_id)


def _no_grant(project_id: str, user_id: str, role_id: str) -> NotFound:
    return NotFound(
        f"Could not find role assignment with role: {role_id}, user or group: {user_id}, "
        f"project, domain, or system: {project_id}."
    )


@routes.put(GRANT)
async def create_grant(request: web.Request) -> web.Response:
    enforce(request, "create_grant")
    p, u, r = (request.match_info[k] for k in ("project_id", "user_id", "role_id"))
    async with runtime(request).db.begin() as conn:
        await _check_actors(conn, p, u, r)
        await store.grant_role(conn, p, u, r)
    return web.Response(status=204)


@routes.get(GRANT)  # HEAD too: aiohttp answers HEAD with the GET handler, minus the body
async def check_grant(request: web.Request) -> web.Response:
    enforce(request, "check_grant")
    p, u, r = (request.match_info[k] for k in ("project_id", "user_id", "role_id"))
    async with runtime(request).db.connect() as conn:
        await _check_actors(conn, p, u, r)
        exists = await store.has_grant(conn, p, u, r)
    if not exists:
        raise _no_grant(p, u, r)
    return web.Response(status=204)


@routes.delete(GRANT)
async def revoke_grant(request: web.Request) -> web.Response:
    enforce(request, "revoke_grant")
    p, u, r = (request.match_info[k] for k in ("project_id", "user_id", "role_id"))
    async with runtime(request).db.begin() as conn:
        await _check_actors(conn, p, u, r)
        if not await store.revoke_grant(conn, p, u, r):
            raise _no_grant(p, u, r)
    return web.Response(status=204)


@routes.get("/v3/projects/{project_id}/users/{user_id}/roles")
async def list_grants(request: web.Request) -> web.Response:
    enforce(request, "list_grants")
    p, u = request.match_info["project_id"], request.match_info["user_id"]
    async with runtime(request).db.connect() as conn:
        await _check_actors(conn, p, u)
        rows = await store.granted_roles(conn, p, u)
    return json_response({"roles": [role_view(request, r) for r in rows], "links": collection_links(request)})


def _assignment_view(
    request: web.Request, row: Any, role: tuple[str, str], names: bool, prior: str | None = None
) -> dict[str, Any]:
    role_id, role_name = role
    domain = {"id": store.DEFAULT_DOMAIN_ID, "name": store.DEFAULT_DOMAIN_NAME}
    user: dict[str, Any] = {"id": row.user_id}
    project: dict[str, Any] = {"id": row.project_id}
    role_ref: dict[str, Any] = {"id": role_id}
    if names:
        user.update(name=row.user_name, domain=dict(domain))
        project.update(name=row.project_name, domain=dict(domain))
        role_ref["name"] = role_name
    links = {"assignment": f"{v3_base(request)}/projects/{row.project_id}/users/{row.user_id}/roles/{prior or role_id}"}
    if prior is not None:
        links["prior_role"] = f"{v3_base(request)}/roles/{prior}"
    return {"role": role_ref, "user": user, "scope": {"project": project}, "links": links}


@routes.get("/v3/role_assignments")
async def list_role_assignments(request: web.Request) -> web.Response:
    """What ``openstack role assignment list`` shows; ``effective`` adds the implied roles."""
    enforce(request, "list_role_assignments")
    q = request.query
    names = query_bool(q.get("include_names")) is True
    effective = "effective" in q and query_bool(q.get("effective")) is not False
    other_kinds = ("group.id", "scope.domain.id", "scope.system", "scope.OS-INHERIT:inherited_to")
    if any(q.get(k) for k in other_kinds):
        return json_response({"role_assignments": [], "links": collection_links(request)})
    wanted_role = q.get("role.id")
    async with runtime(request).db.connect() as conn:
        rows = await store.assignments(conn, user_id=q.get("user.id"), project_id=q.get("scope.project.id"))
        role_ids = await store.role_ids(conn)
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for row in rows:
        granted: list[tuple[str, str, str | None]] = [(row.role_id, row.role_name, None)]
        if effective:
            pending = [row.role_name]
            while pending:
                for implied in IMPLIED_ROLES.get(pending.pop(), []):
                    if implied in role_ids:
                        granted.append((role_ids[implied], implied, row.role_id))
                        pending.append(implied)
        for role_id, role_name, prior in granted:
            key = (row.user_id, row.project_id, role_id)
            if (wanted_role and role_id != wanted_role) or (effective and key in seen):
                continue
            seen.add(key)
            out.append(_assignment_view(request, row, (role_id, role_name), names, prior))
    return json_response({"role_assignments": out, "links": collection_links(request)})
