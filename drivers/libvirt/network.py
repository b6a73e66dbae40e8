"""libvirt networks: DHCP host entries (so a guest gets exactly its port's IP) and helpers
that create the isolated network tests use, or a NAT network for a real deployment.

All functions are blocking (they call libvirt); the driver runs them in a thread.

*Isolated* means the network XML has no ``<forward>`` element: libvirt gives the bridge an
address and runs dnsmasq for DHCP/DNS, but installs no NAT or routing, so guest traffic
never leaves the host. Tests must only ever use isolated networks.
"""

from __future__ import annotations

import ipaddress
import logging
import shutil
import subprocess
import xml.etree.ElementTree as ET
from typing import Any

from novalite_drivers.base import DriverError

try:  # the package imports without libvirt-python; the driver reports it at init_host
    import libvirt
except ImportError:  # pragma: no cover
    libvirt = None

LOG = logging.getLogger("novalite_drivers.libvirt")


def _lookup(conn: Any, name: str) -> Any:
    try:
        return conn.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            raise DriverError(f"libvirt network {name!r} does not exist on this host") from None
        raise DriverError(f"cannot look up libvirt network {name!r}: {exc.get_error_message()}") from None


def _update_flags(net: Any) -> int:
    flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    if net.isActive():
        flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
    if not net.isPersistent():
        flags = libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
    return int(flags)


def _dhcp_hosts(net: Any) -> list[dict[str, str]]:
    # The live definition (the persistent one when the network is not running): entries
    # are always added to both.
    root = ET.fromstring(net.XMLDesc(0))
    return [dict(h.attrib) for h in root.findall("./ip/dhcp/host")]


def _host_xml(attrs: dict[str, str]) -> str:
    el = ET.Element("host", {k: attrs[k] for k in ("mac", "name", "ip") if attrs.get(k)})
    return ET.tostring(el, encoding="unicode")


def _delete(net: Any, attrs: dict[str, str]) -> None:
    net.update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE,
        libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
        -1,
        _host_xml(attrs),
        _update_flags(net),
    )


def add_dhcp_host(conn: Any, network: str, mac: str, ip: str, name: str | None = None) -> None:
    """Make ``network``'s DHCP server hand ``ip`` to ``mac`` (live and persistent).

    A stale entry for the same MAC or IP (left by a crashed agent) is replaced.
    """
    net = _lookup(conn, network)
    mac = mac.lower()
    try:
        for host in _dhcp_hosts(net):
            if host.get("mac", "").lower() == mac or host.get("ip") == ip or (name and host.get("name") == name):
                _delete(net, host)
        net.update(
            libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
            libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST,
            -1,
            _host_xml({"mac": mac, "name": name or "", "ip": ip}),
            _update_flags(net),
        )
    except libvirt.libvirtError as exc:
        raise DriverError(
            f"cannot add DHCP entry {mac} -> {ip} to network {network!r}: {exc.get_error_message()}"
        ) from None


def remove_dhcp_host(conn: Any, network: str, mac: str) -> bool:
    """Remove every DHCP entry for ``mac`` from ``network``. Missing network or entry: no-op."""
    try:
        net = conn.networkLookupByName(network)
    except libvirt.libvirtError:
        return False
    mac = mac.lower()
    removed = False
    try:
        for host in _dhcp_hosts(net):
            if host.get("mac", "").lower() == mac:
                _delete(net, host)
                removed = True
    except libvirt.libvirtError as exc:
        raise DriverError(
            f"cannot remove DHCP entry {mac} from network {network!r}: {exc.get_error_message()}"
        ) from None
    return removed


def release_leases(conn: Any, network: str, ip: str | None = None, mac: str | None = None) -> int:
    """Release dnsmasq leases on ``network`` for ``ip`` held by another MAC, or held by ``mac``.

    Removing a DHCP host entry does not end its lease: dnsmasq would keep refusing that
    address to a new MAC ("not using configured address ... leased to ...") for the rest of
    the lease (an hour by default). ``dhcp_release`` (package dnsmasq-utils) ends it early,
    as Nova's nova-network did. Best effort: returns how many leases were released.
    """
    try:
        net = conn.networkLookupByName(network)
        if not net.isActive():
            return 0
        leases = net.DHCPLeases()
        bridge = net.bridgeName()
    except libvirt.libvirtError:
        return 0  # no such network, or a driver without leases (test:///)
    mac = mac.lower() if mac else None
    stale = [
        lease
        for lease in leases
        if (mac and lease.get("mac", "").lower() == mac)
        or (ip and lease.get("ipaddr") == ip and lease.get("mac", "").lower() != mac)
    ]
    if not stale:
        return 0
    tool = shutil.which("dhcp_release")
    if tool is None:
        LOG.warning(
            "dhcp_release is not installed (apt-get install dnsmasq-utils): %d stale lease(s) on %s stay",
            len(stale),
            network,
        )
        return 0
    released = 0
    for lease in stale:
        cmd = [tool, bridge, lease["ipaddr"], lease["mac"]]
        if lease.get("clientid"):
            cmd.append(lease["clientid"])
        try:
            subprocess.run(cmd, check=True, capture_output=True, timeout=10)
            released += 1
        except (OSError, subprocess.SubprocessError) as exc:
            LOG.warning("cannot release the lease of %s on %s: %s", lease["ipaddr"], network, exc)
    return released


def dhcp_hosts(conn: Any, network: str) -> list[dict[str, str]]:
    """The DHCP host entries of ``network`` (``mac``, ``ip``, ``name``)."""
    return _dhcp_hosts(_lookup(conn, network))


