"""The image sub-application: Glance error bodies, token auth (except version discovery), routes."""

from __future__ import annotations

from importlib import import_module

from aiohttp import web

from novalite.api.app import auth_middleware, error_middleware
from novalite.api.errors import glance_body

#: Handler modules; their routes do not overlap, so the order does not matter.
MODULES = ["versions", "images", "data", "members", "schemas"]

#: Version discovery must answer before the client has a token (keystoneauth asks first).
PUBLIC = {"/image", "/image/", "/image/versions", "/image/v2", "/image/v2/"}


def build() -> web.Application:
    app = web.Application(middlewares=[error_middleware(glance_body), auth_middleware(PUBLIC)])
    for name in MODULES:
        module = import_module(f"novalite.api.image.{name}")
        app.add_routes(module.routes)
    return app
