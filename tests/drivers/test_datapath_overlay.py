"""The VXLAN overlay between two "hosts" (network namespaces joined by a veth underlay).

Each host namespace gets the network's bridge and VXLAN device from drivers/libvirt/
bridges.py and vxlan.py, and a veth "guest" on the bridge: guests on the same VNI reach
each other across the overlay, a guest on another VNI (another network, same subnet) does
not, and a host whose peer list loses the other host stops reaching it.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from novalite_drivers.base import DriverError

from tests.drivers.datapath_lab import Lab, require_tools


@pytest.fixture
def lab() -> Iterator[Lab]:
    require_tools("ping")
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def test_names_fit_ifnamsiz() -> None:
    from novalite_drivers.libvirt.bridges import bridge_name, tap_name
    from novalite_drivers.libvirt.vxlan import vxlan_name

    nid = str(uuid.uuid4())
    assert bridge_name(nid) == "nlb" + nid.replace("-", "")[:12] and len(bridge_name(nid)) == 15
    pid = "3f2a9c0d-41e7-4b4a-9a0e-1234567890ab"
    assert tap_name(pid) == "tap3f2a9c0d-41"  # Nova's name for this port's tap
    assert vxlan_name(16777215) == "nlvx16777215" and len(vxlan_name(16777215)) <= 15
    with pytest.raises(DriverError):
        vxlan_name(0)


def test_vxlan_overlay_between_two_hosts(lab: Lab) -> None:
    from novalite_drivers.libvirt import bridges, vxlan

    h1, h2 = lab.netns("h1"), lab.netns("h2")
    # the underlay: one veth between the two "hosts", addresses only inside the namespaces
    subprocess.run(["ip", "-n", h1, "link", "add", "u0", "type", "veth", "peer", "name", "u0", "netns", h2], check=True)
    for ns, addr in ((h1, "198.18.0.1/24"), (h2, "198.18.0.2/24")):
        subprocess.run(["ip", "-n", ns, "addr", "add", addr, "dev", "u0"], check=True)
        subprocess.run(["ip", "-n", ns, "link", "set", "u0", "up"], check=True)

    net_a, net_b = str(uuid.uuid4()), str(uuid.uuid4())
    br_a, br_b = bridges.bridge_name(net_a), bridges.bridge_name(net_b)
    for ns, local, peer in ((h1, "198.18.0.1", "198.18.0.2"), (h2, "198.18.0.2", "198.18.0.1")):
        assert bridges.ensure_bridge(br_a, netns=ns) is True
        assert bridges.ensure_bridge(br_a, netns=ns) is False  # idempotent
        vxlan.ensure_vxlan(101, br_a, local, dev="u0", netns=ns)
        vxlan.ensure_vxlan(101, br_a, local, dev="u0", netns=ns)  # idempotent
        assert vxlan.set_peers(101, [peer], netns=ns) == [peer]
        assert vxlan.set_peers(101, [peer], netns=ns) == [peer]
        assert vxlan.peers(101, netns=ns) == [peer]
    # network B (VNI 202) exists on host 2 only, with a guest in the same subnet as A's
    bridges.ensure_bridge(br_b, netns=h2)
    vxlan.ensure_vxlan(202, br_b, "198.18.0.2", dev="u0", netns=h2)
    vxlan.set_peers(202, ["198.18.0.1"], netns=h2)
    info = json.loads(
        subprocess.run(
            ["ip", "-n", h1, "-j", "-d", "link", "show", "nlvx101"], capture_output=True, text=True, check=True
        ).stdout
    )[0]
    assert info["linkinfo"]["info_data"]["id"] == 101 and info["master"] == br_a

    g1 = lab.guest(h1, "tapg1", "g1", "fa:16:3e:00:00:01", "10.97.0.11/24", br_a)
    g2 = lab.guest(h2, "tapg2", "g2", "fa:16:3e:00:00:02", "10.97.0.12/24", br_a)
    g3 = lab.guest(h2, "tapg3", "g3", "fa:16:3e:00:00:03", "10.97.0.13/24", br_b)
    assert bridges.members(br_a, netns=h2) == sorted(["nlvx101", "tapg2"])

    assert lab.ping_eventually(g1, "10.97.0.12"), "same VNI across the overlay: no ping"
    assert lab.ping(g2, "10.97.0.11")
    assert not lab.ping(g1, "10.97.0.13", count=2), "a guest of another VNI answered"
    assert not lab.ping(g3, "10.97.0.11", count=2), "a guest of another VNI reached network A"

    # a peer removed: host 1 no longer floods to host 2 (ARP entries flushed first)
    assert vxlan.set_peers(101, [], netns=h1) == []
    subprocess.run(["ip", "-n", h1, "link", "set", "nlvx101", "down"], check=True)
    subprocess.run(["ip", "-n", h1, "link", "set", "nlvx101", "up"], check=True)  # drops learned FDB entries
    subprocess.run(["ip", "-n", g1, "neigh", "flush", "all"], check=True)
    assert not lab.ping(g1, "10.97.0.12", count=2)
    vxlan.set_peers(101, ["198.18.0.2"], netns=h1)
    assert lab.ping_eventually(g1, "10.97.0.12")

    assert vxlan.delete_vxlan(101, netns=h1) is True
    assert vxlan.delete_vxlan(101, netns=h1) is False
    assert bridges.delete_bridge(br_a, netns=h1) is True
    assert bridges.delete_bridge(br_a, netns=h1) is False
