"""Issue 9, defect 4: a login flood must not starve everyone; Keystone's account lockout.

Password checks are instrumented (the Argon2 hasher is wrapped): we count the checks
running at once and each check's password, and slow each one down so that a flood
really overlaps. The assertions are about behaviour, not timing: never more checks at
once than ``password_check_concurrency``; every 429 (with ``Retry-After``, in Keystone's
error format) and every "locked" 401 was answered without a hash; a legitimate login
during a flood succeeds.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest

from novalite.config import Settings
from novalite.identity import passwords
from novalite.identity.throttle import Busy, HashGate
from novalite.node import Node
from tests.conftest import Cloud, free_port, make_settings

V3 = "/identity/v3"
GENERIC = "The request you have made requires authentication."
CONCURRENCY = 2
QUEUE = 8
PER_USER = 3
ATTEMPTS = 5


class CountingHasher:
    """The real Argon2 hasher, with every ``verify`` counted, timed and (optionally) slowed down."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.delay = 0.0
        self.lock = threading.Lock()
        self.running = 0
        self.max_running = 0
        self.checked: list[str] = []  # the password of each check, in the order they started

    def reset(self, delay: float = 0.0) -> None:
        with self.lock:
            self.delay, self.max_running, self.checked = delay, 0, []

    def count(self, password: str) -> int:
        return self.checked.count(password)

    def hash(self, password: str) -> str:
        return str(self.real.hash(password))

    def verify(self, password_hash: str, password: str) -> bool:
        with self.lock:
            self.running += 1
            self.max_running = max(self.max_running, self.running)
            self.checked.append(password)
        try:
            time.sleep(self.delay)
            return bool(self.real.verify(password_hash, password))
        finally:
            with self.lock:
                self.running -= 1


@pytest.fixture
def hasher(monkeypatch: pytest.MonkeyPatch) -> Iterator[CountingHasher]:
    counting = CountingHasher(passwords._hasher)
    monkeypatch.setattr(passwords, "_hasher", counting)
    yield counting


@pytest.fixture
def overrides() -> dict[str, Any]:
    """Settings a test changes (parametrize ``overrides`` to change them)."""
    return {}


@pytest.fixture
def cloud_settings(tmp_path, db_url: str, overrides: dict[str, Any]) -> Settings:  # type: ignore[no-untyped-def]
    """A small gate (2 at once, 8 waiting, 3 per user) and a lockout after 5 failures."""
    values: dict[str, Any] = dict(
        password_check_concurrency=CONCURRENCY,
        password_check_queue=QUEUE,
        password_check_queue_per_user=PER_USER,
        lockout_failure_attempts=ATTEMPTS,
        lockout_duration=300.0,
    )
    values.update(overrides)
    return make_settings(tmp_path, db_url, **values)


def with_settings(**values: Any) -> Any:
    """Run the test on a cloud with these settings changed."""
    return pytest.mark.parametrize("overrides", [values], ids=["-".join(f"{k}={v}" for k, v in values.items())])


@pytest.fixture
async def flood_session() -> AsyncIterator[aiohttp.ClientSession]:
    """A client without aiohttp's 100-connection cap, so a flood of 200 is really concurrent."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        yield session


def auth_body(name: str, password: str, project: str | None = None) -> dict[str, Any]:
    auth: dict[str, Any] = {
        "identity": {
            "methods": ["password"],
            "password": {"user": {"name": name, "domain": {"id": "default"}, "password": password}},
        }
    }
    if project:
        auth["scope"] = {"project": {"name": project, "domain": {"id": "default"}}}
    return {"auth": auth}


async def login(session: aiohttp.ClientSession, base: str, name: str, password: str) -> tuple[int, Any, Any]:
    async with session.post(f"{base}{V3}/auth/tokens", json=auth_body(name, password)) as resp:
        return resp.status, await resp.json(), resp.headers


async def make_user(cloud: Cloud, name: str, password: str) -> str:
    resp = await cloud.post(f"{V3}/users", {"user": {"name": name, "password": password}})
    assert resp.status == 201, resp
    return str(resp.body["user"]["id"])


def locked_body(user_id: str) -> dict[str, Any]:
    """Keystone's AccountLocked, verbatim."""
    return {"error": {"code": 401, "message": f"The account is locked for user: {user_id}.", "title": "Unauthorized"}}


def assert_429(body: Any, headers: Any) -> None:
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == 429 and body["error"]["title"] == "Too Many Requests", body
    assert body["error"]["message"], body
    assert int(headers["Retry-After"]) >= 1, headers


async def fail_times(cloud: Cloud, name: str, times: int) -> None:
    for _ in range(times):
        status, body, _h = await login(cloud.session, cloud.base, name, "wrong-" + uuid.uuid4().hex)
        assert (status, body["error"]["message"]) == (401, GENERIC), body


