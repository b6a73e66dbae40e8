"""The libvirt driver's snapshot and rebuild (issue 11) against the real qemu:///system with
the tiny guest under TCG (as tests/drivers/test_libvirt_qemu.py: needs libvirtd)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from novalite_drivers.base import Image, PowerState
from novalite_drivers.libvirt import LibvirtDriver

from .test_libvirt_qemu import READY, tiny_instance, wait_console

pytestmark = pytest.mark.libvirt


def qemu_img_info(path: Path) -> dict[str, Any]:
    proc = subprocess.run(["qemu-img", "info", "--output=json", str(path)], capture_output=True, check=True)
    info: dict[str, Any] = json.loads(proc.stdout)
    return info


async def test_snapshot_then_rebuild_from_it(qemu_driver: LibvirtDriver, tiny_guest, next_port, tmp_path: Path):
    port = next_port()
    inst = tiny_instance(tiny_guest, port, config_drive=True)
    d = qemu_driver
    await d.spawn(inst)
    await wait_console(d, inst, READY)

    target = tmp_path / "snap.qcow2"
    assert await d.snapshot(inst, str(target)) == "qcow2"
    assert await d.get_power_state(inst) == PowerState.RUNNING  # paused for the copy, resumed after
    info = qemu_img_info(target)
    assert info["format"] == "qcow2" and "backing-filename" not in info  # one self-contained file
    assert info["virtual-size"] >= 1  # the root disk's size

    # A guest that is off is copied as it is, and stays off.
    await d.power_off(inst, timeout=0)
    assert await d.snapshot(inst, str(tmp_path / "off.qcow2")) == "qcow2"
    assert await d.get_power_state(inst) == PowerState.SHUTDOWN

    # Rebuild from the snapshot, with a new hostname: a new root disk, a new config drive.
    inst.hostname = "rebuilt-guest"
    inst.image = Image(id="snapshot", disk_format="qcow2", path=str(target))
    await d.rebuild(inst)
    assert await d.get_power_state(inst) == PowerState.RUNNING
    out = await wait_console(d, inst, READY, count=2)
    assert "novalite-hostname: rebuilt-guest" in out
    await d.destroy(inst)
    assert not (Path(d.instances_path) / inst.uuid).exists()
