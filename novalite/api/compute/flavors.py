"""Flavors: list/show/create/update/delete, extra specs, and access lists of private flavors.

Shapes follow Nova's flavor view builder: ``swap`` is ``""`` when 0 below 2.75 (0
from 2.75), ``description`` appears at 2.55 and ``extra_specs`` at 2.61. A private
flavor is visible only to admins and to projects on its access list.
"""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncConnection

from novalite.api.compute.common import links, next_link, page_params, require_admin, strict_query
from novalite.api.compute.microversions import microversion
from novalite.api.errors import BadRequest, Conflict, NotFound
from novalite.api.http import context, json_response, read_json, runtime
from novalite.api.validation import boolean, name_schema, to_bool, validate
from novalite.context import RequestContext
from novalite.db import schema as t
from novalite.timeutil import utcnow

routes = web.RouteTableDef()

MAX_INT = 0x7FFFFFFF
FLAVORS = "/v2.1/flavors"

_positive = {"type": ["integer", "string"], "pattern": "^[0-9]*$", "minimum": 1, "maximum": MAX_INT}
_non_negative = {"type": ["integer", "string"], "pattern": "^[0-9]*$", "minimum": 0, "maximum": MAX_INT}
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

SORT_KEYS = {
    "created_at": t.flavors.c.created_at,
    "description": t.flavors.c.description,
    "disabled": t.flavors.c.disabled,
    "ephemeral_gb": t.flavors.c.ephemeral_gb,
    "flavorid": t.flavors.c.flavorid,
    "id": t.flavors.c.id,
    "is_public": t.flavors.c.is_public,
    "memory_mb": t.flavors.c.memory_mb,
    "name": t.flavors.c.name,
    "root_gb": t.flavors.c.root_gb,
    "rxtx_factor": t.flavors.c.rxtx_factor,
    "swap": t.flavors.c.swap,
    "updated_at": t.flavors.c.created_at,  # flavors are immutable but for the description
    "vcpu_weight": t.flavors.c.id,
    "vcpus": t.flavors.c.vcpus,
}
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


def _visible(ctx: RequestContext) -> Any:
    """Rows the caller may see: all for admins, else public or on the access list."""
    if ctx.is_admin:
        return sa.true()
    shared = sa.select(t.flavor_projects.c.flavor_id).where(t.flavor_projects.c.project_id == ctx.project_id)
    return sa.or_(t.flavors.c.is_public == sa.true(), t.flavors.c.id.in_(shared))


async def get_flavor(conn: AsyncConnection, ctx: RequestContext, flavor_id: str) -> Any:
    """The flavor row, or Nova's 404 when missing or not visible to the caller."""
    row = (await conn.execute(sa.select(t.flavors).where(t.flavors.c.flavorid == flavor_id, _visible(ctx)))).first()
    if row is None:
        raise NotFound(f"Flavor {flavor_id} could not be found.")
    return row


