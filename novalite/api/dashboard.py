"""``/dashboard``: the web dashboard's static files (novalite/dashboard/), served to browsers.

The dashboard is a client of the public APIs only (Keystone v3, Nova v2.1, Glance v2, all
called from the browser with the user's token): these routes serve files and nothing else,
without authentication, so they hold no data. Only the files shipped in the package folder
are served, by exact name from a table built at start-up: no request path is ever joined
to a file system path, so ``..`` and its encodings cannot reach anything else.

Every file carries a strict Content-Security-Policy (scripts from this origin only, no
inline script or style, API calls to this origin only), and ``Cache-Control: no-cache``
with an ETag: the names are not content-hashed (there is no build step), so browsers
revalidate each load and get a 304 when nothing changed.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

#: The shipped files (package data, see pyproject.toml).
STATIC_DIR = Path(__file__).resolve().parent.parent / "dashboard"
URL = "/dashboard"
INDEX = "index.html"

CSP = "; ".join(
    [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "form-action 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
)

#: Content types by suffix, fixed here rather than taken from the host's mime.types (some map
#: ``.js`` to text/plain, which browsers refuse for a module script under ``nosniff``).
TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}


@dataclass(frozen=True)
class StaticFile:
    body: bytes
    content_type: str
    etag: str


def load_files(folder: Path = STATIC_DIR) -> dict[str, StaticFile]:
    """Every regular file directly in ``folder`` by name (the dashboard is a few small files)."""
    files: dict[str, StaticFile] = {}
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        if not path.is_file() or path.name.startswith("."):
            continue
        body = path.read_bytes()
        content_type = TYPES.get(path.suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        files[path.name] = StaticFile(body, content_type, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
    return files


def security_headers() -> dict[str, str]:
    return {
        "Content-Security-Policy": CSP,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
        "Cache-Control": "no-cache",
    }


def respond(request: web.Request, item: StaticFile) -> web.Response:
    """The file, or 304 when the browser's copy (``If-None-Match``) is current."""
    headers = {**security_headers(), "ETag": item.etag}
    if item.etag in {tag.strip() for tag in request.headers.get("If-None-Match", "").split(",")}:
        return web.Response(status=304, headers=headers)
    charset = "utf-8" if item.content_type.startswith("text/") or item.content_type.endswith("+xml") else None
    return web.Response(body=item.body, content_type=item.content_type, charset=charset, headers=headers)


def accept_quality(accept: str, wanted: str) -> float:
    """The q-value ``accept`` gives the media type ``wanted`` (most specific range wins)."""
    major = wanted.split("/", 1)[0]
    best: tuple[int, float] = (-1, 0.0)
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        media = media.lower()
        if media == wanted:
            rank = 2
        elif media == f"{major}/*":
            rank = 1
        elif media == "*/*":
            rank = 0
        else:
            continue
        q = 1.0
        for param in params:
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if rank > best[0]:
            best = (rank, q)
    return best[1]


def prefers_html(request: web.Request) -> bool:
    """Whether the client asked for HTML over JSON (a browser's address bar, not an API client).

    API clients send ``application/json``, ``*/*`` or nothing: they keep the JSON document.
    """
    accept = request.headers.get("Accept", "")
    return accept_quality(accept, "text/html") > accept_quality(accept, "application/json")


def redirect() -> web.Response:
    """302 to the page (returned, not raised: the request-id middleware expects responses)."""
    return web.Response(status=302, headers={"Location": URL})


def add_routes(app: web.Application) -> None:
    """Mount ``/dashboard`` (the page) and ``/dashboard/<file>`` on the root application."""
    files = load_files()

    async def index(request: web.Request) -> web.Response:
        return respond(request, files[INDEX])

    async def to_index(_request: web.Request) -> web.Response:
        return redirect()

    async def static(request: web.Request) -> web.Response:
        item = files.get(request.match_info["name"])
        if item is None:
            return web.Response(status=404, text="404: Not Found", headers=security_headers())
        return respond(request, item)

    app.router.add_get(URL, index)
    app.router.add_get(f"{URL}/", to_index)
    app.router.add_get(f"{URL}/{INDEX}", to_index)
    app.router.add_get(URL + "/{name}", static)
