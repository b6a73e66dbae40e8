"""Issue 13 part 4: the dashboard's files are served with the right types, a strict CSP and
revalidation headers; nothing outside the shipped folder is reachable (``..`` in any encoding);
``/`` gives browsers the dashboard and every API client its JSON document as before."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from novalite.api import dashboard

DASHBOARD_DIR = Path(dashboard.__file__).resolve().parent.parent / "dashboard"
BROWSER_ACCEPT = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"


@pytest.fixture(params=["sqlite"])
def db_url(request, tmp_path) -> str:  # routes only: one database is enough
    return f"sqlite:///{tmp_path / 'novalite.db'}"


async def fetch(cloud, path: str, headers: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    async with cloud.session.get(f"{cloud.base}{path}", headers=headers or {}, allow_redirects=False) as resp:
        return resp.status, resp.headers, await resp.read()


async def raw_get(cloud, target: str) -> tuple[int, bytes]:  # type: ignore[no-untyped-def]
    """GET with the request target sent byte for byte (HTTP clients normalize ``..`` away)."""
    host, port = cloud.rt.settings.listen.rsplit(":", 1)
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/dashboard", "text/html"),
        ("/dashboard/app.js", "text/javascript"),
        ("/dashboard/api.js", "text/javascript"),
        ("/dashboard/dom.js", "text/javascript"),
        ("/dashboard/style.css", "text/css"),
        ("/dashboard/favicon.svg", "image/svg+xml"),
    ],
)
async def test_files_have_types_csp_and_etags(cloud, path, content_type):
    status, headers, body = await fetch(cloud, path)
    assert status == 200
    assert headers["Content-Type"].split(";")[0] == content_type
    csp = headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp, csp
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-cache"
    name = "index.html" if path == "/dashboard" else path.rsplit("/", 1)[1]
    assert body == (DASHBOARD_DIR / name).read_bytes()
    again, headers2, body2 = await fetch(cloud, path, {"If-None-Match": headers["ETag"]})
    assert (again, body2) == (304, b"")
    assert headers2["ETag"] == headers["ETag"]


async def test_slash_variants_redirect_and_unknown_files_are_404(cloud):
    for path in ("/dashboard/", "/dashboard/index.html"):
        status, headers, _ = await fetch(cloud, path)
        assert (status, headers["Location"]) == (302, "/dashboard"), path
    status, headers, _ = await fetch(cloud, "/dashboard/nothing.js")
    assert status == 404 and "Content-Security-Policy" in headers


@pytest.mark.parametrize(
    "target",
    [
        "/dashboard/../../etc/passwd",
        "/dashboard/../../../../../../etc/passwd",
        "/dashboard/%2e%2e/%2e%2e/etc/passwd",
        "/dashboard/..%2f..%2f..%2f..%2fetc%2fpasswd",
        "/dashboard/%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/dashboard/%252e%252e%252f%252e%252e%252fetc%252fpasswd",
        "/dashboard/..%5c..%5c..%5cetc%5cpasswd",
        "/dashboard/%2e%2e%2fapi%2fdashboard.py",
        "/dashboard/..%2fapi%2fdashboard.py",
        "/dashboard//etc/passwd",
        "/dashboard/%2fetc%2fpasswd",
        "/dashboard/.%2e/.%2e/pyproject.toml",
    ],
)
async def test_path_traversal_is_404(cloud, target):
    status, body = await raw_get(cloud, target)
    assert status == 404, (target, status, body[:200])
    assert b"root:" not in body and b"import" not in body


@pytest.mark.parametrize(
    ("accept", "dashboard_wanted"),
    [
        (BROWSER_ACCEPT, True),
        ("text/html", True),
        ("application/json", False),
        ("*/*", False),
        (None, False),
        ("application/json, text/html;q=0.9", False),
        ("text/html;q=0.5, application/json", False),
        ("text/*, application/json;q=0.5", True),
    ],
)
async def test_root_redirects_only_browsers(cloud, accept, dashboard_wanted):
    headers = {"Accept": accept} if accept else {"Accept": ""}
    status, resp_headers, body = await fetch(cloud, "/", headers)
    if dashboard_wanted:
        assert (status, resp_headers["Location"]) == (302, "/dashboard")
    else:
        assert status == 200 and resp_headers["Content-Type"].startswith("application/json")
        assert b'"compute"' in body


def test_page_has_no_inline_script_or_html_injection():
    """The CSP forbids inline script and style; the scripts never turn data into markup."""
    html = (DASHBOARD_DIR / "index.html").read_text()
    for tag in re.findall(r"<script\b[^>]*>(.*?)</script>", html, re.S):
        assert tag.strip() == ""
    assert re.search(r"<script\b(?![^>]*\bsrc=)", html) is None
    assert " style=" not in html and "<style" not in html and " on" + "click=" not in html
    for js in DASHBOARD_DIR.glob("*.js"):
        text = js.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            assert sink not in text, (js.name, sink)
