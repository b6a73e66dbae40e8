"""Issue 9, defect 1 (second half): a shutdown signal stops ``novalite serve`` within a few
seconds whatever it is doing, here with a request that would otherwise keep it alive
(an image upload that never finishes; aiohttp alone waits 60 s for such a handler)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from novalite.shutdown import FORCED_EXIT_STATUS
from tests.conftest import ADMIN_PASSWORD, Cloud, free_port
from tests.e2e.cli import start_serve, stop_serve


def serve_env(tmp_path: Path, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOVALITE_", "OS_"))}
    env.update(
        NOVALITE_STATE_DIR=str(tmp_path / "state"),
        NOVALITE_LISTEN=f"127.0.0.1:{port}",
        NOVALITE_ADMIN_PASSWORD=ADMIN_PASSWORD,
        **extra,
    )
    return env


async def start_endless_upload(session: aiohttp.ClientSession, base: str) -> asyncio.Task[None]:
    """Log in, create an image and start streaming its data without ever finishing."""
    token = await Cloud(node=None, session=session, base=base).login()  # type: ignore[arg-type]
    headers = {"X-Auth-Token": token}
    body = {"name": "endless", "disk_format": "raw", "container_format": "bare"}
    async with session.post(f"{base}/image/v2/images", json=body, headers=headers) as resp:
        assert resp.status == 201, await resp.text()
        image = (await resp.json())["id"]

    async def chunks() -> AsyncIterator[bytes]:
        while True:
            yield b"\0" * 65536
            await asyncio.sleep(0.2)

    async def upload() -> None:
        put_headers = {**headers, "Content-Type": "application/octet-stream"}
        try:
            async with session.put(f"{base}/image/v2/images/{image}/file", data=chunks(), headers=put_headers):
                pass
        except aiohttp.ClientError:
            pass  # the server went away, as it should

    task = asyncio.ensure_future(upload())
    await asyncio.sleep(1.0)  # the upload is in the handler now
    return task


async def test_sigterm_stops_within_the_grace_period_despite_a_request_in_flight(tmp_path: Path) -> None:
    port = free_port()
    proc, _ = start_serve(serve_env(tmp_path, port, NOVALITE_STOP_TIMEOUT="3"), tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession() as session:
            upload = await start_endless_upload(session, f"http://127.0.0.1:{port}")
            sent = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            status = await asyncio.to_thread(proc.wait, 20)
            took = time.monotonic() - sent
            upload.cancel()
        assert took < 8, f"SIGTERM took {took:.1f}s"
        assert status in (0, FORCED_EXIT_STATUS), status
    except subprocess.TimeoutExpired:
        raise AssertionError("novalite serve was still running 20 s after SIGTERM") from None
    finally:
        stop_serve(proc)


async def test_a_second_signal_exits_at_once(tmp_path: Path) -> None:
    port = free_port()
    proc, _ = start_serve(serve_env(tmp_path, port, NOVALITE_STOP_TIMEOUT="60"), tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession() as session:
            upload = await start_endless_upload(session, f"http://127.0.0.1:{port}")
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            assert proc.poll() is None  # still draining: the grace period is 60 s
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            status = await asyncio.to_thread(proc.wait, 20)
            took = time.monotonic() - sent
            upload.cancel()
        assert took < 3, f"the second signal took {took:.1f}s"
        assert status == FORCED_EXIT_STATUS
        assert "second SIGINT: exiting now" in (tmp_path / "serve.log").read_text()
    finally:
        stop_serve(proc)


async def test_an_idle_server_stops_cleanly(tmp_path: Path) -> None:
    port = free_port()
    proc, _ = start_serve(serve_env(tmp_path, port), tmp_path / "serve.log")
    try:
        sent = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
        assert time.monotonic() - sent < 5
    finally:
        stop_serve(proc)
