"""The libvirt driver's cold moves (issue 10) on libvirt's test:/// driver: two "hosts" (two
test:/// connections, two instances paths), real disks (qemu-img, qemu-io) and the agents'
real transfer channel between them. Guests that really boot and live migration are in
test_libvirt_moves.py (real QEMU, two daemons)."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from novalite_drivers.base import DriverError, Image, Instance, PowerState
from novalite_drivers.libvirt import LibvirtDriver
from novalite_drivers.libvirt.migration import destination_xml, progress_from_stats, writable_disks
from novalite_drivers.libvirt.xml import NOVALITE_NS

from novalite.agent.transfer import TransferReceiver, new_ticket, send_files

from .conftest import NODE_XML, UNIT_NETWORK, require_libvirt_python

GiB = 1024**3
UUID = "7a2c7e1e-5a43-4c38-9d6e-0a7d3b1c2f01"
MARK_AT = 900 * 1024 * 1024  # beyond the image's 64 MiB: only the overlay holds it


def img_info(path: Path) -> dict[str, Any]:
    out = subprocess.run(["qemu-img", "info", "-U", "--output=json", str(path)], check=True, capture_output=True)
    info: dict[str, Any] = json.loads(out.stdout)
    return info


def exists(path: str) -> bool:
    return os.path.exists(path)


def write_marker(path: Path) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a {MARK_AT} 64k", str(path)], check=True)


def has_marker(path: Path) -> bool:
    out = subprocess.run(
        ["qemu-io", "-r", "-U", "-f", "qcow2", "-c", f"read -P 0x5a {MARK_AT} 64k", str(path)],
        capture_output=True,
        text=True,
    )
    return out.returncode == 0 and "Pattern verification failed" not in out.stdout


async def host(tmp_path: Path, name: str) -> LibvirtDriver:
    node = tmp_path / f"{name}.xml"
    node.write_text(NODE_XML.format(name=UNIT_NETWORK))
    d = LibvirtDriver(
        name,
        {
            "uri": f"test://{node}",
            "instances_path": str(tmp_path / name),
            "network": UNIT_NETWORK,
            "shutdown_timeout": 1,
        },
    )
    await d.init_host()
    return d


def domain(d: LibvirtDriver, uuid: str) -> ET.Element:
    return ET.fromstring(d._connection().lookupByUUIDString(uuid).XMLDesc(0))


async def send(files: list[str] | None, dest: LibvirtDriver, inst: Instance, source: str) -> None:
    """What the two agents do between migrate_disk_and_power_off and finish_migration."""
    assert files
    receiver = TransferReceiver("127.0.0.1:0")
    try:
        ticket = new_ticket()
        url = await receiver.expect("mig-1", inst.uuid, ticket, await dest.receive_migration(inst, source))
        await send_files(url, ticket, files)
    finally:
        await receiver.close()


async def test_cold_resize_to_another_host_revert_then_confirm(tmp_path: Path, small_image: Path):
    require_libvirt_python()
    h1, h2 = await host(tmp_path, "h1"), await host(tmp_path, "h2")
    try:
        inst = Instance(
            uuid=UUID,
            name="instance-00000007",
            hostname="vm",
            root_gb=1,
            ephemeral_gb=1,
            config_drive=True,
            image=Image(id="img-1", disk_format="qcow2", path=str(small_image)),
            project_id="p",
        )
        await h1.spawn(inst)
        src_dir, dst_dir = Path(h1.instances_path) / UUID, Path(h2.instances_path) / UUID
        await h1.power_off(inst, timeout=0)
        write_marker(src_dir / "disk")
        await h1.power_on(inst)
        assert img_info(src_dir / "disk").get("backing-filename")  # an overlay on _base/

        bigger = {"vcpus": 2, "memory_mb": 1024, "root_gb": 2, "ephemeral_gb": 1}
        with pytest.raises(DriverError, match=r"Unable to resize disk down\."):
            await h1.migrate_disk_and_power_off(inst, "h2", {**bigger, "root_gb": 1, "ephemeral_gb": 0})
        assert await h1.get_power_state(inst) == PowerState.RUNNING  # refused before anything

        files = await h1.migrate_disk_and_power_off(inst, "h2", bigger)
        assert await h1.get_power_state(inst) == PowerState.SHUTDOWN  # the original, kept
        assert not src_dir.exists() and (tmp_path / "h1" / f"{UUID}_resize").is_dir()
        assert files is not None
        assert sorted(os.path.basename(f) for f in files) == ["disk", "disk.config", "disk.eph0"]
        await send(files, h2, inst, "h1")
        received = dst_dir / "disk"
        assert "backing-filename" not in img_info(received)  # flattened: it needs no base there
        assert has_marker(received)

        resized = dataclasses.replace(inst, vcpus=2, memory_mb=1024, root_gb=2)
        await h2.finish_migration(resized, "h1", power_on=True)
        assert await h2.get_power_state(resized) == PowerState.RUNNING
        assert img_info(received)["virtual-size"] == 2 * GiB and has_marker(received)
        xml = domain(h2, UUID)
        assert xml.findtext("vcpu") == "2" and xml.find("memory").text == str(1024 * 1024)  # KiB
        assert xml.find(f"./metadata/{{{NOVALITE_NS}}}instance/{{{NOVALITE_NS}}}host").text == "h2"

        # Revert: the destination's guest goes (the agent's destroy), the original comes back.
        await h2.destroy(resized)
        await h1.finish_revert_migration(inst, power_on=True)
        assert await h1.get_power_state(inst) == PowerState.RUNNING
        assert not (tmp_path / "h1" / f"{UUID}_resize").exists()
        assert img_info(src_dir / "disk")["virtual-size"] == 1 * GiB and has_marker(src_dir / "disk")
        assert img_info(src_dir / "disk").get("backing-filename")  # the very original overlay
        assert domain(h1, UUID).findtext("vcpu") == "1"
        assert not dst_dir.exists() and UUID not in await h2.list_instances()
        await h1.finish_revert_migration(inst)  # idempotent

        # Again, and confirm: nothing of the guest is left on the source.
        await send(await h1.migrate_disk_and_power_off(inst, "h2", bigger), h2, inst, "h1")
        await h2.finish_migration(resized, "h1", power_on=False)
        assert await h2.get_power_state(resized) == PowerState.SHUTDOWN
        await h1.confirm_migration(inst)
        assert UUID not in await h1.list_instances()
        assert not list((tmp_path / "h1").glob(f"{UUID}*"))
        await h1.confirm_migration(inst)  # idempotent
        assert has_marker(dst_dir / "disk")
    finally:
        await h1.cleanup_host()
        await h2.cleanup_host()


async def test_same_host_resize_confirm_and_revert(tmp_path: Path, small_image: Path):
    require_libvirt_python()
    h = await host(tmp_path, "h1")
    try:
        inst = Instance(
            uuid=UUID,
            name="instance-00000008",
            root_gb=1,
            image=Image(id="img-1", disk_format="qcow2", path=str(small_image)),
            project_id="p",
        )
        await h.spawn(inst)
        idir, rdir = Path(h.instances_path) / UUID, Path(h.instances_path) / f"{UUID}_resize"
        flavor = {"vcpus": 2, "memory_mb": 512, "root_gb": 3, "ephemeral_gb": 0}
        resized = dataclasses.replace(inst, vcpus=2, root_gb=3)

        assert await h.migrate_disk_and_power_off(inst, "h1", flavor) == []  # nothing to send
        assert idir.is_dir() and rdir.is_dir()
        await h.finish_migration(resized, "h1")
        assert await h.get_power_state(resized) == PowerState.RUNNING
        assert img_info(idir / "disk")["virtual-size"] == 3 * GiB
        assert img_info(rdir / "disk")["virtual-size"] == 1 * GiB  # the original, untouched
        await h.confirm_migration(resized)  # only the original's leftovers go
        assert not rdir.exists() and await h.get_power_state(resized) == PowerState.RUNNING
        assert domain(h, UUID).findtext("vcpu") == "2"

        bigger = dataclasses.replace(resized, root_gb=4)
        await h.migrate_disk_and_power_off(resized, "h1", {**flavor, "root_gb": 4})
        await h.finish_migration(bigger, "h1")
        assert img_info(idir / "disk")["virtual-size"] == 4 * GiB
        await h.destroy(bigger)  # the revert on the "destination": the resized guest goes...
        assert rdir.is_dir()  # ...never the original
        await h.finish_revert_migration(resized)
        assert await h.get_power_state(resized) == PowerState.RUNNING
        assert img_info(idir / "disk")["virtual-size"] == 3 * GiB and not rdir.exists()
    finally:
        await h.cleanup_host()


async def test_a_failed_transfer_brings_the_guest_back(tmp_path: Path, small_image: Path):
    """What the agent does when the files cannot be sent: finish_revert_migration."""
    require_libvirt_python()
    h1 = await host(tmp_path, "h1")
    try:
        inst = Instance(
            uuid=UUID,
            name="instance-00000009",
            root_gb=1,
            image=Image(id="img-1", disk_format="qcow2", path=str(small_image)),
            project_id="p",
        )
        await h1.spawn(inst)
        files = await h1.migrate_disk_and_power_off(inst, "h2", {"root_gb": 1})
        assert files
        assert exists(files[0])
        await h1.finish_revert_migration(inst, power_on=True)
        assert await h1.get_power_state(inst) == PowerState.RUNNING
        assert not exists(files[0])  # the flattened copy went with the move
        assert sorted(os.listdir(h1.instances_path)) == sorted(["_base", UUID])
    finally:
        await h1.cleanup_host()


def test_destination_xml_moves_paths_networks_and_host():
    src = "/srv/a/inst"
    xml = f"""<domain type='qemu'><name>x</name>
      <metadata><novalite:instance xmlns:novalite="{NOVALITE_NS}"><novalite:host>h1</novalite:host></novalite:instance>
      </metadata>
      <os><type>hvm</type><kernel>{src}/kernel</kernel></os>
      <devices>
        <disk type='file' device='disk'><source file='{src}/disk'/><target dev='vda'/></disk>
        <disk type='file' device='cdrom'><source file='{src}/disk.config'/><target dev='hda'/><readonly/></disk>
        <disk type='file' device='disk'><source file='/elsewhere/disk'/><target dev='vdb'/></disk>
        <interface type='network'><mac address='FA:16:3E:00:00:01'/><source network='default'/></interface>
        <serial type='pty'><log file='{src}/console.log' append='on'/></serial>
        <graphics type='vnc' listen='127.0.0.1'><listen type='address' address='127.0.0.1'/></graphics>
      </devices></domain>"""
    out = ET.fromstring(destination_xml(xml, src, "/srv/b/inst", "h2", "0.0.0.0", {"fa:16:3e:00:00:01": "lab"}))
    assert [d.find("source").get("file") for d in out.findall("./devices/disk")] == [
        "/srv/b/inst/disk",
        "/srv/b/inst/disk.config",
        "/elsewhere/disk",
    ]
    assert out.findtext("./os/kernel") == "/srv/b/inst/kernel"
    assert out.find("./devices/serial/log").get("file") == "/srv/b/inst/console.log"
    assert out.find("./devices/interface/source").get("network") == "lab"
    assert out.find("./devices/graphics").get("listen") == "0.0.0.0"
    assert out.find(f"./metadata/{{{NOVALITE_NS}}}instance/{{{NOVALITE_NS}}}host").text == "h2"
    assert writable_disks(xml) == ["vda", "vdb"]  # not the read-only config drive
    p = progress_from_stats({"memory_total": 10, "memory_processed": 4, "memory_remaining": 6, "disk_total": None})
    assert (p.memory_total, p.memory_processed, p.memory_remaining, p.disk_total) == (10, 4, 6, 0)
