"""Server metadata: ``/servers/{id}/metadata`` and ``/metadata/{key}``."""

from __future__ import annotations

from aiohttp import web

from novalite.api.compute.common import require_member
from novalite.api.errors import BadRequest, NotFound
from novalite.api.http import context, json_response, read_json, runtime
from novalite.api.validation import metadata_schema, validate
from novalite.store import servers as records

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


@routes.get("/v2.1/servers/{server_id}/metadata")
async def index(request: web.Request) -> web.Response:
    async with runtime(request).db.connect() as conn:
        row = await records.visible_instance(conn, context(request), request.match_info["server_id"])
        return json_response({"metadata": await records.get_metadata(conn, row.uuid)})


@routes.post("/v2.1/servers/{server_id}/metadata")
@routes.put("/v2.1/servers/{server_id}/metadata")
async def update_all(request: web.Request) -> web.Response:
    ctx = context(request)
    require_member(ctx, "os_compute_api:server-metadata:update")
    body = validate(await read_json(request), META_BODY)
    rt = runtime(request)
    async with rt.db.begin() as conn:
        row = await records.visible_instance(conn, ctx, request.match_info["server_id"], lock=True)
        meta = await records.set_metadata(
            conn,
            row.uuid,
            body["metadata"],
            replace=request.method == "PUT",
            max_items=rt.settings.quota_metadata_items,
        )
    return json_response({"metadata": meta})


@routes.get("/v2.1/servers/{server_id}/metadata/{key}")
async def show(request: web.Request) -> web.Response:
    key = request.match_info["key"]
    async with runtime(request).db.connect() as conn:
        row = await records.visible_instance(conn, context(request), request.match_info["server_id"])
        meta = await records.get_metadata(conn, row.uuid)
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
    rt = runtime(request)
    async with rt.db.begin() as conn:
        row = await records.visible_instance(conn, ctx, request.match_info["server_id"], lock=True)
        await records.set_metadata(
            conn, row.uuid, body["meta"], replace=False, max_items=rt.settings.quota_metadata_items
        )
    return json_response({"meta": body["meta"]})


@routes.delete("/v2.1/servers/{server_id}/metadata/{key}")
async def delete(request: web.Request) -> web.Response:
    ctx = context(request)
    require_member(ctx, "os_compute_api:server-metadata:delete")
    key = request.match_info["key"]
    async with runtime(request).db.begin() as conn:
        row = await records.visible_instance(conn, ctx, request.match_info["server_id"], lock=True)
        if not await records.delete_metadata_item(conn, row.uuid, key):
            raise NotFound("Metadata item was not found")
    return web.Response(status=204)
