"""Server actions, driver calls, guests by power state and the database pool on ``/metrics``.

A small storm of actions on the in-process cloud (two fake hosts): four servers built, two
stopped at once while a third reboots, a reboot the hypervisor refuses, a start and a
delete. The page must count exactly that: every action by outcome (counted by the
conductor as each action event ends), every driver call the agents made by method and
outcome, and, after the agents' next power sync, their guests by power state.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from novalite.config import Settings
from novalite.metrics import Metrics
from tests.conftest import Cloud, make_settings
from tests.functional.helpers import create_server, make_image, wait_gone, wait_status
from tests.functional.test_metrics import Samples, scrape, series, value

SERVERS = "/compute/v2.1/servers"


@pytest.fixture
def cloud_settings(tmp_path: Any, db_url: str) -> Settings:
    # A power sync every 0.2 s: the guests gauge follows the storm within a moment.
    return make_settings(tmp_path, db_url, sync_power_state_interval=0.2)


async def act(cloud: Cloud, sid: str, body: dict[str, Any]) -> None:
    r = await cloud.post(f"{SERVERS}/{sid}/action", json=body)
    assert r.status == 202, r


def agent_of(cloud: Cloud, server: dict[str, Any]) -> Any:
    host = server["OS-EXT-SRV-ATTR:host"]
    return next(a for a in cloud.rt.services["ComputeAgent"] if a.host == host)


async def poll(cloud: Cloud, settled: Any, timeout: float = 10.0) -> Samples:
    """Scrape until ``settled(samples)`` (a counter moves just after its last write)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        _, samples = await scrape(cloud)
        if settled(samples) or asyncio.get_running_loop().time() > deadline:
            return samples
        await asyncio.sleep(0.05)


def guests(samples: Samples) -> dict[tuple[str, str], float]:
    return {(dict(k)["host"], dict(k)["power_state"]): v for k, v in series(samples, "novalite_guests").items()}


async def test_server_actions_driver_calls_and_guests_count_a_storm(cloud: Cloud) -> None:
    image = await make_image(cloud)
    created = await asyncio.gather(*(create_server(cloud, image, name=f"vm{i}") for i in range(4)))
    assert [c.status for c in created] == [202] * 4, created
    a, b, c, d = (x.body["server"]["id"] for x in created)
    for sid in (a, b, c, d):
        await wait_status(cloud, sid, "ACTIVE")

    # Two stops and a reboot at once.
    await asyncio.gather(act(cloud, a, {"os-stop": None}), act(cloud, b, {"os-stop": None}))
    await act(cloud, c, {"reboot": {"type": "SOFT"}})
    for sid, status in ((a, "SHUTOFF"), (b, "SHUTOFF"), (c, "ACTIVE")):
        await wait_status(cloud, sid, status)
    # A reboot the hypervisor refuses: the running guest stays ACTIVE, the event is Error.
    server_d = await wait_status(cloud, d, "ACTIVE")
    driver = agent_of(cloud, server_d).driver
    driver.failures["reboot"] = "the hypervisor refused to reset the guest"
    await act(cloud, d, {"reboot": {"type": "SOFT"}})
    failed = await wait_status(cloud, d, {"ACTIVE", "ERROR"})
    del driver.failures["reboot"]
    assert (failed["status"], failed["OS-EXT-STS:power_state"]) == ("ACTIVE", 1), failed
    await act(cloud, a, {"os-start": None})
    await wait_status(cloud, a, "ACTIVE")
    r = await cloud.delete(f"{SERVERS}/{c}")
    assert r.status == 204, r
    await wait_gone(cloud, c)

    # Where the three survivors run (the user's view), and in which power state.
    expected: dict[tuple[str, str], int] = {}
    for sid, state in ((a, "running"), (b, "shutdown"), (d, "running")):
        host = (await cloud.get(f"{SERVERS}/{sid}", microversion="2.100")).body["server"]["OS-EXT-SRV-ATTR:host"]
        expected[(host, state)] = expected.get((host, state), 0) + 1

    def settled(s: Samples) -> bool:
        # Exactly the survivors: a power sync that listed the guests before the delete may
        # still count the deleted one until the next sync.
        deleted = value(s, "novalite_server_actions_total", action="delete", outcome="success") == 1
        return deleted and {k: v for k, v in guests(s).items() if v} == expected

    samples = await poll(cloud, settled)

    # Every action by outcome, and its duration's count beside it.
    actions = "novalite_server_actions_total"
    want = {
        ("create", "success"): 4,
        ("stop", "success"): 2,
        ("reboot", "success"): 1,
        ("reboot", "error"): 1,
        ("start", "success"): 1,
        ("delete", "success"): 1,
    }
    counted = {(dict(k)["action"], dict(k)["outcome"]): v for k, v in series(samples, actions).items() if v}
    assert counted == want
    for (action, outcome), n in want.items():
        count = value(samples, "novalite_server_action_duration_seconds_count", action=action, outcome=outcome)
        assert count == n, (action, outcome)
        assert value(samples, "novalite_server_action_duration_seconds_sum", action=action, outcome=outcome) >= 0
    # Zero series for the fixed set: an action that never happened shows 0, not nothing.
    assert value(samples, actions, action="pause", outcome="success") == 0
    assert ((actions, frozenset({("action", "pause"), ("outcome", "success")}))) in samples
    assert {dict(k)["action"] for k in series(samples, actions)} >= {"create", "delete", "other"}

    # Driver calls by method and outcome, timed around every call the agents made.
    calls = "novalite_driver_call_duration_seconds_count"
    assert value(samples, calls, method="spawn", outcome="success") == 4
    assert value(samples, calls, method="power_off", outcome="success") == 2
    assert value(samples, calls, method="reboot", outcome="success") == 1
    assert value(samples, calls, method="reboot", outcome="error") == 1
    assert value(samples, calls, method="power_on", outcome="success") == 1
    assert value(samples, calls, method="destroy", outcome="success") == 1
    assert value(samples, calls, method="spawn", outcome="error") == 0
    assert value(samples, calls, method="list_instances", outcome="success") > 0  # builds and power syncs
    assert value(samples, calls, method="live_migration", outcome="success") == 0  # a zero series

    # Guests by power state per host, after the agents' last power sync.
    seen = guests(samples)
    assert {k: v for k, v in seen.items() if v} == expected
    assert {state for _, state in seen} == {"nostate", "running", "paused", "shutdown", "crashed", "suspended"}
    assert {host for host, _ in seen} == set(cloud.node.compute_hosts())


