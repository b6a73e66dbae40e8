"""The data path with real QEMU guests (two boots, in parallel): per-network bridges, DHCP,
network isolation and security groups applied to a running guest.

Networks A and B are ``local`` networks with the *same* subnet (10.94.0.0/24), so only the
bridges keep them apart. Guest 1 is on A, guest 2 on B; each must get exactly its port's
address from its network's dnsmasq (the tiny guest prints what DHCP gave it). A probe (a
network namespace with a veth on A's bridge, standing in for another guest of A) reaches
guest 1 while its port's rules allow ICMP from the subnet, not once the rule is removed
(within a second), again once it is back; it never reaches guest 2's address. Everything
is isolated: bridges without addresses on the host, addresses only inside the guests and
the probe's namespace.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import subprocess
import time
import uuid as uuidlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from novalite_drivers.base import Image, Instance, Port
from novalite_drivers.libvirt import LibvirtDriver, bridges, firewall

pytestmark = pytest.mark.libvirt

BOOT_TIMEOUT = 120.0  # two guests booting at once under TCG
EGRESS = {
    "direction": "egress",
    "ethertype": "IPv4",
    "protocol": None,
    "port_range_min": None,
    "port_range_max": None,
    "remote_ip_prefix": None,
}
ICMP_IN = {
    "direction": "ingress",
    "ethertype": "IPv4",
    "protocol": "icmp",
    "port_range_min": None,
    "port_range_max": None,
    "remote_ip_prefix": "10.94.0.0/24",
}


def _sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, timeout=30)


def _tables_exist() -> bool:
    return "table inet novalite" in _sh("nft", "list", "tables").stdout


@pytest.fixture
async def dp_driver(qemu_host: str, qemu_instances_path: Path) -> AsyncIterator[LibvirtDriver]:
    had_tables = _tables_exist()
    driver = LibvirtDriver(
        "qemu-dp-host",
        {
            "uri": qemu_host,
            "virt_type": "qemu",
            "instances_path": str(qemu_instances_path),
            "network": "novalite-test",
            "shutdown_timeout": 5,
            "host_networking": True,
            "network_state_path": str(qemu_instances_path / "net"),
        },
    )
    await driver.init_host()
    try:
        yield driver
    finally:
        await driver.cleanup_host()
        if not had_tables and firewall.port_ids() == {}:
            firewall.delete_host()


def _port(net: str, n: int, ip: str, rules: list[dict[str, Any]]) -> Port:
    return Port(
        mac=f"fa:16:3e:94:{os.getpid() % 256:02x}:{n:02x}",
        ip=ip,
        network=f"net-{net[:4]}",
        prefix_len=24,
        gateway="10.94.0.1",
        id=str(uuidlib.uuid4()),
        network_id=net,
        network_type="local",
        security_rules=rules,
    )


def _instance(guest: dict[str, str], port: Port) -> Instance:
    u = str(uuidlib.uuid4())
    return Instance(
        uuid=u,
        name=f"novalite-dp-{u[:8]}",
        hostname=f"dp-{u[:8]}",
        memory_mb=256,
        root_gb=1,
        image=Image(id="novalite-tiny-guest", disk_format="qcow2", path=guest["disk"]),
        ports=[port],
    )


async def _wait_console(driver: LibvirtDriver, inst: Instance, text: str) -> str:
    deadline = time.monotonic() + BOOT_TIMEOUT
    out = ""
    while time.monotonic() < deadline:
        out = await driver.get_console_output(inst)
        if text in out:
            return out
        await asyncio.sleep(1)
    raise AssertionError(f"{text!r} not on the console within {BOOT_TIMEOUT}s:\n{out[-3000:]}")


def _probe(bridge: str) -> tuple[str, str]:
    """A namespace with eth0 (10.94.0.200/24) on ``bridge``; returns (netns, host-side veth)."""
    ns = f"nltq{os.getpid() % 100000}"
    veth = f"nltq{os.getpid() % 100000}"[:15]
    _sh("ip", "netns", "add", ns)
    _sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
    _sh("ip", "link", "set", veth, "master", bridge, "up")
    _sh("ip", "-n", ns, "addr", "add", "10.94.0.200/24", "dev", "eth0")
    _sh("ip", "-n", ns, "link", "set", "eth0", "up")
    _sh("ip", "-n", ns, "link", "set", "lo", "up")
    return ns, veth


def _macs_of(driver: LibvirtDriver, inst: Instance) -> tuple[list[str], list[str]]:
    """The MACs of the guest's NICs: live, and in its persistent definition."""
    import xml.etree.ElementTree as ET

    import libvirt

    dom = driver._lookup(inst.uuid)

    def macs(xml: str) -> list[str]:
        return [m.get("address", "") for m in ET.fromstring(xml).iterfind("./devices/interface/mac")]

    return macs(dom.XMLDesc(0)), macs(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))


