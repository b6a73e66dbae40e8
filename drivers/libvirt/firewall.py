"""Security groups on the host, with nftables: a table per host, chains per port.

Guests' taps are bridge ports, so their frames are seen by the ``bridge`` family, which
knows the tap a frame comes from and goes to but, on kernels without
``nf_conntrack_bridge``, has no connection tracking. Stateful filtering needs conntrack, so
the work is split over two tables named ``novalite``:

``table bridge novalite``
    Chain ``forward`` (hook forward, priority -200) sees every bridged frame with its taps.
    It marks it: the low 16 bits of the packet mark are the number of the port it comes from,
    the high 16 bits the number of the port it goes to (0: not a port of ours, e.g. the VXLAN
    device or the LAN). Per port, ``pi_<n>`` sets the low bits and does the anti-spoofing
    when port security is on (only the port's MAC, only its IP and its allowed address pairs,
    ARP included, no DHCP server or router advertisement from a guest, no other ethertypes),
    ``po_<n>`` sets the high bits and, with port security on, lets DHCP answers reach the
    port only from this host's DHCP server (not from a LAN's own DHCP server on a flat
    network). The base chain also keeps that server (a veth ``nld...`` on the bridge,
    :mod:`.dhcp`) local: its frames reach only this host's taps.
``table inet novalite``
    With br_netfilter on (``net.bridge.bridge-nf-call-iptables=1``, set by
    :func:`ensure_host`) bridged IP traffic also passes the inet hooks, where conntrack runs.
    ``prerouting`` puts each network's traffic in a conntrack zone of its own (by bridge:
    overlapping subnets of two networks never mix connections); ``forward`` dispatches on the
    mark to ``eg_<n>`` (what the port sends) and ``ig_<n>`` (what it receives): established
    and related traffic passes, then the port's security-group rules, then drop (the sender's
    egress chain runs first and returns what it allows; the receiver's ingress chain decides
    last). DHCP replies
    and IPv6 neighbour discovery always pass, as in Neutron.

An update of a port's rules (:func:`apply_port`) is one nft transaction (the chains are
flushed and refilled atomically), effective for the next packet; connections already
established stay up until they end (their conntrack entries are kept), as with Neutron's
firewall drivers when a rule is removed. Port security off: the chains are there (the marks
are set) but accept everything.

Every function takes ``netns`` (None: this host), see :mod:`.hostnet`.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import re
import threading
from dataclasses import dataclass, field
from typing import Any

from novalite_drivers.base import DriverError
from novalite_drivers.libvirt.bridges import enable_bridge_netfilter
from novalite_drivers.libvirt.hostnet import CommandFailed, run

TABLE = "novalite"
MAX_PORTS = 0xFFFF
#: The ifname prefix of the hosts' DHCP legs on the bridges (see :mod:`.dhcp`).
DHCP_LEG_PREFIX = "nld"

_lock = threading.Lock()

_SKELETON = f"""
table bridge {TABLE} {{
  set ports {{ type ifname; }}
  map ids {{ type ifname : mark; }}
  map port_in {{ type ifname : verdict; }}
  map port_out {{ type ifname : verdict; }}
  chain forward {{
    type filter hook forward priority -200; policy accept;
    iifname "{DHCP_LEG_PREFIX}*" oifname != @ports drop
    oifname "{DHCP_LEG_PREFIX}*" iifname != @ports drop
    iifname @ports meta mark set 0
    oifname @ports meta mark set 0
    iifname vmap @port_in
    oifname vmap @port_out
  }}
}}
table inet {TABLE} {{
  map zones {{ typeof iifname : ct zone; }}
  map egress {{ type mark : verdict; }}
  map ingress {{ type mark : verdict; }}
  chain prerouting {{
    type filter hook prerouting priority raw; policy accept;
    ct zone set iifname map @zones
  }}
  chain forward {{
    type filter hook forward priority filter; policy accept;
    meta mark & 0x0000ffff vmap @egress
    meta mark & 0xffff0000 vmap @ingress
  }}
}}
"""

_MAC = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
_IFNAME = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")
_PROTOCOLS = {"tcp": 6, "udp": 17, "icmp": 1, "icmpv6": 58, "ipv6-icmp": 58, "sctp": 132}
_PORTED = {6: "tcp", 17: "udp", 132: "sctp"}


@dataclass
class PortFirewall:
    """What the firewall needs of a port (built from :class:`novalite_drivers.base.Port`)."""

    tap: str
    mac: str
    ips: list[str] = field(default_factory=list)
    port_security_enabled: bool = True
    security_rules: list[dict[str, Any]] = field(default_factory=list)
    allowed_address_pairs: list[dict[str, str]] = field(default_factory=list)


# -- the host's tables ----------------------------------------------------------------------------


def _nft(script: str, netns: str | None) -> None:
    run(["nft", "-f", "-"], netns, input=script)


def _nft_json(args: list[str], netns: str | None) -> list[dict[str, Any]]:
    out = run(["nft", "-j", *args], netns, check=False)
    try:
        items: list[dict[str, Any]] = json.loads(out or "{}").get("nftables", [])
        return items
    except ValueError:
        return []


def ensure_host(netns: str | None = None) -> None:
    """Create the host's two ``novalite`` tables unless they exist, and turn br_netfilter on."""
    with _lock:
        _ensure_host_locked(netns)


