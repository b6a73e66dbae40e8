"""Domain XML for novalite guests: pure functions, no libvirt connection needed.

The domain's UUID is the instance uuid, and a ``<metadata>`` element in the novalite
namespace marks the domain as ours (:func:`parse_metadata` reads it back), so
``list_instances`` never reports a domain that someone else defined on the host.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from novalite_drivers.base import Instance

#: XML namespace of the metadata element novalite puts in every domain it defines.
NOVALITE_NS = "https://novalite.dev/xmlns/libvirt/instance/1"
NOVALITE_PREFIX = "novalite"

ET.register_namespace(NOVALITE_PREFIX, NOVALITE_NS)


@dataclass
class DiskSpec:
    """One disk of the guest, in the order it is attached."""

    path: str
    target: str  # vda, vdb, hda...
    bus: str = "virtio"
    device: str = "disk"  # or "cdrom"
    format: str = "qcow2"
    readonly: bool = False


@dataclass
class NicSpec:
    """A guest NIC: on the libvirt network ``network``, or (``bridge`` set) a tap on that
    Linux bridge (issue 12's per-network bridges). ``target`` names the tap (Nova's
    ``tap<port id>``, so the host firewall can know it before the guest starts)."""

    mac: str
    network: str = ""
    model: str = "virtio"
    bridge: str | None = None
    target: str | None = None
    mtu: int | None = None


@dataclass
class DomainSpec:
    """Everything :func:`build_domain_xml` needs, already resolved to host paths."""

    uuid: str
    name: str
    vcpus: int
    memory_mb: int
    virt_type: str = "qemu"
    machine: str | None = "pc"
    arch: str = "x86_64"
    cpu_mode: str | None = None  # "host-model", "host-passthrough" or None (hypervisor default)
    disks: list[DiskSpec] = field(default_factory=list)
    nics: list[NicSpec] = field(default_factory=list)
    kernel: str | None = None
    initrd: str | None = None
    cmdline: str | None = None
    console_log: str | None = None
    vnc_listen: str | None = "127.0.0.1"
    metadata: dict[str, str] = field(default_factory=dict)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    el = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        el.text = text
    return el


def _interface(parent: ET.Element, nic: NicSpec) -> ET.Element:
    i = _sub(parent, "interface", type="bridge" if nic.bridge else "network")
    _sub(i, "mac", address=nic.mac)
    if nic.bridge:
        _sub(i, "source", bridge=nic.bridge)
    else:
        _sub(i, "source", network=nic.network)
    if nic.target:
        _sub(i, "target", dev=nic.target)
    _sub(i, "model", type=nic.model)
    if nic.mtu:
        _sub(i, "mtu", size=str(nic.mtu))
    return i


def interface_xml(nic: NicSpec) -> str:
    """The ``<interface>`` element of one NIC alone (for ``attachDeviceFlags`` hot-plug)."""
    root = ET.Element("devices")
    el = _interface(root, nic)
    ET.indent(el)
    return ET.tostring(el, encoding="unicode")


def build_domain_xml(spec: DomainSpec) -> str:
    """Return the libvirt domain XML for ``spec``."""
    dom = ET.Element("domain", {"type": spec.virt_type})
    _sub(dom, "name", spec.name)
    _sub(dom, "uuid", spec.uuid)
    _sub(dom, "memory", str(spec.memory_mb), unit="MiB")
    _sub(dom, "currentMemory", str(spec.memory_mb), unit="MiB")
    _sub(dom, "vcpu", str(spec.vcpus))

    meta = _sub(dom, "metadata")
    inst = ET.SubElement(meta, f"{{{NOVALITE_NS}}}instance")
    for key, value in spec.metadata.items():
        ET.SubElement(inst, f"{{{NOVALITE_NS}}}{key}").text = value

    os_el = _sub(dom, "os")
    type_attrs = {"arch": spec.arch}
    if spec.machine:
        type_attrs["machine"] = spec.machine
    _sub(os_el, "type", "hvm", **type_attrs)
    if spec.kernel:
        _sub(os_el, "kernel", spec.kernel)
        if spec.initrd:
            _sub(os_el, "initrd", spec.initrd)
        if spec.cmdline:
            _sub(os_el, "cmdline", spec.cmdline)
    else:
        _sub(os_el, "boot", dev="hd")

    features = _sub(dom, "features")
    _sub(features, "acpi")  # without it the guest never sees the power button
    _sub(features, "apic")
    if spec.cpu_mode:
        _sub(dom, "cpu", mode=spec.cpu_mode)
    _sub(dom, "clock", offset="utc")
    _sub(dom, "on_poweroff", "destroy")
    _sub(dom, "on_reboot", "restart")
    _sub(dom, "on_crash", "destroy")

    devices = _sub(dom, "devices")
    for disk in spec.disks:
        d = _sub(devices, "disk", type="file", device=disk.device)
        _sub(d, "driver", name="qemu", type=disk.format)
        _sub(d, "source", file=disk.path)
        _sub(d, "target", dev=disk.target, bus=disk.bus)
        if disk.readonly:
            _sub(d, "readonly")
    for nic in spec.nics:
        _interface(devices, nic)
    serial = _sub(devices, "serial", type="pty")
    if spec.console_log:
        # append: the log survives power cycles and suspend/resume (each QEMU start would
        # truncate it otherwise); virtlogd rotates it (max_size, max_backups in virtlogd.conf).
        _sub(serial, "log", file=spec.console_log, append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")
    if spec.vnc_listen is not None:
        _sub(devices, "graphics", type="vnc", autoport="yes", listen=spec.vnc_listen)
        video = _sub(devices, "video")
        _sub(video, "model", type="vga")
    _sub(devices, "memballoon", model="virtio")
    ET.indent(dom)
    return ET.tostring(dom, encoding="unicode")


def parse_metadata(metadata_xml: str) -> dict[str, str]:
    """Read back the element libvirt returns for ``domain.metadata(ELEMENT, NOVALITE_NS)``."""
    root = ET.fromstring(metadata_xml)
    return {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in root}


def domain_bridges(domain_xml: str) -> list[str]:
    """The Linux bridges the interfaces of a domain XML are on (``type='bridge'``)."""
    root = ET.fromstring(domain_xml)
    out = []
    for iface in root.findall("./devices/interface[@type='bridge']"):
        src = iface.find("source")
        if src is not None and src.get("bridge"):
            out.append(src.get("bridge", ""))
    return out


def domain_macs(domain_xml: str) -> list[tuple[str, str]]:
    """``(mac, network)`` of every network interface in a domain XML."""
    root = ET.fromstring(domain_xml)
    out = []
    for iface in root.findall("./devices/interface"):
        mac = iface.find("mac")
        src = iface.find("source")
        if mac is not None and src is not None and src.get("network"):
            out.append((mac.get("address", "").lower(), src.get("network", "")))
    return out


def vnc_address(domain_xml: str) -> tuple[str, int] | None:
    """``(listen, port)`` of the live domain's VNC server, or None when it has none (yet)."""
    root = ET.fromstring(domain_xml)
    g = root.find("./devices/graphics[@type='vnc']")
    if g is None:
        return None
    port = int(g.get("port", "-1"))
    if port <= 0:
        return None
    return g.get("listen") or "127.0.0.1", port


def metadata_for(instance: Instance, host: str) -> dict[str, str]:
    """The novalite metadata recorded in a domain (for operators reading ``virsh dumpxml``)."""
    return {
        "uuid": instance.uuid,
        "name": instance.name,
        "hostname": instance.hostname or instance.name,
        "project": instance.project_id,
        "host": host,
        "flavor": f"vcpus={instance.vcpus} ram={instance.memory_mb} disk={instance.root_gb}"
        f" ephemeral={instance.ephemeral_gb}",
        "image": instance.image.id if instance.image else "",
    }
