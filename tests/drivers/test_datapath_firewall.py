"""Security groups with nftables (drivers/libvirt/firewall.py) on veth "taps" in namespaces.

A host namespace with one network bridge and two guest namespaces: an ingress rule lets a
TCP port through and nothing else; a rule added or removed takes effect within a second for
running guests; anti-spoofing stops another source address unless it is an allowed address
pair; port security off lets everything through.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from novalite_drivers.base import DriverError

from tests.drivers.datapath_lab import Lab, require_tools

MAC_A, MAC_B = "fa:16:3e:0a:00:01", "fa:16:3e:0a:00:02"
IP_A, IP_B = "10.98.0.11", "10.98.0.12"
EGRESS_ALL = [
    {
        "direction": "egress",
        "ethertype": "IPv4",
        "protocol": None,
        "port_range_min": None,
        "port_range_max": None,
        "remote_ip_prefix": None,
    },
    {
        "direction": "egress",
        "ethertype": "IPv6",
        "protocol": None,
        "port_range_min": None,
        "port_range_max": None,
        "remote_ip_prefix": None,
    },
]


def tcp_in(port: int, prefix: str | None = "10.98.0.0/24") -> dict[str, Any]:
    return {
        "direction": "ingress",
        "ethertype": "IPv4",
        "protocol": "tcp",
        "port_range_min": port,
        "port_range_max": port,
        "remote_ip_prefix": prefix,
    }


ICMP_IN = {
    "direction": "ingress",
    "ethertype": "IPv4",
    "protocol": "icmp",
    "port_range_min": None,
    "port_range_max": None,
    "remote_ip_prefix": None,
}


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_tools("ping", "python3")
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def test_rule_rendering() -> None:
    from novalite_drivers.libvirt.firewall import PortFirewall, render_port, rule_match

    assert rule_match(tcp_in(22)) == "meta nfproto ipv4 ip saddr 10.98.0.0/24 meta l4proto tcp tcp dport 22"
    assert rule_match(
        {
            "direction": "egress",
            "ethertype": "IPv4",
            "protocol": "udp",
            "port_range_min": 1000,
            "port_range_max": 2000,
            "remote_ip_prefix": "10.0.0.5/32",
        }
    ) == ("meta nfproto ipv4 ip daddr 10.0.0.5 meta l4proto udp udp dport 1000-2000")
    assert rule_match(
        {
            "direction": "ingress",
            "ethertype": "IPv6",
            "protocol": "icmp",
            "port_range_min": 128,
            "port_range_max": None,
            "remote_ip_prefix": "::/0",
        }
    ) == ("meta nfproto ipv6 meta l4proto icmpv6 icmpv6 type 128")
    assert rule_match({"direction": "ingress", "ethertype": "IPv4", "remote_ip_prefix": "fd00::/8"}) is None
    assert rule_match({"direction": "ingress", "ethertype": "IPv4", "protocol": "47"}) == (
        "meta nfproto ipv4 meta l4proto 47"
    )
    for bad in (
        {"protocol": "tcp; flush ruleset"},
        {"remote_ip_prefix": "1.2.3.4 accept"},
        {"protocol": "tcp", "port_range_min": 70000},
        {"direction": "sideways"},
    ):
        with pytest.raises(DriverError):
            rule_match(bad)
    script = render_port(PortFirewall("tapx", MAC_A, [IP_A], True, [tcp_in(22)], [{"ip_address": "10.98.0.200/30"}]), 7)
    assert "ether saddr fa:16:3e:0a:00:01 ip saddr 10.98.0.200/30 return" in script
    assert "add element inet novalite ingress { 0x70000 : jump ig_7 }" in script
    with pytest.raises(DriverError):
        render_port(PortFirewall('tap"x', MAC_A, [IP_A]), 1)


def _setup(lab: Lab) -> tuple[str, str, str, str]:
    from novalite_drivers.libvirt import bridges, firewall

    host = lab.netns("host")
    br = bridges.bridge_name(str(uuid.uuid4()))
    bridges.ensure_bridge(br, netns=host)
    firewall.ensure_network(br, netns=host)
    ga = lab.guest(host, "tapa", "ga", MAC_A, f"{IP_A}/24", br)
    gb = lab.guest(host, "tapb", "gb", MAC_B, f"{IP_B}/24", br)
    return host, br, ga, gb


def _wait(pred: Any, seconds: float = 1.0) -> float | None:
    """When (seconds after the call) a probe ``pred()`` that held was *started* (a blocked
    connection's probe itself waits for its timeout); None if none started within ``seconds``."""
    start = time.monotonic()
    while (sent := time.monotonic() - start) < seconds:
        if pred():
            return sent
    return None


def test_security_groups_filter_and_update_live(lab: Lab) -> None:
    from novalite_drivers.libvirt import firewall
    from novalite_drivers.libvirt.firewall import PortFirewall

    host, _br, ga, gb = _setup(lab)
    lab.listen(gb, [22, 23])
    lab.listen(ga, [22])
    # before any rules: the bridge forwards everything
    assert lab.ping_eventually(ga, IP_B) and lab.connect(ga, IP_B, 23)

    a = PortFirewall("tapa", MAC_A, [IP_A], True, list(EGRESS_ALL))
    b = PortFirewall("tapb", MAC_B, [IP_B], True, [*EGRESS_ALL, tcp_in(22)])
    na, nb = firewall.apply_port(a, netns=host), firewall.apply_port(b, netns=host)
    assert na != nb and firewall.port_ids(netns=host) == {"tapa": na, "tapb": nb}
    assert firewall.apply_port(a, netns=host) == na  # re-applying keeps the number

    assert lab.connect(ga, IP_B, 22), "an allowed TCP port is blocked"
    assert not lab.connect(ga, IP_B, 23), "a TCP port without a rule was reachable"
    assert not lab.ping(ga, IP_B), "ICMP without a rule was let through"
    assert lab.ping(gb, IP_A) is False  # A has no ingress rules: default drop
    assert not lab.connect(gb, IP_A, 22)

    # stateful: B's egress to A is allowed and A now accepts ICMP: the replies come back
    firewall.apply_port(PortFirewall("tapa", MAC_A, [IP_A], True, [*EGRESS_ALL, ICMP_IN]), netns=host)
    assert lab.ping(gb, IP_A)

    # a rule added to a running guest's port applies within a second...
    b.security_rules.append(tcp_in(23))
    firewall.apply_port(b, netns=host)
    took = _wait(lambda: lab.connect(ga, IP_B, 23))
    assert took is not None and took < 1.0, f"rule add applied after {took}"
    print(f"rule added: port reachable after {took * 1000:.0f} ms")
    # ...and removed, new connections are blocked again within a second
    b.security_rules.remove(tcp_in(23))
    firewall.apply_port(b, netns=host)
    took = _wait(lambda: not lab.connect(ga, IP_B, 23, timeout=0.3))
    assert took is not None and took < 1.0, f"rule removal applied after {took}"
    print(f"rule removed: port blocked after {took * 1000:.0f} ms")
    assert lab.connect(ga, IP_B, 22)

    # a rule restricted to another source prefix does not let A in
    b.security_rules = [*EGRESS_ALL, tcp_in(23, "10.98.0.200/32")]
    firewall.apply_port(b, netns=host)
    assert not lab.connect(ga, IP_B, 23) and not lab.connect(ga, IP_B, 22)

    # port security off: everything passes
    firewall.apply_port(PortFirewall("tapb", MAC_B, [IP_B], False), netns=host)
    assert lab.connect(ga, IP_B, 23) and lab.ping(ga, IP_B)

    # removed: the port is unfiltered, its chains gone
    assert firewall.remove_port("tapb", netns=host) is True
    assert firewall.remove_port("tapb", netns=host) is False
    assert "tapb" not in firewall.port_ids(netns=host)


def test_anti_spoofing_and_allowed_address_pairs(lab: Lab) -> None:
    import subprocess

    from novalite_drivers.libvirt import firewall
    from novalite_drivers.libvirt.firewall import PortFirewall

    host, _br, ga, gb = _setup(lab)
    firewall.apply_port(PortFirewall("tapb", MAC_B, [IP_B], True, [*EGRESS_ALL, ICMP_IN]), netns=host)
    firewall.apply_port(PortFirewall("tapa", MAC_A, [IP_A], True, list(EGRESS_ALL)), netns=host)
    assert lab.ping_eventually(ga, IP_B)

    # A takes another address (a VIP it was not given): dropped, ARP included
    subprocess.run(["ip", "-n", ga, "addr", "flush", "dev", "eth0"], check=True)
    subprocess.run(["ip", "-n", ga, "addr", "add", "10.98.0.50/24", "dev", "eth0"], check=True)
    subprocess.run(["ip", "-n", gb, "neigh", "flush", "all"], check=True)
    assert not lab.ping(ga, IP_B, count=2)
    # the VIP as an allowed address pair: it passes
    firewall.apply_port(
        PortFirewall("tapa", MAC_A, [IP_A], True, list(EGRESS_ALL), [{"ip_address": "10.98.0.48/29"}]), netns=host
    )
    assert lab.ping_eventually(ga, IP_B, seconds=2)

    # another MAC on A's tap: dropped
    subprocess.run(["ip", "-n", ga, "link", "set", "eth0", "address", "fa:16:3e:0a:00:99"], check=True)
    subprocess.run(["ip", "-n", gb, "neigh", "flush", "all"], check=True)
    assert not lab.ping(ga, IP_B, count=2)
