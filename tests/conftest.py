"""Shared fixtures: a whole novalite in this process, on SQLite or on the real PostgreSQL.

``cloud`` starts every service (API on a free loopback port, conductor, scheduler,
fake compute hosts) in the test's event loop; tests talk to it over real HTTP.
PostgreSQL tests create a database of their own at 127.0.0.1:5432 and drop it after.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from novalite.config import Settings
from novalite.node import Node

PG_ADMIN_URL = os.environ.get("NOVALITE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
ADMIN_PASSWORD = "admin-secret"


RABBIT_HOST = "127.0.0.1:5672"


def rabbitmqctl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    """Run ``rabbitmqctl`` (needs root or the rabbitmq user), raising on failure."""
    return subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, text=True, timeout=timeout, check=True)


def create_rabbit_vhost() -> str:
    """A throw-away vhost ``novalite-test-<random>`` with full rights for guest.

    Fails (never skips) when ``rabbitmqctl`` or the broker is missing.
    """
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl not found: the RabbitMQ tests need the broker at 127.0.0.1:5672")
    vhost = f"novalite-test-{uuid.uuid4().hex[:8]}"
    try:
        rabbitmqctl("add_vhost", vhost)
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
    except (subprocess.SubprocessError, OSError) as exc:
        pytest.fail(f"cannot create a RabbitMQ vhost: {exc}")
    return vhost


def delete_rabbit_vhost(vhost: str) -> None:
    rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="session")
def rabbit_vhost() -> Iterator[str]:
    """One vhost per test run: concurrent runs on one broker never see each other's queues."""
    vhost = create_rabbit_vhost()
    try:
        yield vhost
    finally:
        delete_rabbit_vhost(vhost)


@pytest.fixture(scope="session")
def rabbit_url(rabbit_vhost: str) -> str:
    return f"rabbit://guest:guest@{RABBIT_HOST}/{rabbit_vhost}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def create_pg_database() -> str:
    import asyncpg

    name = f"novalite_test_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return PG_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


async def drop_pg_database(url: str) -> None:
    import asyncpg

    name = url.rsplit("/", 1)[1]
    conn = await asyncpg.connect(PG_ADMIN_URL)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
async def db_url(request: pytest.FixtureRequest, tmp_path) -> AsyncIterator[str]:  # type: ignore[no-untyped-def]
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'novalite.db'}"
        return
    url = await create_pg_database()
    try:
        yield url
    finally:
        await drop_pg_database(url)


@dataclass
class Response:
    status: int
    body: Any
    headers: Any

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.body!r:.300}>"


@dataclass
class Cloud:
    """A running novalite and an HTTP client for it."""

    node: Node
    session: aiohttp.ClientSession
    base: str
    tokens: dict[str, str] = field(default_factory=dict)
    #: One admin login however many requests ask for the token at once (as a real client caches
    #: its token; 20 concurrent logins of one user would rightly meet the login throttle).
    _admin_login: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def rt(self) -> Any:
        return self.node.rt

    async def login(self, user: str = "admin", password: str = ADMIN_PASSWORD, project: str = "admin") -> str:
        """Get a project-scoped token through the real Keystone API."""
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {"user": {"name": user, "domain": {"id": "default"}, "password": password}},
                },
                "scope": {"project": {"name": project, "domain": {"id": "default"}}},
            }
        }
        async with self.session.post(f"{self.base}/identity/v3/auth/tokens", json=body) as resp:
            assert resp.status == 201, await resp.text()
            return resp.headers["X-Subject-Token"]

    async def admin_token(self) -> str:
        async with self._admin_login:
            if "admin" not in self.tokens:
                self.tokens["admin"] = await self.login()
        return self.tokens["admin"]

    async def request(
        self,
        method: str,
        path: str,
        *,
        token: str | None = "admin",
        json: Any = None,
        data: Any = None,
        headers: dict[str, str] | None = None,
        microversion: str | None = None,
    ) -> Response:
        hdrs = dict(headers or {})
        if token == "admin":
            token = await self.admin_token()
        if token:
            hdrs["X-Auth-Token"] = token
        if microversion:
            hdrs["OpenStack-API-Version"] = f"compute {microversion}"
        url = path if path.startswith("http") else f"{self.base}{path}"
        async with self.session.request(method, url, json=json, data=data, headers=hdrs) as resp:
            raw = await resp.read()
            try:
                body = __import__("json").loads(raw) if raw else None
            except ValueError:
                body = raw
            return Response(resp.status, body, resp.headers)

    async def get(self, path: str, **kw: Any) -> Response:
        return await self.request("GET", path, **kw)

    async def post(self, path: str, json: Any = None, **kw: Any) -> Response:
        return await self.request("POST", path, json=json, **kw)

    async def put(self, path: str, json: Any = None, **kw: Any) -> Response:
        return await self.request("PUT", path, json=json, **kw)

    async def delete(self, path: str, **kw: Any) -> Response:
        return await self.request("DELETE", path, **kw)


def make_settings(tmp_path, db_url: str, **overrides: Any) -> Settings:  # type: ignore[no-untyped-def]
    values: dict[str, Any] = dict(
        state_dir=tmp_path / "state",
        listen=f"127.0.0.1:{free_port()}",
        database_url=db_url,
        admin_password=ADMIN_PASSWORD,
        host="hv",
        fake_hosts=2,
        report_interval=0.5,
        log_level="WARNING",
        console_listen=f"127.0.0.1:{free_port()}",
    )
    values.update(overrides)
    return Settings(**values)


@pytest.fixture
def cloud_settings(tmp_path, db_url: str) -> Settings:  # type: ignore[no-untyped-def]
    """Override this fixture (or use ``start_cloud``) to change the settings."""
    return make_settings(tmp_path, db_url)


async def start_cloud(settings: Settings) -> Cloud:
    node = Node(settings)
    await node.start()
    session = aiohttp.ClientSession()
    return Cloud(node=node, session=session, base=settings.public_base)


@pytest.fixture
async def cloud(cloud_settings: Settings) -> AsyncIterator[Cloud]:
    c = await start_cloud(cloud_settings)
    try:
        yield c
    finally:
        await c.session.close()
        await c.node.stop()
