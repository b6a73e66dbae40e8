"""The identity sub-application: Keystone's error format, token auth, one module per resource."""

from __future__ import annotations

from aiohttp import web

from novalite.api.errors import keystone_body
from novalite.api.http import Handler
from novalite.api.identity import assignments, catalog, domains, projects, roles, tokens, users, versions
from novalite.api.middleware import authenticate, error_middleware

#: Handler modules, in the order their routes are registered.
MODULES = [versions, tokens, catalog, domains, projects, users, roles, assignments]

#: (method, route) pairs that need no token: discovery, and getting a token.
PUBLIC = {
    ("GET", "/identity"),
    ("GET", "/identity/"),
    ("GET", "/identity/v3"),
    ("GET", "/identity/v3/"),
    ("POST", "/identity/v3/auth/tokens"),
}


@web.middleware
async def identity_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Validate ``X-Auth-Token`` into ``request["token"]``.

    Unlike compute and image, unscoped tokens are accepted here: a user with an
    unscoped token must still be able to list their projects and re-scope.
    """
    resource = request.match_info.route.resource
    method = "GET" if request.method == "HEAD" else request.method
    if resource is None or (method, resource.canonical) in PUBLIC:
        return await handler(request)
    await authenticate(request, require_project=False)
    return await handler(request)


def build() -> web.Application:
    app = web.Application(middlewares=[error_middleware(keystone_body), identity_auth])
    for module in MODULES:
        app.add_routes(module.routes)
    return app
