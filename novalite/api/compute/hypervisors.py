"""Hypervisors (admin): compute nodes with their service's state, and their usage.

Ids are compute node ids below 2.53 and compute node uuids from 2.53 (which also bring
``hypervisor_hostname_pattern`` and ``with_servers`` as query parameters). 2.88 drops
the resource fields (Placement has them) and adds ``uptime``; ``/statistics`` and
``/{id}/uptime`` exist only below 2.88. Used amounts come from Placement allocations.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from aiohttp import web

from novalite.api.compute.common import next_link, page_params, require_admin
from novalite.api.compute.microversions import microversion
from novalite.api.compute.services import is_uuid
from novalite.api.errors import BadRequest, NotFound
from novalite.api.http import context, json_response, runtime
from novalite.api.validation import bool_word
from novalite.servicegroup import is_up
from novalite.store import hosts, placement
from novalite.store.hosts import Hypervisor, HypervisorUsage
from novalite.store.paging import page_after
from novalite.timeutil import utcnow

routes = web.RouteTableDef()
HYPERVISORS = "/v2.1/os-hypervisors"

RESOURCE_FIELDS = (
    "vcpus",
    "memory_mb",
    "local_gb",
    "vcpus_used",
    "memory_mb_used",
    "local_gb_used",
    "free_ram_mb",
    "free_disk_gb",
    "current_workload",
    "running_vms",
    "disk_available_least",
)


class _Stats:
    """Per-node usage: placement allocations (plus reserved) and the instances on the node."""

    def __init__(self, usage: HypervisorUsage) -> None:
        self.usages = usage.providers
        self.instances = usage.instances

    def resources(self, node: Any) -> dict[str, int]:
        usage = self.usages.get(node.uuid)
        used = usage.used if usage else {}
        inv = usage.inventories if usage else {}

        def reserved(rc: str) -> int:
            return inv[rc].reserved if rc in inv else 0

        on_node = [
            i for i in self.instances if i.node == node.hypervisor_hostname or (not i.node and i.host == node.host)
        ]
        memory_used = used.get(placement.MEMORY_MB, 0) + reserved(placement.MEMORY_MB)
        disk_used = used.get(placement.DISK_GB, 0) + reserved(placement.DISK_GB)
        return {
            "vcpus": node.vcpus,
            "memory_mb": node.memory_mb,
            "local_gb": node.local_gb,
            "vcpus_used": used.get(placement.VCPU, 0),
            "memory_mb_used": memory_used,
            "local_gb_used": disk_used,
            "free_ram_mb": node.memory_mb - memory_used,
            "free_disk_gb": node.local_gb - disk_used,
            "current_workload": sum(1 for i in on_node if i.task_state),
            "running_vms": len(on_node),
            "disk_available_least": node.local_gb - disk_used,
        }


def _uptime_text(service: Any, now: datetime | None = None) -> str:
    """An ``uptime(1)``-style line for a host, counted from its service's first report."""
    now = now or utcnow()
    secs = max(0, int((now - service.created_at).total_seconds()))
    days, rest = divmod(secs, 86400)
    hours, minutes = rest // 3600, (rest % 3600) // 60
    span = f"{days} days, {hours:2d}:{minutes:02d}" if days else f"{hours:2d}:{minutes:02d}"
    return f" {now:%H:%M:%S} up {span},  0 users,  load average: 0.00, 0.00, 0.00"


