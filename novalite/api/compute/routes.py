"""The compute sub-application: middlewares, then one module per group of handlers."""

from __future__ import annotations

from aiohttp import web

from novalite.api.compute import (
    aggregates,
    availability_zones,
    consoles,
    flavors,
    hypervisors,
    instance_actions,
    keypairs,
    limits,
    migrations,
    quotas,
    server_actions,
    server_images,
    server_metadata,
    server_moves,
    server_networks,
    servers,
    services,
    usage,
    versions,
)
from novalite.api.compute.microversions import microversion_middleware
from novalite.api.errors import nova_body
from novalite.api.middleware import auth_middleware, error_middleware

#: Handler modules, in the order their routes are registered.
MODULES = [
    versions,
    servers,
    server_actions,
    server_images,
    server_moves,
    migrations,
    server_metadata,
    server_networks,
    instance_actions,
    flavors,
    keypairs,
    hypervisors,
    services,
    availability_zones,
    limits,
    quotas,
    usage,
    consoles,
    aggregates,
]

PUBLIC = {"/compute/", "/compute/v2.1", "/compute/v2.1/"}


def build() -> web.Application:
    app = web.Application(middlewares=[error_middleware(nova_body), microversion_middleware, auth_middleware(PUBLIC)])
    for module in MODULES:
        app.add_routes(module.routes)
    return app
