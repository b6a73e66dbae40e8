"""Glance v2 subset: version documents and images (create, upload, download, patch...)."""

from aiohttp import web


def build_image_app() -> web.Application:
    from novalite.api.image.routes import build

    return build()
