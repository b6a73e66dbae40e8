"""The identity sub-application: Keystone's error format, token auth, one module per resource."""

from __future__ import annotations

from importlib import import_module

from aiohttp import web

from novalite.api.app import Handler, error_middleware, runtime
from novalite.api.errors import Unauthorized, keystone_body
from novalite.context import RequestContext
from novalite.identity.tokens import validate_token

#: Handler modules, in the order their routes are registered.
MODULES = ["versions", "tokens", "catalog", "domains", "projects", "users", "roles", "assignments"]

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
    rt = runtime(request)
    token = request.headers.get("X-Auth-Token")
    async with rt.db.connect() as conn:
        info = await validate_token(conn, token)
    if info is None:
        raise Unauthorized(
            "The request you have made requires authentication.",
            headers={"WWW-Authenticate": f'Keystone uri="{rt.settings.public_base}/identity"'},
        )
    request["token"] = info
    request["context"] = RequestContext(
        request_id=request["request_id"],
        user_id=info.user_id,
        user_name=info.user_name,
        project_id=info.project_id,
        project_name=info.project_name,
        roles=info.role_names,
        auth_token=token,
    )
    return await handler(request)


def build() -> web.Application:
    app = web.Application(middlewares=[error_middleware(keystone_body), identity_auth])
    for name in MODULES:
        module = import_module(f"novalite.api.identity.{name}")
        app.add_routes(module.routes)
    return app
