"""Hard reboot and power on of a guest whose libvirt domain is gone (issue 9, defect 13).

Nova's ``_hard_reboot`` regenerates the domain from the instance and keeps its disks, and
its ``power_on`` is a hard reboot: a domain undefined behind novalite's back must come back
from the instance's definition, with the same disks, config drive and DHCP entry. Runs on
libvirt's ``test:///`` driver like test_libvirt_unit.py.
"""

from __future__ import annotations

import hashlib
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from novalite_drivers.base import DriverError, Image, Instance, InstanceNotFound, Port, PowerState
from novalite_drivers.libvirt import LibvirtDriver
from novalite_drivers.libvirt import network as netmod

from .conftest import UNIT_NETWORK
from .test_libvirt_unit import UUID1, UUID2, make_instance


def lose_domain(driver: LibvirtDriver, uuid: str) -> None:
    """What an operator's ``virsh destroy; virsh undefine`` does: the files stay."""
    dom = driver._connection().lookupByUUIDString(uuid)
    if dom.isActive():
        dom.destroy()
    dom.undefine()


def disks_of(driver: LibvirtDriver, uuid: str) -> list[tuple[str | None, str | None]]:
    root = ET.fromstring(driver._connection().lookupByUUIDString(uuid).XMLDesc(0))
    return [(d.find("target").get("dev"), d.find("source").get("file")) for d in root.findall("./devices/disk")]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def full_instance(image: Path) -> Instance:
    return make_instance(
        image,
        ephemeral_gb=1,
        config_drive=True,
        ports=[Port(mac="fa:16:3e:00:00:31", ip="10.213.99.31")],
    )


async def test_hard_reboot_redefines_a_lost_domain_keeping_its_disks(
    unit_driver: LibvirtDriver, small_image: Path, tmp_path: Path
) -> None:
    inst = full_instance(small_image)
    await unit_driver.spawn(inst)
    idir = tmp_path / "instances" / UUID1
    before = disks_of(unit_driver, UUID1)
    files = {name: ((idir / name).stat().st_ino, digest(idir / name)) for name in ("disk", "disk.eph0", "disk.config")}
    lose_domain(unit_driver, UUID1)
    assert await unit_driver.list_instances() == []

    # The agent of a host that lost the domain has no image file at hand: the disks suffice.
    inst.image = Image(id="img-1", disk_format="qcow2")
    await unit_driver.reboot(inst, hard=True)

    assert await unit_driver.list_instances() == [UUID1]
    assert await unit_driver.get_power_state(inst) == PowerState.RUNNING
    assert disks_of(unit_driver, UUID1) == before
    for name, (inode, content) in files.items():
        assert ((idir / name).stat().st_ino, digest(idir / name)) == (inode, content), name
    hosts = netmod.dhcp_hosts(unit_driver._connection(), UNIT_NETWORK)
    assert {"mac": "fa:16:3e:00:00:31", "name": "vm-one", "ip": "10.213.99.31"} in hosts
    # And it is a normal guest again: destroy removes it with its files.
    await unit_driver.destroy(inst)
    assert not idir.exists() and await unit_driver.list_instances() == []


async def test_power_on_recreates_a_lost_domain(unit_driver: LibvirtDriver, small_image: Path) -> None:
    inst = make_instance(small_image)
    await unit_driver.spawn(inst)
    await unit_driver.power_off(inst, timeout=0)
    lose_domain(unit_driver, UUID1)
    await unit_driver.power_on(inst)  # Nova powers on by hard rebooting
    assert await unit_driver.get_power_state(inst) == PowerState.RUNNING


async def test_recreate_builds_a_missing_root_disk_from_the_image(
    unit_driver: LibvirtDriver, small_image: Path, tmp_path: Path
) -> None:
    inst = make_instance(small_image)
    await unit_driver.spawn(inst)
    lose_domain(unit_driver, UUID1)
    os.unlink(tmp_path / "instances" / UUID1 / "disk")
    await unit_driver.reboot(inst, hard=True)
    assert await unit_driver.get_power_state(inst) == PowerState.RUNNING
    assert (tmp_path / "instances" / UUID1 / "disk").is_file()


