"""The libvirt driver's data path (issue 12): how a port becomes a NIC on this host.

:class:`DatapathMixin` is a part of :class:`~novalite_drivers.libvirt.driver.LibvirtDriver`:
it turns the ports of an instance into the domain's ``<interface>`` elements and makes the
host side they need, with :mod:`.bridges`, :mod:`.vxlan`, :mod:`.dhcp` and :mod:`.firewall`.

A port goes one of two ways:

* **a Neutron network's port** (``port.network_id`` set, its network not in the driver's
  ``network_map``): a tap ``tap<port id>`` on the network's Linux bridge. ``local``: the
  bridge ``nlb<network id>`` on this host only; ``vxlan``: the same bridge plus the VXLAN
  device of the segment, whose peers :meth:`set_overlay_peers` sets; ``flat``: the
  operator's existing bridge that ``physical_bridges`` maps ``physical_network`` to (e.g. the
  bridge that holds the LAN NIC). IPv4 ports get their address from the network's dnsmasq
  on this host (:mod:`.dhcp`); the config drive's ``network_data.json`` carries it too.
* **a libvirt network's port** (the built-in network, mapped by ``network_map``, and ports
  without ``network_id``): as before issue 12, an interface on that libvirt network, whose
  dnsmasq gets a DHCP host entry.

Either way a port with an id is filtered by the host firewall (security groups and
anti-spoofing, :mod:`.firewall`) from before the guest starts; :meth:`update_port_security`
changes its rules while it runs.

Options (the ``[driver.libvirt]`` section), besides :mod:`.driver`'s:

``overlay_local_ip``
    This host's VXLAN tunnel endpoint (its address on the underlay network, the one the
    other hosts' peer lists name). Required for ``vxlan`` networks.
``overlay_dev``
    The underlay device VXLAN packets leave by (default: as routing decides).
``physical_bridges``
    ``{physical_network: bridge}`` for ``flat`` networks (e.g. ``{lan = "br0"}``).
``network_state_path``
    Where each network's dnsmasq keeps its files (default ``/var/lib/novalite/network``).
``host_networking``
    Make bridges, VXLAN devices, DHCP servers and firewall rules (default true, false with
    a ``test:///`` URI, whose guests are not real). ``host_netns``: do all of it inside this
    network namespace instead of on the host (tests only).
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import logging
import os
import re
import threading
import xml.etree.ElementTree as ET
from typing import Any

from novalite_drivers.base import DriverError, Instance, Port
from novalite_drivers.libvirt import bridges, dhcp, firewall, vxlan
from novalite_drivers.libvirt import network as netmod
from novalite_drivers.libvirt.xml import NicSpec, domain_bridges, interface_xml

try:
    import libvirt
except ImportError:  # pragma: no cover - reported by init_host
    libvirt = None

LOG = logging.getLogger("novalite_drivers.libvirt")

#: The MTU of a VXLAN network's NICs when the network does not say (1500 minus the overlay).
VXLAN_MTU = 1500 - vxlan.VXLAN_OVERHEAD


def _bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def _dhcp_name(hostname: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", hostname.lower()).strip("-")[:63]


class DatapathMixin:
    """Port plumbing of the libvirt driver (see the module docstring)."""

    host: str
    uri: str
    options: dict[str, Any]
    network: str | None
    network_map: dict[str, str]

    def _init_datapath(self) -> None:
        o = self.options
        self.host_netns: str | None = o.get("host_netns") or None
        self.host_networking: bool = _bool(o.get("host_networking", not self.uri.startswith("test:")))
        self.overlay_local_ip: str | None = o.get("overlay_local_ip") or None
        self.overlay_dev: str | None = o.get("overlay_dev") or None
        self.overlay_port: int = int(o.get("overlay_port", vxlan.VXLAN_PORT))
        self.physical_bridges: dict[str, str] = dict(o.get("physical_bridges") or {})
        self.network_state_path: str = os.path.abspath(o.get("network_state_path") or "/var/lib/novalite/network")
        #: network id -> (VNI, peers) as the conductor last sent them (set_overlay_peers).
        self.overlay_peers: dict[str, tuple[int, list[str]]] = {}
        self._net_lock = threading.RLock()
        #: Networks with a plug in progress (their bridge must not be torn down meanwhile).
        self._plugging: collections.Counter[str] = collections.Counter()
        #: Port key (id, else MAC) -> network id of every port this driver plugged and has not
        #: unplugged: a network stays while one of them is there, even before its domain exists.
        self._plugged_ports: dict[str, str] = {}

    # -- which way a port goes ------------------------------------------------------------------

    def _on_bridge(self, port: Port) -> bool:
        """True for a Neutron network's port (a tap on the network's bridge)."""
        return bool(port.network_id) and not (port.network and port.network in self.network_map)

    def _port_libvirt_network(self, port: Port) -> str | None:
        if port.network:
            return self.network_map.get(port.network, port.network)
        return self.network

    @staticmethod
    def _tap(port: Port) -> str | None:
        return bridges.tap_name(port.id) if port.id else None

    # -- plugging -------------------------------------------------------------------------------

    def _plug_ports_sync(self, conn: Any, instance: Instance) -> list[NicSpec]:
        """Make the host side of every port of ``instance`` and return its NICs, in order.
        Called before the domain is defined (the firewall holds from its first packet).
        Cleanup duty: :meth:`_unplug_ports_sync` removes what this made (spawn's cleanup
        calls it through destroy)."""
        nics = []
        named: set[str] = set()
        for port in instance.ports:
            key = port.network_id or port.network or ""
            name = None
            if key not in named:
                name = _dhcp_name(instance.hostname or instance.name) or None
                named.add(key)
            nics.append(self._plug_port_sync(conn, port, name))
        return nics

    def _plug_port_sync(self, conn: Any, port: Port, dhcp_name: str | None = None) -> NicSpec:
        """The host side of one port (bridge, overlay, DHCP entry, firewall); returns its NIC.
        Also what a hot-plug (attach_interface) needs before ``attachDeviceFlags``."""
        mac = port.mac.lower()
        tap = self._tap(port)
        if not self._on_bridge(port):
            net = self._port_libvirt_network(port)
            if not net:
                raise DriverError(f"port {port.mac} has no network and no default network is configured")
            if port.ip:
                netmod.add_dhcp_host(conn, net, mac, port.ip, dhcp_name)
                netmod.release_leases(conn, net, ip=port.ip, mac=mac)
            else:
                netmod._lookup(conn, net)  # fail early and readably on a missing network
            if tap and self.host_networking:
                with contextlib.suppress(Exception):  # no zone: filtered all the same
                    firewall.ensure_network(conn.networkLookupByName(net).bridgeName(), self.host_netns)
                firewall.apply_port(self._port_firewall(port), self.host_netns)
            return NicSpec(mac, net, target=tap)

        assert port.network_id is not None
        with self._net_lock:
            self._plugging[port.network_id] += 1
        try:
            bridge = self._network_sync(port)
            with self._net_lock:
                self._plugged_ports[port.id or mac] = port.network_id
            mtu = port.mtu or (VXLAN_MTU if port.network_type == "vxlan" else None)
            if self.host_networking:
                self._dhcp_sync(port, bridge, dhcp_name)
                if tap:
                    firewall.apply_port(self._port_firewall(port), self.host_netns)
            return NicSpec(mac, bridge=bridge, target=tap, mtu=mtu)
        finally:
            with self._net_lock:
                self._plugging[port.network_id] -= 1
                if self._plugging[port.network_id] <= 0:
                    del self._plugging[port.network_id]

    def _replug_sync(self, instance: Instance) -> None:
        """Make sure the host side of the instance's bridge ports exists before its domain
        starts again (power on, hard reboot, resume): after a host reboot the bridges, VXLAN
        devices, DHCP servers and firewall chains are gone while the domain is still defined.
        Idempotent; libvirt networks' ports are libvirt's business."""
        if not self.host_networking:
            return
        for port in instance.ports:
            if self._on_bridge(port):
                self._plug_port_sync(None, port, _dhcp_name(instance.hostname or instance.name) or None)

    def _network_sync(self, port: Port) -> str:
        """The bridge of ``port``'s network on this host, made (with its overlay) if needed."""
        assert port.network_id is not None
        ns = self.host_netns
        kind = port.network_type or "local"
        if kind == "flat":
            phys = port.physical_network
            bridge = self.physical_bridges.get(phys or "")
            if not bridge:
                raise DriverError(
                    f"flat network {port.network_id}: physical network {phys!r} has no bridge on host"
                    f" {self.host} (driver option physical_bridges)"
                )
            if self.host_networking:
                bridges.require_bridge(bridge, ns)
                firewall.ensure_network(bridge, ns)
            return bridge
        if kind not in ("local", "vxlan"):
            raise DriverError(f"network type {kind!r} is not supported by the libvirt driver (flat, vxlan, local)")
        bridge = bridges.bridge_name(port.network_id)
        if not self.host_networking:
            return bridge
        with self._net_lock:
            mtu = port.mtu or (VXLAN_MTU if kind == "vxlan" else None)
            bridges.ensure_bridge(bridge, mtu, ns)
            if kind == "vxlan":
                vni = port.segmentation_id
                if not vni:
                    raise DriverError(f"vxlan network {port.network_id} has no segmentation id")
                if not self.overlay_local_ip:
                    raise DriverError(
                        f"vxlan network {port.network_id} needs this host's tunnel address"
                        " (driver option overlay_local_ip)"
                    )
                vxlan.ensure_vxlan(
                    int(vni), bridge, self.overlay_local_ip, self.overlay_dev, self.overlay_port, port.mtu, ns
                )
                known = self.overlay_peers.get(port.network_id)
                if known is not None and known[0] == int(vni):
                    vxlan.set_peers(int(vni), known[1], ns)
            firewall.ensure_network(bridge, ns)
        return bridge

    def _dhcp_address(self, port: Port, subnet: ipaddress.IPv4Network) -> str | None:
        """This host's DHCP server address on ``subnet``: ``port.dhcp_server`` when the
        controller reserved one; else the gateway on networks without a router here (local,
        vxlan: novalite has no routers yet, and the server is invisible beyond this host's
        taps); else (flat: the gateway is the LAN's router) the subnet's last address."""
        if port.dhcp_server:
            return port.dhcp_server
        if port.network_type != "flat" and port.gateway:
            return port.gateway
        last = subnet.broadcast_address - 1
        return None if str(last) == port.ip or last not in subnet else str(last)

    def _dhcp_sync(self, port: Port, bridge: str, name: str | None) -> None:
        if not port.ip or port.prefix_len is None or not port.network_id:
            return
        iface = ipaddress.ip_interface(f"{port.ip}/{port.prefix_len}")
        if iface.version != 4:
            return  # IPv6: from the config drive (no DHCPv6 yet)
        subnet = ipaddress.IPv4Network(iface.network)
        server = self._dhcp_address(port, subnet)
        if server is None:
            return
        state = self.network_state_path
        with self._net_lock:
            dhcp.ensure_dhcp(
                port.network_id,
                bridge,
                str(subnet),
                server,
                state,
                gateway=port.gateway,
                mtu=port.mtu,
                netns=self.host_netns,
            )
            dhcp.add_host(port.network_id, state, port.mac, port.ip, name)

    @staticmethod
    def _port_firewall(port: Port) -> firewall.PortFirewall:
        tap = bridges.tap_name(port.id or "")
        return firewall.PortFirewall(
            tap=tap,
            mac=port.mac,
            ips=[port.ip] if port.ip else [],
            # no rules sent at all (None: a message from before security groups): filter nothing
            port_security_enabled=port.port_security_enabled and port.security_rules is not None,
            security_rules=list(port.security_rules or []),
            allowed_address_pairs=list(port.allowed_address_pairs or []),
        )

    # -- unplugging ------------------------------------------------------------------------------

    def _unplug_ports_sync(self, conn: Any, instance: Instance) -> None:
        """Undo :meth:`_plug_ports_sync` for the instance's ports (after its domain is gone):
        firewall chains, DHCP entries; a network's bridge, overlay and DHCP server go with its
        last port on this host. Idempotent."""
        for port in instance.ports:
            self._unplug_port_sync(conn, port)

    def _unplug_port_sync(self, conn: Any, port: Port) -> None:
        if not self.host_networking:
            return
        tap = self._tap(port)
        if tap:
            firewall.remove_port(tap, self.host_netns)
        if not self._on_bridge(port) or not port.network_id:
            return  # a libvirt network's DHCP entry: the driver's destroy removes it
        with self._net_lock:
            self._plugged_ports.pop(port.id or port.mac.lower(), None)
            dhcp.remove_host(port.network_id, self.network_state_path, port.mac)
            self._release_network_locked(conn, port)

    def _release_network_locked(self, conn: Any, port: Port) -> None:
        """Remove the network's bridge, VXLAN device and DHCP server if no guest defined here
        uses it (a stopped guest needs its bridge to start again) and no plug is under way."""
        assert port.network_id is not None
        if port.network_type == "flat" or self._plugging.get(port.network_id):
            return
        if port.network_id in self._plugged_ports.values():
            return  # another port of it is plugged here (its domain may not be defined yet)
        bridge = bridges.bridge_name(port.network_id)
        if bridge in self._bridges_in_use(conn):
            return
        ns = self.host_netns
        dhcp.stop_dhcp(port.network_id, self.network_state_path, ns)
        if port.network_type == "vxlan" and port.segmentation_id:
            vxlan.delete_vxlan(int(port.segmentation_id), ns)
        bridges.delete_bridge(bridge, ns)
        firewall.forget_network(bridge, ns)
        LOG.info("network %s has no guests left on %s: its bridge %s is gone", port.network_id, self.host, bridge)

    @staticmethod
    def _bridges_in_use(conn: Any) -> set[str]:
        used: set[str] = set()
        for dom in conn.listAllDomains(0):
            with contextlib.suppress(libvirt.libvirtError, ET.ParseError):
                used.update(domain_bridges(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
                if dom.isActive():
                    used.update(domain_bridges(dom.XMLDesc(0)))
        return used

    # -- the driver methods ------------------------------------------------------------------------

    async def set_overlay_peers(self, network_id: str, vni: int, peers: list[str]) -> None:
        """Remember the peers, and apply them at once if the network's VXLAN device is here
        (else the first port plugged on the network applies them)."""
        import asyncio

        vxlan.vxlan_name(int(vni))  # DriverError on a bad VNI
        mine = {self.overlay_local_ip} if self.overlay_local_ip else set()
        wanted = sorted({p for p in peers if p not in mine})
        self.overlay_peers[network_id] = (int(vni), wanted)
        if not self.host_networking:
            return

        def apply() -> None:
            with self._net_lock:
                from novalite_drivers.libvirt.hostnet import link_exists

                if link_exists(vxlan.vxlan_name(int(vni)), self.host_netns):
                    vxlan.set_peers(int(vni), wanted, self.host_netns)

        await asyncio.to_thread(apply)

    async def attach_interface(self, instance: Instance, port: Port) -> None:
        """Plug the port's host side, then hot-plug its NIC: live into a running guest and
        into the persistent definition (a stopped guest gets it at its next start). A MAC
        the guest already has changes nothing; a refused hot-plug unplugs the host side."""

        def attach() -> None:
            conn = self._connection()  # type: ignore[attr-defined]
            dom = self._lookup(instance.uuid)  # type: ignore[attr-defined]
            mac = port.mac.lower()
            if mac in _domain_macs(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)):
                return
            nic = self._plug_port_sync(conn, port)
            flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG
            if dom.isActive():
                flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
            try:
                dom.attachDeviceFlags(interface_xml(nic), flags)
            except Exception:
                with contextlib.suppress(Exception):
                    self._unplug_port_sync(conn, port)
                raise

        await self._call(f"cannot attach port {port.mac}", attach, uuid=instance.uuid)  # type: ignore[attr-defined]

    async def detach_interface(self, instance: Instance, port: Port) -> None:
        """Unplug the NIC with the port's MAC from the running guest and its definition,
        then the host side (firewall chains, DHCP entry; the bridge with its last port)."""

        def detach() -> None:
            conn = self._connection()  # type: ignore[attr-defined]
            dom = self._lookup(instance.uuid)  # type: ignore[attr-defined]
            mac = port.mac.lower()
            for flags, xml_flags in (
                (libvirt.VIR_DOMAIN_AFFECT_LIVE, 0),
                (libvirt.VIR_DOMAIN_AFFECT_CONFIG, libvirt.VIR_DOMAIN_XML_INACTIVE),
            ):
                if flags == libvirt.VIR_DOMAIN_AFFECT_LIVE and not dom.isActive():
                    continue
                element = _domain_macs(dom.XMLDesc(xml_flags)).get(mac)
                if element is not None:
                    dom.detachDeviceFlags(element, flags)
            self._unplug_port_sync(conn, port)

        await self._call(f"cannot detach port {port.mac}", detach, uuid=instance.uuid)  # type: ignore[attr-defined]

    async def update_port_security(self, instance: Instance, port: Port) -> None:
        """Refill the port's firewall chains (one nft transaction: the next packet sees the new
        rules). Ports this host does not filter (not plugged here, no id) are ignored."""
        import asyncio

        if not self.host_networking or not port.id:
            return
        fw = self._port_firewall(port)

        def apply() -> None:
            if fw.tap in firewall.port_ids(self.host_netns):
                firewall.apply_port(fw, self.host_netns)

        await asyncio.to_thread(apply)


def _domain_macs(domain_xml: str) -> dict[str, str]:
    """``{mac: its <interface> element as XML}`` of a domain definition."""
    out = {}
    for iface in ET.fromstring(domain_xml).iterfind("./devices/interface"):
        mac = iface.find("mac")
        if mac is not None and mac.get("address"):
            out[mac.get("address", "").lower()] = ET.tostring(iface, encoding="unicode")
    return out
