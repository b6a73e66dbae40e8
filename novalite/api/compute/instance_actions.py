"""``/servers/{id}/os-instance-actions``: what was done to a server, newest first, with events.

Nova's rules: a deleted server's actions stay visible from 2.21; ``updated_at`` and
paging/``changes-since`` from 2.58 (``changes-before`` from 2.66); events for everyone
from 2.51 but ``traceback`` only for admins; ``hostId`` from 2.62 (``host`` for
admins); event ``details`` from 2.84 for admins.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from aiohttp import web

from novalite.api.compute.common import next_link, page_params
from novalite.api.compute.microversions import microversion
from novalite.api.compute.servers import get_instance_row
from novalite.api.compute.views import host_id
from novalite.api.errors import BadRequest, NotFound
from novalite.api.http import context, json_response, runtime
from novalite.db import schema as t
from novalite.timeutil import iso_micro, parse_iso

routes = web.RouteTableDef()
ACTIONS = "/v2.1/servers/{server_id}/os-instance-actions"


def _action_view(row: Any, with_updated: bool) -> dict[str, Any]:
    body = {
        "action": row.action,
        "instance_uuid": row.instance_uuid,
        "request_id": row.request_id,
        "user_id": row.user_id,
        "project_id": row.project_id,
        "start_time": iso_micro(row.start_time),
        "message": row.message,
    }
    if with_updated:
        body["updated_at"] = iso_micro(row.updated_at)
    return body


def _time_param(request: web.Request, name: str) -> Any:
    raw = request.query.get(name)
    if raw is None:
        return None
    try:
        return parse_iso(raw.replace(" ", "+"))
    except ValueError:
        raise BadRequest(
            f"Invalid input for query parameters {name}. Value: {raw}. {raw!r} is not a 'date-time'"
        ) from None


async def _instance(conn: Any, request: web.Request) -> Any:
    allow_deleted = microversion(request).at_least("2.21")
    return await get_instance_row(conn, context(request), request.match_info["server_id"], allow_deleted=allow_deleted)


@routes.get(ACTIONS)
async def list_actions(request: web.Request) -> web.Response:
    mv = microversion(request)
    server_id = request.match_info["server_id"]
    c = t.instance_actions.c
    query = sa.select(t.instance_actions).where(c.instance_uuid == server_id).order_by(c.start_time.desc(), c.id.desc())
    limit = marker = None
    if mv.at_least("2.58"):
        since = _time_param(request, "changes-since")
        before = _time_param(request, "changes-before") if mv.at_least("2.66") else None
        if since and before and before < since:
            raise BadRequest("The value of changes-since must be less than or equal to changes-before.")
        if since:
            query = query.where(c.updated_at >= since)
        if before:
            query = query.where(c.updated_at <= before)
        limit, marker = page_params(request)
    async with runtime(request).db.connect() as conn:
        await _instance(conn, request)
        rows = list(await conn.execute(query))
    if marker is not None:
        ids = [r.request_id for r in rows]
        if marker not in ids:
            raise BadRequest(f"Marker {marker} could not be found.")
        rows = rows[ids.index(marker) + 1 :]
    if limit is not None:
        rows = rows[:limit]
    body: dict[str, Any] = {"instanceActions": [_action_view(r, mv.at_least("2.58")) for r in rows]}
    if limit and len(rows) == limit:
        body["links"] = [next_link(request, f"servers/{server_id}/os-instance-actions", rows[-1].request_id, limit)]
    return json_response(body)


@routes.get(ACTIONS + "/{request_id}")
async def show_action(request: web.Request) -> web.Response:
    mv = microversion(request)
    ctx = context(request)
    request_id = request.match_info["request_id"]
    async with runtime(request).db.connect() as conn:
        instance = await _instance(conn, request)
        row = (
            await conn.execute(
                sa.select(t.instance_actions).where(
                    t.instance_actions.c.instance_uuid == instance.uuid, t.instance_actions.c.request_id == request_id
                )
            )
        ).first()
        if row is None:
            raise NotFound(f"Action {request_id} not found")
        events = list(
            await conn.execute(
                sa.select(t.instance_action_events)
                .where(t.instance_action_events.c.action_id == row.id)
                .order_by(t.instance_action_events.c.start_time.desc(), t.instance_action_events.c.id.desc())
            )
        )
    body = _action_view(row, mv.at_least("2.58"))
    show_events = ctx.is_admin or mv.at_least("2.51")
    if show_events:
        owner = row.project_id or instance.project_id
        out = []
        for ev in events:
            item: dict[str, Any] = {
                "event": ev.event,
                "start_time": iso_micro(ev.start_time),
                "finish_time": iso_micro(ev.finish_time),
                "result": ev.result,
            }
            if ctx.is_admin:
                item["traceback"] = ev.traceback
                if mv.at_least("2.62"):
                    item["host"] = ev.host
            if mv.at_least("2.62"):
                item["hostId"] = host_id(owner, ev.host)
            if mv.at_least("2.84") and ctx.is_admin:
                item["details"] = ev.details
            out.append(item)
        body["events"] = out
    return json_response({"instanceAction": body})
