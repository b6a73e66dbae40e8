"""Version discovery: ``GET /image`` (300 Multiple Choices, like Glance) and ``/image/versions``.

keystoneauth reads this list to turn the catalog's unversioned ``{base}/image`` endpoint
into ``{base}/image/v2/``: it picks the highest ``v2.x`` entry and follows its ``self``
link, so every entry must carry one.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.http import json_response, runtime

routes = web.RouteTableDef()

#: The newest Glance v2 minor version whose API subset we speak.
CURRENT_MINOR = 16


def versions_doc(request: web.Request) -> dict[str, Any]:
    href = f"{runtime(request).settings.public_base}/image/v2/"
    versions = [
        {
            "id": f"v2.{minor}",
            "status": "CURRENT" if minor == CURRENT_MINOR else "SUPPORTED",
            "links": [{"rel": "self", "href": href}],
        }
        for minor in range(CURRENT_MINOR, -1, -1)
    ]
    return {"versions": versions}


@routes.get("")
@routes.get("/")
async def list_versions(request: web.Request) -> web.Response:
    return json_response(versions_doc(request), status=300)


@routes.get("/versions")
async def versions(request: web.Request) -> web.Response:
    return json_response(versions_doc(request))


@routes.get("/v2")
@routes.get("/v2/")
async def v2_root(request: web.Request) -> web.Response:
    """Glance answers its versioned root with the version list too (300)."""
    return json_response(versions_doc(request), status=300)
