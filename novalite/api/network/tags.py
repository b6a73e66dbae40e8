"""``/v2.0/{resource}/{id}/tags[/{tag}]`` for networks, subnets, ports and security groups."""

from __future__ import annotations

from aiohttp import web

from novalite.api.http import context, json_response, read_json, runtime
from novalite.api.network.common import NeutronApiError, bad
from novalite.store import networks as store

routes = web.RouteTableDef()

RESOURCE = "{resource:networks|subnets|ports|security-groups}"


async def _tags(request: web.Request) -> list[str]:
    async with runtime(request).db.connect() as conn:
        row = await store.get_tagged(conn, context(request), request.match_info["resource"], request.match_info["id"])
    return list(row.tags or [])


async def _write(request: web.Request, tags: list[str]) -> list[str]:
    async with runtime(request).db.begin() as conn:
        return await store.set_tags(
            conn, context(request), request.match_info["resource"], request.match_info["id"], tags
        )


@routes.get(f"/v2.0/{RESOURCE}/{{id}}/tags")
async def list_tags(request: web.Request) -> web.Response:
    return json_response({"tags": await _tags(request)})


@routes.put(f"/v2.0/{RESOURCE}/{{id}}/tags")
async def replace_tags(request: web.Request) -> web.Response:
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get("tags"), list):
        raise bad("Invalid input for tags. Reason: a body {'tags': [...]} is required.")
    return json_response({"tags": await _write(request, body["tags"])})


@routes.delete(f"/v2.0/{RESOURCE}/{{id}}/tags")
async def clear_tags(request: web.Request) -> web.Response:
    await _write(request, [])
    return web.Response(status=204)


@routes.get(f"/v2.0/{RESOURCE}/{{id}}/tags/{{tag}}")
async def check_tag(request: web.Request) -> web.Response:
    tag = request.match_info["tag"]
    if tag not in await _tags(request):
        raise NeutronApiError(f"Tag {tag} could not be found.", 404, "TagNotFound")
    return web.Response(status=204)


@routes.put(f"/v2.0/{RESOURCE}/{{id}}/tags/{{tag}}")
async def add_tag(request: web.Request) -> web.Response:
    tag = store.check_tag(request.match_info["tag"])
    current = await _tags(request)
    if tag not in current:
        await _write(request, [*current, tag])
    return web.Response(status=201)


@routes.delete(f"/v2.0/{RESOURCE}/{{id}}/tags/{{tag}}")
async def remove_tag(request: web.Request) -> web.Response:
    tag = request.match_info["tag"]
    current = await _tags(request)
    if tag not in current:
        raise NeutronApiError(f"Tag {tag} could not be found.", 404, "TagNotFound")
    await _write(request, [t for t in current if t != tag])
    return web.Response(status=204)
