"""Host aggregates: read-only and empty.

novalite places hosts in availability zones by configuration, not by aggregates; the
list exists because clients (``openstack hypervisor show``) ask for it.
"""

from __future__ import annotations

from aiohttp import web

from novalite.api.compute.common import require_admin
from novalite.api.errors import NotFound
from novalite.api.http import context, json_response

routes = web.RouteTableDef()


@routes.get("/v2.1/os-aggregates")
async def list_aggregates(request: web.Request) -> web.Response:
    require_admin(context(request), "os_compute_api:os-aggregates:index")
    return json_response({"aggregates": []})


@routes.get("/v2.1/os-aggregates/{aggregate_id}")
async def show_aggregate(request: web.Request) -> web.Response:
    require_admin(context(request), "os_compute_api:os-aggregates:show")
    raise NotFound(f"Aggregate {request.match_info['aggregate_id']} could not be found.")
