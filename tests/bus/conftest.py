"""Fixtures for the bus tests: a throw-away RabbitMQ vhost per test run.

Each run gets its own vhost (``novalite-test-<random>``), so concurrent runs on one
broker never see each other's queues, and deleting the vhost cleans up everything.
Tests marked ``rabbit`` fail (never skip) when ``rabbitmqctl`` or the broker is missing.
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from collections.abc import Iterator

import pytest

RABBIT_HOST = "127.0.0.1:5672"


def rabbitmqctl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``rabbitmqctl`` (needs root or the rabbitmq user), raising on failure."""
    return subprocess.run(
        ["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=timeout, check=True
    )


@pytest.fixture(scope="session")
def rabbit_vhost() -> Iterator[str]:
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl not found: the RabbitMQ tests need the broker at 127.0.0.1:5672")
    vhost = f"novalite-test-{uuid.uuid4().hex[:8]}"
    try:
        rabbitmqctl("add_vhost", vhost)
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.fail(f"cannot create a RabbitMQ vhost: {exc}")
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield vhost
    finally:
        rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="session")
def rabbit_url(rabbit_vhost: str) -> str:
    return f"rabbit://guest:guest@{RABBIT_HOST}/{rabbit_vhost}"
