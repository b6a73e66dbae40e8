"""``/v3/roles``: list, show, create, update, delete; ``/v3/role_inferences``.

The default roles (admin, manager, member, reader, service) are immutable, as
``keystone-manage bootstrap`` makes them: the APIs' policies are written in their
names, so renaming or deleting one would silently change who may do what.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from aiohttp import web

from novalite.api.errors import BadRequest, Forbidden
from novalite.api.http import json_response, runtime
from novalite.api.identity.common import (
    Resource,
    collection_links,
    description,
    enforce,
    name_schema,
    self_link,
)
from novalite.store import identity as store
from novalite.store.identity import DEFAULT_ROLES
from novalite.store.tokens import IMPLIED_ROLES

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


def _immutable(row: Any) -> Forbidden:
    return Forbidden(f"Unable to change or delete immutable role resource `{row.id}` ({row.name}).")


def _filters(query: Mapping[str, str]) -> store.NameFilters:
    """Roles are filtered on name only; any ``domain_id`` matches none (there are no domain roles)."""
    return store.NameFilters(name=query.get("name"), domain_id=query.get("domain_id") or None)


async def _new_role(ref: dict[str, Any]) -> dict[str, Any]:
    return {"name": ref["name"], "description": ref.get("description")}


async def _changes(ref: dict[str, Any]) -> store.RoleChanges:
    if ref.get("options"):
        raise BadRequest("Invalid input for field 'options': role options cannot be changed")
    return cast(store.RoleChanges, {k: ref[k] for k in ("name", "description") if k in ref})


def _check_update(row: Any, ref: dict[str, Any]) -> None:
    if row.name in DEFAULT_ROLES and ref.get("name", row.name) != row.name:
        raise _immutable(row)


def _check_delete(row: Any) -> None:
    if row.name in DEFAULT_ROLES:
        raise _immutable(row)


ROLES = Resource(
    kind="role",
    view=role_view,
    get=store.get_role,
    list_rows=store.list_roles,
    create=store.create_role,
    update=store.update_role,
    delete=store.delete_role,
    create_schema=CREATE_SCHEMA,
    update_schema=UPDATE_SCHEMA,
    prepare_create=_new_role,
    prepare_update=_changes,
    filters=_filters,
    check_update=_check_update,
    check_delete=_check_delete,
)
routes = ROLES.routes()


@routes.get("/v3/role_inferences")
async def list_role_inferences(request: web.Request) -> web.Response:
    """The fixed implications admin → manager → member → reader (``openstack implied role list``)."""
    enforce(request, "list_role_inference_rules")
    async with runtime(request).db.connect() as conn:
        ids = await store.role_ids(conn)

    def ref(name: str) -> dict[str, Any]:
        return {"id": ids[name], "name": name, "links": self_link(request, "roles", ids[name])}

    inferences = [
        {"prior_role": ref(prior), "implies": [ref(n) for n in implied if n in ids]}
        for prior, implied in IMPLIED_ROLES.items()
        if prior in ids
    ]
    return json_response({"role_inferences": inferences, "links": collection_links(request)})
