"""Version discovery: ``GET /compute/`` (all versions) and ``GET /compute/v2.1/``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.compute.common import compute_base
from novalite.api.compute.microversions import MAX, MIN
from novalite.api.http import json_response

routes = web.RouteTableDef()
UPDATED = "2013-07-23T11:33:21Z"
MEDIA_TYPES = [{"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2.1"}]


def v21(request: web.Request) -> dict[str, Any]:
    return {
        "id": "v2.1",
        "status": "CURRENT",
        "version": str(MAX),
        "min_version": str(MIN),
        "updated": UPDATED,
        "links": [{"rel": "self", "href": f"{compute_base(request)}/v2.1/"}],
    }


def v20(request: web.Request) -> dict[str, Any]:
    return {
        "id": "v2.0",
        "status": "SUPPORTED",
        "version": "",
        "min_version": "",
        "updated": "2011-01-21T11:33:21Z",
        "links": [{"rel": "self", "href": f"{compute_base(request)}/v2/"}],
    }


@routes.get("/")
async def list_versions(request: web.Request) -> web.Response:
    return json_response({"versions": [v20(request), v21(request)]})


@routes.get("/v2.1")
@routes.get("/v2.1/")
async def show_version(request: web.Request) -> web.Response:
    doc = v21(request)
    doc["links"] = [
        *doc["links"],
        {"rel": "describedby", "type": "text/html", "href": "https://docs.openstack.org/"},
    ]
    doc["media-types"] = MEDIA_TYPES
    return json_response({"version": doc})