def _parse_is_public(value: str | None) -> bool | None:
    if value is None:
        return True
    if value.strip().lower() == "none":
        return None
    lowered = value.strip().lower()
    if lowered in ("1", "t", "true", "on", "y", "yes"):
        return True
    if lowered in ("0", "f", "false", "off", "n", "no"):
        return False
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
            f"{sort_key!r} is not one of {sorted(SORT_KEYS)}"
        )
    if sort_dir not in ("asc", "desc"):
        raise BadRequest(
            f"Invalid input for query parameters sort_dir. Value: {sort_dir}. "
            f"{sort_dir!r} is not one of ['asc', 'desc']"
        )
    limit, marker = page_params(request)
    where: list[Any] = []
    if ctx.is_admin:
        is_public = _parse_is_public(query.get("is_public"))
        if is_public is True:
            shared = sa.select(t.flavor_projects.c.flavor_id).where(t.flavor_projects.c.project_id == ctx.project_id)
            where.append(sa.or_(t.flavors.c.is_public == sa.true(), t.flavors.c.id.in_(shared)))
        elif is_public is False:
            where.append(t.flavors.c.is_public == sa.false())
    else:
        where.append(_visible(ctx))
        where.append(t.flavors.c.disabled == sa.false())
    for param, column in (("minRam", t.flavors.c.memory_mb), ("minDisk", t.flavors.c.root_gb)):
        if param in query:
            try:
                where.append(column >= int(query[param]))
            except ValueError:
                raise BadRequest(f"Invalid {param} filter [{query[param]}]") from None
    column = SORT_KEYS[sort_key]
    order = [
        column.asc() if sort_dir == "asc" else column.desc(),
        t.flavors.c.id.asc() if sort_dir == "asc" else t.flavors.c.id.desc(),
    ]
    async with runtime(request).db.connect() as conn:
        rows = list(await conn.execute(sa.select(t.flavors).where(*where).order_by(*order)))
    if marker is not None:
        ids = [r.flavorid for r in rows]
        if marker not in ids:
            raise BadRequest(f"marker [{marker}] not found")
        rows = rows[ids.index(marker) + 1 :]
    return rows[:limit]


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


@routes.post(FLAVORS)
async def create_flavor(request: web.Request) -> web.Response:
    ctx = context(request)
    require_admin(ctx, "os_compute_api:os-flavor-manage:create")
    mv = microversion(request)
    body = validate(await read_json(request), CREATE_V255 if mv.at_least("2.55") else CREATE)
    vals = body["flavor"]
    flavorid = vals.get("id")
    flavorid = str(uuid.uuid4()) if flavorid is None else str(flavorid)
    row = dict(
        flavorid=flavorid,
        name=vals["name"],
        memory_mb=int(vals["ram"]),
        vcpus=int(vals["vcpus"]),
        root_gb=int(vals["disk"]),
        ephemeral_gb=int(vals.get("OS-FLV-EXT-DATA:ephemeral", 0)),
        swap=int(vals.get("swap", 0)),
        rxtx_factor=float(vals.get("rxtx_factor", 1.0)),
        is_public=to_bool(vals.get("os-flavor-access:is_public", True)),
        disabled=False,
        description=vals.get("description") if mv.at_least("2.55") else None,
        extra_specs={},
        created_at=utcnow(),
    )
    # JSON Schema's minimum ignores digit strings ("0"); Nova checks them as numbers.
    for field, column, least in (("ram", "memory_mb", 1), ("vcpus", "vcpus", 1)):
        if row[column] < least:
            raise BadRequest(
                f"Invalid input for field/attribute {field}. Value: {vals[field]}. "
                f"{row[column]} is less than the minimum of {least}"
            )
    async with runtime(request).db.begin() as conn:
        if await conn.scalar(sa.select(t.flavors.c.id).where(t.flavors.c.name == row["name"])):
            raise Conflict(f"Flavor with name {row['name']} already exists.")
        if await conn.scalar(sa.select(t.flavors.c.id).where(t.flavors.c.flavorid == flavorid)):
            raise Conflict(f"Flavor with ID {flavorid} already exists.")
        await conn.execute(t.flavors.insert().values(**row))
        created = (await conn.execute(sa.select(t.flavors).where(t.flavors.c.flavorid == flavorid))).one()
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
        await conn.execute(
            t.flavors.update().where(t.flavors.c.id == row.id).values(description=body["flavor"]["description"])
        )
        row = (await conn.execute(sa.select(t.flavors).where(t.flavors.c.id == row.id))).one()
    return json_response({"flavor": flavor_view(request, row)})


