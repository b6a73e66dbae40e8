"""The data path through the drivers: what spawn, update_port_security, set_overlay_peers
and destroy make on the host.

The libvirt driver runs on libvirt's ``test:///`` hypervisor (no real guests) with its host
networking inside a network namespace standing in for the host (option ``host_netns``): a
spawn makes the network's bridge, VXLAN device (with the peers the conductor gave), DHCP
server with the port's entry and the port's firewall chains, and defines the domain with a
tap on that bridge; destroy removes them all. The fake driver records the same in memory.
"""

from __future__ import annotations

import json
import subprocess
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from novalite_drivers.base import DriverError, Image, Instance, Port

from tests.drivers.datapath_lab import Lab, require_tools

NET = "5b1d3c2e-9f3a-4c1e-8a7b-0123456789ab"
FLAT = "7c2e4d6f-1a2b-4c3d-9e8f-fedcba987654"
RULES: list[dict[str, Any]] = [
    {
        "direction": "egress",
        "ethertype": "IPv4",
        "protocol": None,
        "port_range_min": None,
        "port_range_max": None,
        "remote_ip_prefix": None,
    },
]


def vxlan_port(n: int, **kw: Any) -> Port:
    return Port(
        mac=f"fa:16:3e:5b:00:{n:02x}",
        ip=f"10.95.0.{n}",
        network="net1",
        prefix_len=24,
        gateway="10.95.0.1",
        id=f"0000{n:04d}-aaaa-bbbb-cccc-dddddddddddd",
        network_id=NET,
        network_type="vxlan",
        segmentation_id=4242,
        mtu=1450,
        security_rules=list(RULES),
        **kw,
    )


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_tools("dnsmasq")
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


@pytest.fixture
async def driver(lab: Lab, test_uri: str, tmp_path: Path) -> AsyncIterator[Any]:
    from novalite_drivers.libvirt import LibvirtDriver

    host = _make_host(lab)
    drv = LibvirtDriver(
        "dp-host",
        {
            "uri": test_uri,
            "instances_path": str(tmp_path / "instances"),
            "network": "novalite-unit",
            "host_networking": True,
            "host_netns": host,
            "overlay_local_ip": "198.18.1.1",
            "physical_bridges": {"lan": "lan0"},
            "network_state_path": str(tmp_path / "net"),
        },
    )
    await drv.init_host()
    try:
        yield drv
    finally:
        await drv.cleanup_host()


def _make_host(lab: Lab) -> str:
    """A host namespace with an operator's bridge ``lan0`` and an underlay address."""
    host = lab.netns("host")
    for cmd in (
        ["link", "add", "lan0", "type", "bridge"],
        ["link", "add", "u0", "type", "veth", "peer", "name", "u1"],
        ["addr", "add", "198.18.1.1/24", "dev", "u0"],
        ["link", "set", "u0", "up"],
        ["link", "set", "u1", "up"],
    ):
        subprocess.run(["ip", "-n", host, *cmd], check=True)
    return host


def _chain(ns: str, chain: str) -> str:
    cmd = ["ip", "netns", "exec", ns, "nft", "list", "chain", "inet", "novalite", chain]
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def _link(ns: str, name: str) -> dict[str, Any] | None:
    out = subprocess.run(["ip", "-n", ns, "-j", "-d", "link", "show", "dev", name], capture_output=True, text=True)
    return json.loads(out.stdout)[0] if out.returncode == 0 else None


