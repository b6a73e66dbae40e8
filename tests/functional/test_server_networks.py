"""Nova's side of the network service (issue 12): a create's ``networks`` and
``security_groups``, ports bound and released, the agent's port payload, addresses,
``/ips``, ``os-interface`` and the security-group actions, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.functional.helpers import Who, create_server, make_image, make_person, wait_gone, wait_status

N = "/network/v2.0"
S = "/compute/v2.1/servers"


@pytest.fixture
async def alice(cloud: Any) -> Who:
    return await make_person(cloud, "alice", "alpha", "member")


@pytest.fixture
async def bob(cloud: Any) -> Who:
    return await make_person(cloud, "bob", "beta", "member")


async def network(cloud: Any, who: Who, name: str, cidr: str | None = None, **attrs: Any) -> dict[str, Any]:
    r = await cloud.post(f"{N}/networks", {"network": {"name": name, **attrs}}, token=who.token)
    assert r.status == 201, r
    net = r.body["network"]
    if cidr:
        r = await cloud.post(
            f"{N}/subnets", {"subnet": {"network_id": net["id"], "cidr": cidr, "ip_version": 4}}, token=who.token
        )
        assert r.status == 201, r
        net["subnet"] = r.body["subnet"]
    return net


async def port(cloud: Any, who: Who, network_id: str, **attrs: Any) -> dict[str, Any]:
    r = await cloud.post(f"{N}/ports", {"port": {"network_id": network_id, **attrs}}, token=who.token)
    assert r.status == 201, r
    return r.body["port"]


async def boot(cloud: Any, who: Who, image: str, networks: Any, mv: str = "2.100", **extra: Any) -> Any:
    return await create_server(cloud, image, token=who.token, mv=mv, networks=networks, **extra)


def message(r: Any) -> str:
    ((_kind, body),) = r.body.items()
    return str(body["message"])


def agent_guest(cloud: Any, sid: str) -> Any:
    for agent in cloud.rt.services["ComputeAgent"]:
        if sid in agent.driver.guests:
            return agent.driver.guests[sid]
    raise AssertionError(f"no guest {sid}")


async def test_create_on_networks_and_ports_then_delete_keeps_the_users_port(cloud, alice):
    image = await make_image(cloud)
    net = await network(cloud, alice, "blue", "10.20.0.0/24")
    mine = await port(cloud, alice, net["id"], name="keep-me")
    nics = [
        {"uuid": net["id"], "fixed_ip": "10.20.0.77", "tag": "first"},
        {"port": mine["id"], "tag": "second"},
    ]
    r = await boot(cloud, alice, image, nics)
    assert r.status == 202, r
    assert r.body["server"]["security_groups"] == [{"name": "default"}]
    sid = r.body["server"]["id"]
    server = await wait_status(cloud, sid, "ACTIVE", token=alice.token)
    blue = server["addresses"]["blue"]
    assert [a["addr"] for a in blue] == ["10.20.0.77", mine["fixed_ips"][0]["ip_address"]]
    assert blue[1]["OS-EXT-IPS-MAC:mac_addr"] == mine["mac_address"]
    assert all(a["OS-EXT-IPS:type"] == "fixed" and a["version"] == 4 for a in blue)
    assert server["security_groups"] == [{"name": "default"}, {"name": "default"}]  # per port, as Nova

    ports = (await cloud.get(f"{N}/ports?device_id={sid}", token=alice.token)).body["ports"]
    assert {p["device_owner"] for p in ports} == {"compute:nova"}
    assert {p["project_id"] for p in ports} == {alice.project_id}
    made = next(p for p in ports if p["id"] != mine["id"])

    # What the agent got: the network's attributes, resolved rules, the tags, in NIC order.
    guest = agent_guest(cloud, sid)
    first, second = guest.instance.ports
    assert (first.id, first.tag, first.ip) == (made["id"], "first", "10.20.0.77")
    assert (second.id, second.tag) == (mine["id"], "second")
    assert first.network_id == net["id"] and first.network_type == "vxlan" and first.mtu == 1450
    assert first.segmentation_id and first.physical_network is None and first.port_security_enabled
    assert first.prefix_len == 24 and first.gateway == "10.20.0.1"
    ingress = sorted(r["remote_ip_prefix"] for r in first.security_rules if r["direction"] == "ingress")
    assert ingress == sorted(["10.20.0.77/32", mine["fixed_ips"][0]["ip_address"] + "/32"])
    egress = [r for r in first.security_rules if r["direction"] == "egress"]
    assert {r["ethertype"] for r in egress} == {"IPv4", "IPv6"} and all(r["remote_ip_prefix"] is None for r in egress)

    assert (await cloud.delete(f"{S}/{sid}", token=alice.token)).status == 204
    await wait_gone(cloud, sid)
    kept = (await cloud.get(f"{N}/ports/{mine['id']}", token=alice.token)).body["port"]
    assert kept["device_id"] == "" and kept["device_owner"] == "" and kept["status"] == "DOWN"
    assert (await cloud.get(f"{N}/ports/{made['id']}", token=alice.token)).status == 404
    # The kept port boots another server.
    r = await boot(cloud, alice, image, [{"port": mine["id"]}])
    assert r.status == 202, r


async def test_create_refusals_in_novas_words(cloud, alice, bob):
    image = await make_image(cloud)
    net = await network(cloud, alice, "blue", "10.20.0.0/24")
    bare = await network(cloud, alice, "bare")
    theirs = await network(cloud, bob, "theirs", "10.30.0.0/24")
    their_port = await port(cloud, bob, theirs["id"])
    used = await port(cloud, alice, net["id"], fixed_ips=[{"ip_address": "10.20.0.9"}], device_id="something")
    missing = "5b6d1f7e-1111-4c59-9f4b-1d3a0e000000"
    cases = [
        ([{"uuid": missing}], 400, f"Network {missing} could not be found."),
        ([{"uuid": theirs["id"]}], 400, f"Network {theirs['id']} could not be found."),
        ([{"port": their_port["id"]}], 400, f"Port id {their_port['id']} could not be found."),
        ([{"port": used["id"]}], 409, f"Port {used['id']} is still in use."),
        ([{"uuid": bare["id"]}], 400, f"Network {bare['id']} requires a subnet in order to boot instances on."),
        (
            [{"uuid": net["id"], "fixed_ip": "10.20.0.9"}],
            400,
            "Fixed IP address 10.20.0.9 is already in use on instance something.",
        ),
        ([{"uuid": net["id"], "fixed_ip": "10.20.0.1"}], 400, "Fixed IP 10.20.0.1 is already in use."),  # gateway
        (
            [{"uuid": net["id"], "fixed_ip": "10.99.0.9"}],
            400,
            f"Invalid input received: Fixed IP 10.99.0.9 is not a valid ip address for network {net['id']}.",
        ),
        (
            [{"port": used["id"], "fixed_ip": "10.20.0.5"}],
            400,
            f"Specified Fixed IP '10.20.0.5' cannot be used with port '{used['id']}': the two cannot be "
            "specified together.",
        ),
        (
            [{"port": used["id"]}, {"port": used["id"]}],
            400,
            f"Port ID '{used['id']}' was specified twice: you cannot attach a port multiple times.",
        ),
        ([{"fixed_ip": "10.20.0.5"}], 400, "Bad network format: missing 'uuid'"),
        ("auto", 409, "Multiple possible networks found, use a Network ID to be more specific."),
    ]
    for networks, status, text in cases:
        r = await boot(cloud, alice, image, networks)
        assert (r.status, message(r)) == (status, text), networks
    r = await boot(cloud, alice, image, [{"uuid": net["id"], "fixed_ip": "10.20.0.50"}], max_count=2)
    assert r.status == 400
    assert message(r) == "Failed to launch instances: max_count cannot be greater than 1 if an fixed_ip is specified."
    r = await boot(cloud, alice, image, [{"port": used["id"]}], max_count=2)
    assert r.status == 400 and "single configured port ID" in message(r)
    r = await boot(cloud, alice, image, [{"uuid": "not-a-uuid"}])
    assert r.status == 400 and "uuid" in message(r)  # 2.37+: the schema checks the format
    r = await boot(cloud, alice, image, [{"uuid": "not-a-uuid"}], mv="2.36")
    assert message(r) == "Bad networks format: network uuid is not in proper format (not-a-uuid)"
    r = await boot(cloud, alice, image, "none", security_groups=[{"name": "nope"}])
    assert (r.status, message(r)) == (400, "Security group nope not found.")
    # Nothing was left behind by the refused creates.
    ports = (await cloud.get(f"{N}/ports", token=alice.token)).body["ports"]
    assert {p["id"] for p in ports} == {used["id"]}


async def test_microversion_boundaries_of_networks(cloud, alice):
    image = await make_image(cloud)
    net = await network(cloud, alice, "blue", "10.20.0.0/24")
    r = await boot(cloud, alice, image, "auto", mv="2.36")
    assert r.status == 400 and "is not of type 'array'" in message(r)  # a list before 2.37
    r = await boot(cloud, alice, image, [{"uuid": net["id"], "tag": "t"}], mv="2.31")
    assert r.status == 400 and "'tag' was unexpected" in message(r)
    r = await boot(cloud, alice, image, [{"uuid": net["id"], "tag": "t"}], mv="2.32")
    assert r.status == 202, r
    r = await boot(cloud, alice, image, [{"uuid": net["id"], "tag": "t"}], mv="2.37")
    assert r.status == 400 and "'tag' was unexpected" in message(r)  # gone in 2.37-2.41, as Nova
    r = await boot(cloud, alice, image, [{"uuid": net["id"], "tag": "t"}], mv="2.42")
    assert r.status == 202, r
    body = {"server": {"name": "x", "imageRef": image, "flavorRef": "1"}}
    r = await cloud.post(S, json=body, microversion="2.37", token=alice.token)
    assert r.status == 400 and "'networks' is a required property" in message(r)
    # Before 2.37 no networks means the one network the project can use; here there are
    # two (its own and the shared private): 409.
    r = await cloud.post(S, json=body, microversion="2.36", token=alice.token)
    assert (r.status, message(r)) == (409, "Multiple possible networks found, use a Network ID to be more specific.")


async def test_auto_uses_the_one_network_and_none_means_no_port(cloud, alice):
    image = await make_image(cloud)
    r = await boot(cloud, alice, image, "auto")
    sid = r.body["server"]["id"]
    server = await wait_status(cloud, sid, "ACTIVE", token=alice.token)
    assert list(server["addresses"]) == ["private"]
    r = await boot(cloud, alice, image, "none")
    bare = await wait_status(cloud, r.body["server"]["id"], "ACTIVE", token=alice.token)
    assert bare["addresses"] == {} and "security_groups" not in bare  # no ports: no groups (Nova)
    # Without the shared network there is nothing to use: auto is 400, an absent list no NIC.
    async with cloud.rt.db.begin() as conn:
        import sqlalchemy as sa

        from novalite.db import schema as t

        await conn.execute(sa.update(t.networks).where(t.networks.c.name == "private").values(shared=False))
    r = await boot(cloud, alice, image, "auto")
    assert (r.status, message(r)) == (400, f"Unable to automatically allocate a network for project {alice.project_id}")
    body = {"server": {"name": "old", "imageRef": image, "flavorRef": "1"}}
    r = await cloud.post(S, json=body, microversion="2.1", token=alice.token)
    assert r.status == 202, r


async def test_security_groups_at_create_and_the_actions(cloud, alice, bob):
    image = await make_image(cloud)
    net = await network(cloud, alice, "blue", "10.20.0.0/24")
    web = (await cloud.post(f"{N}/security-groups", {"security_group": {"name": "web"}}, token=alice.token)).body[
        "security_group"
    ]
    r = await cloud.post(
        f"{N}/security-group-rules",
        {
            "security_group_rule": {
                "security_group_id": web["id"],
                "direction": "ingress",
                "protocol": "tcp",
                "port_range_min": 80,
                "port_range_max": 80,
                "remote_ip_prefix": "0.0.0.0/0",
            }
        },
        token=alice.token,
    )
    assert r.status == 201, r
    r = await boot(cloud, alice, image, [{"uuid": net["id"]}], security_groups=[{"name": "web"}])
    assert r.status == 202 and r.body["server"]["security_groups"] == [{"name": "web"}]
    sid = r.body["server"]["id"]
    server = await wait_status(cloud, sid, "ACTIVE", token=alice.token)
    assert server["security_groups"] == [{"name": "web"}]
    (p,) = agent_guest(cloud, sid).instance.ports
    assert {"direction": "ingress", "ethertype": "IPv4", "protocol": "tcp", "port_range_min": 80,
            "port_range_max": 80, "remote_ip_prefix": "0.0.0.0/0"} in p.security_rules  # fmt: skip

    act = f"{S}/{sid}/action"
    r = await cloud.post(act, json={"addSecurityGroup": {"name": "default"}}, token=alice.token)
    assert r.status == 202, r
    server = await wait_status(cloud, sid, "ACTIVE", token=alice.token)
    assert server["security_groups"] == [{"name": "web"}, {"name": "default"}]
    r = await cloud.post(act, json={"addSecurityGroup": {"name": "nope"}}, token=alice.token)
    assert (r.status, message(r)) == (404, f"Security group nope is not found for project {alice.project_id}")
    r = await cloud.post(act, json={"addSecurityGroup": {}}, token=alice.token)
    assert (r.status, message(r)) == (400, "Security group not specified")
    r = await cloud.post(act, json={"addSecurityGroup": {"name": " "}}, token=alice.token)
    assert (r.status, message(r)) == (400, "Security group name cannot be empty")
    theirs = (await cloud.post(f"{N}/security-groups", {"security_group": {"name": "b"}}, token=bob.token)).body
    r = await cloud.post(act, json={"addSecurityGroup": {"name": theirs["security_group"]["id"]}}, token=alice.token)
    assert r.status == 404
    r = await cloud.post(act, json={"removeSecurityGroup": {"name": "web"}}, token=alice.token)
    assert r.status == 202
    r = await cloud.post(act, json={"removeSecurityGroup": {"name": "web"}}, token=alice.token)
    assert (r.status, message(r)) == (404, f"Security group web not associated with the instance {sid}")
    server = await wait_status(cloud, sid, "ACTIVE", token=alice.token)
    assert server["security_groups"] == [{"name": "default"}]
    (default,) = (await cloud.get(f"{S}/{sid}/os-security-groups", token=alice.token)).body["security_groups"]
    assert default["name"] == "default" and default["tenant_id"] == alice.project_id
    assert {(r["ip_protocol"], r["group"]["name"]) for r in default["rules"]} == {(None, "default")}  # ingress only
    assert (await cloud.get(f"{S}/{sid}/os-security-groups", token=bob.token)).status == 404
    # Other projects see no server; readers may not change it.
    r = await cloud.post(act, json={"addSecurityGroup": {"name": "web"}}, token=bob.token)
    assert r.status == 404


async def test_ips_and_os_interface_attach_detach(cloud, alice, bob):
    image = await make_image(cloud)
    net = await network(cloud, alice, "blue", "10.20.0.0/24")
    red = await network(cloud, alice, "red", "10.40.0.0/24")
    r = await boot(cloud, alice, image, [{"uuid": net["id"], "fixed_ip": "10.20.0.10"}])
    sid = r.body["server"]["id"]
    await wait_status(cloud, sid, "ACTIVE", token=alice.token)

    r = await cloud.get(f"{S}/{sid}/ips", token=alice.token)
    assert r.body == {"addresses": {"blue": [{"version": 4, "addr": "10.20.0.10"}]}}
    r = await cloud.get(f"{S}/{sid}/ips/blue", token=alice.token)
    assert r.body == {"blue": [{"version": 4, "addr": "10.20.0.10"}]}
    r = await cloud.get(f"{S}/{sid}/ips/red", token=alice.token)
    assert (r.status, message(r)) == (404, "Instance is not a member of specified network")
    assert (await cloud.get(f"{S}/{sid}/ips", token=bob.token)).status == 404

    iface = f"{S}/{sid}/os-interface"
    (only,) = (await cloud.get(iface, token=alice.token)).body["interfaceAttachments"]
    assert only["net_id"] == net["id"] and only["fixed_ips"][0]["ip_address"] == "10.20.0.10"
    assert set(only) == {"net_id", "port_id", "mac_addr", "port_state", "fixed_ips"}

    body = {"interfaceAttachment": {"net_id": red["id"], "fixed_ips": [{"ip_address": "10.40.0.5"}], "tag": "x"}}
    r = await cloud.post(iface, json=body, token=alice.token, microversion="2.48")
    assert r.status == 400 and "'tag' was unexpected" in message(r)
    r = await cloud.post(iface, json=body, token=alice.token, microversion="2.70")
    assert r.status == 200, r
    attached = r.body["interfaceAttachment"]
    assert attached["net_id"] == red["id"] and attached["tag"] == "x"
    assert attached["fixed_ips"][0]["ip_address"] == "10.40.0.5" and attached["port_state"] == "ACTIVE"
    guest = agent_guest(cloud, sid)
    for _ in range(200):
        if len(guest.instance.ports) == 2:
            break
        await asyncio.sleep(0.02)
    assert [p.ip for p in guest.instance.ports] == ["10.20.0.10", "10.40.0.5"]
    assert guest.instance.ports[1].tag == "x" and guest.instance.ports[1].network_id == red["id"]
    r = await cloud.get(f"{iface}/{attached['port_id']}", token=alice.token, microversion="2.70")
    assert r.body["interfaceAttachment"]["tag"] == "x"
    server = await wait_status(cloud, sid, "ACTIVE", token=alice.token)
    assert set(server["addresses"]) == {"blue", "red"}

    # The user's port: attached, then detached and kept; its in-use and not-found answers.
    mine = await port(cloud, alice, red["id"])
    r = await cloud.post(iface, json={"interfaceAttachment": {"port_id": mine["id"]}}, token=alice.token)
    assert r.status == 200, r
    r = await cloud.post(iface, json={"interfaceAttachment": {"port_id": mine["id"]}}, token=alice.token)
    assert (r.status, message(r)) == (409, f"Port {mine['id']} is still in use.")
    taken = {"interfaceAttachment": {"net_id": red["id"], "fixed_ips": [{"ip_address": "10.40.0.5"}]}}
    r = await cloud.post(iface, json=taken, token=alice.token)
    assert (r.status, message(r)) == (409, f"Fixed IP address 10.40.0.5 is already in use on instance {sid}.")
    missing = "5b6d1f7e-1111-4c59-9f4b-1d3a0e000000"
    r = await cloud.post(iface, json={"interfaceAttachment": {"net_id": missing}}, token=alice.token)
    assert (r.status, message(r)) == (404, f"Network {missing} could not be found.")
    r = await cloud.post(iface, json={"interfaceAttachment": {"port_id": missing}}, token=alice.token)
    assert (r.status, message(r)) == (404, f"Port id {missing} could not be found.")
    r = await cloud.post(iface, json={"interfaceAttachment": {}}, token=alice.token)
    assert (r.status, message(r)) == (400, "Multiple possible networks found, use a Network ID to be more specific.")
    both = {"interfaceAttachment": {"net_id": red["id"], "port_id": mine["id"]}}
    assert (
        message(await cloud.post(iface, json=both, token=alice.token)) == "Must not input both network_id and port_id"
    )
    ip_only = {"interfaceAttachment": {"fixed_ips": [{"ip_address": "10.40.0.6"}]}}
    r = await cloud.post(iface, json=ip_only, token=alice.token)
    assert message(r) == "Must input network_id when request IP address"
    r = await cloud.get(f"{iface}/{missing}", token=alice.token)
    assert (r.status, message(r)) == (404, f"Port id {missing} could not be found.")
    assert (await cloud.post(iface, json={"interfaceAttachment": {}}, token=bob.token)).status == 404

    r = await cloud.delete(f"{iface}/{mine['id']}", token=alice.token)
    assert r.status == 202
    kept = (await cloud.get(f"{N}/ports/{mine['id']}", token=alice.token)).body["port"]
    assert kept["device_id"] == "" and kept["status"] == "DOWN"
    r = await cloud.delete(f"{iface}/{attached['port_id']}", token=alice.token)
    assert r.status == 202
    assert (await cloud.get(f"{N}/ports/{attached['port_id']}", token=alice.token)).status == 404
    r = await cloud.delete(f"{iface}/{attached['port_id']}", token=alice.token)
    assert (r.status, message(r)) == (404, f"Port {attached['port_id']} is not attached")
    for _ in range(200):
        if len(guest.instance.ports) == 1:
            break
        await asyncio.sleep(0.02)
    assert [p.ip for p in guest.instance.ports] == ["10.20.0.10"]
    events = (await cloud.get(f"{S}/{sid}/os-instance-actions", token=alice.token)).body["instanceActions"]
    assert {"attach_interface", "detach_interface"} <= {a["action"] for a in events}

    # Not while the server is busy or locked (Nova's 409s).
    assert (await cloud.post(f"{S}/{sid}/action", json={"lock": None}, token="admin")).status == 202
    r = await cloud.delete(f"{iface}/{only['port_id']}", token=alice.token)
    assert (r.status, message(r)) == (409, f"Instance {sid} is locked")


async def test_an_attach_the_hypervisor_refuses_is_undone(cloud, alice):
    image = await make_image(cloud)
    net = await network(cloud, alice, "blue", "10.20.0.0/24")
    sid = (await boot(cloud, alice, image, [{"uuid": net["id"]}])).body["server"]["id"]
    server = await wait_status(cloud, sid, "ACTIVE", token=alice.token)
    for agent in cloud.rt.services["ComputeAgent"]:
        agent.driver.failures["attach_interface"] = "no PCI slot left"
    mine = await port(cloud, alice, net["id"])
    r = await cloud.post(
        f"{S}/{sid}/os-interface", json={"interfaceAttachment": {"port_id": mine["id"]}}, token=alice.token
    )
    assert r.status == 200, r
    for _ in range(200):
        p = (await cloud.get(f"{N}/ports/{mine['id']}", token=alice.token)).body["port"]
        if p["device_id"] == "":
            break
        await asyncio.sleep(0.02)
    assert p["device_id"] == "" and p["status"] == "DOWN"  # unbound again, as Nova rolls back
    assert len(agent_guest(cloud, sid).instance.ports) == 1
    (action,) = [
        a
        for a in (await cloud.get(f"{S}/{sid}/os-instance-actions", token=alice.token)).body["instanceActions"]
        if a["action"] == "attach_interface"
    ]
    detail = await cloud.get(
        f"{S}/{sid}/os-instance-actions/{action['request_id']}", token="admin", microversion="2.51"
    )
    (event,) = detail.body["instanceAction"]["events"]
    assert (event["event"], event["result"]) == ("compute_attach_interface", "Error")
    assert list((await wait_status(cloud, sid, "ACTIVE", token=alice.token))["addresses"]) == ["blue"]
    assert server["addresses"]["blue"][0]["addr"].startswith("10.20.0.")


async def test_flat_and_unsecured_networks_reach_the_agent_as_they_are(cloud, alice):
    image = await make_image(cloud)
    admin = await make_person(cloud, "admin", "admin", "admin")
    flat = await network(
        cloud,
        admin,
        "lan",
        "192.168.50.0/24",
        shared=True,
        **{"provider:network_type": "flat", "provider:physical_network": "physnet1"},
    )
    open_net = await network(cloud, alice, "open", "10.60.0.0/24", port_security_enabled=False)
    r = await boot(cloud, alice, image, [{"uuid": open_net["id"]}], security_groups=[{"name": "default"}])
    assert r.status == 202, r  # "default" alone asks for nothing (Nova drops it)
    r = await boot(
        cloud, alice, image, [{"uuid": open_net["id"]}], security_groups=[{"name": "default"}, {"name": "default"}]
    )
    assert r.status == 202, r
    web = await cloud.post(f"{N}/security-groups", {"security_group": {"name": "web"}}, token=alice.token)
    r = await boot(cloud, alice, image, [{"uuid": open_net["id"]}], security_groups=[{"name": "web"}])
    assert (r.status, message(r)) == (
        400,
        "Network requires port_security_enabled and subnet associated in order to apply security groups.",
    )
    assert web.status == 201
    r = await boot(cloud, alice, image, [{"uuid": flat["id"]}, {"uuid": open_net["id"]}])
    sid = r.body["server"]["id"]
    await wait_status(cloud, sid, "ACTIVE", token=alice.token)
    lan, unsecured = agent_guest(cloud, sid).instance.ports
    assert (lan.network_type, lan.physical_network, lan.segmentation_id, lan.mtu) == ("flat", "physnet1", None, 1500)
    assert lan.ip.startswith("192.168.50.") and lan.prefix_len == 24
    assert unsecured.port_security_enabled is False and unsecured.security_rules == []
    # An unsecured port takes no group: the action refuses (Nova's 400).
    r = await cloud.post(f"{S}/{sid}/action", json={"addSecurityGroup": {"name": "web"}}, token=alice.token)
    assert r.status == 400


async def test_two_creates_with_one_port_one_wins(cloud, alice):
    image = await make_image(cloud)
    net = await network(cloud, alice, "blue", "10.20.0.0/24")
    mine = await port(cloud, alice, net["id"])
    results = await asyncio.gather(*(boot(cloud, alice, image, [{"port": mine["id"]}]) for _ in range(4)))
    assert sorted(r.status for r in results) == [202, 409, 409, 409], results
    winner = next(r for r in results if r.status == 202).body["server"]["id"]
    bound = (await cloud.get(f"{N}/ports/{mine['id']}", token=alice.token)).body["port"]
    assert bound["device_id"] == winner


async def test_servers_ports_count_against_the_port_quota(cloud, alice):
    image = await make_image(cloud)
    r = await cloud.put(f"{N}/quotas/{alice.project_id}", {"quota": {"port": 1}})
    assert r.status == 200, r
    assert (await boot(cloud, alice, image, "auto")).status == 202
    r = await boot(cloud, alice, image, "auto")
    assert (r.status, message(r)) == (403, "Maximum number of ports exceeded")
    r = await boot(cloud, alice, image, "none")
    assert r.status == 202  # no port, no quota


def plugged_rules(cloud: Any, port_id: str) -> list[dict[str, Any]] | None:
    for agent in cloud.rt.services["ComputeAgent"]:
        if port_id in agent.driver.plugged:
            return list(agent.driver.plugged[port_id]["security_rules"] or [])
    return None


async def eventually(check: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        assert asyncio.get_running_loop().time() < deadline, "not within the time"
        await asyncio.sleep(0.02)


async def test_running_guests_get_rule_and_member_changes(cloud, alice):
    """Every change the rules depend on reaches the agents (``update_port_security`` casts):
    a new member of the default group, a rule added and removed, a group added to a server."""
    image = await make_image(cloud)
    net = await network(cloud, alice, "blue", "10.20.0.0/24")
    first = (await boot(cloud, alice, image, [{"uuid": net["id"], "fixed_ip": "10.20.0.11"}])).body["server"]["id"]
    await wait_status(cloud, first, "ACTIVE", token=alice.token)
    (p1,) = (await cloud.get(f"{N}/ports?device_id={first}", token=alice.token)).body["ports"]

    def ingress() -> set[Any]:
        rules = plugged_rules(cloud, p1["id"]) or []
        return {
            (r["protocol"], r["port_range_min"], r["remote_ip_prefix"]) for r in rules if r["direction"] == "ingress"
        }

    assert ingress() == {(None, None, "10.20.0.11/32")}
    second = (await boot(cloud, alice, image, [{"uuid": net["id"], "fixed_ip": "10.20.0.12"}])).body["server"]["id"]
    await eventually(lambda: (None, None, "10.20.0.12/32") in ingress())  # the new member is let in
    await wait_status(cloud, second, "ACTIVE", token=alice.token)

    (default,) = (await cloud.get(f"{N}/security-groups?name=default", token=alice.token)).body["security_groups"]
    rule = {
        "security_group_id": default["id"],
        "direction": "ingress",
        "protocol": "tcp",
        "port_range_min": 22,
        "port_range_max": 22,
        "remote_ip_prefix": "0.0.0.0/0",
    }
    r = await cloud.post(f"{N}/security-group-rules", {"security_group_rule": rule}, token=alice.token)
    assert r.status == 201, r
    await eventually(lambda: ("tcp", 22, "0.0.0.0/0") in ingress())
    assert (
        await cloud.delete(f"{N}/security-group-rules/{r.body['security_group_rule']['id']}", token=alice.token)
    ).status == 204
    await eventually(lambda: ("tcp", 22, "0.0.0.0/0") not in ingress())

    web = (await cloud.post(f"{N}/security-groups", {"security_group": {"name": "web"}}, token=alice.token)).body
    web_rule = {**rule, "security_group_id": web["security_group"]["id"], "port_range_min": 80, "port_range_max": 80}
    assert (
        await cloud.post(f"{N}/security-group-rules", {"security_group_rule": web_rule}, token=alice.token)
    ).status == 201
    assert ("tcp", 80, "0.0.0.0/0") not in ingress()
    r = await cloud.post(f"{S}/{first}/action", json={"addSecurityGroup": {"name": "web"}}, token=alice.token)
    assert r.status == 202
    await eventually(lambda: ("tcp", 80, "0.0.0.0/0") in ingress())

    # The second server goes: its address leaves the first one's rules.
    assert (await cloud.delete(f"{S}/{second}", token=alice.token)).status == 204
    await eventually(lambda: (None, None, "10.20.0.12/32") not in ingress())


async def test_a_servers_port_is_bound_to_its_host_and_follows_it(cloud):
    """binding:host_id (admin) is the server's host: set when it is placed, moved with it."""
    admin = await make_person(cloud, "admin", "admin", "admin")
    image = await make_image(cloud)
    r = await create_server(cloud, image, token=admin.token, networks="auto")
    sid = r.body["server"]["id"]
    server = await wait_status(cloud, sid, "ACTIVE", token=admin.token)
    source = server["OS-EXT-SRV-ATTR:host"]

    async def bound_host() -> str:
        r = await cloud.get(f"{N}/ports?device_id={sid}", token=admin.token)
        ((p,),) = [r.body["ports"]]
        assert p["binding:vif_type"] == ("bridge" if p["binding:host_id"] else "unbound")
        return str(p["binding:host_id"])

    assert await bound_host() == source
    r = await cloud.post(f"{S}/{sid}/action", json={"migrate": None}, token=admin.token, microversion="2.100")
    assert r.status == 202, r
    moved = await wait_status(cloud, sid, "VERIFY_RESIZE", token=admin.token)
    assert moved["OS-EXT-SRV-ATTR:host"] != source
    assert await bound_host() == moved["OS-EXT-SRV-ATTR:host"]
    r = await cloud.post(f"{S}/{sid}/action", json={"revertResize": None}, token=admin.token, microversion="2.100")
    await wait_status(cloud, sid, "ACTIVE", token=admin.token)
    assert await bound_host() == source
    # a member does not see the binding (admin-only attribute, as Neutron)
    alice = await make_person(cloud, "alice2", "alpha", "member")
    r = await cloud.get(f"{N}/ports", token=alice.token)
    assert all("binding:host_id" not in p for p in r.body["ports"])
