"""The ``console`` service: noVNC in the browser, bridged to the guest's VNC server by websockify.

Built like Nova's nova-novncproxy: a subclass of websockify's ``ProxyRequestHandler``
served by a threading HTTP server, so websockify does the websocket handshake, the framing
and the proxy loop (``do_proxy``), one thread per console connection, off the event loop.
What novalite adds runs *before* the websocket handshake, in the HTTP request:

1. the ``Origin`` header must be one of ``console_allowed_origins`` (default: the console
   public URL's origin) — a page on another site cannot open a console with a token it
   learned; clients that send no Origin (not browsers) are not subject to it, as in Nova;
2. the token must check out in the database (:mod:`novalite.store.consoles`) — not a file —
   and the compute host must confirm over the bus that the instance's VNC server still is at
   the address the token was issued for (Nova's ``validate_console_port``): a guest restarted
   on another port, or a port now used by another guest, is refused.

Only then does the handler connect to the VNC server, so a bad, expired or foreign token
never gets a byte to it. Handler threads reach the database and the bus through the event
loop (``run_coroutine_threadsafe``).

Besides the websocket (any path with ``?token=``), the proxy serves:

* ``/vnc.html?token=…`` — novalite's noVNC page (``static/vnc.html``),
* ``/core/…``, ``/vendor/…`` — the noVNC library: the copy shipped in this package
  (``novnc/``, noVNC 1.7.0), unless ``novnc_path`` or scripts/setup-novnc.sh installed another,
* ``/console-info?token=…`` — the server's name and id, for the page,
* ``/console.log?token=…`` — the serial console log (what ``os-getConsoleOutput`` returns),
  so the page can link to it without an API token.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import os
import socket
import threading
from collections.abc import Coroutine
from http.server import HTTPServer
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from novalite.bus import BusError
from novalite.config import Settings
from novalite.console.framing import ProxyRequestHandler, UnmaskingWebSocket
from novalite.context import RequestContext
from novalite.log import bind_request_id, get_logger
from novalite.runtime import ControllerRuntime
from novalite.store import consoles as tokens
from novalite.store import servers as records

log = get_logger("novalite.console")
T = TypeVar("T")

STATIC = Path(__file__).with_name("static")
#: noVNC shipped inside the package (MPL-2.0, see its README.novalite): every install has a console.
PACKAGED_NOVNC = Path(__file__).with_name("novnc")
#: Where scripts/setup-novnc.sh puts noVNC (root, then a user's own install): another version,
#: installed on purpose, so it wins over the packaged copy.
NOVNC_INSTALL_DIRS = (
    Path("/usr/local/share/novalite/novnc"),
    Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share") / "novalite/novnc",
)
DEBIAN_NOVNC = Path("/usr/share/novnc")
#: The serial log the page links to is capped like the API's os-getConsoleOutput.
MAX_CONSOLE_BYTES = 100 * 1024
#: How long a handler thread waits for the database and the compute host.
LOOKUP_TIMEOUT = 30.0


class Refused(Exception):
    """A console request that must not reach the VNC server; ``status`` is the HTTP answer."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def find_novnc(settings: Settings) -> Path | None:
    """The noVNC directory (holding ``core/rfb.js``): the setting, else an install of
    scripts/setup-novnc.sh, else the packaged copy (Debian's only if the package lost it)."""
    if settings.novnc_path:
        path = Path(settings.novnc_path).expanduser()
        if not (path / "core" / "rfb.js").is_file():
            raise ValueError(f"novnc_path {path} holds no core/rfb.js (run scripts/setup-novnc.sh)")
        return path.resolve()
    for path in (*NOVNC_INSTALL_DIRS, PACKAGED_NOVNC, DEBIAN_NOVNC):
        if (path / "core" / "rfb.js").is_file():
            return path.resolve()
    return None