def network_xml(name: str, bridge: str, cidr: str, nat: bool = False, dhcp: bool = True) -> str:
    """XML of a libvirt network on ``cidr`` (the host's address on the bridge, e.g. 10.213.77.1/24).

    Isolated (no ``<forward>``) unless ``nat``. The DHCP range covers the upper half of the
    subnet; fixed addresses (DHCP host entries) may come from anywhere in it.
    """
    iface = ipaddress.ip_interface(cidr)
    net4 = iface.network
    if net4.num_addresses < 8:
        raise ValueError(f"subnet {net4} is too small")
    root = ET.Element("network")
    ET.SubElement(root, "name").text = name
    if nat:
        ET.SubElement(root, "forward", {"mode": "nat"})
    ET.SubElement(root, "bridge", {"name": bridge, "stp": "on", "delay": "0"})
    ip_el = ET.SubElement(root, "ip", {"address": str(iface.ip), "prefix": str(net4.prefixlen)})
    if dhcp:
        hosts = list(net4.hosts())
        half = len(hosts) // 2
        d = ET.SubElement(ip_el, "dhcp")
        ET.SubElement(d, "range", {"start": str(hosts[half]), "end": str(hosts[-1])})
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def ensure_network(conn: Any, name: str, bridge: str, cidr: str, nat: bool = False, autostart: bool = True) -> Any:
    """Define (persistently) and start network ``name`` unless it exists; return it.

    An existing network is left as it is (only started if inactive); its definition is not
    compared with the arguments.
    """
    try:
        net = conn.networkLookupByName(name)
    except libvirt.libvirtError as exc:
        if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
            raise DriverError(f"cannot look up network {name!r}: {exc.get_error_message()}") from None
        try:
            net = conn.networkDefineXML(network_xml(name, bridge, cidr, nat=nat))
        except libvirt.libvirtError as exc2:
            raise DriverError(f"cannot define network {name!r}: {exc2.get_error_message()}") from None
    try:
        if not net.isActive():
            net.create()
        if autostart and net.isPersistent():
            net.setAutostart(1)
    except libvirt.libvirtError as exc:
        raise DriverError(f"cannot start network {name!r}: {exc.get_error_message()}") from None
    return net


def ensure_isolated_network(conn_or_uri: Any, name: str, bridge: str, cidr: str) -> None:
    """Make sure the isolated network ``name`` exists and runs (no ``<forward>``: host-only).

    ``conn_or_uri`` is an open ``virConnect`` or a URI such as ``qemu:///system``.
    """
    if isinstance(conn_or_uri, str):
        if libvirt is None:
            raise DriverError("libvirt-python is not installed (pip install libvirt-python)")
        conn = libvirt.open(conn_or_uri)
        try:
            ensure_network(conn, name, bridge, cidr, nat=False)
        finally:
            conn.close()
    else:
        ensure_network(conn_or_uri, name, bridge, cidr, nat=False)


def prepare_guest_network(uri: str, name: str, cidr: str, create: bool = True) -> str:
    """Make sure guests' ports have a network: the libvirt network ``name`` serving ``cidr``.

    If it does not exist, it is created **isolated** (no ``<forward>``: guests reach each
    other and this host, nothing else; NAT is an operator's choice, see docs/libvirt.md), with
    this host at the subnet's first address (novalite's gateway) on a bridge named after the
    network — unless ``create`` is false. An existing network is used as it is, but its subnet
    must be ``cidr``. Blocking; returns a line for the start banner; DriverError when the
    network cannot serve novalite's ports.
    """
    import zlib

    subnet = ipaddress.ip_network(cidr)
    if libvirt is None:
        return f"{name} {subnet} (not checked: libvirt-python is missing)"  # init_host says more
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError:
        return f"{name} {subnet} (not checked: libvirt is unreachable)"  # init_host says more
    try:
        try:
            net = conn.networkLookupByName(name)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_NETWORK:
                raise DriverError(f"cannot look up libvirt network {name!r}: {exc.get_error_message()}") from None
            net = None
        if net is None:
            if not create:
                raise DriverError(
                    f"the libvirt network {name!r} (network_name) does not exist and create_network is off"
                )
            bridge = f"nlbr{zlib.crc32(name.encode()):08x}"
            gateway = next(subnet.hosts())
            ensure_network(conn, name, bridge, f"{gateway}/{subnet.prefixlen}", nat=False)
            LOG.info("created isolated libvirt network %s (%s) on %s", name, subnet, bridge)
            return f"{name} {subnet} (isolated libvirt network on {bridge}, created now)"
        root = ET.fromstring(net.XMLDesc(0))
        subnets = []
        for ip in root.findall("./ip"):
            if ip.get("address") and (ip.get("family") or "ipv4") == "ipv4":
                mask = ip.get("prefix") or ip.get("netmask") or "32"
                subnets.append(ipaddress.ip_interface(f"{ip.get('address')}/{mask}").network)
        if subnet not in subnets:
            raise DriverError(
                f"the libvirt network {name!r} serves {', '.join(map(str, subnets)) or 'no IPv4 subnet'}, "
                f"but network_cidr is {subnet}: make them the same"
            )
        if not net.isActive():
            net.create()
        forward = root.find("./forward")
        kind = "isolated" if forward is None else f"forward mode {forward.get('mode') or 'nat'}"
        return f"{name} {subnet} ({kind} libvirt network on {net.bridgeName()})"
    finally:
        conn.close()
