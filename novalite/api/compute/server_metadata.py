"""Server metadata: ``/servers/{id}/metadata`` and ``/metadata/{key}``."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from aiohttp import web

from novalite.api.compute.common import require_member
from novalite.api.compute.servers import get_instance_row
from novalite.api.errors import BadRequest, Forbidden, NotFound
from novalite.api.http import context, json_response, read_json, runtime
from novalite.api.validation import metadata_schema, validate
from novalite.db import schema as t
from novalite.timeutil import utcnow

routes = web.RouteTableDef()

META_BODY = {
    "type": "object",
    "properties": {"metadata": metadata_schema},
    "required": ["metadata"],
    "additionalProperties": False,
}
META_ITEM = {
    "type": "object",
    "properties": {"meta": {**metadata_schema, "minProperties": 1, "maxProperties": 1}},
    "required": ["meta"],
    "additionalProperties": False,
}


async def _read(conn: Any, uuid: str) -> dict[str, str]:
    rows = await conn.execute(sa.select(t.instance_metadata).where(t.instance_metadata.c.instance_uuid == uuid))
    return {r.key: r.value for r in rows}


async def _write(conn: Any, request: web.Request, uuid: str, meta: dict[str, str], replace: bool) -> dict[str, str]:
    settings = runtime(request).settings
    current = {} if replace else await _read(conn, uuid)
    current.update(meta)
    if len(current) > settings.quota_metadata_items:
        raise Forbidden(f"Quota exceeded for metadata_items: Requested {len(current)}, "
                        f"but already used 0 of {settings.quota_metadata_items} metadata_items")
    await conn.execute(t.instance_metadata.delete().where(t.instance_metadata.c.instance_uuid == uuid))
    if current:
        await conn.execute(
            t.instance_metadata.insert(), [{"instance_uuid": uuid, "key": k, "value": v} for k, v in current.items()]
        )
    await conn.execute(t.instances.update().where(t.instances.c.uuid == uuid).values(updated_at=utcnow()))
    return current


@routes.get("/v2.1/servers/{server_id}/metadata")
async def index(request: web.Request) -> web.Response:
    async with runtime(request).db.connect() as conn:
        row = await get_instance_row(conn, context(request), request.match_info["server_id"])
        return json_response({"metadata": await _read(conn, row.uuid)})


@routes.post("/v2.1/servers/{server_id}/metadata")
@routes.put("/v2.1/servers/{server_id}/metadata")
async def update_all(request: web.Request) -> web.Response:
    ctx = context(request)
    require_member(ctx, "os_compute_api:server-metadata:update")
    body = validate(await read_json(request), META_BODY)
    async with runtime(request).db.begin() as conn:
        row = await get_instance_row(conn, ctx, request.match_info["server_id"])
        meta = await _write(conn, request, row.uuid, body["metadata"], replace=request.method == "PUT")
    return json_response({"metadata": meta})


@routes.get("/v2.1/servers/{server_id}/metadata/{key}")
async def show(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    async with runtime(request).db.connect() as conn:
        row = await get_instance_row(conn, context(request), request.match_info["server_id"])
        meta = await _read(conn, row.uuid)
    if key not in meta:
        raise NotFound("Metadata item was not found")
    return json_response({"meta": {key: meta[key]}})


@routes.put("/v2.1/servers/{server_id}/metadata/{key}")
async def update_one(request: web.Request) -> web.Response:
    ctx = context(request)
    require_member(ctx, "os_compute_api:server-metadata:update")
    key = request.match_info["key"]
    body = validate(await read_json(request), META_ITEM)
    if key not in body["meta"]:
        raise BadRequest("Request body and URI mismatch")
    async with runtime(request).db.begin() as conn:
        row = await get_instance_row(conn, ctx, request.match_info["server_id"])
        await _write(conn, request, row.uuid, body["meta"], replace=False)
    return json_response({"meta": body["meta"]})


@routes.delete("/v2.1/servers/{server_id}/metadata/{key}")
async def delete(request: web.Request) -> web.Response:
    ctx = context(request)
    require_member(ctx, "os_compute_api:server-metadata:delete")
    key = request.match_info["key"]
    async with runtime(request).db.begin() as conn:
        row = await get_instance_row(conn, ctx, request.match_info["server_id"])
        result = await conn.execute(
            t.instance_metadata.delete().where(
                t.instance_metadata.c.instance_uuid == row.uuid, t.instance_metadata.c.key == key
            )
        )
        if not result.rowcount:
            raise NotFound("Metadata item was not found")
    return web.Response(status=204)
