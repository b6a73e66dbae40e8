"""DHCP per network and host: a dnsmasq in a namespace of its own, on the network's bridge.

As Neutron's DHCP agent does (``qdhcp-<network>`` namespaces), each host runs one dnsmasq
per network that has ports here, in the namespace ``nldhcp-<12 hex of the network id>``,
plugged into the network's bridge by a veth (``nld<12 hex>`` on the bridge, ``dhcp0``
inside, with the server's address). It answers only the MACs it was given
(``--dhcp-range=...,static``: one host entry per port, so each port gets exactly its
address) and the firewall keeps it local (:mod:`.firewall`: its frames reach only this
host's taps), so every host can run one for the same network without their answers or
addresses meeting on the overlay or the LAN.

Files live in ``<state_dir>/<network id>/``: ``hosts`` (``mac,ip,name``), ``opts``,
``leases``, ``pid``. Host entries are changed by rewriting ``hosts`` and sending SIGHUP
(dnsmasq re-reads it without a restart).

Every function takes ``netns`` (None: this host), see :mod:`.hostnet`; in a test the DHCP
namespace is named after the test's host namespace.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import signal
import tempfile
import time

from novalite_drivers.base import DriverError
from novalite_drivers.libvirt.bridges import attach
from novalite_drivers.libvirt.hostnet import ip, link_exists, run

LEG_INSIDE = "dhcp0"


def _hex(network_id: str) -> str:
    h = re.sub(r"[^0-9a-zA-Z]", "", network_id).lower()[:12]
    if not h:
        raise DriverError(f"invalid network id {network_id!r}")
    return h


def leg_name(network_id: str) -> str:
    """The DHCP veth's end on the bridge (``nld`` + 12 hex digits: 15 characters)."""
    return "nld" + _hex(network_id)


def namespace(network_id: str, netns: str | None = None) -> str:
    """The DHCP namespace of ``network_id`` (on the host ``netns`` stands for)."""
    return f"nldhcp-{_hex(network_id)}" if netns is None else f"{netns}-dhcp-{_hex(network_id)}"


def _dir(state_dir: str, network_id: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9-]+", network_id):
        raise DriverError(f"invalid network id {network_id!r}")
    return os.path.join(state_dir, network_id)


def _netns_exists(name: str) -> bool:
    return os.path.exists(os.path.join("/run/netns", name))


def _pid(path: str) -> int | None:
    try:
        with open(os.path.join(path, "pid")) as f:
            pid = int(f.read().strip() or "0")
    except (OSError, ValueError):
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmdline = f.read()
    except OSError:
        return None
    return pid if b"dnsmasq" in cmdline and path.encode() in cmdline else None


def running(network_id: str, state_dir: str) -> bool:
    """True when this network's dnsmasq runs."""
    return _pid(_dir(state_dir, network_id)) is not None


