"""The libvirt driver against libvirt's test:/// driver (no daemon, fresh host per test).

What the test driver cannot show (guests that really boot, serial logs, VNC ports, ACPI)
is covered by test_libvirt_qemu.py against the real qemu:///system.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pycdlib
import pytest
from novalite_drivers.base import (
    DriverError,
    Image,
    Instance,
    InstanceNotFound,
    InvalidState,
    Port,
    PowerState,
)
from novalite_drivers.libvirt import LibvirtDriver, configdrive
from novalite_drivers.libvirt import network as netmod
from novalite_drivers.libvirt.xml import NOVALITE_NS, DiskSpec, DomainSpec, build_domain_xml, vnc_address

from novalite.agent.drivers import load_driver

from .conftest import UNIT_NETWORK

GiB = 1024**3
UUID1 = "6f1c7e1e-5a43-4c38-9d6e-0a7d3b1c2f01"
UUID2 = "6f1c7e1e-5a43-4c38-9d6e-0a7d3b1c2f02"


def make_instance(image_path: Path | None, **kw) -> Instance:
    defaults = dict(
        uuid=UUID1,
        name="instance-00000001",
        hostname="vm-one",
        vcpus=1,
        memory_mb=256,
        root_gb=1,
        image=Image(id="img-1", disk_format="qcow2", path=str(image_path)) if image_path else None,
        project_id="proj-1",
    )
    defaults.update(kw)
    return Instance(**defaults)


def live_xml(driver: LibvirtDriver, uuid: str) -> ET.Element:
    return ET.fromstring(driver._connection().lookupByUUIDString(uuid).XMLDesc(0))


def dhcp_hosts(driver: LibvirtDriver, network: str = UNIT_NETWORK) -> list[dict[str, str]]:
    return netmod.dhcp_hosts(driver._connection(), network)


def qemu_img_create(path: Path, size: str | None, backing: Path | None = None) -> None:
    cmd = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        cmd += ["-F", "qcow2", "-b", str(backing)]
    subprocess.run([*cmd, str(path), *([size] if size else [])], check=True)


def qemu_img_info(path: str) -> dict:
    out = subprocess.run(["qemu-img", "info", "--output=json", "-U", path], check=True, capture_output=True)
    return json.loads(out.stdout)


# -- domain XML ------------------------------------------------------------------------------


async def test_domain_xml_follows_flavor_and_image(unit_driver: LibvirtDriver, small_image: Path, tmp_path: Path):
    inst = make_instance(
        small_image,
        vcpus=2,
        memory_mb=384,
        root_gb=2,
        ephemeral_gb=1,
        config_drive=True,
        ports=[
            Port(mac="FA:16:3E:00:00:01", ip="10.213.99.11"),
            Port(mac="fa:16:3e:00:00:02", ip="10.213.99.12", network=UNIT_NETWORK),
        ],
    )
    await unit_driver.spawn(inst)
    idir = tmp_path / "instances" / UUID1
    root = live_xml(unit_driver, UUID1)

    assert root.get("type") == "qemu"
    assert root.findtext("uuid") == UUID1
    assert root.findtext("name") == "instance-00000001"
    assert root.findtext("vcpu") == "2"
    assert int(root.findtext("memory")) == 384 * 1024  # KiB
    assert root.find("./os/boot").get("dev") == "hd"
    assert root.find("./os/kernel") is None
    assert root.find("./features/acpi") is not None

    disks = [
        (d.get("device"), d.find("target").get("dev"), d.find("target").get("bus"), d.find("source").get("file"))
        for d in root.findall("./devices/disk")
    ]
    assert disks == [
        ("disk", "vda", "virtio", str(idir / "disk")),
        ("disk", "vdb", "virtio", str(idir / "disk.eph0")),
        ("cdrom", "hda", "ide", str(idir / "disk.config")),
    ]
    cdrom = root.find("./devices/disk[@device='cdrom']")
    assert cdrom.find("readonly") is not None

    ifaces = root.findall("./devices/interface")
    nics = [(i.find("mac").get("address"), i.find("source").get("network")) for i in ifaces]
    assert nics == [("fa:16:3e:00:00:01", UNIT_NETWORK), ("fa:16:3e:00:00:02", UNIT_NETWORK)]
    assert all(i.find("model").get("type") == "virtio" for i in root.findall("./devices/interface"))

    graphics = root.find("./devices/graphics")
    assert graphics.get("type") == "vnc" and graphics.get("listen") == "127.0.0.1"
    assert graphics.get("autoport") == "yes"
    log = root.find("./devices/serial/log")
    assert log.get("file") == str(idir / "console.log") and log.get("append") == "on"
    assert root.find("./devices/console") is not None

    md = root.find(f"./metadata/{{{NOVALITE_NS}}}instance")
    assert md is not None and md.findtext(f"{{{NOVALITE_NS}}}hostname") == "vm-one"

    # Disks: an overlay on the cached base, grown to the flavor; a blank ephemeral disk.
    info = qemu_img_info(str(idir / "disk"))
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == 2 * GiB
    assert info["backing-filename"] == str(tmp_path / "instances" / "_base" / "img-1.qcow2")
    assert info["backing-filename-format"] == "qcow2"
    assert qemu_img_info(str(idir / "disk.eph0"))["virtual-size"] == 1 * GiB
    assert (idir / "disk.config").is_file()
    assert (idir / "libvirt.xml").is_file()


def test_build_domain_xml_kvm_and_no_vnc():
    xml = build_domain_xml(
        DomainSpec(
            uuid=UUID1,
            name="i-1",
            vcpus=4,
            memory_mb=1024,
            virt_type="kvm",
            cpu_mode="host-model",
            disks=[DiskSpec("/x/disk", "vda")],
            vnc_listen=None,
        )
    )
    root = ET.fromstring(xml)
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-model"
    assert root.find("./devices/graphics") is None
    assert root.find("./os/type").get("machine") == "pc"


def test_kvm_is_opt_in():
    assert LibvirtDriver("h").virt_type == "qemu"
    assert LibvirtDriver("h").cpu_mode is None
    kvm = LibvirtDriver("h", {"virt_type": "kvm"})
    assert kvm.virt_type == "kvm" and kvm.cpu_mode == "host-model"


def test_vnc_address_from_live_xml():
    xml = "<domain><devices><graphics type='vnc' port='5907' autoport='yes' listen='127.0.0.1'/></devices></domain>"
    assert vnc_address(xml) == ("127.0.0.1", 5907)
    assert vnc_address(xml.replace("5907", "-1")) is None
    assert vnc_address("<domain><devices/></domain>") is None


async def test_direct_kernel_boot(unit_driver: LibvirtDriver, tmp_path: Path):
    kernel = tmp_path / "vmlinuz"
    ramdisk = tmp_path / "initrd.gz"
    kernel.write_bytes(b"kernel")
    ramdisk.write_bytes(b"ramdisk")
    image = Image(
        id="aki",
        kernel_path=str(kernel),
        ramdisk_path=str(ramdisk),
        properties={"os_command_line": "console=ttyS0 quiet"},
    )
    await unit_driver.spawn(make_instance(None, image=image, root_gb=1))
    idir = tmp_path / "instances" / UUID1
    root = live_xml(unit_driver, UUID1)
    assert root.findtext("./os/kernel") == str(idir / "kernel")
    assert root.findtext("./os/initrd") == str(idir / "ramdisk")
    assert root.findtext("./os/cmdline") == "console=ttyS0 quiet"
    assert (idir / "kernel").read_bytes() == b"kernel"
    info = qemu_img_info(str(idir / "disk"))
    assert info["virtual-size"] == GiB and "backing-filename" not in info


# -- lifecycle -------------------------------------------------------------------------------


async def test_spawn_runs_and_lists_only_novalite_domains(unit_driver: LibvirtDriver, small_image: Path):
    inst = make_instance(small_image)
    await unit_driver.spawn(inst)
    assert await unit_driver.get_power_state(inst) == PowerState.RUNNING
    # A domain someone else defined on the host is not ours.
    unit_driver._connection().defineXML(
        f"<domain type='qemu'><name>foreign</name><uuid>{UUID2}</uuid><memory>65536</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )
    assert await unit_driver.list_instances() == [UUID1]


async def test_power_operations(unit_driver: LibvirtDriver, small_image: Path):
    inst = make_instance(small_image)
    d = unit_driver
    await d.spawn(inst)

    await d.pause(inst)
    assert await d.get_power_state(inst) == PowerState.PAUSED
    with pytest.raises(InvalidState):
        await d.pause(inst)
    await d.unpause(inst)
    assert await d.get_power_state(inst) == PowerState.RUNNING
    with pytest.raises(InvalidState):
        await d.unpause(inst)

    await d.suspend(inst)
    assert await d.get_power_state(inst) == PowerState.SUSPENDED
    await d.suspend(inst)  # already suspended: nothing to do
    await d.resume(inst)
    assert await d.get_power_state(inst) == PowerState.RUNNING
    await d.resume(inst)  # running: nothing to do

    await d.power_off(inst, timeout=1)
    assert await d.get_power_state(inst) == PowerState.SHUTDOWN
    await d.power_off(inst)  # already off
    with pytest.raises(InvalidState):
        await d.resume(inst)  # off, not suspended
    with pytest.raises(InvalidState):
        await d.pause(inst)
    await d.power_on(inst)
    assert await d.get_power_state(inst) == PowerState.RUNNING
    await d.power_on(inst)  # already on

    await d.power_off(inst, timeout=0)  # hard at once
    assert await d.get_power_state(inst) == PowerState.SHUTDOWN
    await d.reboot(inst, hard=True)  # hard reboot starts a stopped guest
    assert await d.get_power_state(inst) == PowerState.RUNNING
    await d.reboot(inst)  # soft
    assert await d.get_power_state(inst) == PowerState.RUNNING

    await d.suspend(inst)
    await d.power_off(inst)  # discards the saved memory: the next start boots
    assert await d.get_power_state(inst) == PowerState.SHUTDOWN
    dom = d._connection().lookupByUUIDString(UUID1)
    assert not dom.hasManagedSaveImage(0)


async def test_soft_reboot_falls_back_to_hard(unit_driver: LibvirtDriver, small_image: Path, monkeypatch):
    inst = make_instance(small_image)
    await unit_driver.spawn(inst)
    unit_driver.reboot_timeout = 0.3
    hard = []
    original = unit_driver._hard_reboot_sync
    monkeypatch.setattr(unit_driver, "_on_event", lambda *a: None)  # the guest "ignores" the request
    monkeypatch.setattr(unit_driver, "_hard_reboot_sync", lambda dom: (hard.append(1), original(dom)))
    await unit_driver.reboot(inst)
    assert hard == [1]
    assert await unit_driver.get_power_state(inst) == PowerState.RUNNING


async def test_destroy_removes_everything_and_is_idempotent(
    unit_driver: LibvirtDriver, small_image: Path, tmp_path: Path
):
    inst = make_instance(small_image, config_drive=True, ports=[Port(mac="fa:16:3e:00:00:05", ip="10.213.99.15")])
    await unit_driver.spawn(inst)
    idir = tmp_path / "instances" / UUID1
    assert idir.is_dir()
    assert {"mac": "fa:16:3e:00:00:05", "name": "vm-one", "ip": "10.213.99.15"} in dhcp_hosts(unit_driver)

    await unit_driver.suspend(inst)  # a managed save image must go too
    await unit_driver.destroy(inst)
    assert not idir.exists()
    assert dhcp_hosts(unit_driver) == []
    assert await unit_driver.list_instances() == []
    with pytest.raises(InstanceNotFound):
        await unit_driver.get_power_state(inst)
    with pytest.raises(InstanceNotFound):
        await unit_driver.get_console_output(inst)

    await unit_driver.destroy(inst)  # again
    await unit_driver.destroy(make_instance(None, uuid=UUID2))  # never existed


async def test_destroy_half_built_instance(unit_driver: LibvirtDriver, tmp_path: Path):
    idir = tmp_path / "instances" / UUID1
    idir.mkdir(parents=True)
    (idir / "disk").write_bytes(b"x")
    netmod.add_dhcp_host(unit_driver._connection(), UNIT_NETWORK, "fa:16:3e:00:00:09", "10.213.99.19")
    await unit_driver.destroy(make_instance(None, ports=[Port(mac="fa:16:3e:00:00:09", ip="10.213.99.19")]))
    assert not idir.exists()
    assert dhcp_hosts(unit_driver) == []


# -- failures --------------------------------------------------------------------------------


async def test_failed_spawn_cleans_up(unit_driver: LibvirtDriver, small_image: Path, tmp_path: Path):
    inst = make_instance(
        small_image,
        config_drive=True,
        ports=[
            Port(mac="fa:16:3e:00:00:07", ip="10.213.99.17"),
            Port(mac="fa:16:3e:00:00:08", ip="10.0.0.8", network="no-such-network"),
        ],
    )
    with pytest.raises(DriverError, match="no-such-network"):
        await unit_driver.spawn(inst)
    assert not (tmp_path / "instances" / UUID1).exists()
    assert dhcp_hosts(unit_driver) == []  # the first port's entry was rolled back
    assert await unit_driver.list_instances() == []


async def test_failed_start_undefines_the_domain(
    unit_driver: LibvirtDriver, small_image: Path, tmp_path: Path, monkeypatch
):
    import libvirt

    real_define = unit_driver._connection().defineXML

    def define_then_break(xml):
        dom = real_define(xml)

        class Broken:
            def __getattr__(self, name):
                return getattr(dom, name)

            def create(self):
                raise libvirt.libvirtError("boom: could not load kernel")

        return Broken()

    monkeypatch.setattr(unit_driver._connection(), "defineXML", define_then_break)
    inst = make_instance(small_image, ports=[Port(mac="fa:16:3e:00:00:0a", ip="10.213.99.20")])
    with pytest.raises(DriverError) as err:
        await unit_driver.spawn(inst)
    assert not isinstance(err.value, InstanceNotFound)
    monkeypatch.undo()
    assert await unit_driver.list_instances() == []
    with pytest.raises(InstanceNotFound):
        await unit_driver.get_power_state(inst)
    assert not (tmp_path / "instances" / UUID1).exists()
    assert dhcp_hosts(unit_driver) == []


async def test_spawn_refuses_existing_instance(unit_driver: LibvirtDriver, small_image: Path):
    inst = make_instance(small_image)
    await unit_driver.spawn(inst)
    with pytest.raises(DriverError, match="already exists"):
        await unit_driver.spawn(inst)
    assert await unit_driver.get_power_state(inst) == PowerState.RUNNING  # untouched


@pytest.mark.parametrize(
    ("image_kw", "inst_kw", "message"),
    [
        ({"path": "/nonexistent/image.qcow2"}, {}, "does not exist"),
        ({"disk_format": "vmdk"}, {}, "cannot boot disk_format"),
        ({"disk_format": "raw"}, {"root_gb": 0}, None),  # raw is fine, root_gb 0 = image size
        ({}, {"user_data": "!!!not base64!!!"}, "base64"),
    ],
)
async def test_spawn_rejects_bad_input(
    unit_driver: LibvirtDriver, small_image: Path, tmp_path: Path, image_kw, inst_kw, message
):
    image = Image(id="img-1", disk_format="qcow2", path=str(small_image))
    for k, v in image_kw.items():
        setattr(image, k, v)
    inst = make_instance(None, image=image, config_drive=True, **inst_kw)
    if message is None:
        await unit_driver.spawn(inst)
        return
    with pytest.raises(DriverError, match=message):
        await unit_driver.spawn(inst)
    assert not (tmp_path / "instances" / UUID1).exists()


async def test_flavor_smaller_than_image(unit_driver: LibvirtDriver, tmp_path: Path):
    big = tmp_path / "big.qcow2"
    qemu_img_create(big, "3G")
    with pytest.raises(DriverError, match="smaller than the image"):
        await unit_driver.spawn(make_instance(big, root_gb=1))
    assert await unit_driver.list_instances() == []


async def test_qcow2_image_with_backing_file_is_refused(unit_driver: LibvirtDriver, small_image: Path, tmp_path: Path):
    sneaky = tmp_path / "sneaky.qcow2"
    qemu_img_create(sneaky, None, backing=small_image)
    with pytest.raises(DriverError, match="refers to other files"):
        await unit_driver.spawn(make_instance(sneaky))


async def test_connection_and_lookup_errors_are_driver_errors(tmp_path: Path):
    bad = LibvirtDriver("h", {"uri": f"test://{tmp_path}/missing-node.xml", "instances_path": str(tmp_path)})
    with pytest.raises(DriverError, match="cannot connect to libvirt"):
        await bad.init_host()
    with pytest.raises(DriverError, match="virt_type"):
        await LibvirtDriver("h", {"virt_type": "xen"}).init_host()


async def test_operations_on_unknown_instance(unit_driver: LibvirtDriver):
    ghost = make_instance(None, uuid=UUID2)
    for op in (
        unit_driver.get_power_state,
        unit_driver.power_on,
        unit_driver.power_off,
        unit_driver.reboot,
        unit_driver.pause,
        unit_driver.unpause,
        unit_driver.suspend,
        unit_driver.resume,
        unit_driver.get_console_output,
        unit_driver.get_vnc_console,
    ):
        with pytest.raises(InstanceNotFound, match=UUID2):
            await op(ghost)


# -- consoles --------------------------------------------------------------------------------


async def test_console_output_reads_the_serial_log(unit_driver: LibvirtDriver, small_image: Path, tmp_path: Path):
    inst = make_instance(small_image)
    await unit_driver.spawn(inst)
    assert await unit_driver.get_console_output(inst) == ""  # the test driver writes no log
    log = tmp_path / "instances" / UUID1 / "console.log"
    log.write_bytes(b"x" * 200_000 + b"\nnovalite-tiny-guest booted\n\xff")
    out = await unit_driver.get_console_output(inst)
    assert out.endswith("novalite-tiny-guest booted\n\ufffd")
    assert len(out) <= 100 * 1024


async def test_vnc_console_needs_a_port(unit_driver: LibvirtDriver, small_image: Path):
    inst = make_instance(small_image)
    await unit_driver.spawn(inst)
    with pytest.raises(InvalidState):  # the test driver never allocates a VNC port
        await unit_driver.get_vnc_console(inst)


# -- config drive ----------------------------------------------------------------------------


async def test_config_drive_contents(unit_driver: LibvirtDriver, small_image: Path, tmp_path: Path):
    inst = make_instance(
        small_image,
        config_drive=True,
        user_data=base64.b64encode(b"#!/bin/sh\necho hello\n").decode(),
        key_name="mykey",
        key_data="ssh-ed25519 AAAAC3 user@host",
        metadata={"role": "web"},
        availability_zone="az1",
        ports=[Port(mac="fa:16:3e:00:00:0b", ip="10.213.99.21", prefix_len=24, gateway="10.213.99.1")],
    )
    await unit_driver.spawn(inst)
    iso_path = str(tmp_path / "instances" / UUID1 / "disk.config")

    iso = pycdlib.PyCdlib()
    iso.open(iso_path)
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "config-2"
        assert iso.has_rock_ridge() and iso.has_joliet()

        def read(path: str) -> bytes:
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path=path)
            return buf.getvalue()

        md = json.loads(read("/openstack/latest/meta_data.json"))
        user_data = read("/openstack/latest/user_data")
        nd = json.loads(read("/openstack/latest/network_data.json"))
        joliet_names = [name for _, _, files in iso.walk(joliet_path="/openstack/latest") for name in files]
    finally:
        iso.close()

    assert md["uuid"] == UUID1
    assert md["name"] == "instance-00000001"
    assert md["hostname"] == "vm-one"
    assert md["public_keys"] == {"mykey": "ssh-ed25519 AAAAC3 user@host"}
    assert md["availability_zone"] == "az1"
    assert md["project_id"] == "proj-1"
    assert md["launch_index"] == 0
    assert md["meta"] == {"role": "web"}
    assert user_data == b"#!/bin/sh\necho hello\n"
    assert set(nd) == {"links", "networks", "services"}
    assert nd["links"][0]["ethernet_mac_address"] == "fa:16:3e:00:00:0b"
    assert nd["networks"][0]["ip_address"] == "10.213.99.21"
    assert nd["networks"][0]["netmask"] == "255.255.255.0"
    assert "meta_data.json" in joliet_names
    assert configdrive.read_config_drive(iso_path)["openstack/latest/user_data"] == user_data


async def test_force_config_drive(test_uri: str, small_image: Path, tmp_path: Path):
    d = LibvirtDriver(
        "h",
        {"uri": test_uri, "instances_path": str(tmp_path / "i"), "network": UNIT_NETWORK, "force_config_drive": "true"},
    )
    await d.init_host()
    try:
        await d.spawn(make_instance(small_image))
        assert (tmp_path / "i" / UUID1 / "disk.config").is_file()
        await d.spawn(make_instance(small_image, uuid=UUID2, name="instance-2"))
        assert (tmp_path / "i" / UUID2 / "disk.config").is_file()
    finally:
        await d.cleanup_host()


async def test_no_config_drive_unless_asked(unit_driver: LibvirtDriver, small_image: Path, tmp_path: Path):
    await unit_driver.spawn(make_instance(small_image))
    assert not (tmp_path / "instances" / UUID1 / "disk.config").exists()
    root = live_xml(unit_driver, UUID1)
    assert root.find("./devices/disk[@device='cdrom']") is None


# -- events, host, networks ------------------------------------------------------------------


async def test_lifecycle_events_for_changes_behind_the_drivers_back(unit_driver: LibvirtDriver, small_image: Path):
    events: list[tuple[str, PowerState]] = []

    async def on_event(uuid: str, state: PowerState) -> None:
        events.append((uuid, state))

    unit_driver.set_lifecycle_callback(on_event)
    inst = make_instance(small_image)
    await unit_driver.spawn(inst)
    await unit_driver.pause(inst)
    await unit_driver.unpause(inst)
    await asyncio.sleep(0.3)
    assert events == []  # the driver's own operations are reported by their callers

    dom = unit_driver._connection().lookupByUUIDString(UUID1)
    await asyncio.to_thread(dom.shutdown)  # "the guest powered itself off"
    await wait_for(lambda: events == [(UUID1, PowerState.SHUTDOWN)])
    await asyncio.to_thread(dom.create)
    await wait_for(lambda: events[-1:] == [(UUID1, PowerState.RUNNING)])
    await asyncio.to_thread(dom.suspend)
    await wait_for(lambda: events[-1:] == [(UUID1, PowerState.PAUSED)])
    await asyncio.to_thread(dom.destroy)
    await wait_for(lambda: events[-1:] == [(UUID1, PowerState.SHUTDOWN)])
    assert len(events) == 4

    # Foreign domains produce no events.
    foreign = unit_driver._connection().defineXML(
        f"<domain type='qemu'><name>foreign</name><uuid>{UUID2}</uuid><memory>65536</memory>"
        "<os><type arch='x86_64'>hvm</type></os></domain>"
    )
    await asyncio.to_thread(foreign.create)
    await asyncio.sleep(0.3)
    assert all(u == UUID1 for u, _ in events)


async def wait_for(predicate, within: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


async def test_host_resources(unit_driver: LibvirtDriver, tmp_path: Path):
    res = await unit_driver.get_host_resources()
    info = unit_driver._connection().getInfo()
    assert res.vcpus == info[2] and res.memory_mb == info[1]
    assert res.local_gb == os.statvfs(tmp_path).f_blocks * os.statvfs(tmp_path).f_frsize // GiB
    assert res.hypervisor_type == "TEST"
    assert res.cpu_info["topology"]


def test_network_xml_is_isolated_unless_nat():
    isolated = ET.fromstring(netmod.network_xml("n1", "br-n1", "10.213.50.1/24"))
    assert isolated.find("forward") is None
    assert isolated.find("./ip").get("address") == "10.213.50.1"
    assert isolated.find("./ip/dhcp/range").get("start") == "10.213.50.128"
    nat = ET.fromstring(netmod.network_xml("n2", "br-n2", "10.213.51.1/24", nat=True))
    assert nat.find("forward").get("mode") == "nat"


async def test_ensure_isolated_network_is_idempotent(unit_driver: LibvirtDriver):
    conn = unit_driver._connection()
    for _ in range(2):
        netmod.ensure_isolated_network(conn, "novalite-extra", "nlextra0", "10.213.98.1/24")
    net = conn.networkLookupByName("novalite-extra")
    assert net.isActive() and "<forward" not in net.XMLDesc(0)


async def test_dhcp_entry_replaces_stale_entries(unit_driver: LibvirtDriver):
    conn = unit_driver._connection()
    netmod.add_dhcp_host(conn, UNIT_NETWORK, "fa:16:3e:00:00:0c", "10.213.99.30", "old")
    netmod.add_dhcp_host(conn, UNIT_NETWORK, "FA:16:3E:00:00:0C", "10.213.99.31", "new")
    assert dhcp_hosts(unit_driver) == [{"mac": "fa:16:3e:00:00:0c", "name": "new", "ip": "10.213.99.31"}]
    with pytest.raises(DriverError, match="does not exist"):
        netmod.add_dhcp_host(conn, "nope", "fa:16:3e:00:00:0d", "10.0.0.1")
    assert netmod.remove_dhcp_host(conn, "nope", "fa:16:3e:00:00:0d") is False


def test_entry_point_loads_the_driver():
    driver = load_driver("libvirt", "host-1", {"uri": "test:///default"})
    assert isinstance(driver, LibvirtDriver)
    assert driver.needs_image_file is True


async def test_ports_of_a_mapped_network_go_to_its_libvirt_network(
    test_uri: str, small_image: Path, tmp_path: Path
) -> None:
    """novalite's built-in network (``private``) is another libvirt network by name
    (``guest_network_name``): the agent passes the map, the driver attaches by it."""
    from novalite.agent.node import driver_options
    from novalite.config import Settings

    options = driver_options(Settings(state_dir=tmp_path / "s", guest_network_name=UNIT_NETWORK))
    assert options["network_map"] == {"private": UNIT_NETWORK}
    driver = LibvirtDriver(
        "unit-host",
        {**options, "uri": test_uri, "instances_path": str(tmp_path / "instances"), "shutdown_timeout": 1},
    )
    await driver.init_host()
    try:
        inst = make_instance(small_image, ports=[Port(mac="fa:16:3e:00:00:21", ip="10.213.99.21", network="private")])
        await driver.spawn(inst)
        nics = [i.find("source").get("network") for i in live_xml(driver, UUID1).findall("./devices/interface")]
        assert nics == [UNIT_NETWORK]
        assert [h["mac"] for h in dhcp_hosts(driver)] == ["fa:16:3e:00:00:21"]
        await driver.destroy(inst)
        assert dhcp_hosts(driver) == []  # the destroy found the entry through the same map
    finally:
        await driver.cleanup_host()
