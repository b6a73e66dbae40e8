"""The network API (Neutron v2.0 subset) over real HTTP, on SQLite and PostgreSQL.

Each test does what a Neutron client does and checks what it would see: bodies, status
codes, Neutron's error body, and that other projects' resources stay invisible.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.functional.helpers import Who, make_person

N = "/network/v2.0"


@pytest.fixture
async def alice(cloud: Any) -> Who:
    return await make_person(cloud, "alice", "alpha", "member")


@pytest.fixture
async def bob(cloud: Any) -> Who:
    return await make_person(cloud, "bob", "beta", "member")


async def make_network(cloud: Any, who: Any = "admin", **attrs: Any) -> dict[str, Any]:
    token = who if isinstance(who, str) else who.token
    r = await cloud.post(f"{N}/networks", {"network": {"name": "net", **attrs}}, token=token)
    assert r.status == 201, r
    return r.body["network"]


async def make_subnet(cloud: Any, network_id: str, cidr: str, who: Any = "admin", **attrs: Any) -> dict[str, Any]:
    token = who if isinstance(who, str) else who.token
    body = {"subnet": {"network_id": network_id, "cidr": cidr, "ip_version": 6 if ":" in cidr else 4, **attrs}}
    r = await cloud.post(f"{N}/subnets", body, token=token)
    assert r.status == 201, r
    return r.body["subnet"]


def error_type(r: Any) -> str:
    assert set(r.body) == {"NeutronError"}, r
    assert set(r.body["NeutronError"]) == {"type", "message", "detail"}
    return str(r.body["NeutronError"]["type"])


async def test_version_discovery_needs_no_token_and_catalog_names_neutron(cloud):
    r = await cloud.get("/network/", token=None)
    assert r.status == 200
    assert r.body["versions"][0]["id"] == "v2.0"
    assert r.body["versions"][0]["links"][0]["href"].endswith("/network/v2.0/")
    assert (await cloud.get(f"{N}/networks", token=None)).status == 401
    token = await cloud.login()
    r = await cloud.get("/identity/v3/auth/catalog", token=token)
    network = [s for s in r.body["catalog"] if s["type"] == "network"]
    assert network and network[0]["name"] == "neutron"
    assert all(ep["url"].endswith("/network") for ep in network[0]["endpoints"])
    root = await cloud.get("/", token=None)
    assert root.body["services"]["network"].endswith("/network/v2.0")


async def test_private_network_exists_shared_with_its_subnet(cloud, alice):
    r = await cloud.get(f"{N}/networks?name=private", token=alice.token)
    assert r.status == 200
    [net] = r.body["networks"]
    assert net["shared"] is True and net["status"] == "ACTIVE"
    assert "provider:network_type" not in net  # provider attributes are the admin's
    [subnet_id] = net["subnets"]
    s = await cloud.get(f"{N}/subnets/{subnet_id}", token=alice.token)
    assert s.status == 200
    assert s.body["subnet"]["cidr"] == cloud.rt.settings.network_cidr
    assert s.body["subnet"]["gateway_ip"] == "10.199.0.1"
    assert s.body["subnet"]["allocation_pools"] == [{"start": "10.199.0.2", "end": "10.199.0.254"}]
    # A member of any project puts a port on it.
    p = await cloud.post(f"{N}/ports", {"port": {"network_id": net["id"]}}, token=alice.token)
    assert p.status == 201, p
    assert p.body["port"]["project_id"] == alice.project_id
    # Choosing the address on another project's network is its owner's right.
    chosen = {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.199.0.200"}]}
    r = await cloud.post(f"{N}/ports", {"port": chosen}, token=alice.token)
    assert r.status == 403 and error_type(r) == "PolicyNotAuthorized"
    assert (await cloud.post(f"{N}/ports", {"port": chosen})).status == 201  # the admin project owns it
    # Nor may a project change the shared network itself.
    r = await cloud.put(f"{N}/networks/{net['id']}", {"network": {"name": "mine"}}, token=alice.token)
    assert r.status == 403
    assert (await cloud.delete(f"{N}/networks/{net['id']}", token=alice.token)).status == 403
    assert (await cloud.delete(f"{N}/subnets/{subnet_id}", token=alice.token)).status == 403


async def test_network_crud_and_provider_attributes_admin_only(cloud, alice):
    net = await make_network(cloud, alice, description="mine")
    assert net["project_id"] == net["tenant_id"] == alice.project_id
    assert net["admin_state_up"] is True and net["shared"] is False and net["subnets"] == []
    assert net["mtu"] == 1450 and net["port_security_enabled"] is True and net["router:external"] is False
    assert net["revision_number"] == 0 and net["created_at"].endswith("Z")
    r = await cloud.put(f"{N}/networks/{net['id']}", {"network": {"name": "renamed", "mtu": 1400}}, token=alice.token)
    assert r.status == 200, r
    assert r.body["network"]["name"] == "renamed" and r.body["network"]["revision_number"] == 1
    r = await cloud.post(
        f"{N}/networks",
        {"network": {"name": "p", "provider:network_type": "flat", "provider:physical_network": "lan"}},
        token=alice.token,
    )
    assert r.status == 403 and error_type(r) == "PolicyNotAuthorized"
    r = await cloud.post(f"{N}/networks", {"network": {"name": "s", "shared": True}}, token=alice.token)
    assert r.status == 403
    flat = await make_network(cloud, **{"provider:network_type": "flat", "provider:physical_network": "lan"})
    assert flat["provider:network_type"] == "flat" and flat["provider:physical_network"] == "lan"
    assert flat["mtu"] == 1500  # no encapsulation (a VXLAN's is 1450)
    r = await cloud.post(
        f"{N}/networks", {"network": {"provider:network_type": "flat", "provider:physical_network": "lan"}}
    )
    assert r.status == 409 and error_type(r) == "FlatNetworkInUse"
    vx = await make_network(cloud, **{"provider:network_type": "vxlan", "provider:segmentation_id": 4242})
    assert vx["provider:segmentation_id"] == 4242
    r = await cloud.post(
        f"{N}/networks", {"network": {"provider:network_type": "vxlan", "provider:segmentation_id": 4242}}
    )
    assert r.status == 409
    r = await cloud.post(f"{N}/networks", {"network": {"provider:network_type": "vlan"}})
    assert r.status == 400 and "vlan" in r.body["NeutronError"]["message"]
    shown = await cloud.get(f"{N}/networks/{net['id']}")  # an admin sees the tenant network's VXLAN segment
    assert shown.body["network"]["provider:network_type"] == "vxlan"
    assert shown.body["network"]["provider:segmentation_id"] >= 1
    assert (await cloud.delete(f"{N}/networks/{net['id']}", token=alice.token)).status == 204
    r = await cloud.get(f"{N}/networks/{net['id']}", token=alice.token)
    assert r.status == 404 and error_type(r) == "NetworkNotFound"
    assert net["id"] in r.body["NeutronError"]["message"]


async def test_other_projects_resources_are_not_found(cloud, alice, bob):
    net = await make_network(cloud, alice)
    subnet = await make_subnet(cloud, net["id"], "10.50.0.0/24", alice)
    port = (await cloud.post(f"{N}/ports", {"port": {"network_id": net["id"]}}, token=alice.token)).body["port"]
    for path, kind in (
        (f"networks/{net['id']}", "NetworkNotFound"),
        (f"subnets/{subnet['id']}", "SubnetNotFound"),
        (f"ports/{port['id']}", "PortNotFound"),
        (f"security-groups/{port['security_groups'][0]}", "SecurityGroupNotFound"),
    ):
        for method in ("GET", "DELETE"):
            r = await cloud.request(method, f"{N}/{path}", token=bob.token)
            assert r.status == 404 and error_type(r) == kind, (method, path, r)
        r = await cloud.put(
            f"{N}/{path}", {path.split("/")[0].rstrip("s").replace("-", "_"): {"name": "x"}}, token=bob.token
        )
        assert r.status == 404, (path, r)
    r = await cloud.post(f"{N}/ports", {"port": {"network_id": net["id"]}}, token=bob.token)
    assert r.status == 404 and error_type(r) == "NetworkNotFound"
    listed = await cloud.get(f"{N}/networks", token=bob.token)
    assert net["id"] not in [n["id"] for n in listed.body["networks"]]
    assert (await cloud.get(f"{N}/ports", token=bob.token)).body["ports"] == []


async def test_subnet_validation_names_the_field(cloud, alice):
    net = await make_network(cloud, alice)
    cases = [
        ({"cidr": "10.0.0.0/33"}, "cidr"),
        ({"cidr": "10.0.0.1/24"}, "cidr"),
        ({"cidr": "10.0.0.0/24", "gateway_ip": "not-an-ip"}, "gateway_ip"),
        ({"cidr": "10.0.0.0/24", "dns_nameservers": ["8.8.8.x"]}, "dns_nameservers"),
        ({"cidr": "10.0.0.0/24", "host_routes": [{"destination": "x", "nexthop": "10.0.0.9"}]}, "host_routes"),
        ({"cidr": "10.0.0.0/24", "ip_version": 6}, "ip_version 6"),
        ({"cidr": "10.0.0.0/24", "enable_dhcp": "maybe"}, "enable_dhcp"),
    ]
    for attrs, field in cases:
        body = {"subnet": {"network_id": net["id"], "ip_version": 4, **attrs}}
        r = await cloud.post(f"{N}/subnets", body, token=alice.token)
        assert r.status == 400, (attrs, r)
        assert field in r.body["NeutronError"]["message"], (attrs, r)
    r = await cloud.post(
        f"{N}/subnets",
        {
            "subnet": {
                "network_id": net["id"],
                "cidr": "10.0.0.0/24",
                "allocation_pools": [{"start": "10.0.1.2", "end": "10.0.1.9"}],
            }
        },
        token=alice.token,
    )
    assert r.status == 400 and error_type(r) == "OutOfBoundsAllocationPool"
    ok = await make_subnet(
        cloud,
        net["id"],
        "10.0.0.0/24",
        alice,
        dns_nameservers=["1.1.1.1"],
        host_routes=[{"destination": "192.168.0.0/16", "nexthop": "10.0.0.254"}],
        allocation_pools=[{"start": "10.0.0.10", "end": "10.0.0.20"}],
        enable_dhcp=False,
    )
    assert ok["allocation_pools"] == [{"start": "10.0.0.10", "end": "10.0.0.20"}]
    assert ok["dns_nameservers"] == ["1.1.1.1"] and ok["enable_dhcp"] is False and ok["gateway_ip"] == "10.0.0.1"
    r = await cloud.post(
        f"{N}/subnets",
        {"subnet": {"network_id": net["id"], "cidr": "10.0.0.128/25", "ip_version": 4}},
        token=alice.token,
    )
    assert r.status == 400 and "overlaps" in r.body["NeutronError"]["message"]
    v6 = await make_subnet(cloud, net["id"], "fd00:1::/64", alice, ipv6_address_mode="dhcpv6-stateful")
    assert v6["ip_version"] == 6 and v6["gateway_ip"] == "fd00:1::1"
    r = await cloud.put(f"{N}/subnets/{ok['id']}", {"subnet": {"cidr": "10.1.0.0/24"}}, token=alice.token)
    assert r.status == 400 and "cidr" in r.body["NeutronError"]["message"]
    r = await cloud.put(f"{N}/subnets/{ok['id']}", {"subnet": {"name": "s1", "dns_nameservers": []}}, token=alice.token)
    assert r.status == 200 and r.body["subnet"]["name"] == "s1" and r.body["subnet"]["dns_nameservers"] == []


async def test_ports_fixed_ips_and_conflicts(cloud, alice):
    net = await make_network(cloud, alice)
    v4 = await make_subnet(cloud, net["id"], "10.60.0.0/29", alice)  # .2 - .6
    v6 = await make_subnet(cloud, net["id"], "fd00:60::/64", alice)
    fixed = {"network_id": net["id"], "fixed_ips": [{"subnet_id": v4["id"], "ip_address": "10.60.0.5"}]}
    r = await cloud.post(f"{N}/ports", {"port": fixed}, token=alice.token)
    assert r.status == 201 and r.body["port"]["fixed_ips"] == [{"subnet_id": v4["id"], "ip_address": "10.60.0.5"}]
    r = await cloud.post(f"{N}/ports", {"port": {"network_id": net["id"], "name": "p1"}}, token=alice.token)
    assert r.status == 201, r
    port = r.body["port"]
    assert port["status"] == "DOWN" and port["mac_address"].startswith("fa:16:3e:")
    assert {ip["subnet_id"] for ip in port["fixed_ips"]} == {v4["id"], v6["id"]}
    assert "binding:host_id" not in port  # admin-only
    r = await cloud.post(f"{N}/ports", {"port": fixed}, token=alice.token)
    assert r.status == 409 and error_type(r) == "IpAddressAlreadyAllocated"
    assert "10.60.0.5" in r.body["NeutronError"]["message"]
    r = await cloud.post(
        f"{N}/ports", {"port": {"network_id": net["id"], "fixed_ips": [{"ip_address": "10.61.0.5"}]}}, token=alice.token
    )
    assert r.status == 400
    r = await cloud.post(
        f"{N}/ports", {"port": {"network_id": net["id"], "mac_address": port["mac_address"]}}, token=alice.token
    )
    assert r.status == 409 and error_type(r) == "MacAddressInUse"
    r = await cloud.post(f"{N}/ports", {"port": {"network_id": net["id"], "binding:host_id": "hv1"}}, token=alice.token)
    assert r.status == 403
    r = await cloud.post(f"{N}/ports", {"port": {"network_id": net["id"], "mac_address": "zz"}}, token=alice.token)
    assert r.status == 400 and "mac_address" in r.body["NeutronError"]["message"]
    # Use up the v4 pool (.2-.6: two taken), then the next port is refused.
    for _ in range(3):
        assert (await cloud.post(f"{N}/ports", {"port": {"network_id": net["id"]}}, token=alice.token)).status == 201
    r = await cloud.post(f"{N}/ports", {"port": {"network_id": net["id"]}}, token=alice.token)
    assert r.status == 409 and error_type(r) == "IpAddressGenerationFailure"
    # A network with ports cannot go; its subnet neither.
    r = await cloud.delete(f"{N}/networks/{net['id']}", token=alice.token)
    assert r.status == 409 and error_type(r) == "NetworkInUse"
    r = await cloud.delete(f"{N}/subnets/{v4['id']}", token=alice.token)
    assert r.status == 409 and error_type(r) == "SubnetInUse"
    # Update: move the port's v4 address, pairs, admin-only binding.
    r = await cloud.put(
        f"{N}/ports/{port['id']}",
        {
            "port": {
                "fixed_ips": [{"subnet_id": v4["id"]}],
                "allowed_address_pairs": [{"ip_address": "10.60.0.99"}],
                "device_id": "dev",
            }
        },
        token=alice.token,
    )
    assert r.status == 200, r
    assert len(r.body["port"]["fixed_ips"]) == 1 and r.body["port"]["device_id"] == "dev"
    assert r.body["port"]["allowed_address_pairs"] == [{"ip_address": "10.60.0.99"}]
    r = await cloud.put(f"{N}/ports/{port['id']}", {"port": {"binding:host_id": "hv1"}})
    assert r.status == 200 and r.body["port"]["binding:host_id"] == "hv1"
    ports = (await cloud.get(f"{N}/ports?network_id={net['id']}", token=alice.token)).body["ports"]
    for p in ports:
        assert (await cloud.delete(f"{N}/ports/{p['id']}", token=alice.token)).status == 204
    assert (await cloud.delete(f"{N}/networks/{net['id']}", token=alice.token)).status == 204
    assert (await cloud.get(f"{N}/subnets/{v4['id']}", token=alice.token)).status == 404


async def test_security_groups_default_and_rules(cloud, alice, bob):
    r = await cloud.get(f"{N}/security-groups", token=alice.token)
    assert r.status == 200
    [default] = r.body["security_groups"]
    assert default["name"] == "default" and default["project_id"] == alice.project_id
    rules = {(x["direction"], x["ethertype"], x["remote_group_id"]) for x in default["security_group_rules"]}
    assert rules == {
        ("egress", "IPv4", None),
        ("egress", "IPv6", None),
        ("ingress", "IPv4", default["id"]),
        ("ingress", "IPv6", default["id"]),
    }
    again = await cloud.get(f"{N}/security-groups", token=alice.token)
    assert [g["id"] for g in again.body["security_groups"]] == [default["id"]]  # one default, not two
    web = (await cloud.post(f"{N}/security-groups", {"security_group": {"name": "web"}}, token=alice.token)).body
    group = web["security_group"]
    assert {x["direction"] for x in group["security_group_rules"]} == {"egress"}
    rule = {
        "security_group_id": group["id"],
        "direction": "ingress",
        "protocol": "tcp",
        "port_range_min": 22,
        "port_range_max": 22,
        "remote_ip_prefix": "0.0.0.0/0",
    }
    r = await cloud.post(f"{N}/security-group-rules", {"security_group_rule": rule}, token=alice.token)
    assert r.status == 201, r
    assert r.body["security_group_rule"]["ethertype"] == "IPv4"
    r2 = await cloud.post(f"{N}/security-group-rules", {"security_group_rule": rule}, token=alice.token)
    assert r2.status == 409 and error_type(r2) == "SecurityGroupRuleExists"
    bad = {**rule, "port_range_min": 30, "port_range_max": 20}
    r3 = await cloud.post(f"{N}/security-group-rules", {"security_group_rule": bad}, token=alice.token)
    assert r3.status == 400 and error_type(r3) == "SecurityGroupInvalidPortRange"
    r3 = await cloud.post(
        f"{N}/security-group-rules", {"security_group_rule": {**rule, "direction": "in"}}, token=alice.token
    )
    assert r3.status == 400 and "direction" in r3.body["NeutronError"]["message"]
    r3 = await cloud.post(
        f"{N}/security-group-rules", {"security_group_rule": {**rule, "ethertype": "IPv6"}}, token=alice.token
    )
    assert r3.status == 400
    r4 = await cloud.post(
        f"{N}/security-group-rules",
        {"security_group_rule": {**rule, "port_range_min": 80, "port_range_max": 80}},
        token=bob.token,
    )
    assert r4.status == 404 and error_type(r4) == "SecurityGroupNotFound"
    rule_id = r.body["security_group_rule"]["id"]
    assert (await cloud.get(f"{N}/security-group-rules/{rule_id}", token=bob.token)).status == 404
    assert (await cloud.delete(f"{N}/security-group-rules/{rule_id}", token=alice.token)).status == 204
    r = await cloud.delete(f"{N}/security-groups/{default['id']}", token=alice.token)
    assert r.status == 409 and error_type(r) == "SecurityGroupCannotRemoveDefault"
    net = await make_network(cloud, alice)
    await make_subnet(cloud, net["id"], "10.70.0.0/24", alice)
    p = await cloud.post(
        f"{N}/ports", {"port": {"network_id": net["id"], "security_groups": [group["id"]]}}, token=alice.token
    )
    assert p.status == 201 and p.body["port"]["security_groups"] == [group["id"]]
    r = await cloud.delete(f"{N}/security-groups/{group['id']}", token=alice.token)
    assert r.status == 409 and error_type(r) == "SecurityGroupInUse"
    r = await cloud.post(
        f"{N}/ports",
        {"port": {"network_id": net["id"], "port_security_enabled": False, "security_groups": [group["id"]]}},
        token=alice.token,
    )
    assert r.status == 409
    r = await cloud.post(
        f"{N}/ports", {"port": {"network_id": net["id"], "port_security_enabled": False}}, token=alice.token
    )
    assert r.status == 201 and r.body["port"]["security_groups"] == []


async def test_list_conventions(cloud, alice):
    made = [await make_network(cloud, alice, name=f"n{i}", admin_state_up=i % 2 == 0) for i in range(5)]
    r = await cloud.get(f"{N}/networks?name=n1&name=n3", token=alice.token)
    assert sorted(n["name"] for n in r.body["networks"]) == ["n1", "n3"]
    r = await cloud.get(f"{N}/networks?admin_state_up=False&shared=false", token=alice.token)
    assert sorted(n["name"] for n in r.body["networks"]) == ["n1", "n3"]
    r = await cloud.get(f"{N}/networks?fields=id&fields=name", token=alice.token)
    assert all(set(n) == {"id", "name"} for n in r.body["networks"])
    r = await cloud.get(f"{N}/networks?sort_key=name&sort_dir=desc&shared=false", token=alice.token)
    assert [n["name"] for n in r.body["networks"]] == ["n4", "n3", "n2", "n1", "n0"]
    r = await cloud.get(f"{N}/networks?sort_key=bogus", token=alice.token)
    assert r.status == 400 and "bogus" in r.body["NeutronError"]["message"]
    seen: list[str] = []
    url = f"{N}/networks?limit=2&sort_key=name&sort_dir=asc&shared=false"
    while url:
        page = await cloud.get(url, token=alice.token)
        assert page.status == 200, page
        assert len(page.body["networks"]) <= 2
        seen += [n["name"] for n in page.body["networks"]]
        nxt = [link["href"] for link in page.body.get("networks_links", []) if link["rel"] == "next"]
        url = nxt[0] if nxt else ""
    assert seen == ["n0", "n1", "n2", "n3", "n4"]
    r = await cloud.get(f"{N}/networks?limit=2&marker={made[0]['id']}&sort_key=name&shared=false", token=alice.token)
    assert [n["name"] for n in r.body["networks"]] == ["n1", "n2"]
    assert {link["rel"] for link in r.body["networks_links"]} == {"next", "previous"}
    r = await cloud.get(f"{N}/networks?limit=x", token=alice.token)
    assert r.status == 400 and "limit" in r.body["NeutronError"]["message"]


async def test_tags(cloud, alice, bob):
    net = await make_network(cloud, alice)
    base = f"{N}/networks/{net['id']}/tags"
    assert (await cloud.put(f"{base}/red", token=alice.token)).status == 201
    assert (await cloud.put(base, {"tags": ["blue", "green"]}, token=alice.token)).body == {"tags": ["blue", "green"]}
    assert (await cloud.get(f"{base}/blue", token=alice.token)).status == 204
    r = await cloud.get(f"{base}/red", token=alice.token)
    assert r.status == 404 and error_type(r) == "TagNotFound"
    assert (await cloud.get(f"{N}/networks/{net['id']}", token=alice.token)).body["network"]["tags"] == [
        "blue",
        "green",
    ]
    r = await cloud.get(f"{N}/networks?tags=blue,green", token=alice.token)
    assert [n["id"] for n in r.body["networks"]] == [net["id"]]
    r = await cloud.get(f"{N}/networks?not-tags-any=blue&shared=false", token=alice.token)
    assert r.body["networks"] == []
    assert (await cloud.delete(f"{base}/blue", token=alice.token)).status == 204
    assert (await cloud.get(base, token=alice.token)).body == {"tags": ["green"]}
    assert (await cloud.delete(base, token=alice.token)).status == 204
    assert (await cloud.get(base, token=alice.token)).body == {"tags": []}
    assert (await cloud.get(base, token=bob.token)).status == 404


async def test_quotas(cloud, alice):
    r = await cloud.get(f"{N}/quotas/{alice.project_id}", token=alice.token)
    assert r.status == 200 and r.body["quota"]["network"] == 100 and r.body["quota"]["port"] == 500
    assert (
        await cloud.put(f"{N}/quotas/{alice.project_id}", {"quota": {"network": 1}}, token=alice.token)
    ).status == 403
    r = await cloud.put(f"{N}/quotas/{alice.project_id}", {"quota": {"network": 1}})
    assert r.status == 200 and r.body["quota"]["network"] == 1
    r = await cloud.put(f"{N}/quotas/{alice.project_id}", {"quota": {"network": "x"}})
    assert r.status == 400 and "network" in r.body["NeutronError"]["message"]
    await make_network(cloud, alice)
    r = await cloud.post(f"{N}/networks", {"network": {"name": "two"}}, token=alice.token)
    assert r.status == 409 and error_type(r) == "OverQuota"
    d = await cloud.get(f"{N}/quotas/{alice.project_id}/details", token=alice.token)
    assert d.body["quota"]["network"] == {"limit": 1, "used": 1, "reserved": 0}
    listed = await cloud.get(f"{N}/quotas")
    assert alice.project_id in [q["project_id"] for q in listed.body["quotas"]]
    assert (await cloud.delete(f"{N}/quotas/{alice.project_id}")).status == 204
    assert (await cloud.post(f"{N}/networks", {"network": {"name": "two"}}, token=alice.token)).status == 201


async def test_bad_bodies_and_unknown_routes_are_neutron_errors(cloud, alice):
    r = await cloud.post(f"{N}/networks", {"net": {}}, token=alice.token)
    assert r.status == 400 and error_type(r) == "HTTPBadRequest"
    r = await cloud.post(f"{N}/networks", {"network": {"name": 5}}, token=alice.token)
    assert r.status == 400 and "name" in r.body["NeutronError"]["message"]
    r = await cloud.post(f"{N}/networks", {"network": {"admin_state_up": "sure"}}, token=alice.token)
    assert r.status == 400 and "admin_state_up" in r.body["NeutronError"]["message"]
    r = await cloud.get(f"{N}/routers", token=alice.token)
    assert r.status == 404 and error_type(r) == "HTTPNotFound"


async def test_server_ports_land_on_private(cloud):
    """A server created the old way gets a network-service port on ``private``."""
    from tests.functional.helpers import make_image, wait_status

    image = await make_image(cloud)
    body = {"server": {"name": "vm", "imageRef": image, "flavorRef": "1", "networks": "auto"}}
    r = await cloud.post("/compute/v2.1/servers", json=body, microversion="2.100")
    assert r.status == 202, r
    server = await wait_status(cloud, r.body["server"]["id"], "ACTIVE")
    [addr] = server["addresses"]["private"]
    ports = (await cloud.get(f"{N}/ports?device_id={server['id']}")).body["ports"]
    assert len(ports) == 1
    port = ports[0]
    assert port["device_owner"] == "compute:nova" and port["fixed_ips"][0]["ip_address"] == addr["addr"]
    assert port["mac_address"] == addr["OS-EXT-IPS-MAC:mac_addr"]
    private = (await cloud.get(f"{N}/networks?name=private")).body["networks"][0]
    assert port["network_id"] == private["id"]
    r = await cloud.delete(f"{N}/networks/{private['id']}")
    assert r.status == 409 and error_type(r) == "NetworkInUse"
    # Renamed, the network's new name labels the server's addresses.
    assert (await cloud.put(f"{N}/networks/{private['id']}", {"network": {"name": "lab"}})).status == 200
    shown = await cloud.get(f"/compute/v2.1/servers/{server['id']}", microversion="2.100")
    assert list(shown.body["server"]["addresses"]) == ["lab"]
    assert (await cloud.delete(f"/compute/v2.1/servers/{server['id']}")).status == 204


async def test_a_reader_reads_but_changes_nothing(cloud, alice):
    reader = await make_person(cloud, "rita", "alpha", "reader")
    net = await make_network(cloud, alice)
    assert (await cloud.get(f"{N}/networks/{net['id']}", token=reader.token)).status == 200
    r = await cloud.post(f"{N}/networks", {"network": {"name": "r"}}, token=reader.token)
    assert r.status == 403 and error_type(r) == "PolicyNotAuthorized"
    r = await cloud.delete(f"{N}/networks/{net['id']}", token=reader.token)
    assert r.status == 403
    assert (await cloud.get(f"{N}/networks/{net['id']}", token=alice.token)).status == 200
