"""Availability zones: the zones of enabled compute services, and (admin) which hosts run what.

As in Nova, a zone is available when an enabled service lives in it; zones whose
services are all disabled are listed as unavailable. The ``internal`` zone (controller
services) is hidden from the plain list and shown in ``/detail``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.compute.common import require_admin
from novalite.api.compute.services import INTERNAL_ZONE, service_zone
from novalite.api.http import context, json_response, runtime
from novalite.servicegroup import is_up
from novalite.store import hosts
from novalite.timeutil import iso_micro

routes = web.RouteTableDef()
ZONES = "/v2.1/os-availability-zone"
API_BINARIES = ("nova-osapi_compute", "nova-metadata")


async def _services(request: web.Request) -> list[Any]:
    async with runtime(request).db.connect() as conn:
        return await hosts.list_services(conn)


def _zones(services: list[Any], default_az: str) -> tuple[list[str], list[str]]:
    """(available, not available) zone names, in first-seen order."""
    available: list[str] = []
    for svc in services:
        zone = service_zone(svc, default_az)
        if not svc.disabled and zone not in available:
            available.append(zone)
    unavailable: list[str] = []
    for svc in services:
        zone = service_zone(svc, default_az)
        if svc.disabled and zone not in available and zone not in unavailable:
            unavailable.append(zone)
    return available, unavailable


@routes.get(ZONES)
async def list_zones(request: web.Request) -> web.Response:
    services = await _services(request)
    available, unavailable = _zones(services, runtime(request).settings.availability_zone)
    info = [
        {"zoneName": z, "zoneState": {"available": True}, "hosts": None} for z in available if z != INTERNAL_ZONE
    ] + [{"zoneName": z, "zoneState": {"available": False}, "hosts": None} for z in unavailable if z != INTERNAL_ZONE]
    return json_response({"availabilityZoneInfo": info})


@routes.get(ZONES + "/detail")
async def list_zones_detail(request: web.Request) -> web.Response:
    require_admin(context(request), "os_compute_api:os-availability-zone:detail")
    settings = runtime(request).settings
    services = await _services(request)
    available, unavailable = _zones(services, settings.availability_zone)
    hosts: dict[str, dict[str, dict[str, Any]]] = {}
    for svc in services:
        if svc.disabled or svc.binary in API_BINARIES:
            continue
        zone_hosts = hosts.setdefault(service_zone(svc, settings.availability_zone), {})
        zone_hosts.setdefault(svc.host, {})[svc.binary] = {
            "available": is_up(svc, settings.service_down_time),
            "active": not svc.disabled,
            "updated_at": iso_micro(svc.updated_at),
        }
    info = [{"zoneName": z, "zoneState": {"available": True}, "hosts": hosts.get(z, {})} for z in available] + [
        {"zoneName": z, "zoneState": {"available": False}, "hosts": None} for z in unavailable
    ]
    return json_response({"availabilityZoneInfo": info})
