"""The libvirt driver against the real qemu:///system, booting the tiny guest under TCG.

Needs libvirtd (scripts/setup-libvirt.sh) and builds the guest on first use
(scripts/build-tiny-guest.sh into /var/tmp/novalite-guest). Guests sit on the isolated
network novalite-test (10.213.77.0/24, no <forward>): only this host can reach them.
"""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import time
import urllib.request
import uuid as uuidlib
from pathlib import Path

import pytest
from novalite_drivers.base import DriverError, Image, Instance, InstanceNotFound, PowerState
from novalite_drivers.libvirt import LibvirtDriver
from novalite_drivers.libvirt import network as netmod

from .conftest import TEST_NETWORK

pytestmark = pytest.mark.libvirt

BOOT_TIMEOUT = 60.0
BANNER = "novalite-tiny-guest booted"
READY = "novalite-guest-ready"


def tiny_instance(guest: dict[str, str], port, **kw) -> Instance:
    u = str(uuidlib.uuid4())
    defaults = dict(
        uuid=u,
        name=f"novalite-test-{u[:8]}",
        hostname=f"tiny-{u[:8]}",
        vcpus=1,
        memory_mb=256,
        root_gb=1,
        image=Image(id="novalite-tiny-guest", disk_format="qcow2", path=guest["disk"]),
        ports=[port] if port else [],
        project_id="test-project",
    )
    defaults.update(kw)
    return Instance(**defaults)


async def wait_console(driver: LibvirtDriver, inst: Instance, text: str, count: int = 1, within=BOOT_TIMEOUT) -> str:
    deadline = time.monotonic() + within
    out = ""
    while time.monotonic() < deadline:
        out = await driver.get_console_output(inst)
        if out.count(text) >= count:
            return out
        await asyncio.sleep(0.2)
    raise AssertionError(f"{text!r} (x{count}) not in the console within {within}s; console:\n{out[-3000:]}")


async def wait_state(driver: LibvirtDriver, inst: Instance, state: PowerState, within: float = 30) -> None:
    deadline = time.monotonic() + within
    current = None
    while time.monotonic() < deadline:
        current = await driver.get_power_state(inst)
        if current == state:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"power state {current!r}, expected {state!r}")


def http_get(ip: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(f"http://{ip}/", timeout=timeout) as resp:  # the guest's busybox httpd
        return resp.read().decode()


async def guest_answers(ip: str, within: float = 20.0) -> str:
    deadline = time.monotonic() + within
    while True:
        try:
            return await asyncio.to_thread(http_get, ip, 2.0)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)


# Linux input keycodes (libvirt's VIR_KEYCODE_SET_LINUX) for typing on the guest's screen.
_KEYS = dict(
    zip(
        "abcdefghijklmnopqrstuvwxyz",
        [30, 48, 46, 32, 18, 33, 34, 35, 23, 36, 37, 38, 50, 49, 24, 25, 16, 19, 31, 20, 22, 47, 17, 45, 21, 44],
        strict=True,
    )
)
_KEYS.update({str(n): 1 + n for n in range(1, 10)} | {"0": 11, "-": 12, " ": 57, ".": 52, "/": 53, "\n": 28})
_SHIFTED = {">": 52, "S": 31}


def type_on_screen(dom, text: str) -> None:
    """Type ``text`` on the guest's keyboard, as a VNC user would."""
    import libvirt

    for ch in text:
        codes = [42, _SHIFTED[ch]] if ch in _SHIFTED else [_KEYS[ch]]
        dom.sendKey(libvirt.VIR_KEYCODE_SET_LINUX, 20, codes, len(codes), 0)


def virsh(*args: str) -> str:
    return subprocess.run(["virsh", "-c", "qemu:///system", *args], check=True, capture_output=True, text=True).stdout