def _ensure_host_locked(netns: str | None) -> None:
    try:
        enable_bridge_netfilter(netns)
    except CommandFailed:
        # br_netfilter built as a module and not loaded yet: /proc/sys/net/bridge is missing
        with contextlib.suppress(DriverError):  # no modprobe: the retry says what is wrong
            run(["modprobe", "br_netfilter"], check=False)
        try:
            enable_bridge_netfilter(netns)
        except CommandFailed as exc:
            raise DriverError(f"cannot enable br_netfilter (modprobe br_netfilter): {exc}") from None
    have = run(["nft", "list", "tables"], netns)
    if f"table bridge {TABLE}" in have and f"table inet {TABLE}" in have:
        return
    parts = []
    for family in ("bridge", "inet"):
        if f"table {family} {TABLE}" in have:
            parts.append(f"delete table {family} {TABLE}")  # half-made: start again
    _nft("\n".join(parts) + "\n" + _SKELETON, netns)


def delete_host(netns: str | None = None) -> None:
    """Remove both tables (every port's chains). Missing: no-op."""
    with _lock:
        for family in ("bridge", "inet"):
            run(["nft", "delete", "table", family, TABLE], netns, check=False)


def _map_elems(family: str, name: str, netns: str | None) -> list[Any]:
    for item in _nft_json(["list", "map", family, TABLE, name], netns):
        if "map" in item:
            elems: list[Any] = item["map"].get("elem", [])
            return elems
    return []


def port_ids(netns: str | None = None) -> dict[str, int]:
    """Tap name -> the port's number in the marks, for every port with chains here."""
    return {str(k): int(v) for k, v in (_pair(e) for e in _map_elems("bridge", "ids", netns)) if k is not None}


def _pair(elem: Any) -> tuple[Any, Any]:
    if isinstance(elem, list) and len(elem) == 2:
        return elem[0], elem[1]
    return None, None


def ensure_network(bridge: str, netns: str | None = None) -> int:
    """Give ``bridge``'s traffic a conntrack zone of its own; return the zone."""
    _check_ifname(bridge)
    with _lock:
        _ensure_host_locked(netns)
        zones = {str(k): int(v) for k, v in (_pair(e) for e in _map_elems("inet", "zones", netns)) if k is not None}
        if bridge in zones:
            return zones[bridge]
        zone = next(z for z in range(1, 0xFFFF) if z not in zones.values())
        _nft(f'add element inet {TABLE} zones {{ "{bridge}" : {zone} }}\n', netns)
        return zone


def forget_network(bridge: str, netns: str | None = None) -> None:
    """Drop ``bridge``'s conntrack zone entry (the network's bridge is gone). Missing: no-op."""
    _check_ifname(bridge)
    with _lock:
        run(["nft", "delete", "element", "inet", TABLE, "zones", f'{{ "{bridge}" }}'], netns, check=False)


# -- rules ----------------------------------------------------------------------------------------------


def _check_ifname(name: str) -> str:
    if not _IFNAME.match(name):
        raise DriverError(f"invalid interface name {name!r}")
    return name


def _mac(value: str) -> str:
    mac = str(value).lower()
    if not _MAC.match(mac):
        raise DriverError(f"invalid MAC address {value!r}")
    return mac


