"""VXLAN overlay peers (issue 12): each host learns, from the conductor, the tunnel endpoints
of the other hosts that have servers on the same VXLAN network — and forgets them when they
go. On the fake driver (it records what it is told), SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from novalite.config import Settings
from novalite.context import RequestContext
from novalite.db import schema as t
from tests.conftest import make_settings
from tests.functional.helpers import create_server, make_image, make_person, wait_gone, wait_status

N = "/network/v2.0"
VNI = 4242


@pytest.fixture
def cloud_settings(tmp_path: Any, db_url: str) -> Settings:
    # The periodic sync runs once at start (nothing to send) and then waits: each test runs
    # the sync itself, so what a round sends is exactly what changed since the last one.
    return make_settings(tmp_path, db_url, overlay_sync_interval=3600)


async def _endpoints(cloud: Any) -> dict[str, str]:
    """Give each fake host its own tunnel endpoint and have its agent report it."""
    ips = {}
    for n, agent in enumerate(sorted(cloud.rt.services["ComputeAgent"], key=lambda a: a.host), 1):
        ips[agent.host] = agent.driver.options["overlay_local_ip"] = f"192.0.2.{n}"
        await agent._report(RequestContext.admin(), resources=True)
    return ips


async def _vxlan(cloud: Any, admin: Any) -> str:
    body = {
        "network": {
            "name": "overlay",
            "shared": True,
            "provider:network_type": "vxlan",
            "provider:segmentation_id": VNI,
        }
    }
    r = await cloud.post(f"{N}/networks", body, token=admin.token)
    assert r.status == 201, r
    net = r.body["network"]["id"]
    sub = {"subnet": {"network_id": net, "cidr": "10.70.0.0/24", "ip_version": 4}}
    assert (await cloud.post(f"{N}/subnets", sub, token=admin.token)).status == 201
    return str(net)


def _peers(cloud: Any) -> dict[str, Any]:
    return {a.host: a.driver.overlay_peers for a in cloud.rt.services["ComputeAgent"]}


async def _settle(cloud: Any, want: dict[str, Any]) -> None:
    for _ in range(100):  # the casts are delivered by the in-process bus a moment later
        if _peers(cloud) == want:
            return
        await asyncio.sleep(0.02)
    assert _peers(cloud) == want


async def test_hosts_learn_and_forget_their_overlay_peers(cloud):
    admin = await make_person(cloud, "admin", "admin", "admin")
    ips = await _endpoints(cloud)
    async with cloud.rt.db.connect() as conn:  # what os-hypervisors shows as host_ip
        assert dict(list(await conn.execute(sa.select(t.compute_nodes.c.host, t.compute_nodes.c.host_ip)))) == ips
    h1, h2 = sorted(ips)
    net = await _vxlan(cloud, admin)
    image = await make_image(cloud)
    sync = cloud.rt.services["ConductorManager"][0].overlays

    servers = {}
    for host in (h1, h2):
        r = await create_server(cloud, image, token=admin.token, networks=[{"uuid": net}], host=host, mv="2.74")
        assert r.status == 202, r
        servers[host] = r.body["server"]["id"]
        await wait_status(cloud, servers[host], "ACTIVE", token=admin.token)
    # a server on a flat network (the lab's LAN) joins no overlay
    body = {"network": {"name": "lan", "provider:network_type": "flat", "provider:physical_network": "physnet1"}}
    lan = (await cloud.post(f"{N}/networks", body, token=admin.token)).body["network"]["id"]
    sub = {"subnet": {"network_id": lan, "cidr": "192.168.50.0/24", "ip_version": 4}}
    assert (await cloud.post(f"{N}/subnets", sub, token=admin.token)).status == 201
    r = await create_server(cloud, image, token=admin.token, networks=[{"uuid": lan}], host=h1, mv="2.74")
    await wait_status(cloud, r.body["server"]["id"], "ACTIVE", token=admin.token)

    assert await sync.sync_once() == 2
    await _settle(cloud, {h1: {net: {"vni": VNI, "peers": [ips[h2]]}}, h2: {net: {"vni": VNI, "peers": [ips[h1]]}}})
    assert await sync.sync_once() == 0  # nothing changed: nothing sent

    # the server on h2 goes: h1 reaches nobody, and h2, off the overlay, is told so once
    assert (await cloud.delete(f"/compute/v2.1/servers/{servers[h2]}", token=admin.token)).status == 204
    await wait_gone(cloud, servers[h2])
    assert await sync.sync_once() == 2
    await _settle(cloud, {h1: {net: {"vni": VNI, "peers": []}}, h2: {net: {"vni": VNI, "peers": []}}})
    assert await sync.sync_once() == 0


async def test_an_agent_that_forgot_gets_everything_again(cloud):
    """A restarted agent's driver forgets its peers: the periodic full resend restores them."""
    admin = await make_person(cloud, "admin", "admin", "admin")
    ips = await _endpoints(cloud)
    h1, h2 = sorted(ips)
    net = await _vxlan(cloud, admin)
    image = await make_image(cloud)
    for host in (h1, h2):
        r = await create_server(cloud, image, token=admin.token, networks=[{"uuid": net}], host=host, mv="2.74")
        await wait_status(cloud, r.body["server"]["id"], "ACTIVE", token=admin.token)
    sync = cloud.rt.services["ConductorManager"][0].overlays
    await sync.sync_once()
    want = {h1: {net: {"vni": VNI, "peers": [ips[h2]]}}, h2: {net: {"vni": VNI, "peers": [ips[h1]]}}}
    await _settle(cloud, want)
    for agent in cloud.rt.services["ComputeAgent"]:
        agent.driver.overlay_peers.clear()
    assert await sync.sync_once() == 0  # not due yet
    sync._last_full = 0.0  # the full resend is due (every resend_every seconds)
    assert await sync.sync_once() == 2
    await _settle(cloud, want)
