"""Version discovery (``/network/``, ``/network/v2.0/``) and ``/v2.0/extensions``.

Clients ask for these before they have a token (keystoneauth's discovery), so they are public.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.http import json_response, runtime
from novalite.api.network.common import NeutronApiError

routes = web.RouteTableDef()

#: The extensions this subset implements: clients check some before they use an attribute.
EXTENSIONS: tuple[tuple[str, str, str], ...] = (
    ("allowed-address-pairs", "Allowed Address Pairs", "Provides allowed address pairs"),
    ("binding", "Port Binding", "Expose port bindings of a virtual port to external application"),
    ("external-net", "Neutron external network", "Adds external network attribute to network resource."),
    ("net-mtu", "Network MTU", "Provides MTU attribute for a network resource."),
    ("port-security", "Port Security", "Provides port security"),
    ("project-id", "project_id field enabled", "Extension that indicates that project_id field is enabled."),
    ("provider", "Provider Network", "Expose mapping of virtual networks to physical networks"),
    ("quotas", "Quota management support", "Expose functions for quotas management per project"),
    ("quota_details", "Quota details management support", "Expose functions for quotas usage statistics"),
    ("security-group", "security-group", "The security groups extension."),
    ("sorting", "Sorting support", "Extension that indicates that sorting is enabled."),
    ("pagination", "Pagination support", "Extension that indicates that pagination is enabled."),
    ("standard-attr-description", "standard-attr-description", "Extension to add descriptions to resources."),
    ("standard-attr-revisions", "Resource revision numbers", "This extension will display the revision number."),
    ("standard-attr-tag", "Tag support for resources with standard attribute", "Enables to set tag on resources."),
    ("standard-attr-timestamp", "Resource timestamps", "Adds created_at and updated_at fields to resources."),
    ("stateful-security-group", "Stateful security group", "Indicates if the security group is stateful or not"),
)


def _extension(alias: str, name: str, description: str) -> dict[str, Any]:
    return {"alias": alias, "name": name, "description": description, "links": [], "updated": "2026-12-04T00:00:00Z"}


def _v2(request: web.Request) -> dict[str, Any]:
    href = f"{runtime(request).settings.public_base}/network/v2.0/"
    return {"id": "v2.0", "status": "CURRENT", "links": [{"href": href, "rel": "self"}]}


@routes.get("")
@routes.get("/")
async def versions(request: web.Request) -> web.Response:
    return json_response({"versions": [_v2(request)]})


@routes.get("/v2.0")
@routes.get("/v2.0/")
async def resources(request: web.Request) -> web.Response:
    base = f"{runtime(request).settings.public_base}/network/v2.0"
    names = [
        ("network", "networks"),
        ("subnet", "subnets"),
        ("port", "ports"),
        ("security_group", "security-groups"),
        ("security_group_rule", "security-group-rules"),
        ("quota", "quotas"),
    ]
    return json_response(
        {
            "resources": [
                {"name": n, "collection": c, "links": [{"href": f"{base}/{c}", "rel": "self"}]} for n, c in names
            ]
        }
    )


@routes.get("/v2.0/extensions")
async def list_extensions(request: web.Request) -> web.Response:
    return json_response({"extensions": [_extension(*e) for e in EXTENSIONS]})


@routes.get("/v2.0/extensions/{alias}")
async def show_extension(request: web.Request) -> web.Response:
    alias = request.match_info["alias"]
    for ext in EXTENSIONS:
        if ext[0] == alias:
            return json_response({"extension": _extension(*ext)})
    raise NeutronApiError(f"Extension with alias {alias} does not exist", 404, "HTTPNotFound")
