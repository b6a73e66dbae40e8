"""IP allocation is atomic in the database: concurrent port creates never share an address."""

from __future__ import annotations

import asyncio
import ipaddress
from typing import Any

import pytest

N = "/network/v2.0"


@pytest.mark.postgres
@pytest.mark.parametrize("db_url", ["postgres"], indirect=True)
async def test_thirty_concurrent_ports_on_a_slash_27(cloud: Any) -> None:
    """29 addresses (.2-.30) for 30 creates: 29 distinct addresses, one 409 IpAddressGenerationFailure."""
    r = await cloud.post(f"{N}/networks", {"network": {"name": "race"}})
    net = r.body["network"]
    r = await cloud.post(f"{N}/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.77.0.0/27", "ip_version": 4}})
    assert r.status == 201, r
    await cloud.admin_token()
    results = await asyncio.gather(*(cloud.post(f"{N}/ports", {"port": {"network_id": net["id"]}}) for _ in range(30)))
    created = [x for x in results if x.status == 201]
    refused = [x for x in results if x.status != 201]
    addresses = [x.body["port"]["fixed_ips"][0]["ip_address"] for x in created]
    assert len(created) == 29
    assert len(set(addresses)) == 29
    assert {ipaddress.ip_address(a) for a in addresses} == {ipaddress.ip_address("10.77.0.0") + i for i in range(2, 31)}
    assert [(x.status, x.body["NeutronError"]["type"]) for x in refused] == [(409, "IpAddressGenerationFailure")]
    listed = (await cloud.get(f"{N}/ports?network_id={net['id']}")).body["ports"]
    assert len(listed) == 29  # the refused create left no port behind


async def test_concurrent_requests_for_one_address(cloud: Any) -> None:
    """Ten creates asking for the same fixed IP: one gets it, nine get 409 IpAddressAlreadyAllocated."""
    net = (await cloud.post(f"{N}/networks", {"network": {"name": "one"}})).body["network"]
    subnet = (await cloud.post(f"{N}/subnets", {"subnet": {"network_id": net["id"], "cidr": "10.78.0.0/24"}})).body[
        "subnet"
    ]
    await cloud.admin_token()
    want = {"network_id": net["id"], "fixed_ips": [{"subnet_id": subnet["id"], "ip_address": "10.78.0.9"}]}
    results = await asyncio.gather(*(cloud.post(f"{N}/ports", {"port": want}) for _ in range(10)))
    assert sorted(x.status for x in results) == [201] + [409] * 9
    assert {x.body["NeutronError"]["type"] for x in results if x.status == 409} == {"IpAddressAlreadyAllocated"}


async def test_concurrent_first_uses_make_one_default_group(cloud: Any) -> None:
    """A new project's first calls racing each other agree on one ``default`` security group."""
    from tests.functional.helpers import make_person

    carol = await make_person(cloud, "carol", "gamma", "member")
    results = await asyncio.gather(*(cloud.get(f"{N}/security-groups", token=carol.token) for _ in range(10)))
    assert all(r.status == 200 for r in results), results
    ids = {g["id"] for r in results for g in r.body["security_groups"]}
    assert len(ids) == 1
    rules = (await cloud.get(f"{N}/security-group-rules", token=carol.token)).body["security_group_rules"]
    assert len(rules) == 4