async def wait_for(predicate: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


# -- the flood -----------------------------------------------------------------------------


@with_settings(lockout_failure_attempts=0)
async def test_flood_of_wrong_logins_is_bounded_and_a_legitimate_login_gets_through(
    cloud: Cloud, hasher: CountingHasher, flood_session: aiohttp.ClientSession
) -> None:
    await make_user(cloud, "victim", "victim-secret")
    await make_user(cloud, "alice", "alice-secret")
    hasher.reset(delay=0.3)
    wrong = "wrong-" + uuid.uuid4().hex
    flood = [asyncio.create_task(login(flood_session, cloud.base, "victim", wrong)) for _ in range(200)]
    await wait_for(lambda: hasher.running > 0)  # the flood is being hashed now

    status, body, _h = await login(flood_session, cloud.base, "alice", "alice-secret")
    assert status == 201, body
    results = await asyncio.gather(*flood)

    statuses = [r[0] for r in results]
    assert set(statuses) <= {401, 429}, statuses
    rejected = [r for r in results if r[0] == 429]
    assert rejected, "a flood beyond the queue must be refused with 429"
    for _s, body, headers in rejected:
        assert_429(body, headers)
    # Every 401 cost one check, every 429 none; never more than the bound at once.
    assert hasher.count(wrong) == statuses.count(401)
    assert hasher.count("alice-secret") == 1
    assert hasher.max_running <= CONCURRENCY, hasher.max_running


async def test_flood_of_unknown_user_names_is_bounded_too(
    cloud: Cloud, hasher: CountingHasher, flood_session: aiohttp.ClientSession
) -> None:
    await cloud.admin_token()  # the dummy hash for unknown users is made before counting
    await login(flood_session, cloud.base, "nobody-warmup", "x")
    hasher.reset(delay=0.3)
    results = await asyncio.gather(*(login(flood_session, cloud.base, f"nobody-{i}", f"guess-{i}") for i in range(150)))
    statuses = [r[0] for r in results]
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(429) > 0
    for status, body, headers in results:
        if status == 429:
            assert_429(body, headers)
        else:
            assert body["error"]["message"] == GENERIC
    assert len(hasher.checked) == statuses.count(401)
    assert hasher.max_running <= CONCURRENCY, hasher.max_running


async def test_lockout_stops_a_flood_from_hashing(
    cloud: Cloud, hasher: CountingHasher, flood_session: aiohttp.ClientSession
) -> None:
    victim = await make_user(cloud, "victim", "victim-secret")
    hasher.reset(delay=0.1)
    wrong = "wrong-" + uuid.uuid4().hex
    results: list[tuple[int, Any, Any]] = []
    for _wave in range(10):  # a sustained flood: 10 waves of 10 at once
        results += await asyncio.gather(*(login(flood_session, cloud.base, "victim", wrong) for _ in range(10)))
    generic = [r for r in results if r[0] == 401 and r[1]["error"]["message"] == GENERIC]
    locked = [r for r in results if r[0] == 401 and r[1] == locked_body(victim)]
    too_many = [r for r in results if r[0] == 429]
    assert len(generic) + len(locked) + len(too_many) == 100, [r[:2] for r in results]
    # Once locked, logins are answered without a hash: only the failures that locked it were checked.
    assert hasher.count(wrong) == len(generic) <= ATTEMPTS
    assert locked, "logins after the lockout must say the account is locked"
    status, body, _h = await login(flood_session, cloud.base, "victim", "victim-secret")
    assert (status, body) == (401, locked_body(victim))


# -- the lockout ---------------------------------------------------------------------------


@with_settings(lockout_duration=1.0)
async def test_lockout_after_n_failures_and_unlock_after_the_duration(cloud: Cloud, hasher: CountingHasher) -> None:
    bob = await make_user(cloud, "bob", "bob-secret")
    await make_user(cloud, "alice", "alice-secret")
    await fail_times(cloud, "bob", ATTEMPTS)

    hasher.reset()
    status, body, _h = await login(cloud.session, cloud.base, "bob", "bob-secret")
    assert (status, body) == (401, locked_body(bob))
    status, body, _h = await login(cloud.session, cloud.base, "bob", "still-wrong")
    assert (status, body) == (401, locked_body(bob))
    assert hasher.count("bob-secret") == hasher.count("still-wrong") == 0, "a locked check costs no hash"
    # Another user is unaffected.
    status, body, _h = await login(cloud.session, cloud.base, "alice", "alice-secret")
    assert status == 201, body

    await asyncio.sleep(1.2)
    status, body, _h = await login(cloud.session, cloud.base, "bob", "bob-secret")
    assert status == 201, body


@with_settings(lockout_duration=1.0)
async def test_a_failure_after_the_lockout_ran_out_does_not_lock_again(cloud: Cloud) -> None:
    await make_user(cloud, "bob", "bob-secret")
    await fail_times(cloud, "bob", ATTEMPTS)
    await asyncio.sleep(1.2)
    await fail_times(cloud, "bob", 1)  # one typo after the lockout: counted afresh
    status, body, _h = await login(cloud.session, cloud.base, "bob", "bob-secret")
    assert status == 201, body


async def test_a_successful_login_resets_the_count(cloud: Cloud) -> None:
    await make_user(cloud, "bob", "bob-secret")
    await fail_times(cloud, "bob", ATTEMPTS - 1)
    status, body, _h = await login(cloud.session, cloud.base, "bob", "bob-secret")
    assert status == 201, body
    await fail_times(cloud, "bob", ATTEMPTS - 1)  # would be locked by now without the reset
    status, body, _h = await login(cloud.session, cloud.base, "bob", "bob-secret")
    assert status == 201, body


async def test_an_admin_unlocks_by_enabling_the_user(cloud: Cloud) -> None:
    bob = await make_user(cloud, "bob", "bob-secret")
    await fail_times(cloud, "bob", ATTEMPTS)
    status, body, _h = await login(cloud.session, cloud.base, "bob", "bob-secret")
    assert (status, body) == (401, locked_body(bob))
    resp = await cloud.request("PATCH", f"{V3}/users/{bob}", json={"user": {"enabled": True}})
    assert resp.status == 200, resp
    status, body, _h = await login(cloud.session, cloud.base, "bob", "bob-secret")
    assert status == 201, body


@with_settings(lockout_failure_attempts=0)
async def test_lockout_disabled_with_zero(cloud: Cloud) -> None:
    await make_user(cloud, "bob", "bob-secret")
    await fail_times(cloud, "bob", 2 * ATTEMPTS)
    status, body, _h = await login(cloud.session, cloud.base, "bob", "bob-secret")
    assert status == 201, body


async def test_the_lockout_is_shared_by_api_servers_on_one_database(cloud: Cloud, cloud_settings: Settings) -> None:
    """Failures counted by one API server lock the user out on another: the count is in the database."""
    if cloud_settings.database_url.startswith("sqlite"):
        pytest.skip("API servers share a database only on PostgreSQL (SQLite is one process's own file)")
    bob = await make_user(cloud, "bob", "bob-secret")
    other_settings = cloud_settings.model_copy(update={"listen": f"127.0.0.1:{free_port()}", "fake_hosts": 0})
    other = Node(other_settings, services=["api"])
    await other.start()
    try:
        for i in range(ATTEMPTS):  # alternate between the two servers
            base = cloud.base if i % 2 else other_settings.public_base
            status, body, _h = await login(cloud.session, base, "bob", "wrong")
            assert (status, body["error"]["message"]) == (401, GENERIC), body
        for base in (cloud.base, other_settings.public_base):
            status, body, _h = await login(cloud.session, base, "bob", "bob-secret")
            assert (status, body) == (401, locked_body(bob))
    finally:
        await other.stop()


# -- the gate's fairness -------------------------------------------------------------------


async def test_gate_serves_another_user_before_the_flooded_one_and_refuses_beyond_its_share() -> None:
    gate = HashGate(concurrency=1, queue=8, per_key=3)
    order: list[str] = []
    release = asyncio.Event()

    async def hold(key: str) -> None:
        async with gate.slot(key):
            order.append(key)
            await release.wait()

    first = asyncio.create_task(hold("flooded"))
    await asyncio.sleep(0)
    waiting = [asyncio.create_task(hold("flooded")) for _ in range(3)]
    await asyncio.sleep(0)
    with pytest.raises(Busy) as busy:  # the flooded key's share of the queue is full
        async with gate.slot("flooded"):
            pass
    assert busy.value.retry_after >= 1
    other = asyncio.create_task(hold("other"))  # another user still gets a place...
    await asyncio.sleep(0)
    release.set()
    await asyncio.gather(first, other, *waiting)
    # ...and is served right after the flooded key's next turn, not behind its whole queue.
    assert order[:3] == ["flooded", "flooded", "other"], order
    assert gate.running == 0 and gate.waiting == 0


async def test_gate_passes_on_the_slot_of_a_waiter_that_went_away() -> None:
    gate = HashGate(concurrency=1, queue=4, per_key=4)
    release = asyncio.Event()
    entered: list[int] = []

    async def hold(i: int) -> None:
        async with gate.slot("k"):
            entered.append(i)
            await release.wait()

    first = asyncio.create_task(hold(0))
    await asyncio.sleep(0)
    gone = asyncio.create_task(hold(1))
    last = asyncio.create_task(hold(2))
    await asyncio.sleep(0)
    gone.cancel()
    release.set()
    await asyncio.gather(first, last)
    assert entered == [0, 2]
    assert gate.running == 0 and gate.waiting == 0