def _view(request: web.Request, node: Any, service: Any, stats: _Stats, detail: bool, servers: bool) -> dict[str, Any]:
    mv = microversion(request)
    settings = runtime(request).settings
    uuid_ids = mv.at_least("2.53")
    alive = is_up(service, settings.service_down_time)
    body: dict[str, Any] = {
        "id": node.uuid if uuid_ids else node.id,
        "hypervisor_hostname": node.hypervisor_hostname,
        "state": "up" if alive else "down",
        "status": "disabled" if service.disabled else "enabled",
    }
    if detail:
        body["hypervisor_type"] = node.hypervisor_type
        body["hypervisor_version"] = node.hypervisor_version
        body["host_ip"] = node.host_ip
        body["service"] = {
            "id": service.uuid if uuid_ids else service.id,
            "host": node.host,
            "disabled_reason": service.disabled_reason,
        }
        if mv.below("2.88"):
            body.update(stats.resources(node))
            cpu_info = node.cpu_info or {}
            if mv.at_least("2.28"):
                body["cpu_info"] = cpu_info if isinstance(cpu_info, dict) else json.loads(cpu_info)
            else:
                body["cpu_info"] = cpu_info if isinstance(cpu_info, str) else json.dumps(cpu_info)
        else:
            body["uptime"] = _uptime_text(service) if alive else None
    if servers:
        on_node = [
            i for i in stats.instances if i.node == node.hypervisor_hostname or (not i.node and i.host == node.host)
        ]
        if on_node:
            body["servers"] = [{"name": f"instance-{i.id:08x}", "uuid": i.uuid} for i in on_node]
        elif mv.at_least("2.75"):
            body["servers"] = []
    return body


def _bool_param(request: web.Request, name: str) -> bool:
    raw = request.query.get(name)
    if raw is None:
        return False
    value = bool_word(raw)
    if value is not None:
        return value
    raise BadRequest(
        f"Invalid input for query parameters {name}. Value: {raw}. {raw!r} is not one of "
        "['True', 'False', 'true', 'false', '1', '0', 'yes', 'no', 'on', 'off', 't', 'f', 'y', 'n']"
    )


async def _list(request: web.Request, detail: bool) -> web.Response:
    mv = microversion(request)
    require_admin(context(request), f"os_compute_api:os-hypervisors:{'list-detail' if detail else 'list'}")
    pattern = request.query.get("hypervisor_hostname_pattern") if mv.at_least("2.53") else None
    with_servers = _bool_param(request, "with_servers") if mv.at_least("2.53") else False
    paging = mv.at_least("2.33")
    limit, marker = page_params(request) if paging else (None, None)
    if pattern is not None:
        if "limit" in request.query or marker:
            raise BadRequest(
                "Paging over hypervisors with the hypervisor_hostname_pattern query parameter is not supported."
            )
        paging = False
    async with runtime(request).db.connect() as conn:
        found = await hosts.list_hypervisors(conn, hostname_like=pattern)
        if pattern is not None and not found:
            raise NotFound(f"No hypervisor matching '{pattern}' could be found.")
        key = (lambda h: h.node.uuid) if mv.at_least("2.53") else (lambda h: h.node.id)
        found = page_after(found, key, marker, limit, f"marker [{marker}] not found")
        stats = _Stats(await hosts.hypervisor_usage(conn, found, with_instances=detail or with_servers))
    items = [_view(request, h.node, h.service, stats, detail, with_servers) for h in found if h.service is not None]
    body: dict[str, Any] = {"hypervisors": items}
    if paging and limit and len(items) == limit:
        collection = "os-hypervisors/detail" if detail else "os-hypervisors"
        body["hypervisors_links"] = [next_link(request, collection, items[-1]["id"], limit)]
    return json_response(body)


@routes.get(HYPERVISORS)
async def list_hypervisors(request: web.Request) -> web.Response:
    return await _list(request, detail=False)


@routes.get(HYPERVISORS + "/detail")
async def list_hypervisors_detail(request: web.Request) -> web.Response:
    return await _list(request, detail=True)