async def test_spawn_plugs_and_destroy_unplugs(driver: Any, small_image: Path) -> None:
    from novalite_drivers.libvirt import bridges, dhcp, firewall, vxlan

    ns = driver.host_netns
    await driver.set_overlay_peers(NET, 4242, ["198.18.1.2", "198.18.1.1", "198.18.1.3"])  # own address dropped
    p1 = vxlan_port(11)
    p2 = Port(
        mac="fa:16:3e:7c:00:01",
        ip="192.168.50.20",
        network="lan",
        prefix_len=24,
        gateway="192.168.50.1",
        id="ffff0001-aaaa-bbbb-cccc-dddddddddddd",
        network_id=FLAT,
        network_type="flat",
        physical_network="lan",
        port_security_enabled=False,
    )
    inst = Instance(
        uuid=str(uuid.uuid4()),
        name="instance-dp1",
        hostname="dp-one",
        image=Image(id="img", disk_format="qcow2", path=str(small_image)),
        ports=[p1, p2],
    )
    await driver.spawn(inst)

    br = bridges.bridge_name(NET)
    assert _link(ns, br) is not None and _link(ns, br)["mtu"] == 1450
    vx = _link(ns, "nlvx4242")
    assert vx is not None and vx["linkinfo"]["info_data"]["id"] == 4242 and vx["master"] == br
    assert vxlan.peers(4242, ns) == ["198.18.1.2", "198.18.1.3"]
    state = driver.network_state_path
    assert dhcp.running(NET, state) and dhcp.hosts(NET, state) == {p1.mac: ("10.95.0.11", "dp-one")}
    assert set(firewall.port_ids(ns)) == {"tap00000011-aa", "tapffff0001-aa"}

    dom = driver._connection().lookupByUUIDString(inst.uuid)
    ifaces = ET.fromstring(dom.XMLDesc(0)).findall("./devices/interface")
    assert [(i.get("type"), i.find("source").get("bridge"), i.find("target").get("dev")) for i in ifaces] == [
        ("bridge", br, "tap00000011-aa"),
        ("bridge", "lan0", "tapffff0001-aa"),
    ]
    assert ifaces[0].find("mtu").get("size") == "1450"

    # a rule added while it runs: the chains are refilled at once
    tcp = {
        "direction": "ingress",
        "ethertype": "IPv4",
        "protocol": "tcp",
        "port_range_min": 8080,
        "port_range_max": 8080,
        "remote_ip_prefix": "10.95.0.0/24",
    }
    n = firewall.port_ids(ns)["tap00000011-aa"]
    before = _chain(ns, f"ig_{n}")
    assert "8080" not in before
    await driver.update_port_security(inst, _with(p1, tcp))
    after = _chain(ns, f"ig_{n}")
    assert "ip saddr 10.95.0.0/24 tcp dport 8080 accept" in after
    # a port not plugged here is ignored
    await driver.update_port_security(inst, vxlan_port(99))
    assert "tap00000099-aa" not in firewall.port_ids(ns)

    # peers changed while the network is here: applied at once
    await driver.set_overlay_peers(NET, 4242, ["198.18.1.3"])
    assert vxlan.peers(4242, ns) == ["198.18.1.3"]

    await driver.destroy(inst)
    assert firewall.port_ids(ns) == {}
    assert _link(ns, br) is None and _link(ns, "nlvx4242") is None, "the last port's network stayed"
    assert not dhcp.running(NET, state)
    assert _link(ns, "lan0") is not None, "the operator's flat bridge was removed"
    await driver.destroy(inst)  # idempotent


def _with(port: Port, rule: dict[str, Any]) -> Port:
    import dataclasses

    return dataclasses.replace(port, security_rules=[*port.security_rules, rule])


async def test_bridge_kept_while_another_guest_uses_it(driver: Any, small_image: Path) -> None:
    from novalite_drivers.libvirt import bridges

    ns = driver.host_netns
    a = Instance(
        uuid=str(uuid.uuid4()),
        name="instance-dpa",
        image=Image(id="img", path=str(small_image)),
        ports=[vxlan_port(21)],
    )
    b = Instance(
        uuid=str(uuid.uuid4()),
        name="instance-dpb",
        image=Image(id="img", path=str(small_image)),
        ports=[vxlan_port(22)],
    )
    await driver.spawn(a)
    await driver.spawn(b)
    await driver.power_off(b, timeout=0)  # a stopped guest needs its bridge to start again
    await driver.destroy(a)
    assert _link(ns, bridges.bridge_name(NET)) is not None
    await driver.destroy(b)
    assert _link(ns, bridges.bridge_name(NET)) is None


