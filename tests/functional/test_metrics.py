"""``GET /metrics`` scraped as Prometheus scrapes it (no token) after a small storm, checked against what happened.

The storm on the in-process cloud (two fake hosts): five m1.medium servers built, two of them
deleted, one server whose flavor fits no host (NoValidHost), and a GET of a server that does
not exist. Every count on the page must match: API requests by route template (no ids in any
label), the scheduler's decisions, the bus's messages by topic kind, and the per-host usage
read from the database at scrape time.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from novalite.db import schema as t
from novalite.timeutil import utcnow
from tests.conftest import Cloud, make_settings, start_cloud
from tests.functional.helpers import create_server, make_image, wait_gone, wait_status

SERVERS = "/compute/v2.1/servers"
SERVER = "/compute/v2.1/servers/{server_id}"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(cloud: Cloud) -> tuple[str, Samples]:
    """The page with no token at all (as a Prometheus server asks), and its samples by (name, labels)."""
    async with cloud.session.get(f"{cloud.base}/metrics") as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/plain"
        text = await resp.text()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value; 0 if the series does not exist (a counter never incremented)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name}


async def test_metrics_count_a_small_storm(cloud: Cloud) -> None:
    image = await make_image(cloud)
    # A flavor no fake host can hold (disk has no quota, so the request passes the API and the
    # scheduler, not the quota check, refuses it).
    r = await cloud.post(
        "/compute/v2.1/flavors",
        json={"flavor": {"name": "huge-disk", "id": "huge", "ram": 64, "vcpus": 1, "disk": 10_000_000}},
    )
    assert r.status == 200, r

    created = await asyncio.gather(*(create_server(cloud, image, name=f"vm{i}", flavor="3") for i in range(5)))
    assert [c.status for c in created] == [202] * 5, created
    ids = [c.body["server"]["id"] for c in created]
    doomed = await create_server(cloud, image, name="too-big", flavor="huge")
    assert doomed.status == 202, doomed
    doomed_id = doomed.body["server"]["id"]

    for sid in ids:
        await wait_status(cloud, sid, "ACTIVE")
    errored = await wait_status(cloud, doomed_id, "ERROR")
    assert errored["fault"]["message"].startswith("No valid host was found.")
    for sid in ids[:2]:
        r = await cloud.delete(f"{SERVERS}/{sid}")
        assert r.status == 204, r
    for sid in ids[:2]:
        await wait_gone(cloud, sid)
    missing = str(uuid.uuid4())
    assert (await cloud.get(f"{SERVERS}/{missing}")).status == 404

    # Where the three survivors run, and what they hold, from the API (the user's view).
    flavor = (await cloud.get("/compute/v2.1/flavors/3")).body["flavor"]
    on_host: dict[str, int] = {}
    for sid in ids[2:]:
        server = (await cloud.get(f"{SERVERS}/{sid}", microversion="2.100")).body["server"]
        assert server["status"] == "ACTIVE"
        host = server["OS-EXT-SRV-ATTR:host"]
        on_host[host] = on_host.get(host, 0) + 1

    # A handler's counter moves just after its last write: give the last ones a moment.
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        text, samples = await scrape(cloud)
        settled = value(samples, "novalite_bus_messages_handled_total", topic="compute", method="terminate_instance")
        if settled == 2 or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)

    # API: by route template, method and status; ids never appear in any label.
    requests = "novalite_api_requests_total"
    assert value(samples, requests, route=SERVERS, method="POST", status="202") == 6
    # Builds by outcome, counted by the conductor: five ACTIVE, one with no valid host.
    assert value(samples, "novalite_builds_total", outcome="active") == 5
    assert value(samples, "novalite_builds_total", outcome="error") == 1
    assert value(samples, "novalite_build_duration_seconds_count", outcome="active") == 5
    assert value(samples, requests, route=SERVER, method="DELETE", status="204") == 2
    # The unknown id, and the one 404 that ended each wait_gone.
    assert value(samples, requests, route=SERVER, method="GET", status="404") == 3
    assert value(samples, requests, route="/compute/v2.1/flavors", method="POST", status="200") == 1
    assert value(samples, "novalite_api_request_duration_seconds_count", route=SERVERS, method="POST") == 6
    assert value(samples, "novalite_api_request_duration_seconds_bucket", route=SERVERS, method="POST", le="+Inf") == 6
    for sid in [*ids, doomed_id, missing]:
        assert sid not in text

    # Scheduler: five placed, one NoValidHost.
    assert value(samples, "novalite_scheduler_no_valid_host_total") == 1
    decisions = "novalite_scheduler_decision_duration_seconds_count"
    assert value(samples, decisions, outcome="placed") == 5
    assert value(samples, decisions, outcome="no_valid_host") == 1

    # Bus: by topic kind (never compute.hv-1) and method.
    handled = "novalite_bus_messages_handled_total"
    assert value(samples, handled, topic="conductor", method="build_instances") == 6
    assert value(samples, "novalite_bus_messages_sent_total", topic="conductor", method="build_instances") == 6
    # The scheduler's handler raised NoValidHost once: that message failed, the other five were handled.
    assert value(samples, handled, topic="scheduler", method="select_destinations") == 5
    assert value(samples, handled, topic="compute", method="build_and_run_instance") == 5
    assert value(samples, handled, topic="compute", method="terminate_instance") == 2
    assert value(samples, "novalite_bus_messages_sent_total", topic="compute", method="build_and_run_instance") == 5
    assert series(samples, "novalite_bus_messages_failed_total") == {
        frozenset({("topic", "scheduler"), ("method", "select_destinations")}): 1
    }
    assert all(dict(labels)["topic"] in {"conductor", "scheduler", "compute"} for labels in series(samples, handled))
    assert all(v == 0 for v in series(samples, "novalite_bus_calls_in_flight").values())

    # Per host, read from the database at scrape time: vCPUs used are the ACTIVE servers' vCPUs.
    used = {dict(k)["host"]: v for k, v in series(samples, "novalite_host_vcpus_used").items()}
    assert set(used) == set(cloud.node.compute_hosts())
    for host, vcpus in used.items():
        assert vcpus == on_host.get(host, 0) * flavor["vcpus"], (host, used, on_host)
    ram_used = {dict(k)["host"]: v for k, v in series(samples, "novalite_host_memory_used_bytes").items()}
    for host, ram in ram_used.items():
        assert ram == on_host.get(host, 0) * flavor["ram"] * 1024 * 1024
    for host in used:
        assert value(samples, "novalite_host_vcpus", host=host, node=host) == 16
        assert value(samples, "novalite_host_memory_bytes", host=host, node=host) == 32768 * 1024 * 1024
        assert value(samples, "novalite_host_vcpus_allocation_ratio", host=host, node=host) > 0
        assert value(samples, "novalite_service_up", host=host, binary="nova-compute") == 1
        age = value(samples, "novalite_service_heartbeat_age_seconds", host=host, binary="nova-compute")
        assert 0 <= age < cloud.rt.settings.service_down_time

    # Servers by vm_state: the three survivors and the one that found no host.
    assert series(samples, "novalite_servers") == {
        frozenset({("vm_state", "active")}): 3,
        frozenset({("vm_state", "error")}): 1,
    }


async def test_a_stopped_service_shows_down_and_its_heartbeat_ages(cloud: Cloud) -> None:
    """A service row whose heartbeat is older than service_down_time is reported down (0)."""
    down_time = cloud.rt.settings.service_down_time
    async with cloud.rt.db.begin() as conn:
        await conn.execute(
            t.services.insert().values(
                uuid=str(uuid.uuid4()),
                host="gone-1",
                binary="nova-compute",
                topic="compute",
                report_count=1,
                last_seen_up=utcnow() - timedelta(seconds=down_time + 30),
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )
    _, samples = await scrape(cloud)
    assert value(samples, "novalite_service_up", host="gone-1", binary="nova-compute") == 0
    assert value(samples, "novalite_service_heartbeat_age_seconds", host="gone-1", binary="nova-compute") >= (
        down_time + 30
    )
    assert value(samples, "novalite_service_up", host="hv-1", binary="nova-compute") == 1


async def test_metrics_can_be_turned_off(tmp_path: Any) -> None:
    """``metrics_enabled = false``: no /metrics route, the rest of the API unchanged."""
    cloud = await start_cloud(make_settings(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", metrics_enabled=False))
    try:
        async with cloud.session.get(f"{cloud.base}/metrics") as resp:
            assert resp.status == 404
        async with cloud.session.get(f"{cloud.base}/") as resp:
            assert resp.status == 200
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_only_allowed_networks_read_the_metrics(tmp_path: Any) -> None:
    """The metrics name hosts: a client outside ``metrics_allow_from`` gets 403 in Nova's format."""
    settings = make_settings(tmp_path, f"sqlite:///{tmp_path / 'n.db'}", metrics_allow_from=["10.0.0.0/8"])
    cloud = await start_cloud(settings)
    try:
        async with cloud.session.get(f"{cloud.base}/metrics") as resp:
            assert resp.status == 403
            body = await resp.json()
            assert "metrics_allow_from" in body["forbidden"]["message"]
            assert "hv" not in await resp.text()
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_two_clouds_in_one_process_count_apart(tmp_path: Any) -> None:
    """Each cloud has its own registry: requests to one never show on the other's page."""
    cloud = await start_cloud(make_settings(tmp_path / "a", f"sqlite:///{tmp_path / 'a.db'}"))
    other = await start_cloud(make_settings(tmp_path / "b", f"sqlite:///{tmp_path / 'b.db'}"))
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(3):
                async with session.get(f"{other.base}/compute/v2.1/servers") as resp:
                    assert resp.status == 401
        _, mine = await scrape(cloud)
        _, theirs = await scrape(other)
        requests = "novalite_api_requests_total"
        assert value(theirs, requests, route=SERVERS, method="GET", status="401") == 3
        assert value(mine, requests, route=SERVERS, method="GET", status="401") == 0
    finally:
        for c in (other, cloud):
            await c.session.close()
            await c.node.stop()


async def test_sql_statements_are_counted_when_asked(tmp_path: Any) -> None:
    """``count_sql_statements`` (for the benchmarks): the counter grows with the work done; off
    by default, where the page has no such series at all."""
    off = await start_cloud(make_settings(tmp_path / "off", f"sqlite:///{tmp_path / 'off.db'}"))
    try:
        _, samples = await scrape(off)
        assert not series(samples, "novalite_db_statements_total")
    finally:
        await off.session.close()
        await off.node.stop()
    cloud = await start_cloud(
        make_settings(tmp_path / "on", f"sqlite:///{tmp_path / 'on.db'}", count_sql_statements=True)
    )
    try:
        image = await make_image(cloud)
        _, before = await scrape(cloud)
        r = await create_server(cloud, image, name="counted")
        assert r.status == 202, r
        await wait_status(cloud, r.body["server"]["id"], "ACTIVE")
        _, after = await scrape(cloud)
        built = value(after, "novalite_db_statements_total") - value(before, "novalite_db_statements_total")
        # A boot and the polls that watched it: tens of statements, not zero, not thousands.
        assert 10 < built < 500, built
    finally:
        await cloud.session.close()
        await cloud.node.stop()
