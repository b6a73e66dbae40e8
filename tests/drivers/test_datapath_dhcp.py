"""DHCP per network (drivers/libvirt/dhcp.py): each port gets exactly its address.

A host namespace with a network bridge, the network's dnsmasq in its own namespace on it,
and veth "guests" running busybox udhcpc: a guest with a host entry gets its address (and
the router option), a guest without one gets nothing, and the DHCP server stays local to
the host under the firewall (a second host on the same overlay never hears it).
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.drivers.datapath_lab import Lab, require_tools, sh

UDHCPC_SCRIPT = """#!/bin/sh
# udhcpc calls this with the offer in the environment: print what a guest would configure
[ "$1" = bound ] && echo "lease ip=$ip mask=$mask router=$router mtu=$mtu" >> "$LEASE_LOG"
exit 0
"""


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_tools("dnsmasq", "busybox")
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def _udhcpc(ns: str, tmp: Path, name: str) -> str:
    script = tmp / "udhcpc.sh"
    script.write_text(UDHCPC_SCRIPT)
    script.chmod(0o755)
    log = tmp / f"{name}.lease"
    log.unlink(missing_ok=True)
    # -n: give up when no lease (3 discovers, 1 s apart), -q: quit once bound
    sh(
        ns,
        "env",
        f"LEASE_LOG={log}",
        "busybox",
        "udhcpc",
        "-i",
        "eth0",
        "-n",
        "-q",
        "-t",
        "3",
        "-T",
        "1",
        "-s",
        str(script),
        "-O",
        "mtu",
        check=False,
        timeout=30,
    )
    return log.read_text() if log.exists() else ""


def test_dhcp_gives_each_port_exactly_its_address(lab: Lab, tmp_path: Path) -> None:
    from novalite_drivers.libvirt import bridges, dhcp, firewall
    from novalite_drivers.libvirt.firewall import PortFirewall

    host = lab.netns("host")
    net = str(uuid.uuid4())
    br = bridges.bridge_name(net)
    bridges.ensure_bridge(br, netns=host)
    state = str(tmp_path / "dhcp")
    ns = dhcp.ensure_dhcp(net, br, "10.96.0.0/24", "10.96.0.2", state, gateway="10.96.0.1", mtu=1450, netns=host)
    assert ns == dhcp.namespace(net, host) and dhcp.running(net, state)
    assert dhcp.ensure_dhcp(net, br, "10.96.0.0/24", "10.96.0.2", state, gateway="10.96.0.1", netns=host) == ns
    assert dhcp.leg_name(net) in bridges.members(br, netns=host)

    g1 = lab.guest(host, "tapd1", "d1", "fa:16:3e:0d:00:01", None, br)
    g2 = lab.guest(host, "tapd2", "d2", "fa:16:3e:0d:00:02", None, br)
    dhcp.add_host(net, state, "FA:16:3E:0D:00:01", "10.96.0.77", "web-1")
    assert dhcp.hosts(net, state) == {"fa:16:3e:0d:00:01": ("10.96.0.77", "web-1")}

    lease = _udhcpc(g1, tmp_path, "d1")
    assert "ip=10.96.0.77 mask=24 router=10.96.0.1 mtu=1450" in lease, lease
    assert _udhcpc(g2, tmp_path, "d2") == "", "a MAC without a host entry got an address"

    # the firewall on, port security on both: DHCP still works (and only from this host)
    firewall.ensure_network(br, netns=host)
    for tap, mac, ip in (("tapd1", "fa:16:3e:0d:00:01", "10.96.0.77"), ("tapd2", "fa:16:3e:0d:00:02", "10.96.0.78")):
        firewall.apply_port(PortFirewall(tap, mac, [ip], True, []), netns=host)
    dhcp.add_host(net, state, "fa:16:3e:0d:00:02", "10.96.0.78")
    assert "ip=10.96.0.78" in _udhcpc(g2, tmp_path, "d2")
    # an entry moved to another MAC takes the address with it
    dhcp.add_host(net, state, "fa:16:3e:0d:00:01", "10.96.0.78")
    assert list(dhcp.hosts(net, state)) == ["fa:16:3e:0d:00:01"]
    assert dhcp.remove_host(net, state, "fa:16:3e:0d:00:01") and not dhcp.remove_host(net, state, "fa:16:3e:0d:00:01")

    # a frame of the DHCP leg never leaves for a non-tap port (e.g. the VXLAN device)
    other = lab.netns("other")
    subprocess.run(
        ["ip", "-n", host, "link", "add", "uplink", "type", "veth", "peer", "name", "eth0", "netns", other], check=True
    )
    bridges.attach("uplink", br, netns=host)
    subprocess.run(["ip", "-n", other, "link", "set", "eth0", "up"], check=True)
    subprocess.run(["ip", "-n", other, "addr", "add", "10.96.0.99/24", "dev", "eth0"], check=True)
    assert not lab.ping(other, "10.96.0.2", count=2), "the DHCP server is reachable from off the host"
    # a DHCP server off the host (a LAN's, on a flat network) does not answer a port with port security
    rogue = tmp_path / "rogue"
    rogue.mkdir()
    sh(
        other,
        "dnsmasq",
        "--conf-file=/dev/null",
        "--port=0",
        "--interface=eth0",
        "--bind-interfaces",
        "--user=root",
        "--dhcp-range=10.96.0.150,10.96.0.160,12h",
        f"--pid-file={rogue}/pid",
        f"--dhcp-leasefile={rogue}/leases",
    )
    assert _udhcpc(g1, tmp_path, "d1") == "", "a port with port security took a lease from an off-host server"
    firewall.apply_port(PortFirewall("tapd1", "fa:16:3e:0d:00:01", ["10.96.0.77"], False, []), netns=host)
    assert "ip=10.96.0.15" in _udhcpc(g1, tmp_path, "d1")  # port security off: any server (the rogue here)
    assert lab.ping(g2, "10.96.0.2") is False  # the guest. s egress has no rules: dropped

    dhcp.stop_dhcp(net, state, netns=host)
    assert not dhcp.running(net, state)
    assert dhcp.leg_name(net) not in bridges.members(br, netns=host)
    dhcp.stop_dhcp(net, state, netns=host)  # idempotent
