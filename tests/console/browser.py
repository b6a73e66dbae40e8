"""Headless Chromium (Debian's ``chromium``) driven by Playwright, for the console page tests.

Never downloads a browser: Playwright is pointed at /usr/bin/chromium (``CHROMIUM`` env
overrides); a missing browser or Playwright fails the test with the install command.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

CHROMIUM = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
HAVE_CHROMIUM = os.path.exists(CHROMIUM)
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INSTALL_HINT = "apt-get install -y chromium && pip install playwright (never `playwright install`)"


@asynccontextmanager
async def chromium_page() -> AsyncIterator[Any]:
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        pytest.fail(f"playwright is not installed: {INSTALL_HINT}", pytrace=False)
    if not HAVE_CHROMIUM:
        pytest.fail(f"no Chromium at {CHROMIUM}: {INSTALL_HINT}", pytrace=False)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = await browser.new_page(viewport={"width": 1024, "height": 768})
            yield page
        finally:
            await browser.close()


async def wait_status(page: Any, prefix: str, timeout: float = 30.0) -> str:
    """Wait until the page's status line starts with ``prefix`` (or says Failed); return it."""
    await page.wait_for_function(
        """(prefix) => {
            const s = document.getElementById("status").textContent;
            return s.startsWith(prefix) || s.startsWith("Failed");
        }""",
        arg=prefix,
        timeout=timeout * 1000,
    )
    return await page.inner_text("#status")


async def canvas_stats(page: Any) -> dict[str, int]:
    """Size of noVNC's canvas and how many distinct colours and non-black pixels it shows."""
    return await page.evaluate(
        """() => {
            const c = document.querySelector("#screen canvas");
            const ctx = c.getContext("2d");
            const d = ctx.getImageData(0, 0, c.width, c.height).data;
            const colours = new Set();
            let lit = 0;
            for (let i = 0; i < d.length; i += 4) {
                if (d[i] | d[i + 1] | d[i + 2]) lit++;
                if (colours.size < 64) colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
            }
            return {width: c.width, height: c.height, colours: colours.size, lit: lit};
        }"""
    )
