"""``/v3/projects``: list, show, create, update (rename, enable/disable), delete.

Projects are flat and live in the default domain: ``parent_id`` is always the domain,
as for Keystone's top-level projects.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.errors import BadRequest
from novalite.api.identity.common import (
    Resource,
    boolean,
    description,
    domain_of,
    name_schema,
    self_link,
)
from novalite.store import identity as store
from novalite.store.tokens import TokenInfo

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


def _check_placement(ref: dict[str, Any], domain_id: str) -> None:
    """Refuse what this flat, single-domain model cannot store instead of dropping it."""
    if ref.get("is_domain"):
        raise BadRequest("Invalid input for field 'is_domain': projects acting as domains are not supported")
    parent = ref.get("parent_id")
    if parent not in (None, domain_id):
        raise BadRequest("Invalid input for field 'parent_id': hierarchical projects are not supported")


async def _new_project(ref: dict[str, Any]) -> dict[str, Any]:
    domain_id = domain_of(ref)
    _check_placement(ref, domain_id)
    return {
        "name": ref["name"],
        "domain_id": domain_id,
        "description": ref.get("description") or "",
        "enabled": ref.get("enabled", True),
    }


async def _changes(ref: dict[str, Any]) -> store.ProjectChanges:
    changes = store.ProjectChanges()
    if "name" in ref:
        changes["name"] = ref["name"]
    if "description" in ref:
        changes["description"] = ref["description"] or ""
    if "enabled" in ref:
        changes["enabled"] = ref["enabled"]
    return changes


def _check_update(row: Any, ref: dict[str, Any]) -> None:
    if ref.get("domain_id") not in (None, row.domain_id):
        raise BadRequest("Invalid input for field 'domain_id': a project cannot change domain")
    _check_placement(ref, row.domain_id)


def _own_project(token: TokenInfo, ident: str) -> bool:
    return token.project_id == ident


PROJECTS = Resource(
    kind="project",
    view=project_view,
    get=store.get_project,
    list_rows=store.list_projects,
    create=store.create_project,
    update=store.update_project,
    delete=store.delete_project,
    create_schema=CREATE_SCHEMA,
    update_schema=UPDATE_SCHEMA,
    prepare_create=_new_project,
    prepare_update=_changes,
    owns=_own_project,
    check_update=_check_update,
)
routes = PROJECTS.routes()
