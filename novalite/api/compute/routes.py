from aiohttp import web


def build() -> web.Application:
    return web.Application()
