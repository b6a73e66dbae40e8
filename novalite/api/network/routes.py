"""The network sub-application: Neutron error bodies, token auth (except version discovery), routes."""

from __future__ import annotations

from aiohttp import web

from novalite.api.middleware import auth_middleware, error_middleware
from novalite.api.network import networks, ports, quotas, security_groups, subnets, tags, versions
from novalite.api.network.common import network_errors, neutron_body, readers_read

#: Handler modules, in the order their routes are registered.
MODULES = [versions, networks, subnets, ports, security_groups, quotas, tags]

#: Version discovery must answer before the client has a token (keystoneauth asks first).
PUBLIC = {"/network", "/network/", "/network/v2.0", "/network/v2.0/"}


def build() -> web.Application:
    app = web.Application(
        middlewares=[error_middleware(neutron_body), auth_middleware(PUBLIC), readers_read, network_errors]
    )
    for module in MODULES:
        app.add_routes(module.routes)
    return app
