"""End to end on a real QEMU guest (issue 11): ``openstack server image create --wait`` of a
running libvirt guest, then a new server booted from that snapshot sees what the original
wrote on its disk.

The marker is written *inside* the running guest: the test types a shell command on the
guest's screen (tty1, libvirt's ``sendKey``, as tests/drivers/test_libvirt_qemu.py does) that
``dd``s the marker onto its root disk (``/dev/vda``, at a sector past the boot files, in the
FAT partition's free space) and ``sync``s. The tiny guest runs from its initramfs, so it
mounts nothing: the marker is read back raw, at the same sector, on the new server, which
prints it on its serial console (``openstack console log show``). The original is deleted
before the new server boots, so one TCG guest runs at a time and the content can only have
come through the snapshot.

Uses the ``cloud`` fixture of tests/e2e/test_libvirt_cli.py (its own ``novalite serve``
with the libvirt driver for this module). Needs libvirtd (scripts/setup-libvirt.sh).
"""

from __future__ import annotations

import time
import uuid as uuidlib

import pytest

from tests.drivers.test_libvirt_qemu import _KEYS, _SHIFTED
from tests.e2e import test_libvirt_cli as lv
from tests.e2e.test_libvirt_cli import READY, domain, tiny_image, wait_console

#: The libvirt cloud of tests/e2e/test_libvirt_cli.py, one ``novalite serve`` for this module.
cloud = lv.cloud
tiny_guest_files = lv.tiny_guest_files

pytestmark = [pytest.mark.libvirt, pytest.mark.e2e]

#: A 512-byte sector of the root disk past the kernel and initramfs (the disk is 48 MiB).
SECTOR = 90000
KEYS = {**_KEYS, "=": 13}


def type_on_screen(dom, text: str) -> None:  # type: ignore[no-untyped-def]
    """Type ``text`` on the guest's keyboard (tty1's root shell), as a VNC user would."""
    import libvirt

    for ch in text:
        codes = [42, _SHIFTED[ch]] if ch in _SHIFTED else [KEYS[ch]]
        dom.sendKey(libvirt.VIR_KEYCODE_SET_LINUX, 20, codes, len(codes), 0)


def test_snapshot_of_a_running_guest_boots_with_its_disk(cloud) -> None:  # type: ignore[no-untyped-def]
    cli = cloud["cli"]
    tiny_image(cloud)
    marker = f"novalite-marker-{uuidlib.uuid4().hex[:12]}"
    vm1 = cli.json("server", "create", "--flavor", "m1.tiny", "--image", "tiny", "--nic", "none", "--wait", "snap-src")
    assert vm1["status"] == "ACTIVE"
    wait_console(cli, "snap-src", READY)
    # Written by the guest itself, on its disk, then flushed; the echo says it is done.
    type_on_screen(
        domain(cloud, vm1["id"]),
        f"echo {marker} >/tmp/m\ndd if=/tmp/m of=/dev/vda bs=512 seek={SECTOR}\nsync\n"
        "echo marker-written >/dev/ttyS0\n",
    )
    wait_console(cli, "snap-src", "marker-written", within=60)

    t0 = time.monotonic()
    cli.run("server", "image", "create", "--name", "snap-running", "--wait", "snap-src", timeout=300)
    took = time.monotonic() - t0
    image = cli.json("image", "show", "snap-running")
    assert image["status"] == "active" and image["disk_format"] == "qcow2"
    assert image["properties"]["image_type"] == "snapshot"
    assert image["properties"]["instance_uuid"] == vm1["id"]
    server = cli.json("server", "show", "snap-src")
    assert server["status"] == "ACTIVE" and server["OS-EXT-STS:task_state"] is None  # resumed after the copy
    print(f"snapshot of the running tiny guest: {took:.1f}s, {image['size']} bytes")

    # One TCG guest at a time: the original goes, the copy must carry its disk.
    cli.run("server", "delete", "--wait", "snap-src")
    vm2 = cli.json(
        "server", "create", "--flavor", "m1.tiny", "--image", "snap-running", "--nic", "none", "--wait", "snap-copy"
    )  # fmt: skip
    assert vm2["status"] == "ACTIVE"
    wait_console(cli, "snap-copy", READY)
    type_on_screen(domain(cloud, vm2["id"]), f"dd if=/dev/vda bs=512 skip={SECTOR} count=1 >/dev/ttyS0\n")
    wait_console(cli, "snap-copy", marker, within=60)
    cli.run("server", "delete", "--wait", "snap-copy")
    cli.run("image", "delete", "snap-running")
