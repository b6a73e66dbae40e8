"""What the benchmark scripts share: a free port, percentiles, an admin token, and a
``novalite serve`` started and waited for."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

ADMIN_PASSWORD = "bench-admin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], pct: float) -> float:
    """Linear-interpolated percentile (``pct`` in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = (len(ordered) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


async def admin_token(session: aiohttp.ClientSession, base: str) -> str:
    """A token for admin in project admin, from the Keystone API at ``base``."""
    body = {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": ADMIN_PASSWORD}},
            },
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
        }
    }
    async with session.post(f"{base}/identity/v3/auth/tokens", json=body) as resp:
        resp.raise_for_status()
        return resp.headers["X-Subject-Token"]


def serve(state: Path, env: dict[str, str], show_banner: bool = False) -> subprocess.Popen[str]:
    """``novalite serve`` with ``env``, once its banner says it is ready (its log in
    ``state/serve.log``); with ``show_banner``, the banner goes to stderr without passwords."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "novalite.cli", "serve"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=open(state / "serve.log", "w"),  # lives as long as the process
        text=True,
    )
    deadline = time.monotonic() + 60
    banner = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        banner.append(line)
        if "use it:" in line:
            if show_banner:
                print("".join(line for line in banner if "password" not in line), end="", file=sys.stderr)
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"novalite serve did not start; see {state / 'serve.log'}:\n{''.join(banner)}")