async def test_recreate_of_a_kernel_booted_guest_keeps_its_kernel(unit_driver: LibvirtDriver, tmp_path: Path) -> None:
    (tmp_path / "vmlinuz").write_bytes(b"kernel")
    (tmp_path / "initrd.gz").write_bytes(b"ramdisk")
    image = Image(
        id="aki",
        kernel_path=str(tmp_path / "vmlinuz"),
        ramdisk_path=str(tmp_path / "initrd.gz"),
        properties={"os_command_line": "console=ttyS0 quiet"},
    )
    inst = make_instance(None, image=image)
    await unit_driver.spawn(inst)
    lose_domain(unit_driver, UUID1)
    inst.image = Image(id="aki", properties={"os_command_line": "console=ttyS0 quiet"})  # no local files now
    await unit_driver.reboot(inst, hard=True)
    idir = tmp_path / "instances" / UUID1
    root = ET.fromstring(unit_driver._connection().lookupByUUIDString(UUID1).XMLDesc(0))
    assert root.findtext("./os/kernel") == str(idir / "kernel")
    assert root.findtext("./os/initrd") == str(idir / "ramdisk")
    assert root.findtext("./os/cmdline") == "console=ttyS0 quiet"


async def test_soft_reboot_of_a_lost_domain_is_instance_not_found(
    unit_driver: LibvirtDriver, small_image: Path
) -> None:
    inst = make_instance(small_image)
    await unit_driver.spawn(inst)
    lose_domain(unit_driver, UUID1)
    with pytest.raises(InstanceNotFound, match=UUID1):
        await unit_driver.reboot(inst)
    assert await unit_driver.list_instances() == []


async def test_nothing_to_recreate_from_is_a_clear_error(unit_driver: LibvirtDriver, small_image: Path) -> None:
    ghost = make_instance(None, uuid=UUID2)
    for op in (unit_driver.power_on, lambda i: unit_driver.reboot(i, hard=True)):
        with pytest.raises(InstanceNotFound, match="recreate it from"):
            await op(ghost)
    assert await unit_driver.list_instances() == []


async def test_lost_root_disk_without_the_image_is_refused_and_keeps_the_rest(
    unit_driver: LibvirtDriver, small_image: Path, tmp_path: Path
) -> None:
    inst = make_instance(small_image, ephemeral_gb=1)
    await unit_driver.spawn(inst)
    lose_domain(unit_driver, UUID1)
    idir = tmp_path / "instances" / UUID1
    os.unlink(idir / "disk")
    inst.image = Image(id="img-1", disk_format="qcow2")  # the image file is not on this host
    with pytest.raises(DriverError, match=r"root disk .* is gone"):
        await unit_driver.reboot(inst, hard=True)
    assert await unit_driver.list_instances() == []  # no half-made domain
    assert (idir / "disk.eph0").is_file()  # the user's other disk is untouched


async def test_failed_recreate_removes_the_new_domain_and_keeps_the_disks(
    unit_driver: LibvirtDriver, small_image: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import libvirt

    inst = make_instance(small_image)
    await unit_driver.spawn(inst)
    lose_domain(unit_driver, UUID1)
    conn = unit_driver._connection()
    real_define = conn.defineXML

    def define_then_break(xml: str):  # type: ignore[no-untyped-def]
        dom = real_define(xml)

        class Broken:
            def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
                return getattr(dom, name)

            def create(self) -> None:
                raise libvirt.libvirtError("boom: could not open disk")

        return Broken()

    monkeypatch.setattr(conn, "defineXML", define_then_break)
    with pytest.raises(DriverError, match="cannot recreate instance") as err:
        await unit_driver.reboot(inst, hard=True)
    assert not isinstance(err.value, InstanceNotFound)
    monkeypatch.undo()
    assert await unit_driver.list_instances() == []
    assert (tmp_path / "instances" / UUID1 / "disk").is_file()