async def test_boot_network_config_drive_vnc_and_destroy(qemu_driver: LibvirtDriver, tiny_guest, next_port):
    port = next_port()
    inst = tiny_instance(
        tiny_guest,
        port,
        config_drive=True,
        user_data=base64.b64encode(b"hello from novalite user data\nsecond line\n").decode(),
        key_name="k1",
        key_data="ssh-ed25519 AAAA test",
    )
    t0 = time.monotonic()
    await qemu_driver.spawn(inst)
    spawned = time.monotonic() - t0
    assert await qemu_driver.get_power_state(inst) == PowerState.RUNNING
    assert inst.uuid in await qemu_driver.list_instances()

    out = await wait_console(qemu_driver, inst, READY)
    print(f"spawn returned after {spawned:.1f}s, guest ready after {time.monotonic() - t0:.1f}s")
    assert BANNER in out
    assert f"novalite-guest-ip: {port.ip}" in out  # exactly the port's address, via the DHCP host entry
    assert f"novalite-instance-uuid: {inst.uuid}" in out
    assert "novalite-user-data: hello from novalite user data" in out
    assert f"novalite-hostname: {inst.hostname}" in out

    # The guest is reachable from the host over the isolated network.
    assert (await guest_answers(port.ip)).startswith("novalite-tiny-guest")

    # VNC: a real RFB server on loopback.
    vnc = await qemu_driver.get_vnc_console(inst)
    assert vnc.host == "127.0.0.1" and vnc.port >= 5900
    with socket.create_connection((vnc.host, vnc.port), timeout=5) as s:
        assert s.recv(12).startswith(b"RFB ")

    # What a VNC user types on the screen (tty1) can write to the serial log.
    dom = qemu_driver._connection().lookupByUUIDString(inst.uuid)
    await asyncio.to_thread(type_on_screen, dom, "echo typed-on-vga-42 >/dev/ttyS0\n")
    await wait_console(qemu_driver, inst, "typed-on-vga-42\r\n", within=20)

    domain_xml = virsh("dumpxml", inst.uuid)
    assert "type='qemu'" in domain_xml.split("\n", 1)[0]
    idir = Path(qemu_driver.instances_path) / inst.uuid
    assert (idir / "disk").is_file() and (idir / "disk.config").is_file()

    await qemu_driver.destroy(inst)
    assert inst.uuid not in await qemu_driver.list_instances()
    assert inst.uuid not in virsh("list", "--all", "--uuid")
    assert not idir.exists()
    conn = qemu_driver._connection()
    assert all(h.get("mac") != port.mac for h in netmod.dhcp_hosts(conn, TEST_NETWORK))
    await qemu_driver.destroy(inst)  # idempotent


async def test_pause_suspend_and_power_cycle(qemu_driver: LibvirtDriver, tiny_guest, next_port):
    port = next_port()
    inst = tiny_instance(tiny_guest, port)
    d = qemu_driver
    await d.spawn(inst)
    await wait_console(d, inst, READY)
    await guest_answers(port.ip)

    t = time.monotonic()
    await d.pause(inst)
    print(f"pause {time.monotonic() - t:.3f}s")
    assert await d.get_power_state(inst) == PowerState.PAUSED
    with pytest.raises(OSError):
        await asyncio.to_thread(http_get, port.ip, 1.5)  # frozen
    t = time.monotonic()
    await d.unpause(inst)
    print(f"unpause {time.monotonic() - t:.3f}s")
    assert await d.get_power_state(inst) == PowerState.RUNNING
    await guest_answers(port.ip)

    t = time.monotonic()
    await d.suspend(inst)
    print(f"suspend (managed save) {time.monotonic() - t:.2f}s")
    assert await d.get_power_state(inst) == PowerState.SUSPENDED
    t = time.monotonic()
    await d.resume(inst)
    print(f"resume (restore) {time.monotonic() - t:.2f}s")
    assert await d.get_power_state(inst) == PowerState.RUNNING
    await guest_answers(port.ip)  # same guest, memory intact: no reboot happened
    out = await d.get_console_output(inst)
    assert out.count(BANNER) == 1 and out.count(READY) == 1  # and the log survived the restore

    t = time.monotonic()
    await d.power_off(inst, timeout=30)
    print(f"power_off (ACPI) {time.monotonic() - t:.2f}s")
    assert await d.get_power_state(inst) == PowerState.SHUTDOWN
    t = time.monotonic()
    await d.power_on(inst)
    print(f"power_on {time.monotonic() - t:.2f}s")
    assert await d.get_power_state(inst) == PowerState.RUNNING
    await wait_console(d, inst, READY, count=2)  # the log keeps the first boot
    await guest_answers(port.ip)
    await d.destroy(inst)


