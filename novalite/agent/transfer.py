"""The disk transfer of cold moves between compute agents (issue 10): no shared storage.

A resize or cold migration to another host: the source's driver powers the guest off and
names the files to send (:meth:`~novalite_drivers.base.ComputeDriver.migrate_disk_and_power_off`);
the source's agent asks the conductor for a transfer (``migration_transfer``). The conductor
issues a random one-time ticket for that migration and gives it to the destination's agent
(``expect_migration_files``), which registers it with its :class:`TransferReceiver` and
answers the receiver's URL; the conductor hands URL and ticket to the source, whose agent
streams the files there (:func:`send_files`). Agents never command each other: the only
thing an agent accepts from another host is a file upload carrying a ticket the controller
handed out for that one migration.

The receiver, a small aiohttp server on ``migration_listen`` (loopback by default; it listens
only while a transfer is expected, and stops when none is left):

``PUT /v1/migrations/{migration}/files/{name}`` (header ``X-Migration-Ticket``, a
    ``Content-Length``): the body is written into a hidden temporary file in the
    destination driver's directory (:meth:`~novalite_drivers.base.ComputeDriver.receive_migration`),
    renamed to ``name`` only once all of it arrived; an upload cut short leaves nothing. 201
    with ``{"name", "size", "sha256"}``; the sender compares the digest with its own.
``POST /v1/migrations/{migration}/done``: the transfer is complete; the ticket is used up
    (204), the files stay for the driver's ``finish_migration``.
``DELETE /v1/migrations/{migration}``: the source gives up; the files received go (204).

A bad or missing ticket is 401 and nothing is written; a name received already is 409. A
ticket unused for ``ttl`` seconds (600) expires, and what it had received goes with it. The
ticket is compared by its SHA-256 in constant time; only its digest is kept.

The channel is plain HTTP: a lab on a trusted network (as libvirt's own migration stream,
which is plain TCP by default). Keep ``migration_listen`` on a management network.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from novalite.log import get_logger

log = get_logger("novalite.agent.transfer")

#: The request header carrying the ticket.
TICKET_HEADER = "X-Migration-Ticket"
#: Bytes read and written at a time.
CHUNK = 1024 * 1024
#: Seconds a ticket stays valid without being used.
TICKET_TTL = 600.0
#: What a file sent may be called (a base name, never a path).
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
#: How long one file's upload may stall (a read or write this long without progress fails).
SEND_TIMEOUT = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300)


class TransferError(Exception):
    """Sending the disks failed; ``str(err)`` says why."""


def new_ticket() -> str:
    """A one-time transfer ticket (what the conductor issues)."""
    return secrets.token_urlsafe(32)


def _digest(ticket: str) -> bytes:
    return hashlib.sha256(ticket.encode("utf-8", "replace")).digest()


@dataclass
class _Expected:
    migration_uuid: str
    instance_uuid: str
    digest: bytes
    inbox: Path
    expires: float
    received: list[str] = field(default_factory=list)
    writing: set[str] = field(default_factory=set)


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": {"code": status, "message": message}}, status=status)


class TransferReceiver:
    """The destination side: receives files for the migrations it was told to expect."""

    def __init__(self, listen: str = "127.0.0.1:0", address: str = "", ttl: float = TICKET_TTL) -> None:
        host, _, port = listen.rpartition(":")
        self.listen_host = host.strip("[]") or "127.0.0.1"
        self.listen_port = int(port or 0)
        self.address = address or self.listen_host
        self.ttl = ttl
        self.port: int | None = None
        self._expected: dict[str, _Expected] = {}
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    # -- control (the agent) -----------------------------------------------------------------

    async def expect(self, migration_uuid: str, instance_uuid: str, ticket: str, inbox: str) -> str:
        """Accept files for ``migration_uuid`` into ``inbox`` with ``ticket``; return the URL
        the source sends to (``<url>/files/<name>``, ``<url>/done``)."""
        self._sweep()
        old = self._expected.pop(migration_uuid, None)
        if old is not None:
            self._discard(old)
        self._expected[migration_uuid] = _Expected(
            migration_uuid, instance_uuid, _digest(ticket), Path(inbox), time.monotonic() + self.ttl
        )
        await self._start()
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"http://{host}:{self.port}/v1/migrations/{migration_uuid}"

    def expecting(self) -> list[str]:
        """The migrations a transfer is expected for (for tests and logs)."""
        self._sweep()
        return sorted(self._expected)

    async def close(self) -> None:
        """Stop listening; transfers still expected are abandoned (their files removed)."""
        for entry in list(self._expected.values()):
            self._discard(entry)
        self._expected.clear()
        await self._stop()

    # -- the server ------------------------------------------------------------------------------

    async def _start(self) -> None:
        async with self._lock:
            if self._runner is not None:
                return
            app = web.Application(client_max_size=0)
            app.router.add_put("/v1/migrations/{migration}/files/{name}", self._put)
            app.router.add_post("/v1/migrations/{migration}/done", self._done)
            app.router.add_delete("/v1/migrations/{migration}", self._abort)
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            site = web.TCPSite(runner, self.listen_host, self.listen_port, reuse_address=True)
            try:
                await site.start()
            except BaseException:
                await runner.cleanup()
                raise
            server: Any = site._server
            sockets = getattr(server, "sockets", None)
            self.port = sockets[0].getsockname()[1] if sockets else self.listen_port
            self._runner = runner
            self._sweeper = asyncio.create_task(self._sweep_loop(), name="migration-transfer-sweeper")
            log.info("agent.transfer_listening", listen=f"{self.listen_host}:{self.port}")

    async def _stop(self) -> None:
        async with self._lock:
            sweeper, self._sweeper = self._sweeper, None
            if sweeper is not None and sweeper is not asyncio.current_task():
                sweeper.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sweeper
            runner, self._runner = self._runner, None
            if runner is not None:
                await runner.cleanup()
                log.info("agent.transfer_stopped")
            self.port = None

    async def _sweep_loop(self) -> None:
        """Expire unused tickets; stop listening once no transfer is expected."""
        while True:
            await asyncio.sleep(max(0.5, min(self.ttl / 4, 30.0)))
            self._sweep()
            if not self._expected:
                self._sweeper = None
                await self._stop()
                return

    def _sweep(self) -> None:
        now = time.monotonic()
        for uuid, entry in list(self._expected.items()):
            if entry.expires <= now and not entry.writing:
                log.warning("agent.transfer_expired", migration=uuid, instance=entry.instance_uuid)
                del self._expected[uuid]
                self._discard(entry)

    @staticmethod
    def _discard(entry: _Expected) -> None:
        """Remove what a transfer that will not complete received."""
        for name in entry.received:
            with contextlib.suppress(OSError):
                os.unlink(entry.inbox / name)
        entry.received.clear()
        with contextlib.suppress(OSError):
            entry.inbox.rmdir()  # only if empty: what else is there is not the transfer's

    def _authorize(self, request: web.Request) -> _Expected | None:
        self._sweep()
        entry = self._expected.get(request.match_info["migration"])
        given = request.headers.get(TICKET_HEADER, "")
        # Compare even when there is no entry, so that timing tells nothing of which exist.
        expected = entry.digest if entry is not None else _digest(secrets.token_urlsafe(16))
        if not hmac.compare_digest(_digest(given), expected) or entry is None or not given:
            log.warning("agent.transfer_refused", migration=request.match_info["migration"], remote=request.remote)
            return None
        entry.expires = time.monotonic() + self.ttl
        return entry

    async def _put(self, request: web.Request) -> web.StreamResponse:
        entry = self._authorize(request)
        if entry is None:
            return _error(401, "The migration ticket is not valid.")
        name = request.match_info["name"]
        if not NAME_RE.fullmatch(name) or name in (".", ".."):
            return _error(400, f"Invalid file name {name!r}.")
        if name in entry.received or name in entry.writing:
            return _error(409, f"File {name} was received already.")
        length = request.content_length
        if length is None:
            return _error(411, "A Content-Length is required.")
        tmp = entry.inbox / f".{name}.{secrets.token_hex(4)}.part"
        entry.writing.add(name)
        hasher = hashlib.sha256()
        size = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as fh:
                async for chunk in request.content.iter_chunked(CHUNK):
                    size += len(chunk)
                    if size > length:
                        return _error(400, "The body is longer than its Content-Length.")
                    hasher.update(chunk)
                    await asyncio.to_thread(fh.write, chunk)
                if size != length:
                    return _error(400, f"The upload ended after {size} of {length} bytes.")
                await asyncio.to_thread(fh.flush)
                await asyncio.to_thread(os.fsync, fh.fileno())
            os.replace(tmp, entry.inbox / name)
            entry.received.append(name)
            entry.expires = time.monotonic() + self.ttl
            log.info("agent.transfer_received", migration=entry.migration_uuid, file=name, bytes=size)
            return web.json_response({"name": name, "size": size, "sha256": hasher.hexdigest()}, status=201)
        finally:
            entry.writing.discard(name)
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    async def _done(self, request: web.Request) -> web.Response:
        entry = self._authorize(request)
        if entry is None:
            return _error(401, "The migration ticket is not valid.")
        if entry.writing:
            return _error(409, "Files are still being received.")
        del self._expected[entry.migration_uuid]  # used up: the files stay for finish_migration
        log.info("agent.transfer_done", migration=entry.migration_uuid, files=entry.received)
        return web.Response(status=204)

    async def _abort(self, request: web.Request) -> web.Response:
        entry = self._authorize(request)
        if entry is None:
            return _error(401, "The migration ticket is not valid.")
        del self._expected[entry.migration_uuid]
        self._discard(entry)
        log.info("agent.transfer_aborted", migration=entry.migration_uuid)
        return web.Response(status=204)


# -- the source side ---------------------------------------------------------------------------


async def _chunks(path: str, hasher: Any, sent: list[int]) -> AsyncIterator[bytes]:
    fh = await asyncio.to_thread(open, path, "rb")
    with fh:
        while True:
            chunk = await asyncio.to_thread(fh.read, CHUNK)
            if not chunk:
                return
            hasher.update(chunk)
            sent[0] += len(chunk)
            yield chunk


async def send_files(url: str, ticket: str, files: list[str], timeout: aiohttp.ClientTimeout = SEND_TIMEOUT) -> int:
    """Stream ``files`` to a receiver's ``url`` with ``ticket``, then close the transfer;
    return the bytes sent. On any failure the transfer is abandoned (the receiver removes
    what it got) and :class:`TransferError` says why."""
    headers = {TICKET_HEADER: ticket}
    total = 0
    async with aiohttp.ClientSession(timeout=timeout) as session:
        try:
            for path in files:
                name = os.path.basename(path)
                size = (await asyncio.to_thread(os.stat, path)).st_size
                hasher = hashlib.sha256()
                sent = [0]
                started = time.perf_counter()
                async with session.put(
                    f"{url}/files/{name}",
                    data=_chunks(path, hasher, sent),
                    headers={**headers, "Content-Length": str(size), "Content-Type": "application/octet-stream"},
                ) as resp:
                    body = await resp.text()
                    if resp.status != 201:
                        raise TransferError(f"sending {name} failed: {resp.status} {body[:200]}")
                    answer = await resp.json(content_type=None)
                if sent[0] != size or answer.get("sha256") != hasher.hexdigest():
                    raise TransferError(f"{name} arrived altered (size or SHA-256 differs)")
                total += size
                log.info(
                    "agent.transfer_sent",
                    file=name,
                    bytes=size,
                    mib_s=round(size / 1048576 / max(time.perf_counter() - started, 1e-6), 1),
                )
            async with session.post(f"{url}/done", headers=headers) as resp:
                if resp.status != 204:
                    raise TransferError(f"closing the transfer failed: {resp.status} {(await resp.text())[:200]}")
        except Exception as exc:
            with contextlib.suppress(Exception):
                async with session.delete(url, headers=headers, timeout=aiohttp.ClientTimeout(total=30)):
                    pass
            if isinstance(exc, TransferError):
                raise
            raise TransferError(f"sending the disks to {url.split('/v1/')[0]} failed: {exc!r}") from exc
    return total