def _ping(ns: str, addr: str, count: int = 1, wait: str = "1") -> bool:
    r = _sh("ip", "netns", "exec", ns, "ping", "-n", "-q", "-c", str(count), "-W", wait, addr, check=False)
    return r.returncode == 0


def _ping_until(ns: str, addr: str, want: bool, seconds: float) -> float | None:
    """When (seconds after the call) a ping first *sent* got the wanted outcome; None if no
    ping sent within ``seconds`` did (a lost ping waits 0.3 s for its answer)."""
    start = time.monotonic()
    while (sent := time.monotonic() - start) < seconds:
        if _ping(ns, addr, wait="0.3") == want:
            return sent
    return None


async def test_two_networks_dhcp_isolation_and_live_security_groups(
    dp_driver: LibvirtDriver, tiny_guest: dict[str, str]
) -> None:
    net_a, net_b = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    p1 = _port(net_a, 1, "10.94.0.11", [EGRESS, ICMP_IN])
    p2 = _port(net_b, 2, "10.94.0.12", [EGRESS, ICMP_IN])
    g1, g2 = _instance(tiny_guest, p1), _instance(tiny_guest, p2)
    probe = None
    try:
        t0 = time.monotonic()
        await asyncio.gather(dp_driver.spawn(g1), dp_driver.spawn(g2))
        out1, out2 = await asyncio.gather(
            _wait_console(dp_driver, g1, "novalite-guest-ready"), _wait_console(dp_driver, g2, "novalite-guest-ready")
        )
        print(f"both guests ready after {time.monotonic() - t0:.1f}s")
        assert "novalite-guest-ip: 10.94.0.11" in out1, out1[-2000:]  # exactly its port's address
        assert "novalite-guest-ip: 10.94.0.12" in out2, out2[-2000:]

        br_a = bridges.bridge_name(net_a)
        assert bridges.tap_name(p1.id or "") in bridges.members(br_a)
        probe, _veth = _probe(br_a)
        took = _ping_until(probe, "10.94.0.11", True, 20)
        assert took is not None, "the probe on network A cannot reach guest 1"
        assert not _ping(probe, "10.94.0.12", count=2), "network A reached guest 2 on network B"

        # the ICMP rule removed from the running guest's port: blocked within a second
        await dp_driver.update_port_security(g1, dataclasses.replace(p1, security_rules=[EGRESS]))
        took = _ping_until(probe, "10.94.0.11", False, 1.0)
        assert took is not None, "removing the rule did not block the ping within a second"
        print(f"rule removed: ping blocked after {took:.2f}s")
        assert not _ping(probe, "10.94.0.11", count=2)
        # and back
        await dp_driver.update_port_security(g1, p1)
        took = _ping_until(probe, "10.94.0.11", True, 1.0)
        assert took is not None, "adding the rule did not let the ping through within a second"
        print(f"rule re-added: ping passes after {took:.2f}s")

        # hot-plug (os-interface attach/detach): a port on network B into running guest 1
        p3 = _port(net_b, 3, "10.94.0.13", [EGRESS, ICMP_IN])
        g1.ports = [p1, p3]
        await dp_driver.attach_interface(g1, p3)
        live, persistent = await asyncio.to_thread(_macs_of, dp_driver, g1)
        assert p3.mac in live and p3.mac in persistent  # at once, and across a power cycle
        br_b = bridges.bridge_name(net_b)
        assert bridges.tap_name(p3.id or "") in bridges.members(br_b)
        await dp_driver.attach_interface(g1, p3)  # again: nothing changes
        assert (await asyncio.to_thread(_macs_of, dp_driver, g1))[0].count(p3.mac) == 1
        g1.ports = [p1]
        await dp_driver.detach_interface(g1, p3)
        live, persistent = await asyncio.to_thread(_macs_of, dp_driver, g1)
        assert p3.mac not in live and p3.mac not in persistent
        assert bridges.tap_name(p3.id or "") not in bridges.members(br_b)
        assert bridges.tap_name(p2.id or "") in bridges.members(br_b)  # guest 2 keeps its network
        await dp_driver.detach_interface(g1, p3)  # a NIC the guest no longer has: not an error
    finally:
        if probe:
            _sh("ip", "netns", "del", probe, check=False)
        for g in (g1, g2):
            await dp_driver.destroy(g)
    assert bridges.bridge_name(net_a) not in bridges.list_bridges()
    assert bridges.bridge_name(net_b) not in bridges.list_bridges()
