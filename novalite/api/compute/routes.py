"""The compute sub-application: middlewares, then one module per group of handlers."""

from __future__ import annotations

from importlib import import_module

from aiohttp import web

from novalite.api.app import auth_middleware, error_middleware
from novalite.api.compute.microversions import microversion_middleware
from novalite.api.errors import nova_body

#: Handler modules, in the order their routes are registered.
MODULES = [
    "versions",
    "servers",
    "server_actions",
    "server_metadata",
    "instance_actions",
    "flavors",
    "keypairs",
    "hypervisors",
    "services",
    "availability_zones",
    "limits",
    "quotas",
    "usage",
    "consoles",
    "aggregates",
]

PUBLIC = {"/compute/", "/compute/v2.1", "/compute/v2.1/"}


def build() -> web.Application:
    app = web.Application(
        middlewares=[error_middleware(nova_body), microversion_middleware, auth_middleware(PUBLIC)]
    )
    for name in MODULES:
        module = import_module(f"novalite.api.compute.{name}")
        app.add_routes(module.routes)
    return app