async def test_reboot_soft_and_hard(qemu_driver: LibvirtDriver, tiny_guest, next_port):
    port = next_port()
    inst = tiny_instance(tiny_guest, port)
    d = qemu_driver
    await d.spawn(inst)
    await wait_console(d, inst, READY)

    hard = []
    original = d._hard_reboot_sync
    d._hard_reboot_sync = lambda dom: (hard.append(1), original(dom))  # type: ignore[method-assign]
    t = time.monotonic()
    await d.reboot(inst)
    print(f"soft reboot returned after {time.monotonic() - t:.2f}s")
    assert hard == [], "the guest handles ACPI: no fallback to a hard reboot"
    # Same QEMU process, so the log keeps the first boot: the guest booted a second time.
    out = await wait_console(d, inst, READY, count=2)
    assert "power button pressed" in out
    assert await d.get_power_state(inst) == PowerState.RUNNING

    t = time.monotonic()
    await d.reboot(inst, hard=True)
    print(f"hard reboot {time.monotonic() - t:.2f}s")
    assert hard == [1]
    out = await wait_console(d, inst, READY, count=3)
    assert out.count(f"novalite-guest-ip: {port.ip}") == 3
    await d.destroy(inst)


async def test_guest_powering_off_is_reported(qemu_driver: LibvirtDriver, tiny_guest, next_port):
    events: list[tuple[str, PowerState]] = []

    inst = tiny_instance(tiny_guest, next_port())

    async def on_event(u: str, state: PowerState) -> None:
        if u == inst.uuid:  # other novalite guests on this host (another test run) report too
            events.append((u, state))

    qemu_driver.set_lifecycle_callback(on_event)
    await qemu_driver.spawn(inst)
    await wait_console(qemu_driver, inst, READY)
    assert events == []

    t = time.monotonic()
    await asyncio.to_thread(virsh, "shutdown", inst.uuid)  # ACPI, behind the driver's back
    deadline = time.monotonic() + 30
    while (inst.uuid, PowerState.SHUTDOWN) not in events:
        assert time.monotonic() < deadline, f"no SHUTDOWN event; got {events}"
        await asyncio.sleep(0.1)
    print(f"guest ACPI shutdown reported after {time.monotonic() - t:.2f}s")
    assert await qemu_driver.get_power_state(inst) == PowerState.SHUTDOWN

    await asyncio.to_thread(virsh, "start", inst.uuid)
    deadline = time.monotonic() + 30
    while events[-1] != (inst.uuid, PowerState.RUNNING):
        assert time.monotonic() < deadline, f"no RUNNING event; got {events}"
        await asyncio.sleep(0.1)
    await qemu_driver.destroy(inst)


async def test_kernel_and_ramdisk_boot(qemu_driver: LibvirtDriver, tiny_guest, next_port):
    port = next_port()
    image = Image(
        id="novalite-tiny-aki",
        kernel_path=tiny_guest["kernel"],
        ramdisk_path=tiny_guest["ramdisk"],
        properties={"os_command_line": "console=tty0 console=ttyS0,115200 panic=5"},
    )
    inst = tiny_instance(tiny_guest, port, image=image, root_gb=1, ephemeral_gb=1)
    await qemu_driver.spawn(inst)
    out = await wait_console(qemu_driver, inst, READY)
    assert "SYSLINUX" not in out  # no boot loader: QEMU loaded the kernel itself
    assert f"novalite-guest-ip: {port.ip}" in out
    await qemu_driver.destroy(inst)


async def test_failed_start_leaves_nothing(qemu_driver: LibvirtDriver, tiny_guest, next_port, tmp_path):
    garbage = Path(qemu_driver.instances_path) / "not-a-kernel"
    # Shorter than an x86 kernel header: QEMU refuses it every time. (Random bytes of kernel
    # size are not reliable: QEMU may "boot" them as an old-style kernel.)
    garbage.write_bytes(b"not a kernel\n")
    port = next_port()
    inst = tiny_instance(tiny_guest, port, image=Image(id="bad-aki", kernel_path=str(garbage)), root_gb=1)
    with pytest.raises(DriverError) as err:
        await qemu_driver.spawn(inst)
    print(f"spawn failed as expected: {err.value}")
    assert inst.uuid not in await qemu_driver.list_instances()
    with pytest.raises(InstanceNotFound):
        await qemu_driver.get_power_state(inst)
    assert not (Path(qemu_driver.instances_path) / inst.uuid).exists()
    assert all(h.get("mac") != port.mac for h in netmod.dhcp_hosts(qemu_driver._connection(), TEST_NETWORK))
