"""The image sub-application: Glance error bodies, token auth (except version discovery), routes."""

from __future__ import annotations

from aiohttp import web

from novalite.api.errors import glance_body
from novalite.api.image import data, images, members, schemas, versions
from novalite.api.middleware import auth_middleware, error_middleware

#: Handler modules, in the order their routes are registered.
MODULES = [versions, images, data, members, schemas]

#: Version discovery must answer before the client has a token (keystoneauth asks first).
PUBLIC = {"/image", "/image/", "/image/versions", "/image/v2", "/image/v2/"}


def build() -> web.Application:
    app = web.Application(middlewares=[error_middleware(glance_body), auth_middleware(PUBLIC)])
    for module in MODULES:
        app.add_routes(module.routes)
    return app