def _net(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    try:
        return ipaddress.ip_network(str(value), strict=False)
    except ValueError:
        raise DriverError(f"invalid address or prefix {value!r}") from None


def _fmt(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def _port_number(value: Any, what: str) -> int:
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise DriverError(f"invalid {what} {value!r}") from None
    if not 0 <= n <= 65535:
        raise DriverError(f"invalid {what} {value!r}")
    return n


def rule_match(rule: dict[str, Any]) -> str | None:
    """The nft match of one security-group rule (without the verdict), or None when the rule
    cannot match this kind of traffic (e.g. an IPv6 prefix on an IPv4 rule: Neutron refuses
    those; skipped here)."""
    direction = rule.get("direction") or "ingress"
    if direction not in ("ingress", "egress"):
        raise DriverError(f"invalid security group rule direction {direction!r}")
    ethertype = rule.get("ethertype") or "IPv4"
    if ethertype not in ("IPv4", "IPv6"):
        raise DriverError(f"invalid ethertype {ethertype!r}")
    v6 = ethertype == "IPv6"
    fam = "ip6" if v6 else "ip"
    parts = [f"meta nfproto {'ipv6' if v6 else 'ipv4'}"]
    prefix = rule.get("remote_ip_prefix")
    if prefix:
        net = _net(prefix)
        if net.version != (6 if v6 else 4):
            return None
        if net.prefixlen:
            parts.append(f"{fam} {'saddr' if direction == 'ingress' else 'daddr'} {_fmt(net)}")
    proto_raw = rule.get("protocol")
    if proto_raw in (None, "", "any"):
        return " ".join(parts)
    proto_s = str(proto_raw).lower()
    if proto_s in _PROTOCOLS:
        proto = _PROTOCOLS[proto_s]
    elif proto_s.isdigit() and int(proto_s) <= 255:
        proto = int(proto_s)
    else:
        raise DriverError(f"invalid protocol {proto_raw!r}")
    if proto in (1, 58):
        proto = 58 if v6 else 1
    lo, hi = rule.get("port_range_min"), rule.get("port_range_max")
    if proto in _PORTED:
        name = _PORTED[proto]
        parts.append(f"meta l4proto {name}")
        if lo is not None or hi is not None:
            a = _port_number(lo if lo is not None else hi, "port_range_min")
            b = _port_number(hi if hi is not None else lo, "port_range_max")
            if a > b:
                raise DriverError(f"port_range_min {a} is greater than port_range_max {b}")
            parts.append(f"{name} dport {a}" if a == b else f"{name} dport {a}-{b}")
    elif proto in (1, 58):
        icmp = "icmpv6" if proto == 58 else "icmp"
        parts.append(f"meta l4proto {icmp}")
        if lo is not None:  # Neutron: port_range_min is the ICMP type, port_range_max its code
            parts.append(f"{icmp} type {_port_number(lo, 'ICMP type')}")
            if hi is not None:
                parts.append(f"{icmp} code {_port_number(hi, 'ICMP code')}")
    else:
        parts.append(f"meta l4proto {proto}")
    return " ".join(parts)


def _pairs(fw: PortFirewall) -> list[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """(MAC, prefix) a port may send from: its own IPs, then its allowed address pairs."""
    own = _mac(fw.mac)
    out = [(own, _net(a)) for a in fw.ips if a]
    for pair in fw.allowed_address_pairs:
        if pair.get("ip_address"):
            out.append((_mac(pair.get("mac_address") or own), _net(pair["ip_address"])))
    return out


def render_port(fw: PortFirewall, n: int) -> str:
    """The nft script that (re)defines port number ``n``'s four chains and its map entries:
    one transaction (:func:`apply_port` runs it)."""
    tap = _check_ifname(fw.tap)
    if not 1 <= n <= MAX_PORTS:
        raise DriverError(f"port number {n} out of range")
    own = _mac(fw.mac)
    pairs = _pairs(fw)
    pi: list[str] = [f"meta mark set meta mark & 0xffff0000 | {n:#x}"]
    po: list[str] = [f"meta mark set meta mark & 0x0000ffff | {n << 16:#x}"]
    eg: list[str] = []
    ig: list[str] = []
    if fw.port_security_enabled:
        macs = sorted({m for m, _ in pairs} | {own})
        pi.append(f"ether saddr != {{ {', '.join(macs)} }} drop")
        for mac, net in pairs:
            if net.version == 4:
                pi.append(f"ether type arp ether saddr {mac} arp saddr ether {mac} arp saddr ip {_fmt(net)} return")
        pi.append("ether type arp drop")
        # a guest is never a DHCP server nor a router
        pi.append("ether type ip udp sport 67 udp dport 68 drop")
        pi.append("ether type ip6 udp sport 547 udp dport 546 drop")
        pi.append("ether type ip6 icmpv6 type nd-router-advert drop")
        pi.append(f"ether type ip ether saddr {own} ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp dport 67 return")
        for mac, net in pairs:
            fam = "ip" if net.version == 4 else "ip6"
            pi.append(f"ether type {fam} ether saddr {mac} {fam} saddr {_fmt(net)} return")
        pi.append(f"ether type ip6 ether saddr {own} ip6 saddr fe80::/10 return")
        pi.append(f"ether type ip6 ether saddr {own} ip6 saddr :: icmpv6 type nd-neighbor-solicit return")
        pi.append("drop")  # any other source address, any other ethertype
        # DHCP answers come from this host's server only (not a LAN's DHCP server, not a guest)
        po.append(f'iifname != "{DHCP_LEG_PREFIX}*" ether type ip udp sport 67 udp dport 68 drop')

        # eg_<n> runs before ig_<n> (of the port the packet goes to) in the same base chain:
        # what it allows *returns* (an accept would skip the receiver's ingress chain).
        eg = [
            "ct state established,related return",
            "ct state invalid drop",
            "meta nfproto ipv4 udp sport 68 udp dport 67 return",
            "meta nfproto ipv6 udp sport 546 udp dport 547 return",
            "icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } return",
        ]
        ig = [
            "ct state established,related accept",
            "ct state invalid drop",
            "meta nfproto ipv4 udp sport 67 udp dport 68 accept",
            "meta nfproto ipv6 udp sport 547 udp dport 546 accept",
            "icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept",
        ]
        for rule in fw.security_rules:
            match = rule_match(rule)
            if match is None:
                continue
            if rule.get("direction") == "egress":
                eg.append(f"{match} return")
            else:
                ig.append(f"{match} accept")
        eg.append("drop")
        ig.append("drop")
    else:
        eg = ["return"]
        ig = ["accept"]

    lines = [
        f'add element bridge {TABLE} ids {{ "{tap}" : {n:#x} }}',
        f'add element bridge {TABLE} ports {{ "{tap}" }}',
    ]
    for family, chain, rules in (
        ("bridge", f"pi_{n}", pi),
        ("bridge", f"po_{n}", po),
        ("inet", f"eg_{n}", eg),
        ("inet", f"ig_{n}", ig),
    ):
        lines.append(f"add chain {family} {TABLE} {chain}")
        lines.append(f"flush chain {family} {TABLE} {chain}")
        lines += [f"add rule {family} {TABLE} {chain} {r}" for r in rules]
    lines += [
        f'add element bridge {TABLE} port_in {{ "{tap}" : jump pi_{n} }}',
        f'add element bridge {TABLE} port_out {{ "{tap}" : jump po_{n} }}',
        f"add element inet {TABLE} egress {{ {n:#x} : jump eg_{n} }}",
        f"add element inet {TABLE} ingress {{ {n << 16:#x} : jump ig_{n} }}",
    ]
    return "\n".join(lines) + "\n"


def apply_port(fw: PortFirewall, netns: str | None = None) -> int:
    """Install or replace the filtering of ``fw.tap`` (its chains are refilled in one
    transaction: the new rules hold from the next packet on). The tap need not exist yet.
    Returns the port's number."""
    _check_ifname(fw.tap)
    with _lock:
        _ensure_host_locked(netns)
        ids = port_ids(netns)
        n = ids.get(fw.tap)
        if n is None:
            used = set(ids.values())
            n = next((i for i in range(1, MAX_PORTS + 1) if i not in used), 0)
            if not n:
                raise DriverError("no free firewall port number on this host")
        _nft(render_port(fw, n), netns)
        return n


def remove_port(tap: str, netns: str | None = None) -> bool:
    """Remove ``tap``'s chains and entries. Not filtered (or no tables): no-op, False."""
    _check_ifname(tap)
    with _lock:
        n = port_ids(netns).get(tap)
        if n is None:
            return False
        lines = [
            f'delete element bridge {TABLE} port_in {{ "{tap}" }}',
            f'delete element bridge {TABLE} port_out {{ "{tap}" }}',
            f"delete element inet {TABLE} egress {{ {n:#x} }}",
            f"delete element inet {TABLE} ingress {{ {n << 16:#x} }}",
            f'delete element bridge {TABLE} ports {{ "{tap}" }}',
            f'delete element bridge {TABLE} ids {{ "{tap}" }}',
        ]
        for family, chain in (("bridge", f"pi_{n}"), ("bridge", f"po_{n}"), ("inet", f"eg_{n}"), ("inet", f"ig_{n}")):
            lines += [f"flush chain {family} {TABLE} {chain}", f"delete chain {family} {TABLE} {chain}"]
        _nft("\n".join(lines) + "\n", netns)
        return True
