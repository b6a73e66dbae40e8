"""The console proxy (websockify) against a fake VNC server that records every connection:
a good token gets the RFB banner through the websocket; a bad, expired, foreign or
wrong-origin request is refused before a single byte reaches the VNC server."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path

import aiohttp
import pytest

from novalite.config import Settings
from novalite.console import proxy as proxymod
from novalite.db import schema as t
from novalite.store import consoles as tokens
from novalite.timeutil import utcnow
from tests.console.conftest import active_server, console_url, point_vnc_at, proxy_of
from tests.console.fakevnc import BANNER

C = "/compute/v2.1"


def ws_url(page_url: str) -> str:
    """What the page opens: ws://<proxy>/websockify?token=..."""
    return page_url.replace("http://", "ws://").replace("/vnc.html?", "/websockify?")


async def open_ws(session: aiohttp.ClientSession, url: str, origin: str | None) -> aiohttp.ClientWebSocketResponse:
    headers = {"Origin": origin} if origin else {}
    return await session.ws_connect(url, headers=headers, timeout=aiohttp.ClientWSTimeout(ws_close=5))


async def refused_status(session: aiohttp.ClientSession, url: str, origin: str | None) -> int:
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        ws = await open_ws(session, url, origin)
        await ws.close()
    return info.value.status


async def test_good_token_gets_the_rfb_banner(cloud, fake_vnc):
    point_vnc_at(cloud, fake_vnc.port)
    server = await active_server(cloud)
    url = await console_url(cloud, server["id"])
    origin = proxy_of(cloud).public_base
    ws = await open_ws(cloud.session, ws_url(url), origin)
    try:
        msg = await ws.receive(timeout=5)
        assert msg.type == aiohttp.WSMsgType.BINARY and msg.data == BANNER
        await ws.send_bytes(b"RFB 003.008\n")
        for _ in range(50):
            if bytes(fake_vnc.received) == b"RFB 003.008\n":
                break
            await asyncio.sleep(0.05)
        assert bytes(fake_vnc.received) == b"RFB 003.008\n"
    finally:
        await ws.close()
    assert fake_vnc.connections == 1
    # a client that sends no Origin is not a browser: allowed, as in Nova
    ws = await open_ws(cloud.session, ws_url(url), None)
    assert (await ws.receive(timeout=5)).data == BANNER
    await ws.close()
    assert fake_vnc.connections == 2


