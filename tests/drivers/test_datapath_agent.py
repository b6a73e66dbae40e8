"""The agent's data-path methods, reached over the bus as a controller would cast them:
``update_port_security`` (a plain-JSON port) applies to the running guest's port at once,
``set_overlay_peers`` hands the peers to the driver. Fake driver, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Any

from novalite.context import RequestContext
from tests.functional.helpers import create_server, make_image, wait_status


async def test_agent_applies_port_security_and_peers_over_the_bus(cloud: Any) -> None:
    image = await make_image(cloud)
    r = await cloud.post(
        "/network/v2.0/networks", {"network": {"name": "dp", "provider:network_type": "vxlan"}}, token="admin"
    )
    assert r.status == 201, r
    net = r.body["network"]
    r = await cloud.post(
        "/network/v2.0/subnets",
        {"subnet": {"network_id": net["id"], "cidr": "10.93.0.0/24", "ip_version": 4}},
        token="admin",
    )
    assert r.status == 201, r
    r = await create_server(cloud, image, networks=[{"uuid": net["id"]}])
    assert r.status == 202, r
    sid = r.body["server"]["id"]
    await wait_status(cloud, sid, "ACTIVE")

    agent, guest = next((a, a.driver.guests[sid]) for a in cloud.rt.services["ComputeAgent"] if sid in a.driver.guests)
    port = guest.instance.ports[0]
    assert port.network_id == net["id"] and port.id in agent.driver.plugged
    rule = {
        "direction": "ingress",
        "ethertype": "IPv4",
        "protocol": "tcp",
        "port_range_min": 5432,
        "port_range_max": 5432,
        "remote_ip_prefix": "10.93.0.0/24",
    }
    payload = dataclasses.asdict(port)
    payload["security_rules"] = [*payload["security_rules"], rule]
    payload["some_future_field"] = 1  # tolerated: the agent keeps the fields it knows
    ctx = RequestContext.admin()
    topic = f"compute.{agent.host}"
    start = time.monotonic()
    await cloud.rt.bus.cast(
        ctx, topic, "update_port_security", instance=dataclasses.asdict(guest.instance), port=payload
    )
    while rule not in agent.driver.plugged[port.id]["security_rules"]:
        assert time.monotonic() - start < 1.0, "the rule did not reach the host within a second"
        await asyncio.sleep(0.01)

    await cloud.rt.bus.cast(ctx, topic, "set_overlay_peers", network_id=net["id"], vni=7, peers=["192.0.2.9"])
    while net["id"] not in agent.driver.overlay_peers:
        assert time.monotonic() - start < 5.0
        await asyncio.sleep(0.01)
    assert agent.driver.overlay_peers[net["id"]] == {"vni": 7, "peers": ["192.0.2.9"]}