async def test_misconfigured_networks_fail_readably(driver: Any, small_image: Path) -> None:
    flat = Port(
        mac="fa:16:3e:7c:00:09",
        ip="192.168.60.9",
        prefix_len=24,
        id="ffff0009-aaaa",
        network_id=FLAT,
        network_type="flat",
        physical_network="nowhere",
    )
    inst = Instance(
        uuid=str(uuid.uuid4()), name="instance-dpx", image=Image(id="img", path=str(small_image)), ports=[flat]
    )
    with pytest.raises(DriverError, match="physical network 'nowhere' has no bridge"):
        await driver.spawn(inst)
    assert inst.uuid not in await driver.list_instances()
    driver.overlay_local_ip = None
    inst2 = Instance(
        uuid=str(uuid.uuid4()),
        name="instance-dpy",
        image=Image(id="img", path=str(small_image)),
        ports=[vxlan_port(31)],
    )
    with pytest.raises(DriverError, match="overlay_local_ip"):
        await driver.spawn(inst2)


async def test_fake_driver_records_the_data_path() -> None:
    from novalite_drivers.fake import FakeDriver

    drv = FakeDriver("fake-dp", {"screen": False})
    p = vxlan_port(41)
    inst = Instance(uuid=str(uuid.uuid4()), name="instance-f", ports=[p])
    await drv.spawn(inst)
    rec = drv.plugged[p.id]
    assert rec["instance"] == inst.uuid and rec["segmentation_id"] == 4242 and rec["bridge"].startswith("nlb")
    await drv.set_overlay_peers(NET, 4242, ["10.0.0.2", "10.0.0.3"])
    assert drv.overlay_peers[NET] == {"vni": 4242, "peers": ["10.0.0.2", "10.0.0.3"]}
    rule = {
        "direction": "ingress",
        "ethertype": "IPv4",
        "protocol": "tcp",
        "port_range_min": 22,
        "port_range_max": 22,
        "remote_ip_prefix": None,
    }
    await drv.update_port_security(inst, _with(p, rule))
    assert rule in drv.plugged[p.id]["security_rules"]
    assert rule in drv.guests[inst.uuid].instance.ports[0].security_rules
    await drv.update_port_security(inst, vxlan_port(42))  # not plugged here: ignored
    assert vxlan_port(42).id not in drv.plugged
    await drv.destroy(inst)
    assert drv.plugged == {}


async def test_power_on_after_a_host_reboot_replugs(driver: Any, small_image: Path) -> None:
    import asyncio

    from novalite_drivers.libvirt import bridges, dhcp, firewall, vxlan

    ns = driver.host_netns
    p = vxlan_port(51)
    inst = Instance(
        uuid=str(uuid.uuid4()), name="instance-dpr", image=Image(id="img", path=str(small_image)), ports=[p]
    )
    await driver.spawn(inst)
    await driver.power_off(inst, timeout=0)

    def reboot_the_host() -> None:  # what a host reboot loses: all of the host side
        dhcp.stop_dhcp(NET, driver.network_state_path, ns)
        vxlan.delete_vxlan(4242, ns)
        bridges.delete_bridge(bridges.bridge_name(NET), ns)
        firewall.delete_host(ns)

    await asyncio.to_thread(reboot_the_host)
    await driver.power_on(inst)
    assert _link(ns, bridges.bridge_name(NET)) is not None and _link(ns, "nlvx4242") is not None
    assert dhcp.running(NET, driver.network_state_path)
    assert "tap00000051-aa" in firewall.port_ids(ns)
    await driver.destroy(inst)


async def test_network_kept_for_a_port_plugged_before_its_domain(driver: Any, small_image: Path) -> None:
    import asyncio

    from novalite_drivers.libvirt import bridges

    ns = driver.host_netns
    a = Instance(
        uuid=str(uuid.uuid4()),
        name="instance-dpc",
        image=Image(id="img", path=str(small_image)),
        ports=[vxlan_port(61)],
    )
    await driver.spawn(a)
    # another build has plugged its port, its domain is not defined yet
    await asyncio.to_thread(driver._plug_port_sync, None, vxlan_port(62))
    await driver.destroy(a)
    assert _link(ns, bridges.bridge_name(NET)) is not None, "the network went while a build was plugging into it"
    await asyncio.to_thread(driver._unplug_port_sync, driver._connection(), vxlan_port(62))
    assert _link(ns, bridges.bridge_name(NET)) is None