async def test_refusals_reach_no_vnc_server(cloud, fake_vnc):
    point_vnc_at(cloud, fake_vnc.port)
    server = await active_server(cloud)
    url = await console_url(cloud, server["id"])
    token = url.split("token=", 1)[1]
    origin = proxy_of(cloud).public_base
    base = ws_url(url).split("?", 1)[0]
    s = cloud.session

    assert await refused_status(s, f"{base}?token={'A' * 43}", origin) == 404  # unknown
    assert await refused_status(s, f"{base}?token=bad!token", origin) == 403  # malformed
    assert await refused_status(s, base, origin) == 403  # none
    # wrong origin, with a good token
    for bad in ("http://evil.example", "http://127.0.0.1:1", "https://" + origin.split("://")[1], "null"):
        assert await refused_status(s, ws_url(url), bad) == 403, bad
    # expired
    async with cloud.rt.db.begin() as conn:
        await conn.execute(
            t.console_auth_tokens.update()
            .where(t.console_auth_tokens.c.token_hash == tokens.hash_token(token))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert await refused_status(s, ws_url(url), origin) == 403
    assert fake_vnc.connections == 0


async def test_foreign_port_and_deleted_instance_are_refused(cloud, fake_vnc):
    point_vnc_at(cloud, fake_vnc.port)
    server = await active_server(cloud)
    url = await console_url(cloud, server["id"])
    origin = proxy_of(cloud).public_base
    # The guest restarted elsewhere: its host now reports another VNC port. The token's
    # address may belong to another guest by now: refused.
    point_vnc_at(cloud, fake_vnc.port + 1 if fake_vnc.port < 65535 else fake_vnc.port - 1)
    assert await refused_status(cloud.session, ws_url(url), origin) == 403
    point_vnc_at(cloud, fake_vnc.port)
    ws = await open_ws(cloud.session, ws_url(url), origin)
    assert (await ws.receive(timeout=5)).data == BANNER
    await ws.close()
    assert fake_vnc.connections == 1

    r = await cloud.delete(f"{C}/servers/{server['id']}")
    assert r.status == 204
    from tests.functional.helpers import wait_gone

    await wait_gone(cloud, server["id"])
    assert await refused_status(cloud.session, ws_url(url), origin) == 404
    assert fake_vnc.connections == 1


async def test_page_novnc_info_and_serial_log(cloud, fake_vnc):
    point_vnc_at(cloud, fake_vnc.port)
    server = await active_server(cloud, "my-vm")
    url = await console_url(cloud, server["id"])
    base, query = url.split("/vnc.html?", 1)
    async with cloud.session.get(url) as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
        assert resp.headers["Referrer-Policy"] == "no-referrer"
        page = await resp.text()
    assert "./core/rfb.js" in page and 'id="status"' in page and "console.log" in page
    if proxy_of(cloud).novnc_dir is not None:
        async with cloud.session.get(f"{base}/core/rfb.js") as resp:
            assert resp.status == 200 and "javascript" in resp.content_type
    async with cloud.session.get(f"{base}/core/") as resp:
        assert resp.status == 404  # no directory listings
    async with cloud.session.get(f"{base}/core/../../../etc/passwd") as resp:
        assert resp.status == 404
    async with cloud.session.get(f"{base}/console-info?{query}") as resp:
        assert resp.status == 200
        info = await resp.json()
    assert info["name"] == "my-vm" and info["instance_uuid"] == server["id"]
    async with cloud.session.get(f"{base}/console-info?token={'A' * 43}") as resp:
        assert resp.status == 404 and "refused" in (await resp.json())["error"]
    async with cloud.session.get(f"{base}/console.log?{query}") as resp:
        assert resp.status == 200
        log = await resp.text()
    assert "spawned" in log or log.strip(), log  # the fake guest's console lines
    async with cloud.session.get(f"{base}/console.log?token={'A' * 43}") as resp:
        assert resp.status == 404
    assert fake_vnc.connections == 0


def test_origin_rules():
    allowed = {proxymod.origin_of("http://127.0.0.1:6080/")}
    assert proxymod.origin_allowed("http://127.0.0.1:6080", allowed)
    assert proxymod.origin_allowed("HTTP://127.0.0.1:6080", allowed)
    assert proxymod.origin_allowed(None, allowed)
    assert not proxymod.origin_allowed("http://127.0.0.1:6081", allowed)
    assert not proxymod.origin_allowed("http://localhost:6080", allowed)
    assert not proxymod.origin_allowed("null", allowed)
    assert not proxymod.origin_allowed("", allowed)
    assert proxymod.origin_of("https://console.example:443/x") == "https://console.example"
    assert proxymod.origin_of("http://[::1]:6080") == "http://[::1]:6080"


def test_settings_public_url_and_allowed_origins(tmp_path):
    s = Settings(console_listen="0.0.0.0:7000")
    assert s.console_public_base() == "http://127.0.0.1:7000"
    s = Settings(console_public_url="https://lab.example/console/")
    assert s.console_public_base() == "https://lab.example/console"

    class RT:
        settings = s
        services: dict = {}

    p = proxymod.ConsoleProxy(RT())  # type: ignore[arg-type]
    assert p.allowed_origins == {"https://lab.example"}
    s.console_allowed_origins = ["https://a.example:8443", "http://b.example"]
    assert p.allowed_origins == {"https://a.example:8443", "http://b.example"}


def test_find_novnc(tmp_path: Path):
    with pytest.raises(ValueError, match=r"core/rfb\.js"):
        proxymod.find_novnc(Settings(novnc_path=str(tmp_path)))
    (tmp_path / "core").mkdir()
    (tmp_path / "core" / "rfb.js").write_text("export default class RFB {}")
    assert proxymod.find_novnc(Settings(novnc_path=str(tmp_path))) == tmp_path.resolve()


async def test_busy_port_falls_back_unless_a_public_url_is_set(tmp_path, fake_vnc):
    import socket

    from tests.conftest import make_settings, start_cloud

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        db = f"sqlite:///{tmp_path / 'n.db'}"
        cloud = await start_cloud(make_settings(tmp_path, db, console_listen=f"127.0.0.1:{port}"))
        try:
            proxy = proxy_of(cloud)
            assert proxy.port != port
            point_vnc_at(cloud, fake_vnc.port)
            server = await active_server(cloud)
            url = await console_url(cloud, server["id"])
            assert url.startswith(f"http://127.0.0.1:{proxy.port}/vnc.html?token=")
            ws = await open_ws(cloud.session, ws_url(url), proxy.public_base)
            assert (await ws.receive(timeout=5)).data == BANNER
            await ws.close()
        finally:
            await cloud.session.close()
            await cloud.node.stop()
        settings = make_settings(
            tmp_path / "2",
            f"sqlite:///{tmp_path / 'n2.db'}",
            console_listen=f"127.0.0.1:{port}",
            console_public_url=f"http://127.0.0.1:{port}",
        )
        proxy = proxymod.ConsoleProxy(type("RT", (), {"settings": settings, "services": {}})())
        with pytest.raises(OSError, match="cannot listen"):
            await proxy.start()
