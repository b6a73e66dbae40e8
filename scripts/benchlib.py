"""What the benchmark scripts share: a free port, percentiles, and an admin token."""

from __future__ import annotations

import socket

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
