"""Demo mode in headless Chromium: a fake guest's console URL, opened through the real console
proxy with the noVNC shipped in the package (no novnc_path, no scripts/setup-novnc.sh install),
shows the guest's name and console text, and what is typed reaches its console log."""

from __future__ import annotations

import pytest

import novalite.console.proxy as proxymod
from tests.console.browser import chromium_page, wait_status
from tests.console.conftest import active_server, console_url, proxy_of
from tests.console.test_fake_screen import screen_text

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["sqlite"])
def db_url(request, tmp_path) -> str:  # one database is enough here: this is about the browser
    return f"sqlite:///{tmp_path / 'novalite.db'}"


@pytest.fixture(autouse=True)
def no_installed_novnc(monkeypatch, tmp_path):
    """Whatever this machine has installed (setup-novnc.sh, Debian), only the packaged copy is left."""
    monkeypatch.setattr(proxymod, "NOVNC_INSTALL_DIRS", (tmp_path / "nowhere", tmp_path / "nowhere-either"))
    monkeypatch.setattr(proxymod, "DEBIAN_NOVNC", tmp_path / "no-debian")
    monkeypatch.delenv("NOVALITE_NOVNC_PATH", raising=False)


LIT_PIXELS = """() => {
    const c = document.querySelector("#screen canvas");
    const d = c.getContext("2d").getImageData(0, 0, c.width, c.height).data;
    const out = new Array(c.width * c.height);
    for (let i = 0; i < out.length; i++) out[i] = d[4 * i] + d[4 * i + 1] + d[4 * i + 2] > 400 ? "1" : "0";
    return {width: c.width, bits: out.join("")};
}"""


async def read_canvas(page) -> list[str]:  # type: ignore[no-untyped-def]
    shot = await page.evaluate(LIT_PIXELS)
    width, bits = shot["width"], shot["bits"]
    return screen_text(lambda x, y: bits[y * width + x] == "1")


async def test_demo_console_shows_the_fake_guest_with_the_packaged_novnc(cloud, tmp_path):
    proxy = proxy_of(cloud)
    assert proxy.novnc_dir == proxymod.PACKAGED_NOVNC.resolve()
    assert cloud.rt.settings.novnc_path == ""
    async with cloud.session.get(f"{proxy.public_base}/core/rfb.js") as resp:
        assert resp.status == 200
        assert await resp.read() == (proxymod.PACKAGED_NOVNC / "core" / "rfb.js").read_bytes()

    server = await active_server(cloud, "demo-vm")
    url = await console_url(cloud, server["id"])
    async with chromium_page() as page:
        await page.goto(url)
        assert await wait_status(page, "Connected") == "Connected"
        await page.wait_for_function(
            "() => { const c = document.querySelector('#screen canvas'); return c && c.width === 640; }"
        )
        await page.wait_for_function(  # the first frame drawn: the title bar is not black
            """() => { const c = document.querySelector('#screen canvas');
                       return c.getContext('2d').getImageData(639, 8, 1, 1).data[2] > 0; }"""
        )
        text = await read_canvas(page)
        assert text[0] == "demo-vm - novalite fake guest", text
        assert any(line.endswith("] novalite fake guest demo-vm booting") for line in text), text
        assert any(line.endswith("] login:") for line in text), text
        await page.screenshot(path=str(tmp_path / "fake-guest-console.png"))

        await page.click("#screen canvas")
        await page.keyboard.type("hello")
        await page.keyboard.press("Enter")
        r = None
        for _ in range(50):
            r = await cloud.post(f"/compute/v2.1/servers/{server['id']}/action", json={"os-getConsoleOutput": {}})
            if "$ hello" in r.body["output"]:
                break
            await page.wait_for_timeout(100)
        assert r is not None and "$ hello" in r.body["output"], r
        await page.wait_for_function(
            """() => { const c = document.querySelector('#screen canvas');
                       return c.getContext('2d').getImageData(0, 5 * 16 + 8, 640, 1).data.some(v => v > 200); }"""
        )
        # The canvas shows the new line after the next framebuffer update: poll for it.
        for _ in range(50):
            text = await read_canvas(page)
            if any(line.endswith("] $ hello") for line in text):
                break
            await page.wait_for_timeout(100)
        assert any(line.endswith("] $ hello") for line in text), text