@routes.get(HYPERVISORS + "/statistics")
async def hypervisor_statistics(request: web.Request) -> web.Response:
    if microversion(request).at_least("2.88"):
        raise NotFound("The resource could not be found.")
    require_admin(context(request), "os_compute_api:os-hypervisors:statistics")
    async with runtime(request).db.connect() as conn:
        found = await hosts.list_hypervisors(conn)
        stats = _Stats(await hosts.hypervisor_usage(conn, found))
    totals = dict.fromkeys(RESOURCE_FIELDS, 0)
    count = 0
    for h in found:
        if h.service is None:
            continue
        count += 1
        for key, value in stats.resources(h.node).items():
            totals[key] += value
    return json_response({"hypervisor_statistics": {"count": count, **totals}})


def _hypervisor_id(request: web.Request, ident: str) -> int | str:
    """The path's hypervisor id: a compute node uuid from 2.53, its integer id below."""
    if microversion(request).at_least("2.53"):
        if not is_uuid(ident):
            raise BadRequest(f"Invalid uuid {ident}")
        return ident
    try:
        return int(ident)
    except ValueError:
        raise NotFound(f"Hypervisor with ID '{ident}' could not be found.") from None


def _found(hypervisor: Hypervisor | None, ident: str) -> Hypervisor:
    """A hypervisor the API shows: its node exists and so does its compute service."""
    if hypervisor is None or hypervisor.service is None:
        raise NotFound(f"Hypervisor with ID '{ident}' could not be found.")
    return hypervisor


@routes.get(HYPERVISORS + "/{ident}")
async def show_hypervisor(request: web.Request) -> web.Response:
    mv = microversion(request)
    require_admin(context(request), "os_compute_api:os-hypervisors:show")
    ident = request.match_info["ident"]
    with_servers = _bool_param(request, "with_servers") if mv.at_least("2.53") else False
    key = _hypervisor_id(request, ident)
    async with runtime(request).db.connect() as conn:
        hypervisor = _found(await hosts.get_hypervisor(conn, key), ident)
        stats = _Stats(await hosts.hypervisor_usage(conn, [hypervisor]))
    body = _view(request, hypervisor.node, hypervisor.service, stats, True, with_servers)
    return json_response({"hypervisor": body})


@routes.get(HYPERVISORS + "/{ident}/uptime")
async def hypervisor_uptime(request: web.Request) -> web.Response:
    if microversion(request).at_least("2.88"):
        raise NotFound("The resource could not be found.")
    require_admin(context(request), "os_compute_api:os-hypervisors:uptime")
    ident = request.match_info["ident"]
    key = _hypervisor_id(request, ident)
    async with runtime(request).db.connect() as conn:
        hypervisor = _found(await hosts.get_hypervisor(conn, key), ident)
        stats = _Stats(await hosts.hypervisor_usage(conn, [hypervisor], with_instances=False))
    node, service = hypervisor.node, hypervisor.service
    if not is_up(service, runtime(request).settings.service_down_time):
        raise BadRequest(f"Compute service of {node.host} is unavailable at this time.")
    body = _view(request, node, service, stats, False, False)
    body["uptime"] = _uptime_text(service)
    return json_response({"hypervisor": body})


async def _search(request: web.Request, servers: bool) -> web.Response:
    if microversion(request).at_least("2.53"):
        raise NotFound("The resource could not be found.")
    require_admin(context(request), f"os_compute_api:os-hypervisors:{'servers' if servers else 'search'}")
    pattern = request.match_info["pattern"]
    async with runtime(request).db.connect() as conn:
        found = await hosts.list_hypervisors(conn, hostname_like=pattern)
        if not found:
            raise NotFound(f"No hypervisor matching '{pattern}' could be found.")
        stats = _Stats(await hosts.hypervisor_usage(conn, found, with_instances=servers))
    items = [_view(request, h.node, h.service, stats, False, servers) for h in found if h.service is not None]
    return json_response({"hypervisors": items})


@routes.get(HYPERVISORS + "/{pattern}/search")
async def search_hypervisors(request: web.Request) -> web.Response:
    return await _search(request, servers=False)


@routes.get(HYPERVISORS + "/{pattern}/servers")
async def hypervisor_servers(request: web.Request) -> web.Response:
    return await _search(request, servers=True)