def ensure_dhcp(
    network_id: str,
    bridge: str,
    cidr: str,
    server_ip: str,
    state_dir: str,
    gateway: str | None = None,
    mtu: int | None = None,
    netns: str | None = None,
) -> str:
    """Make the network's DHCP server run: namespace, veth on ``bridge``, ``server_ip`` on
    ``cidr``, dnsmasq. Idempotent (a dnsmasq already running is left alone). Returns the
    namespace's name. ``gateway`` None: no router option (Neutron's ``gateway_ip: null``)."""
    subnet = ipaddress.ip_network(cidr, strict=False)
    if subnet.version != 4:
        raise DriverError(f"DHCP serves IPv4 subnets only, not {subnet}")
    server = ipaddress.ip_address(server_ip)
    if server not in subnet:
        raise DriverError(f"the DHCP server address {server} is not in {subnet}")
    path = _dir(state_dir, network_id)
    os.makedirs(path, mode=0o755, exist_ok=True)
    ns = namespace(network_id, netns)
    leg = leg_name(network_id)
    if not _netns_exists(ns):
        run(["ip", "netns", "add", ns])
        ip("link", "set", "dev", "lo", "up", netns=ns)
    if not link_exists(leg, netns):
        ip("link", "add", leg, "type", "veth", "peer", "name", LEG_INSIDE, "netns", ns, netns=netns)
    attach(leg, bridge, netns)
    if mtu:
        ip("link", "set", "dev", leg, "mtu", str(mtu), netns=netns)
        ip("link", "set", "dev", LEG_INSIDE, "mtu", str(mtu), netns=ns)
    ip("addr", "replace", f"{server}/{subnet.prefixlen}", "dev", LEG_INSIDE, netns=ns)
    ip("link", "set", "dev", LEG_INSIDE, "up", netns=ns)
    for name in ("hosts", "opts"):
        if not os.path.exists(os.path.join(path, name)):
            _write(os.path.join(path, name), "")
    if _pid(path) is not None:
        return ns
    dnsmasq = shutil.which("dnsmasq") or "dnsmasq"
    cmd = [
        dnsmasq,
        "--conf-file=/dev/null",
        "--no-hosts",
        "--no-resolv",
        "--port=0",  # no DNS: DHCP only
        "--bind-interfaces",
        f"--interface={LEG_INSIDE}",
        "--except-interface=lo",
        "--user=root",
        "--dhcp-authoritative",
        f"--dhcp-range=set:net,{subnet.network_address},static,{subnet.netmask},12h",
        f"--dhcp-hostsfile={path}/hosts",
        f"--dhcp-optsfile={path}/opts",
        f"--dhcp-leasefile={path}/leases",
        f"--pid-file={path}/pid",
        f"--dhcp-option=3,{gateway}" if gateway else "--dhcp-option=3",
    ]
    if mtu:
        cmd.append(f"--dhcp-option=26,{int(mtu)}")
    run(cmd, ns)
    deadline = time.monotonic() + 5
    while _pid(path) is None:
        if time.monotonic() > deadline:
            raise DriverError(f"dnsmasq for network {network_id} did not start")
        time.sleep(0.05)
    return ns


def _write(path: str, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp.")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def hosts(network_id: str, state_dir: str) -> dict[str, tuple[str, str]]:
    """MAC -> (ip, name) of the network's host entries."""
    out: dict[str, tuple[str, str]] = {}
    try:
        with open(os.path.join(_dir(state_dir, network_id), "hosts")) as f:
            for line in f:
                fields = line.strip().split(",")
                if len(fields) >= 2:
                    out[fields[0]] = (fields[1], fields[2] if len(fields) > 2 else "")
    except FileNotFoundError:
        pass
    return out


def _save_hosts(network_id: str, state_dir: str, entries: dict[str, tuple[str, str]]) -> None:
    path = _dir(state_dir, network_id)
    lines = [",".join(x for x in (mac, ip_, name) if x) for mac, (ip_, name) in sorted(entries.items())]
    _write(os.path.join(path, "hosts"), "".join(f"{line}\n" for line in lines))
    pid = _pid(path)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGHUP)


def add_host(network_id: str, state_dir: str, mac: str, ip_address: str, name: str | None = None) -> None:
    """Hand ``ip_address`` to ``mac`` (an entry for the same MAC or IP is replaced)."""
    mac = mac.lower()
    if not re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", mac):
        raise DriverError(f"invalid MAC address {mac!r}")
    addr = str(ipaddress.ip_address(ip_address))
    clean = re.sub(r"[^a-z0-9-]", "-", (name or "").lower()).strip("-")[:63]
    entries = {m: v for m, v in hosts(network_id, state_dir).items() if m != mac and v[0] != addr}
    entries[mac] = (addr, clean)
    _save_hosts(network_id, state_dir, entries)


def remove_host(network_id: str, state_dir: str, mac: str) -> bool:
    """Remove ``mac``'s entry. Missing: no-op, False."""
    mac = mac.lower()
    entries = hosts(network_id, state_dir)
    if mac not in entries:
        return False
    del entries[mac]
    _save_hosts(network_id, state_dir, entries)
    return True


def stop_dhcp(network_id: str, state_dir: str, netns: str | None = None) -> None:
    """Stop the network's dnsmasq, remove its veth, namespace and files. Idempotent."""
    path = _dir(state_dir, network_id)
    pid = _pid(path)
    if pid is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if _pid(path) is None:
                break
            time.sleep(0.05)
    leg = leg_name(network_id)
    if link_exists(leg, netns):
        ip("link", "del", "dev", leg, netns=netns, check=False)
    ns = namespace(network_id, netns)
    if _netns_exists(ns):
        run(["ip", "netns", "del", ns], check=False)
    shutil.rmtree(path, ignore_errors=True)
