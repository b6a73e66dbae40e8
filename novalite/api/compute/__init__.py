"""Nova v2.1 with microversions: one module per group of handlers."""

from aiohttp import web


def build_compute_app() -> web.Application:
    from novalite.api.compute.routes import build

    return build()
