"""``/os-simple-tenant-usage``: instance-hours per project over a period (admins: all projects).

Nova's arithmetic: an instance counts from ``max(launched_at, start)`` to
``min(terminated_at, end)`` (or ``end`` while it runs); ``end`` is capped at now.
Deleted instances count for the time they existed. Paging over instances from 2.40.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from typing import Any

from aiohttp import web

from novalite.api.compute.common import MAX_LIMIT, next_link, page_params, require_admin
from novalite.api.compute.microversions import microversion
from novalite.api.errors import BadRequest, Forbidden
from novalite.api.http import context, json_response, runtime
from novalite.store.usage import instances_in_period
from novalite.timeutil import iso_micro, utcnow

routes = web.RouteTableDef()
USAGE = "/v2.1/os-simple-tenant-usage"
FORMATS = ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M:%S.%f", "%Y-%m-%d %H:%M:%S.%f")


def _parse(value: str | None) -> datetime:
    if not value:
        return utcnow()
    for fmt in FORMATS:
        try:
            return datetime.strptime(value, fmt)
        except ValueError:
            continue
    raise BadRequest("Invalid datetime string: Datetime is in invalid format")


def _period(request: web.Request) -> tuple[datetime, datetime, bool]:
    start = _parse(request.query.get("start"))
    end = _parse(request.query.get("end"))
    if not start < end:
        raise BadRequest("Invalid start time. The start time cannot occur after the end time.")
    return start, min(end, utcnow()), request.query.get("detailed", "0") == "1"


def _hours(row: Any, start: datetime, stop: datetime) -> float:
    launched, terminated = row.launched_at, row.terminated_at
    if terminated and terminated < start:
        return 0
    if launched and launched > stop:
        return 0
    if not launched:
        return 0
    begin = max(launched, start)
    end = min(stop, terminated) if terminated else stop
    return float((end - begin).total_seconds()) / 3600.0


async def _instances(
    request: web.Request, start: datetime, stop: datetime, project_id: str | None, limit: int, marker: str | None
) -> list[Any]:
    async with runtime(request).db.connect() as conn:
        return await instances_in_period(conn, start, stop, project_id=project_id, limit=limit, marker=marker)


def _usages(rows: list[Any], start: datetime, stop: datetime, detailed: bool) -> list[dict[str, Any]]:
    now = utcnow()
    summaries: OrderedDict[str, dict[str, Any]] = OrderedDict()
    for row in rows:
        flavor = row.flavor or {}
        hours = _hours(row, start, stop)
        ended = row.terminated_at
        started = row.launched_at
        state = "terminated" if ended else row.vm_state
        if started is None:
            uptime = 0
        else:
            uptime = int(((ended if state == "terminated" else now) - started).total_seconds())
        info = {
            "hours": hours,
            "flavor": flavor.get("name", ""),
            "instance_id": row.uuid,
            "name": row.display_name,
            "tenant_id": row.project_id,
            "memory_mb": row.memory_mb,
            "local_gb": row.root_gb + row.ephemeral_gb,
            "vcpus": row.vcpus,
            "started_at": iso_micro(started),
            "ended_at": iso_micro(ended),
            "state": state,
            "uptime": uptime,
        }
        summary = summaries.get(row.project_id)
        if summary is None:
            summary = {"tenant_id": row.project_id}
            if detailed:
                summary["server_usages"] = []
            summary.update(
                total_local_gb_usage=0,
                total_vcpus_usage=0,
                total_memory_mb_usage=0,
                total_hours=0,
                start=iso_micro(start),
                stop=iso_micro(stop),
            )
            summaries[row.project_id] = summary
        summary["total_local_gb_usage"] += info["local_gb"] * hours
        summary["total_vcpus_usage"] += info["vcpus"] * hours
        summary["total_memory_mb_usage"] += info["memory_mb"] * hours
        summary["total_hours"] += hours
        if detailed:
            summary["server_usages"].append(info)
    return list(summaries.values())


def _paging(request: web.Request) -> tuple[bool, int, str | None]:
    if microversion(request).at_least("2.40"):
        limit, marker = page_params(request)
        return True, limit, marker
    return False, MAX_LIMIT, None


@routes.get(USAGE)
async def list_usage(request: web.Request) -> web.Response:
    require_admin(context(request), "os_compute_api:os-simple-tenant-usage:list")
    start, stop, detailed = _period(request)
    links, limit, marker = _paging(request)
    rows = await _instances(request, start, stop, None, limit, marker)
    body: dict[str, Any] = {"tenant_usages": _usages(rows, start, stop, detailed)}
    if links and limit and len(rows) == limit:
        body["tenant_usages_links"] = [next_link(request, "os-simple-tenant-usage", rows[-1].uuid, limit)]
    return json_response(body)


@routes.get(USAGE + "/{tenant_id}")
async def show_usage(request: web.Request) -> web.Response:
    ctx = context(request)
    tenant_id = request.match_info["tenant_id"]
    if tenant_id != ctx.project_id and not ctx.is_admin:
        raise Forbidden("Policy doesn't allow os_compute_api:os-simple-tenant-usage:show to be performed.")
    start, stop, _ = _period(request)
    links, limit, marker = _paging(request)
    rows = await _instances(request, start, stop, tenant_id, limit, marker)
    usages = _usages(rows, start, stop, True)
    body: dict[str, Any] = {"tenant_usage": usages[0] if usages else {}}
    if links and limit and len(rows) == limit:
        body["tenant_usage_links"] = [next_link(request, f"os-simple-tenant-usage/{tenant_id}", rows[-1].uuid, limit)]
    return json_response(body)
