"""Flavors: list/show/create/update/delete, extra specs, and access lists of private flavors.

Shapes follow Nova's flavor view builder: ``swap`` is ``""`` when 0 below 2.75 (0
from 2.75), ``description`` appears at 2.55 and ``extra_specs`` at 2.61. A private
flavor is visible only to admins and to projects on its access list.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from novalite.api.compute.common import links, next_link, page_params, require_admin, strict_query
from novalite.api.compute.microversions import microversion
from novalite.api.errors import BadRequest, Conflict, NotFound
from novalite.api.http import context, json_response, read_json, runtime
from novalite.api.validation import bool_word, boolean, name_schema, to_bool, validate
from novalite.store import flavors as store
from novalite.store.flavors import SORT_KEYS, FlavorFilters, NewFlavor, get_flavor
from novalite.store.identity import get_project

routes = web.RouteTableDef()

MAX_INT = 0x7FFFFFFF
FLAVORS = "/v2.1/flavors"

# minLength: as Nova's positive_integer/non_negative_integer, "" is no number (int("") would crash).
_positive = {"type": ["integer", "string"], "pattern": "^[0-9]*$", "minLength": 1, "minimum": 1, "maximum": MAX_INT}
_non_negative = {"type": ["integer", "string"], "pattern": "^[0-9]*$", "minLength": 1, "minimum": 0, "maximum": MAX_INT}
_description = {
    "type": ["string", "null"],
    "minLength": 0,
    "maxLength": 65535,
    "pattern": r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*$",
}

_CREATE_PROPS: dict[str, Any] = {
    "name": name_schema(),
    "id": {
        "type": ["string", "number", "null"],
        "minLength": 1,
        "maxLength": 255,
        "pattern": "^(?! )[a-zA-Z0-9. _-]+(?<! )$",
    },
    "ram": _positive,
    "vcpus": _positive,
    "disk": _non_negative,
    "OS-FLV-EXT-DATA:ephemeral": _non_negative,
    "swap": _non_negative,
    "rxtx_factor": {
        "type": ["number", "string"],
        "pattern": r"^[0-9]+(\.[0-9]+)?$",
        "minimum": 0,
        "exclusiveMinimum": True,
        "maximum": 3.40282e38,
    },
    "os-flavor-access:is_public": boolean,
}


def _create_schema(with_description: bool) -> dict[str, Any]:
    props = dict(_CREATE_PROPS)
    if with_description:
        props["description"] = _description
    return {
        "type": "object",
        "properties": {
            "flavor": {
                "type": "object",
                "properties": props,
                "required": ["name", "ram", "vcpus", "disk"],
                "additionalProperties": False,
            }
        },
        "required": ["flavor"],
        "additionalProperties": False,
    }


CREATE = _create_schema(False)
CREATE_V255 = _create_schema(True)
UPDATE = {
    "type": "object",
    "properties": {
        "flavor": {
            "type": "object",
            "properties": {"description": _description},
            "required": ["description"],
            "additionalProperties": False,
        }
    },
    "required": ["flavor"],
    "additionalProperties": False,
}

_spec_key = "^[a-zA-Z0-9-_:. ]{1,255}$"
_specs = {
    "type": "object",
    "patternProperties": {_spec_key: {"type": ["string", "number"], "maxLength": 255}},
    "additionalProperties": False,
}
EXTRA_SPECS_CREATE = {
    "type": "object",
    "properties": {"extra_specs": _specs},
    "required": ["extra_specs"],
    "additionalProperties": False,
}
EXTRA_SPEC_UPDATE = {**_specs, "minProperties": 1, "maxProperties": 1}


def _tenant_action(name: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            name: {
                "type": "object",
                "properties": {"tenant": {"type": "string", "minLength": 1, "maxLength": 255}},
                "required": ["tenant"],
                "additionalProperties": False,
            }
        },
        "required": [name],
        "additionalProperties": False,
    }


ADD_TENANT = _tenant_action("addTenantAccess")
REMOVE_TENANT = _tenant_action("removeTenantAccess")

LIST_QUERY = {"limit", "marker", "is_public", "minRam", "minDisk", "sort_key", "sort_dir"}


# -- views ----------------------------------------------------------------------------------------


def flavor_brief(request: web.Request, row: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"id": row.flavorid, "name": row.name, "links": links(request, "flavors", row.flavorid)}
    if microversion(request).at_least("2.55"):
        body["description"] = row.description
    return body


def flavor_view(request: web.Request, row: Any) -> dict[str, Any]:
    """Nova's detailed flavor, for the request's microversion."""
    mv = microversion(request)
    body: dict[str, Any] = {
        "id": row.flavorid,
        "name": row.name,
        "ram": row.memory_mb,
        "disk": row.root_gb,
        "swap": row.swap if mv.at_least("2.75") else (row.swap or ""),
        "OS-FLV-EXT-DATA:ephemeral": row.ephemeral_gb,
        "OS-FLV-DISABLED:disabled": bool(row.disabled),
        "vcpus": row.vcpus,
        "os-flavor-access:is_public": bool(row.is_public),
        "rxtx_factor": row.rxtx_factor or "",
        "links": links(request, "flavors", row.flavorid),
    }
    if mv.at_least("2.55"):
        body["description"] = row.description
    if mv.at_least("2.61"):
        body["extra_specs"] = dict(row.extra_specs or {})
    return body


# -- lookups --------------------------------------------------------------------------------------


def _parse_is_public(value: str | None) -> bool | None:
    if value is None:
        return True
    if value.strip().lower() == "none":
        return None
    parsed = bool_word(value)
    if parsed is not None:
        return parsed
    raise BadRequest(f"Invalid is_public filter [{value}]")


async def _list(request: web.Request) -> list[Any]:
    ctx = context(request)
    strict_query(request, LIST_QUERY)
    query = request.query
    sort_key = query.get("sort_key") or "flavorid"
    sort_dir = query.get("sort_dir") or "asc"
    if sort_key not in SORT_KEYS:
        raise BadRequest(
            f"Invalid input for query parameters sort_key. Value: {sort_key}. "
            f"{sort_key!r} is not one of {list(SORT_KEYS)}"
        )
    if sort_dir not in ("asc", "desc"):
        raise BadRequest(
            f"Invalid input for query parameters sort_dir. Value: {sort_dir}. "
            f"{sort_dir!r} is not one of ['asc', 'desc']"
        )
    limit, marker = page_params(request)
    is_public = _parse_is_public(query.get("is_public")) if ctx.is_admin else True
    minimum: dict[str, int | None] = {}
    for param in ("minRam", "minDisk"):
        minimum[param] = None
        if param in query:
            try:
                minimum[param] = int(query[param])
            except ValueError:
                raise BadRequest(f"Invalid {param} filter [{query[param]}]") from None
    filters = FlavorFilters(is_public=is_public, min_ram=minimum["minRam"], min_disk=minimum["minDisk"])
    async with runtime(request).db.connect() as conn:
        return await store.list_flavors(
            conn, ctx, filters=filters, sort_key=sort_key, sort_dir=sort_dir, limit=limit, marker=marker
        )


def _paged(request: web.Request, items: list[dict[str, Any]], rows: list[Any], collection: str) -> dict[str, Any]:
    body: dict[str, Any] = {"flavors": items}
    limit, _ = page_params(request)
    if limit and len(rows) == limit:
        body["flavors_links"] = [next_link(request, collection, rows[-1].flavorid, limit)]
    return body


# -- flavors --------------------------------------------------------------------------------------


@routes.get(FLAVORS)
async def list_flavors(request: web.Request) -> web.Response:
    rows = await _list(request)
    return json_response(_paged(request, [flavor_brief(request, r) for r in rows], rows, "flavors"))


@routes.get(FLAVORS + "/detail")
async def list_flavors_detail(request: web.Request) -> web.Response:
    rows = await _list(request)
    return json_response(_paged(request, [flavor_view(request, r) for r in rows], rows, "flavors/detail"))


@routes.get(FLAVORS + "/{flavor_id}")
async def show_flavor(request: web.Request) -> web.Response:
    async with runtime(request).db.connect() as conn:
        row = await get_flavor(conn, context(request), request.match_info["flavor_id"])
    return json_response({"flavor": flavor_view(request, row)})


def _integer(vals: dict[str, Any], field: str, least: int, default: int = 0) -> int:
    """A schema-checked integer field as an int in ``least``..MAX_INT, else 400.

    JSON Schema's minimum and maximum ignore digit strings ("0", "99999999999"), which the
    database cannot store (and ``int()`` refuses past 4300 digits); Nova checks them as numbers.
    """
    raw = vals.get(field, default)
    digits = raw.lstrip("0") if isinstance(raw, str) else str(raw)
    value = int(raw) if len(digits) <= len(str(MAX_INT)) else MAX_INT + 1
    if value < least:
        raise BadRequest(
            f"Invalid input for field/attribute {field}. Value: {raw}. {value} is less than the minimum of {least}"
        )
    if value > MAX_INT:
        raise BadRequest(
            f"Invalid input for field/attribute {field}. Value: {str(raw)[:20]}. "
            f"It is greater than the maximum of {MAX_INT}"
        )
    return value


@routes.post(FLAVORS)
async def create_flavor(request: web.Request) -> web.Response:
    ctx = context(request)
    require_admin(ctx, "os_compute_api:os-flavor-manage:create")
    mv = microversion(request)
    body = validate(await read_json(request), CREATE_V255 if mv.at_least("2.55") else CREATE)
    vals = body["flavor"]
    flavorid = vals.get("id")
    flavorid = str(uuid.uuid4()) if flavorid is None else str(flavorid)
    new = NewFlavor(
        flavorid=flavorid,
        name=vals["name"],
        memory_mb=_integer(vals, "ram", 1),
        vcpus=_integer(vals, "vcpus", 1),
        root_gb=_integer(vals, "disk", 0),
        ephemeral_gb=_integer(vals, "OS-FLV-EXT-DATA:ephemeral", 0),
        swap=_integer(vals, "swap", 0),
        rxtx_factor=float(vals.get("rxtx_factor", 1.0)),
        is_public=to_bool(vals.get("os-flavor-access:is_public", True)),
        description=vals.get("description") if mv.at_least("2.55") else None,
    )
    async with runtime(request).db.begin() as conn:
        created = await store.create_flavor(conn, new)
    return json_response({"flavor": flavor_view(request, created)})


@routes.put(FLAVORS + "/{flavor_id}")
async def update_flavor(request: web.Request) -> web.Response:
    if microversion(request).below("2.55"):
        raise NotFound("The resource could not be found.")
    ctx = context(request)
    require_admin(ctx, "os_compute_api:os-flavor-manage:update")
    body = validate(await read_json(request), UPDATE)
    flavor_id = request.match_info["flavor_id"]
    async with runtime(request).db.begin() as conn:
        row = await get_flavor(conn, ctx, flavor_id)
        row = await store.set_description(conn, row.id, body["flavor"]["description"])
    return json_response({"flavor": flavor_view(request, row)})


@routes.delete(FLAVORS + "/{flavor_id}")
async def delete_flavor(request: web.Request) -> web.Response:
    ctx = context(request)
    require_admin(ctx, "os_compute_api:os-flavor-manage:delete")
    async with runtime(request).db.begin() as conn:
        row = await get_flavor(conn, ctx, request.match_info["flavor_id"])
        await store.delete_flavor(conn, row.id)
    return web.Response(status=202)


# -- extra specs ----------------------------------------------------------------------------------


def _check_spec_values(specs: dict[str, Any]) -> dict[str, str]:
    out = {}
    for key, value in specs.items():
        text = value if isinstance(value, str) else str(value)
        if len(text) > 255:
            raise BadRequest("Invalid input for extra_specs value. It must be a string with at most 255 characters.")
        out[key] = text
    return out


async def _save_specs(request: web.Request, flavor_id: str, new: dict[str, str]) -> None:
    async with runtime(request).db.begin() as conn:
        row = await get_flavor(conn, context(request), flavor_id)
        await store.merge_extra_specs(conn, row, new)


@routes.get(FLAVORS + "/{flavor_id}/os-extra_specs")
async def list_extra_specs(request: web.Request) -> web.Response:
    async with runtime(request).db.connect() as conn:
        row = await get_flavor(conn, context(request), request.match_info["flavor_id"])
    return json_response({"extra_specs": dict(row.extra_specs or {})})


@routes.post(FLAVORS + "/{flavor_id}/os-extra_specs")
async def create_extra_specs(request: web.Request) -> web.Response:
    require_admin(context(request), "os_compute_api:os-flavor-extra-specs:create")
    body = validate(await read_json(request), EXTRA_SPECS_CREATE)
    await _save_specs(request, request.match_info["flavor_id"], _check_spec_values(body["extra_specs"]))
    return json_response(body)


@routes.get(FLAVORS + "/{flavor_id}/os-extra_specs/{key}")
async def show_extra_spec(request: web.Request) -> web.Response:
    flavor_id, key = request.match_info["flavor_id"], request.match_info["key"]
    async with runtime(request).db.connect() as conn:
        row = await get_flavor(conn, context(request), flavor_id)
    specs = row.extra_specs or {}
    if key not in specs:
        raise NotFound(f"Flavor {flavor_id} has no extra specs with key {key}.")
    return json_response({key: specs[key]})


@routes.put(FLAVORS + "/{flavor_id}/os-extra_specs/{key}")
async def update_extra_spec(request: web.Request) -> web.Response:
    require_admin(context(request), "os_compute_api:os-flavor-extra-specs:update")
    body = validate(await read_json(request), EXTRA_SPEC_UPDATE)
    values = _check_spec_values(body)
    if request.match_info["key"] not in body:
        raise BadRequest("Request body and URI mismatch")
    await _save_specs(request, request.match_info["flavor_id"], values)
    return json_response(body)


@routes.delete(FLAVORS + "/{flavor_id}/os-extra_specs/{key}")
async def delete_extra_spec(request: web.Request) -> web.Response:
    require_admin(context(request), "os_compute_api:os-flavor-extra-specs:delete")
    flavor_id, key = request.match_info["flavor_id"], request.match_info["key"]
    async with runtime(request).db.begin() as conn:
        row = await get_flavor(conn, context(request), flavor_id)
        await store.delete_extra_spec(conn, row, key)
    return web.Response(status=200)


# -- access ---------------------------------------------------------------------------------------


def _access_view(row: Any, projects: list[str]) -> dict[str, Any]:
    return {"flavor_access": [{"flavor_id": row.flavorid, "tenant_id": p} for p in projects]}


@routes.get(FLAVORS + "/{flavor_id}/os-flavor-access")
async def list_flavor_access(request: web.Request) -> web.Response:
    ctx = context(request)
    require_admin(ctx, "os_compute_api:os-flavor-access")
    async with runtime(request).db.connect() as conn:
        row = await get_flavor(conn, ctx, request.match_info["flavor_id"])
        if row.is_public:
            raise NotFound("Access list not available for public flavors.")
        projects = await store.access_projects(conn, row.id)
    return json_response(_access_view(row, projects))


@routes.post(FLAVORS + "/{flavor_id}/action")
async def flavor_action(request: web.Request) -> web.Response:
    ctx = context(request)
    body = await read_json(request)
    if isinstance(body, dict) and "addTenantAccess" in body:
        require_admin(ctx, "os_compute_api:os-flavor-access:add_tenant_access")
        tenant = validate(body, ADD_TENANT)["addTenantAccess"]["tenant"]
        async with runtime(request).db.begin() as conn:
            if await get_project(conn, tenant) is None:
                raise BadRequest(f"Project ID {tenant} is not a valid project.")
            row = await get_flavor(conn, ctx, request.match_info["flavor_id"])
            if row.is_public and microversion(request).at_least("2.7"):
                raise Conflict("Can not add access to a public flavor.")
            await store.add_access(conn, row, tenant)
            projects = await store.access_projects(conn, row.id)
        return json_response(_access_view(row, projects))
    if isinstance(body, dict) and "removeTenantAccess" in body:
        require_admin(ctx, "os_compute_api:os-flavor-access:remove_tenant_access")
        tenant = validate(body, REMOVE_TENANT)["removeTenantAccess"]["tenant"]
        async with runtime(request).db.begin() as conn:
            row = await get_flavor(conn, ctx, request.match_info["flavor_id"])
            await store.remove_access(conn, row, tenant)
            projects = await store.access_projects(conn, row.id)
        return json_response(_access_view(row, projects))
    name = next(iter(body), None) if isinstance(body, dict) else None
    raise BadRequest(f"There is no such action: {name}")
