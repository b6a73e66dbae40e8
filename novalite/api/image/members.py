"""Image members: sharing a ``shared`` image with other projects.

The owner adds and removes members; each member project accepts or rejects the
image itself (so nobody can push images into another project's listing).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.errors import BadRequest, Conflict, Forbidden, NotFound
from novalite.api.http import context, json_response, read_json, runtime
from novalite.api.image.common import image_id_of, load_image, require_modify
from novalite.context import RequestContext
from novalite.store import images as records
from novalite.timeutil import iso

routes = web.RouteTableDef()
MEMBER_STATUSES = ("pending", "accepted", "rejected")


def member_view(row: Any) -> dict[str, Any]:
    return {
        "image_id": row.image_id,
        "member_id": row.member_id,
        "status": row.status,
        "created_at": iso(row.created_at),
        "updated_at": iso(row.updated_at),
        "schema": "/v2/schemas/member",
    }


def require_shared(image: dict[str, Any]) -> None:
    if image["visibility"] != "shared":
        raise Forbidden(f"Only shared images have members. Image {image['id']} is {image['visibility']}.")


def may_see_member(image: dict[str, Any], member_id: str, ctx: RequestContext) -> bool:
    return ctx.is_admin or image["owner"] == ctx.project_id or member_id == ctx.project_id


@routes.post("/v2/images/{image_id}/members")
async def add_member(request: web.Request) -> web.Response:
    ctx = context(request)
    body = await read_json(request)
    member_id = body.get("member") if isinstance(body, dict) else None
    if not isinstance(member_id, str) or not member_id or len(member_id) > 255:
        raise BadRequest('The request body must be {"member": "<project id>"}.')
    image_id = image_id_of(request)
    async with runtime(request).db.begin() as conn:
        image = await load_image(conn, image_id, ctx, for_update=True)
        require_modify(image, ctx)
        require_shared(image)
        if await records.get_member(conn, image_id, member_id) is not None:
            raise Conflict(f"Member {member_id} already associated with image {image_id}.")
        row = await records.add_member(conn, image_id, member_id)
    return json_response(member_view(row))


@routes.get("/v2/images/{image_id}/members")
async def list_members(request: web.Request) -> web.Response:
    ctx = context(request)
    image_id = image_id_of(request)
    async with runtime(request).db.connect() as conn:
        image = await load_image(conn, image_id, ctx)
        require_shared(image)
        # Everyone but the owner (and admin) sees only their own membership.
        only = None if ctx.is_admin or image["owner"] == ctx.project_id else ctx.project_id
        rows = await records.list_members(conn, image_id, member_id=only)
    return json_response({"members": [member_view(r) for r in rows], "schema": "/v2/schemas/members"})


@routes.get("/v2/images/{image_id}/members/{member_id}")
async def show_member(request: web.Request) -> web.Response:
    ctx = context(request)
    image_id, member_id = image_id_of(request), request.match_info["member_id"]
    async with runtime(request).db.connect() as conn:
        image = await load_image(conn, image_id, ctx)
        require_shared(image)
        row = await records.get_member(conn, image_id, member_id) if may_see_member(image, member_id, ctx) else None
    if row is None:
        raise NotFound(f"Member {member_id} not found for image {image_id}.")
    return json_response(member_view(row))


@routes.put("/v2/images/{image_id}/members/{member_id}")
async def update_member(request: web.Request) -> web.Response:
    """Only the member project itself decides whether it accepts the image."""
    ctx = context(request)
    image_id, member_id = image_id_of(request), request.match_info["member_id"]
    body = await read_json(request)
    status = body.get("status") if isinstance(body, dict) else None
    if status not in MEMBER_STATUSES:
        raise BadRequest(f"Invalid member status {status!r}: use one of {', '.join(MEMBER_STATUSES)}.")
    async with runtime(request).db.begin() as conn:
        image = await load_image(conn, image_id, ctx)
        require_shared(image)
        row = await records.get_member(conn, image_id, member_id) if may_see_member(image, member_id, ctx) else None
        if row is None:
            raise NotFound(f"Member {member_id} not found for image {image_id}.")
        if member_id != ctx.project_id and not ctx.is_admin:
            raise Forbidden("You are not permitted to modify 'status' on this image member.")
        if not ctx.can_write:
            raise Forbidden("You are not authorized to complete this action.")
        row = await records.set_member_status(conn, image_id, member_id, status)
    return json_response(member_view(row))


@routes.delete("/v2/images/{image_id}/members/{member_id}")
async def delete_member(request: web.Request) -> web.Response:
    ctx = context(request)
    image_id, member_id = image_id_of(request), request.match_info["member_id"]
    async with runtime(request).db.begin() as conn:
        image = await load_image(conn, image_id, ctx)
        require_shared(image)
        if not records.can_modify(image, ctx):
            raise Forbidden("Only the owner of the image can remove its members.")
        removed = await records.remove_member(conn, image_id, member_id)
    if not removed:
        raise NotFound(f"Member {member_id} not found for image {image_id}.")
    return web.Response(status=204)
