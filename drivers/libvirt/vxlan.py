"""VXLAN: a network's bridge extended to the other hosts, one VXLAN device per network.

The device ``nlvx<VNI>`` (VNI = the network's ``provider:segmentation_id``) is a port of
the network's bridge. No multicast: the other hosts' tunnel endpoints (their ``local_ip``)
are given to the driver (:meth:`ComputeDriver.set_overlay_peers`), and each becomes an
all-zeros FDB entry (head-end replication: broadcast, unknown unicast and multicast go to
every peer); the device learns where each remote MAC lives from the traffic. UDP port
4789 (IANA). The overlay takes 50 bytes of each packet: the device's MTU is the underlay's
minus 50 unless the network's MTU is given.

Every function takes ``netns`` (None: this host), see :mod:`.hostnet`.
"""

from __future__ import annotations

import ipaddress
import json

from novalite_drivers.base import DriverError
from novalite_drivers.libvirt.hostnet import ip, link_exists, run

VXLAN_PORT = 4789
VXLAN_OVERHEAD = 50
ZERO_MAC = "00:00:00:00:00:00"
MAX_VNI = 2**24 - 1


def vxlan_name(vni: int) -> str:
    """The VXLAN device of ``vni`` (``nlvx`` + the VNI: at most 12 characters)."""
    if not isinstance(vni, int) or not 1 <= vni <= MAX_VNI:
        raise DriverError(f"invalid VXLAN segmentation id {vni!r} (1..{MAX_VNI})")
    return f"nlvx{vni}"


def ensure_vxlan(
    vni: int,
    bridge: str,
    local_ip: str,
    dev: str | None = None,
    port: int = VXLAN_PORT,
    mtu: int | None = None,
    netns: str | None = None,
) -> str:
    """Create the VXLAN device of ``vni`` (tunnel source ``local_ip``, over ``dev`` if given)
    unless it exists, put it on ``bridge`` and bring it up. Returns its name."""
    name = vxlan_name(vni)
    try:
        ipaddress.ip_address(local_ip)
    except ValueError:
        raise DriverError(f"invalid VXLAN local_ip {local_ip!r}") from None
    if not link_exists(name, netns):
        args = ["link", "add", name, "type", "vxlan", "id", str(vni), "local", local_ip, "dstport", str(port)]
        if dev:
            args += ["dev", dev]
        ip(*args, netns=netns)
    if mtu:
        ip("link", "set", "dev", name, "mtu", str(mtu), netns=netns)
    ip("link", "set", "dev", name, "master", bridge, netns=netns)
    ip("link", "set", "dev", name, "up", netns=netns)
    return name


def delete_vxlan(vni: int, netns: str | None = None) -> bool:
    """Remove the VXLAN device of ``vni``. Missing: no-op, False."""
    name = vxlan_name(vni)
    if not link_exists(name, netns):
        return False
    ip("link", "del", "dev", name, netns=netns)
    return True


def peers(vni: int, netns: str | None = None) -> list[str]:
    """The tunnel endpoints the device of ``vni`` floods to (its all-zeros FDB entries)."""
    out = run(["bridge", "-j", "fdb", "show", "dev", vxlan_name(vni)], netns, check=False)
    try:
        entries = json.loads(out or "[]")
    except ValueError:
        return []
    return sorted({e["dst"] for e in entries if e.get("mac") == ZERO_MAC and e.get("dst")})


def set_peers(vni: int, endpoints: list[str], netns: str | None = None) -> list[str]:
    """Make ``endpoints`` exactly the peers of ``vni``'s device: missing ones are added, the
    others removed. The device must exist (:func:`ensure_vxlan`). Returns the peers now."""
    name = vxlan_name(vni)
    want = set()
    for e in endpoints:
        try:
            want.add(str(ipaddress.ip_address(e)))
        except ValueError:
            raise DriverError(f"invalid VXLAN peer address {e!r}") from None
    if not link_exists(name, netns):
        raise DriverError(f"there is no VXLAN device {name} on this host")
    have = set(peers(vni, netns))
    for dst in sorted(want - have):
        run(["bridge", "fdb", "append", ZERO_MAC, "dev", name, "dst", dst], netns)
    for dst in sorted(have - want):
        run(["bridge", "fdb", "del", ZERO_MAC, "dev", name, "dst", dst], netns, check=False)
    return sorted(want)