@routes.delete(FLAVORS + "/{flavor_id}")
async def delete_flavor(request: web.Request) -> web.Response:
    ctx = context(request)
    require_admin(ctx, "os_compute_api:os-flavor-manage:delete")
    async with runtime(request).db.begin() as conn:
        row = await get_flavor(conn, ctx, request.match_info["flavor_id"])
        await conn.execute(t.flavor_projects.delete().where(t.flavor_projects.c.flavor_id == row.id))
        await conn.execute(t.flavors.delete().where(t.flavors.c.id == row.id))
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
        specs = dict(row.extra_specs or {})
        specs.update(new)
        await conn.execute(t.flavors.update().where(t.flavors.c.id == row.id).values(extra_specs=specs))


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
        specs = dict(row.extra_specs or {})
        if key not in specs:
            raise NotFound(f"Flavor {flavor_id} has no extra specs with key {key}.")
        del specs[key]
        await conn.execute(t.flavors.update().where(t.flavors.c.id == row.id).values(extra_specs=specs))
    return web.Response(status=200)


# -- access ---------------------------------------------------------------------------------------


async def _access_list(conn: AsyncConnection, row: Any) -> dict[str, Any]:
    projects = await conn.execute(
        sa.select(t.flavor_projects.c.project_id)
        .where(t.flavor_projects.c.flavor_id == row.id)
        .order_by(t.flavor_projects.c.project_id)
    )
    return {"flavor_access": [{"flavor_id": row.flavorid, "tenant_id": p} for (p,) in projects]}


async def _project_exists(conn: AsyncConnection, project_id: str) -> bool:
    return bool(await conn.scalar(sa.select(sa.func.count()).where(t.projects.c.id == project_id)))


@routes.get(FLAVORS + "/{flavor_id}/os-flavor-access")
async def list_flavor_access(request: web.Request) -> web.Response:
    ctx = context(request)
    require_admin(ctx, "os_compute_api:os-flavor-access")
    async with runtime(request).db.connect() as conn:
        row = await get_flavor(conn, ctx, request.match_info["flavor_id"])
        if row.is_public:
            raise NotFound("Access list not available for public flavors.")
        return json_response(await _access_list(conn, row))


@routes.post(FLAVORS + "/{flavor_id}/action")
async def flavor_action(request: web.Request) -> web.Response:
    ctx = context(request)
    body = await read_json(request)
    if isinstance(body, dict) and "addTenantAccess" in body:
        require_admin(ctx, "os_compute_api:os-flavor-access:add_tenant_access")
        tenant = validate(body, ADD_TENANT)["addTenantAccess"]["tenant"]
        async with runtime(request).db.begin() as conn:
            if not await _project_exists(conn, tenant):
                raise BadRequest(f"Project ID {tenant} is not a valid project.")
            row = await get_flavor(conn, ctx, request.match_info["flavor_id"])
            if row.is_public and microversion(request).at_least("2.7"):
                raise Conflict("Can not add access to a public flavor.")
            exists = await conn.scalar(
                sa.select(sa.func.count()).where(
                    t.flavor_projects.c.flavor_id == row.id, t.flavor_projects.c.project_id == tenant
                )
            )
            if exists:
                raise Conflict(
                    f"Flavor access already exists for flavor {row.flavorid} and project {tenant} combination."
                )
            await conn.execute(t.flavor_projects.insert().values(flavor_id=row.id, project_id=tenant))
            return json_response(await _access_list(conn, row))
    if isinstance(body, dict) and "removeTenantAccess" in body:
        require_admin(ctx, "os_compute_api:os-flavor-access:remove_tenant_access")
        tenant = validate(body, REMOVE_TENANT)["removeTenantAccess"]["tenant"]
        async with runtime(request).db.begin() as conn:
            row = await get_flavor(conn, ctx, request.match_info["flavor_id"])
            deleted = await conn.execute(
                t.flavor_projects.delete().where(
                    t.flavor_projects.c.flavor_id == row.id, t.flavor_projects.c.project_id == tenant
                )
            )
            if not deleted.rowcount:
                raise NotFound(f"Flavor access not found for {row.flavorid} / {tenant} combination.")
            return json_response(await _access_list(conn, row))
    name = next(iter(body), None) if isinstance(body, dict) else None
    raise BadRequest(f"There is no such action: {name}")
