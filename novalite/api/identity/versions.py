"""Version discovery: what keystoneauth reads before anything else.

``auth_url`` usually ends in ``/identity/v3``; keystoneauth GETs it and needs a
``version`` document whose ``self`` link it then uses as the v3 endpoint. Given the
unversioned ``/identity`` it expects a 300 "multiple choices" list instead.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.http import json_response
from novalite.api.identity.common import v3_base

routes = web.RouteTableDef()

#: Keystone 2023.1 and later report v3.14.
VERSION = "v3.14"
UPDATED = "2020-04-07T00:00:00Z"
MEDIA_TYPES = [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]


def version_doc(request: web.Request) -> dict[str, Any]:
    return {
        "id": VERSION,
        "status": "stable",
        "updated": UPDATED,
        "links": [{"rel": "self", "href": f"{v3_base(request)}/"}],
        "media-types": MEDIA_TYPES,
    }


@routes.get("")
@routes.get("/")
async def list_versions(request: web.Request) -> web.Response:
    # Keystone also points Location at its one version.
    return json_response(
        {"versions": {"values": [version_doc(request)]}}, status=300, headers={"Location": f"{v3_base(request)}/"}
    )


@routes.get("/v3")
@routes.get("/v3/")
async def show_version(request: web.Request) -> web.Response:
    return json_response({"version": version_doc(request)})
