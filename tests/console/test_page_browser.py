"""The console page in headless Chromium against the fake RFB server (no QEMU needed):
noVNC loads, connects through the proxy, shows the framebuffer and the server's name, and
sends keys; an expired token is refused before the VNC server sees a connection."""

from __future__ import annotations

from datetime import timedelta

import pytest

from novalite.db import schema as t
from novalite.store import consoles as tokens
from novalite.timeutil import utcnow
from tests.console.browser import canvas_stats, chromium_page, wait_status
from tests.console.conftest import active_server, console_url, point_vnc_at
from tests.console.fakevnc import FakeVNC

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite"])
def db_url(request, tmp_path) -> str:  # one database is enough here: this is about the browser
    return f"sqlite:///{tmp_path / 'novalite.db'}"


async def test_browser_connects_types_and_expired_is_refused(cloud, tmp_path):
    rfb = await FakeVNC(handshake=True, name=b"fake-screen").start()
    try:
        point_vnc_at(cloud, rfb.port)
        server = await active_server(cloud, "browser-vm")
        url = await console_url(cloud, server["id"])
        async with chromium_page() as page:
            await page.goto(url)
            assert await wait_status(page, "Connected") == "Connected"
            assert await page.inner_text("#name") == "browser-vm"
            assert await page.title() == "browser-vm - console - novalite"
            href = await page.get_attribute("#log", "href")
            assert href.startswith("console.log?token=")
            await page.wait_for_function(
                "() => { const c = document.querySelector('#screen canvas'); return c && c.width === 64; }"
            )
            await page.wait_for_timeout(300)
            stats = await canvas_stats(page)
            assert stats["colours"] >= 2 and stats["lit"] > 0, stats
            await page.screenshot(path=str(tmp_path / "fake-console.png"))
            await page.click("#screen canvas")
            await page.keyboard.type("ab1")
            await page.wait_for_timeout(300)
            assert [k for k in rfb.keys if k < 0x100][:3] == [ord("a"), ord("b"), ord("1")], rfb.keys
            assert rfb.connections == 1

            # an expired token: the page says Failed and the VNC server sees nothing
            url2 = await console_url(cloud, server["id"])
            async with cloud.rt.db.begin() as conn:
                await conn.execute(
                    t.console_auth_tokens.update()
                    .where(t.console_auth_tokens.c.token_hash == tokens.hash_token(url2.split("token=")[1]))
                    .values(expires_at=utcnow() - timedelta(seconds=1))
                )
            await page.goto(url2)
            status = await wait_status(page, "Failed")
            assert status.startswith("Failed") and "expired" in status, status
            assert rfb.connections == 1
    finally:
        await rfb.close()
