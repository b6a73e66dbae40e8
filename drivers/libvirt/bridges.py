"""Linux bridges: one per Neutron network on each host, and the guests' taps on them.

Names fit IFNAMSIZ (15 characters): a network's bridge is ``nlb`` + the first 12 hex
digits of its id (``nlb3f2a9c0d41e7``), a port's tap ``tap`` + the first 11 characters of
its id, as Nova's libvirt driver names them (``tap3f2a9c0d-41``). A flat network's bridge is
not ours: it is the operator's, named by the ``physical_network`` mapping, and is never
created or removed here.

Every function takes ``netns`` (None: this host), see :mod:`.hostnet`.
"""

from __future__ import annotations

import json
import re

from novalite_drivers.base import DriverError
from novalite_drivers.libvirt.hostnet import ip, link_exists, sysctl

#: The prefix of the bridges novalite creates (the firewall and ``list_bridges`` know them by it).
BRIDGE_PREFIX = "nlb"
IFNAMSIZ = 15


def _hex_id(value: str) -> str:
    return re.sub(r"[^0-9a-zA-Z]", "", value).lower()


def bridge_name(network_id: str) -> str:
    """The bridge of network ``network_id`` on every host (the same name everywhere)."""
    h = _hex_id(network_id)
    if not h:
        raise DriverError(f"invalid network id {network_id!r}")
    return (BRIDGE_PREFIX + h)[:IFNAMSIZ]


def tap_name(port_id: str) -> str:
    """The tap device of port ``port_id`` (Nova's ``tap`` + the first 11 characters of the id)."""
    if not port_id or not re.fullmatch(r"[A-Za-z0-9-]+", port_id):
        raise DriverError(f"invalid port id {port_id!r}")
    return ("tap" + port_id)[:14]


def ensure_bridge(name: str, mtu: int | None = None, netns: str | None = None) -> bool:
    """Create the bridge ``name`` unless it exists (no STP, no forward delay: ports forward at
    once), and bring it up. Returns True when it was created now."""
    created = False
    if not link_exists(name, netns):
        ip("link", "add", "name", name, "type", "bridge", "stp_state", "0", "forward_delay", "0", netns=netns)
        created = True
    if mtu:
        ip("link", "set", "dev", name, "mtu", str(mtu), netns=netns)
    ip("link", "set", "dev", name, "up", netns=netns)
    return created


def require_bridge(name: str, netns: str | None = None) -> None:
    """DriverError unless ``name`` exists and is a bridge (a flat network's operator bridge)."""
    out = ip("-j", "-d", "link", "show", "dev", name, netns=netns, check=False)
    try:
        info = json.loads(out or "[]")
    except ValueError:
        info = []
    if not info:
        raise DriverError(f"bridge {name!r} does not exist on this host (the flat network's physical_network)")
    if (info[0].get("linkinfo") or {}).get("info_kind") != "bridge":
        raise DriverError(f"{name!r} is not a bridge")


def delete_bridge(name: str, netns: str | None = None) -> bool:
    """Remove bridge ``name`` (its ports are released). Missing: no-op, False."""
    if not link_exists(name, netns):
        return False
    ip("link", "del", "dev", name, netns=netns)
    return True


def attach(ifname: str, bridge: str, netns: str | None = None) -> None:
    """Make ``ifname`` (a tap, a veth, a VXLAN device) a port of ``bridge`` and bring it up."""
    ip("link", "set", "dev", ifname, "master", bridge, netns=netns)
    ip("link", "set", "dev", ifname, "up", netns=netns)


def detach(ifname: str, netns: str | None = None) -> None:
    """Release ``ifname`` from its bridge. Missing device: no-op."""
    if link_exists(ifname, netns):
        ip("link", "set", "dev", ifname, "nomaster", netns=netns)


def members(bridge: str, netns: str | None = None) -> list[str]:
    """The names of the ports of ``bridge`` (empty when it does not exist)."""
    out = ip("-j", "link", "show", "master", bridge, netns=netns, check=False)
    try:
        return sorted(link["ifname"] for link in json.loads(out or "[]"))
    except (ValueError, KeyError):
        return []


def list_bridges(netns: str | None = None) -> list[str]:
    """The network bridges novalite created here (``nlb`` + 12 characters of a network id;
    not the ``nlbr<crc>`` bridges of the libvirt networks it creates)."""
    out = ip("-j", "link", "show", "type", "bridge", netns=netns, check=False)
    try:
        names = (link["ifname"] for link in json.loads(out or "[]"))
        return sorted(n for n in names if re.fullmatch(BRIDGE_PREFIX + r"[0-9a-z]{12}", n))
    except (ValueError, KeyError):
        return []


def enable_bridge_netfilter(netns: str | None = None) -> None:
    """Send bridged IPv4/IPv6 through the inet netfilter hooks (br_netfilter), so that
    conntrack sees guests' traffic and security groups can be stateful (:mod:`.firewall`)."""
    sysctl("net.bridge.bridge-nf-call-iptables", "1", netns)
    sysctl("net.bridge.bridge-nf-call-ip6tables", "1", netns)
