"""``/servers/{id}/os-instance-actions``: what was done to a server, newest first, with events.

Nova's rules: a deleted server's actions stay visible from 2.21; ``updated_at`` and
paging/``changes-since`` from 2.58 (``changes-before`` from 2.66); events for everyone
from 2.51 but ``traceback`` only for admins; ``hostId`` from 2.62 (``host`` for
admins); event ``details`` from 2.84 for admins.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.compute.common import next_link, page_params
from novalite.api.compute.microversions import microversion
from novalite.api.compute.views import host_id
from novalite.api.errors import BadRequest, NotFound
from novalite.api.http import context, json_response, runtime
from novalite.store import actions
from novalite.store import servers as records
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


def _allow_deleted(request: web.Request) -> bool:
    """A deleted server's actions stay visible from 2.21."""
    return microversion(request).at_least("2.21")


@routes.get(ACTIONS)
async def list_actions(request: web.Request) -> web.Response:
    mv = microversion(request)
    server_id = request.match_info["server_id"]
    since = before = None
    limit: int | None = None
    marker: str | None = None
    if mv.at_least("2.58"):
        since = _time_param(request, "changes-since")
        before = _time_param(request, "changes-before") if mv.at_least("2.66") else None
        if since and before and before < since:
            raise BadRequest("The value of changes-since must be less than or equal to changes-before.")
        limit, marker = page_params(request)
    async with runtime(request).db.connect() as conn:
        await records.visible_instance(conn, context(request), server_id, allow_deleted=_allow_deleted(request))
        rows = await actions.list_actions(
            conn, server_id, changes_since=since, changes_before=before, limit=limit, marker=marker
        )
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
        instance = await records.visible_instance(
            conn, ctx, request.match_info["server_id"], allow_deleted=_allow_deleted(request)
        )
        row = await actions.get_action(conn, instance.uuid, request_id)
        if row is None:
            raise NotFound(f"Action {request_id} not found")
        events = await actions.action_events(conn, row.id)
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