def origin_of(url: str) -> str:
    """``scheme://host[:port]`` of a URL, lowercase, default ports dropped (RFC 6454)."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    host = (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        return ""
    if port is None or (scheme, port) in (("http", 80), ("https", 443)):
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def origin_allowed(origin: str | None, allowed: set[str]) -> bool:
    """Browsers always send Origin on a websocket; a missing one is a non-browser client."""
    if origin is None:
        return True
    if origin.strip().lower() == "null":
        return False
    return origin_of(origin) in allowed


class _Server(ThreadingMixIn, HTTPServer):
    """websockify's handler expects a few attributes on its server (see ``LibProxyServer``)."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], proxy: ConsoleProxy) -> None:
        self.proxy = proxy
        # read by websockify's WebSockifyRequestHandler / ProxyRequestHandler
        self.only_upgrade = False
        self.verbose = False
        self.daemon = False
        self.record = ""
        self.run_once = False
        self.handler_id = 0
        self.file_only = True
        self.traffic = False
        self.web_auth = False
        self.host_token = False
        self.heartbeat = None
        self.token_plugin = None
        self.auth_plugin = None
        self.target_host: str | None = None
        self.target_port: int | None = None
        self.unix_target = None
        self.unix_listen = None
        self.wrap_cmd = None
        self.ssl_target = None
        self.logger = _WebsockifyLog()
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.address_family = family
        super().__init__(address, ConsoleRequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        self.handler_id += 1
        super().process_request(request, client_address)


class _WebsockifyLog:
    """websockify's own log lines, into novalite's log at debug level."""

    def log(self, _level: int, msg: str, *args: Any, **_kw: Any) -> None:
        log.debug("console.websockify", message=msg % args if args else msg)

    def info(self, msg: str, *args: Any, **_kw: Any) -> None:
        self.log(0, msg, *args)

    debug = warning = warn = error = info


class ConsoleRequestHandler(ProxyRequestHandler):  # type: ignore[misc]  # websockify has no types
    """websockify's proxy handler with novalite's checks in front of the websocket handshake."""

    server: _Server
    target: tuple[str, int] | None = None
    SocketClass = UnmaskingWebSocket

    # -- HTTP: the page, noVNC's files, the page's two JSON/text helpers -------------------------

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        path = url.path
        token = _token_from_query(url.query)
        if path in ("/", "/vnc.html", "/vnc_lite.html", "/vnc_auto.html"):
            self._send(200, (STATIC / "vnc.html").read_bytes(), "text/html; charset=utf-8")
        elif path == "/console-info":
            self._console_info(token)
        elif path == "/console.log":
            self._console_log(token)
        elif path.startswith(("/core/", "/vendor/")) and self.server.proxy.novnc_dir is not None:
            super().do_GET()  # SimpleHTTPRequestHandler, rooted at noVNC (translate_path)
        elif path.startswith(("/core/", "/vendor/")):
            self._send(404, b"noVNC is not installed on this host: run scripts/setup-novnc.sh\n", "text/plain")
        else:
            self._send(404, b"Not found\n", "text/plain")

    def do_HEAD(self) -> None:
        self.send_error(405)

    def translate_path(self, path: str) -> str:
        self.directory = str(self.server.proxy.novnc_dir)
        return str(super().translate_path(path))

    def list_directory(self, path: Any) -> None:
        self.send_error(404)
        return None

    def end_headers(self) -> None:
        # Console URLs carry the token: keep it out of Referer headers and caches.
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def _send(self, status: int, body: bytes, ctype: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode(), "application/json")

    def _console_info(self, token: str | None) -> None:
        try:
            auth = self.server.proxy.run(self.server.proxy.check_token(token))
        except Refused as exc:
            self._send_json(exc.status, {"error": exc.reason})
            return
        self._send_json(
            200,
            {
                "instance_uuid": auth.instance_uuid,
                "name": auth.instance_name,
                "console_type": auth.console_type,
                "expires_at": auth.expires_at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
        )

    def _console_log(self, token: str | None) -> None:
        proxy = self.server.proxy
        try:
            text = proxy.run(proxy.console_output(token))
        except Refused as exc:
            self._send(exc.status, f"{exc.reason}\n".encode(), "text/plain; charset=utf-8")
            return
        self._send(200, text.encode("utf-8", errors="replace"), "text/plain; charset=utf-8")

    # -- the websocket -----------------------------------------------------------------------------

    def handle_upgrade(self) -> None:
        """Check Origin and token first; a refusal is an HTTP error, and no VNC connection."""
        proxy = self.server.proxy
        try:
            origin = self.headers.get("Origin")
            if not origin_allowed(origin, proxy.allowed_origins):
                raise Refused(403, f"origin {origin!r} is not allowed")
            token = _token_from_query(urlsplit(self.path).query)
            self.target = proxy.run(proxy.authorize(token))
        except Refused as exc:
            log.info("console.refused", reason=exc.reason, client=self.client_address[0])
            proxy.rt.metrics.console_sessions.labels(outcome="refused").inc()
            self.send_error(exc.status, exc.reason)
            return
        super().handle_upgrade()

    def validate_connection(self) -> None:
        """Done in :meth:`handle_upgrade` (websockify's would set the target on the shared server)."""

    def new_websocket_client(self) -> None:
        assert self.target is not None
        host, port = self.target
        try:
            tsock = socket.create_connection((host, port), timeout=10)
        except OSError as exc:
            log.warning("console.vnc_unreachable", host=host, port=port, error=str(exc))
            self.server.proxy.rt.metrics.console_sessions.labels(outcome="vnc_unreachable").inc()
            raise self.CClose(1011, "Failed to connect to the VNC server") from None
        tsock.settimeout(None)
        tsock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with contextlib.suppress(OSError):
            self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server.target_host, self.server.target_port = host, port  # only read by its log lines
        proxy = self.server.proxy
        proxy.track(tsock)
        log.info("console.connected", host=host, port=port, client=self.client_address[0])
        metrics = proxy.rt.metrics
        metrics.console_sessions.labels(outcome="connected").inc()
        metrics.console_sessions_open.inc()  # prometheus-client's instruments are thread-safe
        try:
            self.do_proxy(tsock)
        finally:
            metrics.console_sessions_open.dec()
            proxy.untrack(tsock)
            with contextlib.suppress(OSError):
                tsock.shutdown(socket.SHUT_RDWR)
            tsock.close()

    def log_message(self, format: str, *args: Any) -> None:
        # The request line holds the token: log the path only.
        log.debug("console.http", client=self.client_address[0], path=urlsplit(self.path).path)

    def log_request(self, code: Any = "-", size: Any = "-") -> None:
        self.log_message("%s", code)


def _token_from_query(query: str) -> str | None:
    args = parse_qs(query)
    if "token" in args:
        return args["token"][0].strip()
    # noVNC's own pages pass ?path=websockify%3Ftoken%3D...: accept that form too
    if "path" in args:
        return _token_from_query(urlsplit(args["path"][0]).query)
    return None


class ConsoleProxy:
    """The console service: start() binds and serves in a thread, stop() ends it and its consoles."""

    def __init__(self, rt: ControllerRuntime) -> None:
        self.rt = rt
        self.settings = rt.settings
        self.novnc_dir: Path | None = None
        self.port: int | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._active: set[socket.socket] = set()
        self._active_lock = threading.Lock()

    @property
    def public_base(self) -> str:
        return self.settings.console_public_base(self.port)

    @property
    def allowed_origins(self) -> set[str]:
        configured = self.settings.console_allowed_origins
        return {origin_of(o) for o in configured} if configured else {origin_of(self.public_base)}

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.novnc_dir = find_novnc(self.settings)
        if self.novnc_dir is None:
            log.warning(
                "console.novnc_missing",
                hint="the console page cannot load noVNC: run scripts/setup-novnc.sh or set novnc_path",
            )
        host, _, port = self.settings.console_listen.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        try:
            self._server = _Server((host, int(port)), self)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE or self.settings.console_public_url:
                raise OSError(
                    exc.errno, f"the console proxy cannot listen on {self.settings.console_listen}: {exc.strerror}"
                ) from exc
            # Without a configured public URL, console URLs carry the port really used (the
            # API asks this service), so a busy default port (another novalite, a test run)
            # need not stop the node.
            self._server = _Server((host, 0), self)
            log.warning(
                "console.port_in_use",
                wanted=self.settings.console_listen,
                using=self._server.server_address[1],
                hint="set console_listen (and console_public_url) to a free port",
            )
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.2}, name="console-proxy", daemon=True
        )
        self._thread.start()
        self.rt.console_url = self.public_base  # the real port, for the API's console URLs
        log.info("console.started", url=self.public_base, novnc=str(self.novnc_dir) if self.novnc_dir else None)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        await asyncio.get_running_loop().run_in_executor(None, server.shutdown)
        with self._active_lock:
            for sock in list(self._active):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        server.server_close()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5)

    # -- called from handler threads -----------------------------------------------------------

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on the service's event loop and wait for it (from a handler thread)."""
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(LOOKUP_TIMEOUT)

    def track(self, sock: socket.socket) -> None:
        with self._active_lock:
            self._active.add(sock)

    def untrack(self, sock: socket.socket) -> None:
        with self._active_lock:
            self._active.discard(sock)

    # -- on the event loop ------------------------------------------------------------------------

    async def check_token(self, token: str | None) -> tokens.ConsoleAuth:
        async with self.rt.db.connect() as conn:
            try:
                return await tokens.check(conn, token)
            except tokens.TokenRefused as exc:
                raise Refused(404 if str(exc) == "unknown token" else 403, f"console token refused: {exc}") from None

    async def authorize(self, token: str | None) -> tuple[str, int]:
        """Token → the VNC address to connect to, confirmed by the instance's compute host."""
        auth = await self.check_token(token)
        if auth.console_type != "novnc":
            raise Refused(403, f"console token refused: a {auth.console_type} token")
        reported = await self._ask_agent(auth, "get_vnc_console")
        if (reported.get("host"), int(reported.get("port", -1))) != (auth.host, auth.port):
            raise Refused(403, "console token refused: the instance's console moved")
        return auth.host, auth.port

    async def console_output(self, token: str | None) -> str:
        auth = await self.check_token(token)
        output: str = await self._ask_agent(auth, "get_console_output")
        return output[-MAX_CONSOLE_BYTES:]

    async def _ask_agent(self, auth: tokens.ConsoleAuth, method: str) -> Any:
        ctx = RequestContext.admin()
        with bind_request_id(ctx.request_id):
            async with self.rt.db.connect() as conn:
                payload = await records.instance_payload(conn, auth.instance_uuid)
            if payload is None:
                raise Refused(403, "console token refused: the instance no longer exists")
            try:
                return await self.rt.bus.call(
                    ctx, f"compute.{auth.compute_host}", method, instance=payload, timeout=self.settings.rpc_timeout
                )
            except BusError as exc:
                log.info("console.agent_refused", instance=auth.instance_uuid, method=method, error=str(exc))
                raise Refused(503, f"the compute host cannot serve this console: {exc}") from None
