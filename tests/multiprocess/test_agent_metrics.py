"""``novalite agent`` serves its own ``/metrics`` (``agent_metrics_listen``): real processes.

The agent's page answers before any controller exists (it needs no database, and has
none), refuses a client outside ``metrics_allow_from`` as the API does, and after a small
storm (three builds, a stop, a reboot, a delete) counts exactly the driver calls and bus
messages of that host, and its guests by power state after its next power sync. The
controller's page counts the same server actions by outcome, and has no driver series:
those come from the agent process only.
"""

from __future__ import annotations

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import free_port
from tests.multiprocess.conftest import (
    MV,
    Deployment,
    create_server,
    make_image,
    wait_for,
    wait_hosts_up,
    wait_settled,
)

pytestmark = [pytest.mark.rabbit, pytest.mark.postgres]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def read(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    try:
        async with session.get(url) as resp:
            return resp.status, await resp.text()
    except aiohttp.ClientError:
        return 0, ""


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_agent_serves_its_own_metrics(deployment: Deployment) -> None:
    dep = deployment
    port, closed_port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    # No controller yet, and no database anywhere on this side: the page answers all the same.
    agent = dep.start_agent("hv-m", NOVALITE_AGENT_METRICS_LISTEN=f"127.0.0.1:{port}")
    closed = dep.start_agent(
        "hv-closed",
        NOVALITE_AGENT_METRICS_LISTEN=f"127.0.0.1:{closed_port}",
        NOVALITE_METRICS_ALLOW_FROM='["10.0.0.0/8"]',
    )

    async def answers(target: str, status: int) -> bool:
        return (await read(dep.session, target))[0] == status

    await wait_for(lambda: answers(url, 200), 30, "the agent's /metrics", dep=dep)
    closed_url = f"http://127.0.0.1:{closed_port}/metrics"
    await wait_for(lambda: answers(closed_url, 403), 30, "403 from the closed agent's /metrics", dep=dep)
    status, body = await read(dep.session, closed_url)
    assert status == 403 and "metrics_allow_from" in body and "hv-closed" not in body
    closed.kill()  # it never registered (no conductor yet): no host is left behind

    _, text = await read(dep.session, url)
    early = parse(text)
    assert value(early, "novalite_driver_call_duration_seconds_count", method="spawn", outcome="success") == 0
    zero = ("novalite_driver_call_duration_seconds_count", frozenset({("method", "spawn"), ("outcome", "success")}))
    assert zero in early
    # Only what an agent measures: no API, scheduler or database series on its page.
    assert "novalite_api_requests_total" not in text and "novalite_scheduler" not in text
    assert "novalite_db_pool" not in text and "novalite_builds_total" not in text

    ctl = await dep.start_controller()
    api = dep.api(ctl)
    await wait_hosts_up(api, {"hv-m"}, timeout=45)
    image = await make_image(api)
    ids = []
    for i in range(3):
        status, body = await create_server(api, image, f"vm{i}")
        assert status == 202, body
        ids.append(body["server"]["id"])
    await wait_settled(api, set(ids), timeout=60)
    a, b, c = ids
    for sid, action in ((a, {"os-stop": None}), (b, {"reboot": {"type": "SOFT"}})):
        r = await api.post(f"/compute/v2.1/servers/{sid}/action", json=action)
        assert r.status == 202, r
    settled = await wait_settled(api, {a, b}, timeout=30)
    assert (settled[a]["status"], settled[b]["status"]) == ("SHUTOFF", "ACTIVE"), settled
    r = await api.delete(f"/compute/v2.1/servers/{c}")
    assert r.status == 204, r

    async def gone() -> bool:
        return (await api.get(f"/compute/v2.1/servers/{c}", microversion=MV)).status == 404

    await wait_for(gone, 30, "the deleted server gone", dep=dep)

    async def agent_settled() -> Samples | None:
        status, text = await read(dep.session, url)
        samples = parse(text) if status == 200 else {}
        guests = {p: value(samples, "novalite_guests", host="hv-m", power_state=p) for p in ("running", "shutdown")}
        done = value(samples, "novalite_bus_messages_handled_total", topic="compute", method="terminate_instance")
        return samples if guests == {"running": 1, "shutdown": 1} and done == 1 else None

    samples = await wait_for(agent_settled, 30, "the agent's guests after its power sync", dep=dep)
    calls = "novalite_driver_call_duration_seconds_count"
    assert value(samples, calls, method="spawn", outcome="success") == 3
    assert value(samples, calls, method="power_off", outcome="success") == 1
    assert value(samples, calls, method="reboot", outcome="success") == 1
    assert value(samples, calls, method="destroy", outcome="success") == 1
    assert value(samples, calls, method="spawn", outcome="error") == 0
    handled = "novalite_bus_messages_handled_total"
    assert value(samples, handled, topic="compute", method="build_and_run_instance") == 3
    assert value(samples, handled, topic="compute", method="stop_instance") == 1
    assert value(samples, handled, topic="compute", method="reboot_instance") == 1
    assert value(samples, "novalite_guests", host="hv-m", power_state="paused") == 0
    assert agent.alive

    # The controller counts the same actions by outcome, and times none of the driver's calls.
    _, text = await read(dep.session, f"{ctl.base}/metrics")
    controller = parse(text)
    actions = "novalite_server_actions_total"
    for action, n in (("create", 3), ("stop", 1), ("reboot", 1), ("delete", 1)):
        assert value(controller, actions, action=action, outcome="success") == n, action
        assert value(controller, "novalite_server_action_duration_seconds_count", action=action, outcome="success") == n
    assert sum(v for (name, labels), v in controller.items() if name == actions and ("outcome", "error") in labels) == 0
    assert not [name for name, _ in controller if name.startswith(("novalite_driver_", "novalite_guests"))]
