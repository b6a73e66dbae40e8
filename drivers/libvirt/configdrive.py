"""The config drive: an ISO 9660 image labelled ``config-2`` in OpenStack's layout.

cloud-init and CirrOS find it by its label and read ``openstack/latest/meta_data.json``,
``user_data`` and ``network_data.json``. Built with pycdlib (pure Python, no genisoimage).
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import os
from typing import Any

import pycdlib
from novalite_drivers.base import DriverError, Instance

LABEL = "config-2"
VERSIONS = ("latest", "2018-08-27")


def meta_data(instance: Instance) -> dict[str, Any]:
    keys: dict[str, str] = {}
    if instance.key_data:
        keys[instance.key_name or "default"] = instance.key_data
    return {
        "uuid": instance.uuid,
        "name": instance.name,
        "hostname": instance.hostname or instance.name,
        "public_keys": keys,
        "keys": [{"name": k, "type": "ssh", "data": v} for k, v in keys.items()],
        "availability_zone": instance.availability_zone or "nova",
        "project_id": instance.project_id,
        "launch_index": 0,
        "meta": dict(instance.metadata),
    }


def network_data(instance: Instance) -> dict[str, Any]:
    links, networks = [], []
    for i, port in enumerate(instance.ports):
        link_id = f"tap{i}"
        links.append({"id": link_id, "type": "phy", "ethernet_mac_address": port.mac, "mtu": 1500})
        if port.ip:
            net: dict[str, Any] = {
                "id": f"network{i}",
                "link": link_id,
                "type": "ipv4_dhcp",
                "ip_address": port.ip,
            }
            if port.prefix_len is not None:
                net["netmask"] = _netmask(port.prefix_len)
            if port.gateway:
                net["routes"] = [{"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": port.gateway}]
            networks.append(net)
        else:
            networks.append({"id": f"network{i}", "link": link_id, "type": "ipv4_dhcp"})
    return {"links": links, "networks": networks, "services": []}


def _netmask(prefix_len: int) -> str:
    bits = (0xFFFFFFFF << (32 - prefix_len)) & 0xFFFFFFFF
    return ".".join(str((bits >> s) & 0xFF) for s in (24, 16, 8, 0))


def decode_user_data(user_data: str | None) -> bytes | None:
    """The API hands user data over as base64 text; the guest wants the raw bytes."""
    if user_data is None or user_data == "":
        return None
    try:
        return base64.b64decode(user_data, validate=False)
    except (binascii.Error, ValueError) as exc:
        raise DriverError(f"user_data is not valid base64: {exc}") from None


def build_config_drive(instance: Instance, path: str) -> None:
    """Write the config drive ISO for ``instance`` to ``path`` (replaced atomically)."""
    files: dict[str, bytes] = {}
    md = json.dumps(meta_data(instance), indent=1).encode()
    nd = json.dumps(network_data(instance), indent=1).encode()
    ud = decode_user_data(instance.user_data)
    for version in VERSIONS:
        files[f"openstack/{version}/meta_data.json"] = md
        files[f"openstack/{version}/network_data.json"] = nd
        files[f"openstack/{version}/vendor_data.json"] = b"{}"
        if ud is not None:
            files[f"openstack/{version}/user_data"] = ud
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, joliet=3, rock_ridge="1.09", vol_ident=LABEL, sys_ident="LINUX")
    dirs_done: set[str] = set()
    for name in sorted(files):
        parts = name.split("/")
        for depth in range(1, len(parts)):
            d = "/".join(parts[:depth])
            if d not in dirs_done:
                dirs_done.add(d)
                iso.add_directory(_iso9660_path(d), rr_name=parts[depth - 1], joliet_path="/" + d)
        data = files[name]
        iso.add_fp(io.BytesIO(data), len(data), _iso9660_path(name), rr_name=parts[-1], joliet_path="/" + name)
    tmp = f"{path}.tmp"
    try:
        iso.write(tmp)
        iso.close()
        os.replace(tmp, path)
    except OSError as exc:
        raise DriverError(f"cannot write config drive {path}: {exc}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _iso9660_path(name: str) -> str:
    """An ISO 9660 level-3 path: upper case, [A-Z0-9_] only; files get ``;1``."""
    parts = name.split("/")
    out = []
    for i, part in enumerate(parts):
        clean = "".join(c if c.isalnum() else "_" for c in part.upper())
        if i == len(parts) - 1 and "." in part:
            stem, ext = part.rsplit(".", 1)
            clean = "".join(c if c.isalnum() else "_" for c in stem.upper()) + "." + ext.upper()
        out.append(clean)
    path = "/" + "/".join(out)
    return path


def read_config_drive(path: str) -> dict[str, bytes]:
    """Every file of a config drive by its Rock Ridge path (for tests and debugging)."""
    iso = pycdlib.PyCdlib()
    iso.open(path)
    out: dict[str, bytes] = {}
    try:
        for dirname, _dirs, filenames in iso.walk(rr_path="/"):
            for fn in filenames:
                full = (dirname.rstrip("/") + "/" + fn) if dirname != "/" else "/" + fn
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, rr_path=full)
                out[full.lstrip("/")] = buf.getvalue()
    finally:
        iso.close()
    return out
