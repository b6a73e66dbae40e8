"""Pure helpers of the libvirt driver's moves (issue 10): no libvirt connection needed.

* :func:`destination_xml`: the domain XML a live migration gives the destination
  (``VIR_MIGRATE_PARAM_DEST_XML``): the source's migratable XML with every path under the
  source's instance directory moved under the destination's (disks, serial log, kernel and
  initrd copies), the destination's VNC listen address, its libvirt networks, and the
  destination host in novalite's metadata. On one machine (two daemons, as the tests run)
  the two directories differ; between real hosts they are usually the same path.
* :func:`progress_from_stats`: libvirt's ``jobStats()`` as the driver interface's
  :class:`~novalite_drivers.base.LiveMigrationProgress`.
* :func:`writable_disks`: the disks a block migration copies (file disks, not read-only:
  the config drive is made anew on the destination).
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from typing import Any

from novalite_drivers.base import LiveMigrationProgress
from novalite_drivers.libvirt.xml import NOVALITE_NS

#: The file in an instance directory that records a cold move under way (in ``<uuid>_resize/``).
MOVE_FILE = "move.json"
#: The marker of a destination prepared for an incoming live migration (removed when it is ours).
INCOMING_FILE = ".incoming"
#: The files of an instance directory a cold move carries (the root disk may be flattened first).
MOVED_FILES = ("disk", "disk.eph0", "disk.config", "kernel", "ramdisk", "console.log")


def _moved(value: str, src_dir: str, dst_dir: str) -> str:
    if value == src_dir or value.startswith(src_dir.rstrip(os.sep) + os.sep):
        return dst_dir.rstrip(os.sep) + value[len(src_dir.rstrip(os.sep)) :]
    return value


def destination_xml(
    xml: str,
    src_dir: str,
    dst_dir: str,
    dest_host: str,
    vnc_listen: str | None = None,
    networks: dict[str, str] | None = None,
) -> str:
    """The domain XML for the destination of a live migration (see the module docstring).

    ``networks``: MAC (lower case) -> the destination's libvirt network for that port.
    """
    root = ET.fromstring(xml)
    for el in root.iter():
        for key, value in list(el.attrib.items()):
            el.set(key, _moved(value, src_dir, dst_dir))
        if el.text and el.text.strip():
            el.text = _moved(el.text, src_dir, dst_dir)
    if vnc_listen:
        for graphics in root.findall("./devices/graphics[@type='vnc']"):
            graphics.set("listen", vnc_listen)
            for listen in graphics.findall("listen"):
                if listen.get("type") == "address":
                    listen.set("address", vnc_listen)
    for iface in root.findall("./devices/interface[@type='network']"):
        mac = iface.find("mac")
        source = iface.find("source")
        if mac is None or source is None or not networks:
            continue
        net = networks.get(mac.get("address", "").lower())
        if net:
            source.set("network", net)
            source.attrib.pop("bridge", None)
            source.attrib.pop("portid", None)
    host = root.find(f"./metadata/{{{NOVALITE_NS}}}instance/{{{NOVALITE_NS}}}host")
    if host is not None:
        host.text = dest_host
    return ET.tostring(root, encoding="unicode")


def writable_disks(xml: str) -> list[str]:
    """Targets (``vda``...) of the file disks a block migration copies: not read-only, not cdroms."""
    root = ET.fromstring(xml)
    out = []
    for disk in root.findall("./devices/disk"):
        if disk.get("device", "disk") != "disk" or disk.find("readonly") is not None:
            continue
        target = disk.find("target")
        if target is not None and target.get("dev"):
            out.append(str(target.get("dev")))
    return out


def disk_paths(xml: str) -> dict[str, str]:
    """target -> source file of every file disk in a domain XML."""
    root = ET.fromstring(xml)
    out = {}
    for disk in root.findall("./devices/disk"):
        target, source = disk.find("target"), disk.find("source")
        if target is not None and source is not None and source.get("file"):
            out[str(target.get("dev"))] = str(source.get("file"))
    return out


def progress_from_stats(stats: dict[str, Any]) -> LiveMigrationProgress:
    """libvirt's job statistics (bytes) as the interface's progress record."""

    def get(key: str) -> int:
        try:
            return max(0, int(stats.get(key) or 0))
        except (TypeError, ValueError):
            return 0

    return LiveMigrationProgress(
        memory_total=get("memory_total"),
        memory_processed=get("memory_processed"),
        memory_remaining=get("memory_remaining"),
        disk_total=get("disk_total"),
        disk_processed=get("disk_processed"),
        disk_remaining=get("disk_remaining"),
    )
