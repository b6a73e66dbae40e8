"""``/v3/domains``: the one ``default`` domain, read-only.

Clients look it up by id and by name (``--domain Default``, ``user_domain_name``), so
both must answer; creating domains is not supported (403, as for a read-only backend).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.errors import Forbidden
from novalite.api.http import json_response
from novalite.api.identity.common import collection_links, enforce, not_found, query_bool, self_link
from novalite.store.identity import DEFAULT_DOMAIN_ID, DEFAULT_DOMAIN_NAME

routes = web.RouteTableDef()


def domain_view(request: web.Request) -> dict[str, Any]:
    return {
        "id": DEFAULT_DOMAIN_ID,
        "name": DEFAULT_DOMAIN_NAME,
        "description": "The default domain",
        "enabled": True,
        "tags": [],
        "options": {},
        "links": self_link(request, "domains", DEFAULT_DOMAIN_ID),
    }


@routes.get("/v3/domains")
async def list_domains(request: web.Request) -> web.Response:
    enforce(request, "list_domains")
    name = request.query.get("name")
    enabled = query_bool(request.query.get("enabled"))
    match = name in (None, DEFAULT_DOMAIN_NAME) and enabled is not False
    return json_response({"domains": [domain_view(request)] if match else [], "links": collection_links(request)})


@routes.get("/v3/domains/{domain_id}")
async def show_domain(request: web.Request) -> web.Response:
    """Every user may read the default domain: all their projects live in it."""
    ident = request.match_info["domain_id"]
    if ident != DEFAULT_DOMAIN_ID:
        enforce(request, "get_domain")
        raise not_found("domain", ident)
    return json_response({"domain": domain_view(request)})


@routes.post("/v3/domains")
async def create_domain(request: web.Request) -> web.Response:
    enforce(request, "create_domain")
    raise Forbidden("This cloud has only the default domain; domains cannot be created.")
