"""The aiohttp application: the root document and the four mounted APIs.

``/identity`` (Keystone v3), ``/compute`` (Nova v2.1), ``/image`` (Glance v2) and
``/network`` (a Neutron v2.0 subset) are sub-applications, each with its own error format
(:mod:`novalite.api.middleware`); the root middleware gives every response an
``x-openstack-request-id`` and binds it to every log line of the request. Handlers use
:mod:`novalite.api.http`, never this module.
"""

from __future__ import annotations

from aiohttp import web

from novalite.api import dashboard
from novalite.api.compute import routes as compute_routes
from novalite.api.http import RUNTIME, json_response
from novalite.api.identity import routes as identity_routes
from novalite.api.image import routes as image_routes
from novalite.api.metrics import metrics_handler, metrics_middleware
from novalite.api.middleware import request_id_middleware
from novalite.api.network import routes as network_routes
from novalite.runtime import Runtime


def build_app(rt: Runtime) -> web.Application:
    """The whole API: root version list plus the four service sub-applications."""
    # ``request.read()`` refuses bodies over the JSON limit too (read_body is the bounded reader
    # handlers use); image data is streamed from ``request.content``, which this does not bound.
    # metrics_middleware outermost: it times the whole request and sees every final status.
    app = web.Application(
        middlewares=[metrics_middleware, request_id_middleware], client_max_size=rt.settings.max_request_body_size
    )
    app[RUNTIME] = rt
    app.add_subapp("/identity", identity_routes.build())
    app.add_subapp("/compute", compute_routes.build())
    app.add_subapp("/image", image_routes.build())
    app.add_subapp("/network", network_routes.build())  # Neutron v2.0 subset (issue 12)

    async def root(request: web.Request) -> web.Response:
        if dashboard.prefers_html(request):  # a browser's address bar: the dashboard; API clients: JSON
            return dashboard.redirect()
        base = rt.settings.public_base
        return json_response(
            {
                "name": "novalite",
                "services": {
                    "identity": f"{base}/identity/v3",
                    "compute": f"{base}/compute/v2.1",
                    "image": f"{base}/image",
                    "network": f"{base}/network/v2.0",
                },
            }
        )

    app.router.add_get("/", root)
    dashboard.add_routes(app)  # static files only, no token: the page calls the APIs above
    if rt.settings.metrics_enabled:
        # Outside the sub-applications, so no auth middleware runs: Prometheus has no token.
        app.router.add_get("/metrics", metrics_handler)
    return app