async def test_database_pool_use_is_read_at_scrape_time(cloud: Cloud) -> None:
    """A connection held elsewhere shows as checked out; the pool's size is the configured one."""
    settings = cloud.rt.settings
    backend = "sqlite" if settings.db_url.startswith("sqlite") else "postgresql"
    _, idle = await scrape(cloud)
    size = settings.database_pool_size if backend == "postgresql" else 1
    assert value(idle, "novalite_db_pool_size", backend=backend) == size
    assert value(idle, "novalite_db_pool_max_overflow", backend=backend) == (size if backend == "postgresql" else 0)
    assert value(idle, "novalite_db_pool_connections_checked_out", backend=backend) == 0
    assert value(idle, "novalite_db_pool_overflow", backend=backend) == 0

    held = asyncio.Event()

    async def hold() -> None:
        async with cloud.rt.db.connect():
            held.set()
            # Long enough for the scrape below to start (SQLite's scrape then waits for it).
            await asyncio.sleep(0.5)

    holder = asyncio.create_task(hold())
    await held.wait()
    _, busy = await scrape(cloud)
    await holder
    assert value(busy, "novalite_db_pool_connections_checked_out", backend=backend) == 1


def test_an_unknown_action_event_counts_as_other() -> None:
    """The action label is a fixed set: an event name it does not know never makes a new series."""
    metrics = Metrics()
    metrics.observe_server_action("compute_frobnicate_instance", "Success", 0.5)
    metrics.observe_server_action("compute_stop_instance", "Error", -1.0)  # a host clock ahead: 0
    metrics.observe_server_action("compute_stop_instance", None, 1.0)  # no result yet: not an end
    assert (
        metrics.registry.get_sample_value("novalite_server_actions_total", {"action": "other", "outcome": "success"})
        == 1
    )
    labels = {"action": "stop", "outcome": "error"}
    assert metrics.registry.get_sample_value("novalite_server_actions_total", labels) == 1
    assert metrics.registry.get_sample_value("novalite_server_action_duration_seconds_sum", labels) == 0
    names = {
        s.labels.get("action")
        for f in metrics.registry.collect()
        for s in f.samples
        if s.name.startswith("novalite_server")
    }
    assert "compute_frobnicate_instance" not in names
