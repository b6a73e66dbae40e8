"""``/v3/services``, ``/v3/endpoints``, ``/v3/regions``: the computed catalog, read-only.

The catalog follows from the settings (see :mod:`novalite.identity.catalog`), so
there is nothing to create or delete; ``openstack endpoint list`` and friends work.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.http import json_response, runtime
from novalite.api.identity.common import collection_links, enforce, not_found, self_link
from novalite.identity import catalog

routes = web.RouteTableDef()


def service_view(request: web.Request, svc: catalog.Service) -> dict[str, Any]:
    return {
        "id": svc.id,
        "type": svc.type,
        "name": svc.name,
        "description": svc.description,
        "enabled": True,
        "links": self_link(request, "services", svc.id),
    }


def endpoint_view(request: web.Request, ep: catalog.Endpoint) -> dict[str, Any]:
    return {
        "id": ep.id,
        "service_id": ep.service_id,
        "interface": ep.interface,
        "region": ep.region,
        "region_id": ep.region,
        "url": ep.url,
        "enabled": True,
        "links": self_link(request, "endpoints", ep.id),
    }


def region_view(request: web.Request, region: str) -> dict[str, Any]:
    return {
        "id": region,
        "description": "",
        "parent_region_id": None,
        "links": self_link(request, "regions", region),
    }


@routes.get("/v3/services")
async def list_services(request: web.Request) -> web.Response:
    enforce(request, "list_services")
    q = request.query
    found = [
        service_view(request, s)
        for s in catalog.services()
        if q.get("type") in (None, s.type) and q.get("name") in (None, s.name)
    ]
    return json_response({"services": found, "links": collection_links(request)})


@routes.get("/v3/services/{service_id}")
async def show_service(request: web.Request) -> web.Response:
    enforce(request, "get_service")
    ident = request.match_info["service_id"]
    for svc in catalog.services():
        if svc.id == ident:
            return json_response({"service": service_view(request, svc)})
    raise not_found("service", ident)


@routes.get("/v3/endpoints")
async def list_endpoints(request: web.Request) -> web.Response:
    enforce(request, "list_endpoints")
    q = request.query
    found = [
        endpoint_view(request, ep)
        for ep in catalog.endpoints(runtime(request).settings)
        if q.get("interface") in (None, ep.interface)
        and q.get("service_id") in (None, ep.service_id)
        and q.get("region_id", q.get("region")) in (None, ep.region)
    ]
    return json_response({"endpoints": found, "links": collection_links(request)})


@routes.get("/v3/endpoints/{endpoint_id}")
async def show_endpoint(request: web.Request) -> web.Response:
    enforce(request, "get_endpoint")
    ident = request.match_info["endpoint_id"]
    for ep in catalog.endpoints(runtime(request).settings):
        if ep.id == ident:
            return json_response({"endpoint": endpoint_view(request, ep)})
    raise not_found("endpoint", ident)


@routes.get("/v3/regions")
async def list_regions(request: web.Request) -> web.Response:
    """Any authenticated user may list regions (Keystone's default policy)."""
    region = runtime(request).settings.region
    return json_response({"regions": [region_view(request, region)], "links": collection_links(request)})


@routes.get("/v3/regions/{region_id}")
async def show_region(request: web.Request) -> web.Response:
    ident = request.match_info["region_id"]
    if ident != runtime(request).settings.region:
        raise not_found("region", ident)
    return json_response({"region": region_view(request, ident)})
