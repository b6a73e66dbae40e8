"""Keystone v3 subset: version documents, tokens, catalog, projects, users, roles."""

from aiohttp import web


def build_identity_app() -> web.Application:
    from novalite.api.identity.routes import build

    return build()
