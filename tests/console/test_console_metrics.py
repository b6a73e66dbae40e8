"""Console sessions on ``/metrics``: open now, and every websocket request by outcome.

Two browsers' sessions open at once show as 2, and 0 again once both closed; a request with
a bad token and one whose guest VNC server is gone are counted apart from the good ones.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp

from tests.console.conftest import active_server, console_url, point_vnc_at, proxy_of
from tests.console.fakevnc import BANNER
from tests.console.test_proxy import open_ws, refused_status, ws_url
from tests.functional.test_metrics import Samples, scrape, value

OPEN = "novalite_console_sessions_open"
SESSIONS = "novalite_console_sessions_total"


async def scrape_until(cloud: Any, name: str, wanted: float, **labels: str) -> Samples:
    """The page once ``name`` reads ``wanted`` (a closed session ends in the proxy's thread)."""
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        _, samples = await scrape(cloud)
        if value(samples, name, **labels) == wanted or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.05)


async def test_console_sessions_open_and_by_outcome(cloud: Any, fake_vnc: Any) -> None:
    point_vnc_at(cloud, fake_vnc.port)
    server = await active_server(cloud)
    url = ws_url(await console_url(cloud, server["id"]))
    origin = proxy_of(cloud).public_base

    _, before = await scrape(cloud)
    assert value(before, OPEN) == 0
    for outcome in ("connected", "refused", "vnc_unreachable"):
        assert (SESSIONS, frozenset({("outcome", outcome)})) in before  # zero series

    first = await open_ws(cloud.session, url, origin)
    second = await open_ws(cloud.session, url, origin)
    try:
        for ws in (first, second):
            assert (await ws.receive(timeout=5)).data == BANNER
        samples = await scrape_until(cloud, OPEN, 2)
        assert value(samples, OPEN) == 2
        assert value(samples, SESSIONS, outcome="connected") == 2
    finally:
        await first.close()
        await second.close()
    samples = await scrape_until(cloud, OPEN, 0)
    assert value(samples, OPEN) == 0

    # Refused before any VNC connection: a token that does not exist.
    base = url.split("?", 1)[0]
    assert await refused_status(cloud.session, f"{base}?token={'A' * 43}", origin) == 404
    # The guest's VNC server went away: the websocket opens, then the proxy closes it.
    await fake_vnc.close()
    ws = await open_ws(cloud.session, url, origin)
    msg = await ws.receive(timeout=5)
    assert msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING), msg
    await ws.close()

    samples = await scrape_until(cloud, SESSIONS, 1, outcome="vnc_unreachable")
    assert value(samples, SESSIONS, outcome="refused") == 1
    assert value(samples, SESSIONS, outcome="vnc_unreachable") == 1
    assert value(samples, SESSIONS, outcome="connected") == 2
    assert value(samples, OPEN) == 0
    assert fake_vnc.connections == 2
