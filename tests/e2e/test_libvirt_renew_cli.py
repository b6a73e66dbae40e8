"""End to end on a real QEMU guest (issue 11): backups with rotation, rebuild, shelve /
unshelve and soft delete / restore, with the real ``openstack`` CLI, on ONE guest (each boot
costs 10-60 s under TCG).

The sequence, on server ``renew``:

1. ``server backup create --rotate 2`` three times: two backups are left, the newest two.
2. ``server rebuild --image tiny-b --wait``: ``tiny-b`` is the tiny guest's disk with a marker
   written (on the host, before the upload) at a free sector; the rebuilt guest reads that
   sector raw onto its serial console, so it runs the new image.
3. The guest writes a second marker on its own disk (a command typed on its screen, as
   tests/e2e/test_libvirt_snapshot_cli.py does), then ``server shelve`` (``shelved_offload_time``
   0: SHELVED_OFFLOADED, the domain gone) and ``server unshelve --wait``: the new guest, booted
   from the shelve image, reads that marker back; the shelve image is then deleted.
4. ``server delete`` with ``reclaim_instance_interval`` set: SOFT_DELETED, the guest powered
   off (not destroyed); ``server restore``: ACTIVE, running again. ``server delete --force``
   deletes it for good.

Uses the ``cloud`` fixture of tests/e2e/test_libvirt_cli.py (its own ``novalite serve`` with
the libvirt driver for this module), with a reclaim interval. Needs libvirtd
(scripts/setup-libvirt.sh).
"""

from __future__ import annotations

import subprocess
import time
import uuid as uuidlib

import pytest

from tests.e2e import test_libvirt_cli as lv
from tests.e2e.test_libvirt_cli import READY, console, domain, tiny_image, wait_console
from tests.e2e.test_libvirt_snapshot_cli import type_on_screen

#: The libvirt cloud of tests/e2e/test_libvirt_cli.py, one ``novalite serve`` for this module.
cloud = lv.cloud
tiny_guest_files = lv.tiny_guest_files

pytestmark = [pytest.mark.libvirt, pytest.mark.e2e]

#: Sectors of the 48 MiB root disk past the kernel and initramfs (free FAT space): the
#: rebuild image's marker, and the one the guest writes before its shelve.
IMAGE_SECTOR = 90000
GUEST_SECTOR = 90016


#: This module's ``novalite serve``: soft delete on (nothing is reclaimed during the test),
#: shelve offloads at once.
SERVE_ENV = {"NOVALITE_RECLAIM_INSTANCE_INTERVAL": "3600", "NOVALITE_SHELVED_OFFLOAD_TIME": "0"}


def image_with_marker(src: str, workdir, marker: str) -> str:  # type: ignore[no-untyped-def]
    """A qcow2 copy of ``src`` with ``marker`` written raw at :data:`IMAGE_SECTOR`."""
    raw, out = workdir / "b.raw", workdir / "b.qcow2"
    subprocess.run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", src, str(raw)], check=True)
    with open(raw, "r+b") as f:
        f.seek(IMAGE_SECTOR * 512)
        f.write(marker.encode() + b"\n")
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(out)], check=True)
    raw.unlink()
    return str(out)


def read_sector(cloud, server_id: str, sector: int) -> None:  # type: ignore[no-untyped-def]
    """Have the guest print a sector of its root disk on its serial console."""
    type_on_screen(domain(cloud, server_id), f"dd if=/dev/vda bs=512 skip={sector} count=1 >/dev/ttyS0\n")


def images_named(cli, prefix: str) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(i["Name"] for i in cli.json("image", "list") if i["Name"].startswith(prefix))


def wait_for(what: str, check, within: float = 60) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}")
        time.sleep(0.5)


def test_backup_rebuild_shelve_and_soft_delete_of_one_guest(cloud, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import libvirt

    cli = cloud["cli"]
    took: dict[str, float] = {}
    tiny_image(cloud)
    image_marker = f"novalite-image-b-{uuidlib.uuid4().hex[:12]}"
    guest_marker = f"novalite-guest-{uuidlib.uuid4().hex[:12]}"
    path = image_with_marker(cloud["files"]["disk"], tmp_path, image_marker)
    image_b = cli.json("image", "create", "--file", path, "--disk-format", "qcow2", "tiny-b")
    assert image_b["status"] == "active"

    t0 = time.monotonic()
    vm = cli.json("server", "create", "--flavor", "m1.tiny", "--image", "tiny", "--nic", "none", "--wait", "renew")
    sid = vm["id"]
    wait_console(cli, "renew", READY)
    took["boot"] = time.monotonic() - t0

    # 1. Three backups, rotation 2: the oldest goes, the newest two stay.
    for n in (1, 2, 3):
        t0 = time.monotonic()
        cli.run(
            "server", "backup", "create", "--name", f"renew-bk{n}", "--type", "daily", "--rotate", "2", "--wait",
            "renew", timeout=300,
        )  # fmt: skip
        took[f"backup {n}"] = time.monotonic() - t0
    wait_for("two backups left", lambda: images_named(cli, "renew-bk") == ["renew-bk2", "renew-bk3"])
    for name in ("renew-bk2", "renew-bk3"):
        image = cli.json("image", "show", name)
        assert image["status"] == "active" and image["disk_format"] == "qcow2"
        assert image["properties"]["image_type"] == "backup"
        assert image["properties"]["backup_type"] == "daily"
        assert image["properties"]["instance_uuid"] == sid
    server = cli.json("server", "show", "renew")
    assert server["status"] == "ACTIVE" and server["OS-EXT-STS:task_state"] is None

    # 2. Rebuild with the other image: a new root disk, the same host; the guest runs tiny-b.
    ready = console(cli, "renew").count(READY)
    t0 = time.monotonic()
    cli.run("server", "rebuild", "--image", "tiny-b", "--wait", "renew", timeout=300)
    server = cli.json("server", "show", "renew")
    assert server["status"] == "ACTIVE" and image_b["id"] in server["image"], server["image"]
    wait_console(cli, "renew", READY, count=ready + 1)  # the serial log is appended to
    took["rebuild"] = time.monotonic() - t0
    assert image_marker not in console(cli, "renew")
    read_sector(cloud, sid, IMAGE_SECTOR)
    wait_console(cli, "renew", image_marker, within=60)

    # 3. A marker written by the guest on its disk survives shelve-offload + unshelve.
    type_on_screen(
        domain(cloud, sid),
        f"echo {guest_marker} >/tmp/m\ndd if=/tmp/m of=/dev/vda bs=512 seek={GUEST_SECTOR}\nsync\n"
        "echo guest-marker-written >/dev/ttyS0\n",
    )
    wait_console(cli, "renew", "guest-marker-written", within=60)
    host = cli.json("server", "show", "renew")["OS-EXT-SRV-ATTR:host"]
    t0 = time.monotonic()
    cli.run("server", "shelve", "renew")
    cli.wait_status("renew", "SHELVED_OFFLOADED", timeout=300)
    took["shelve-offload"] = time.monotonic() - t0
    server = cli.json("server", "show", "renew")
    assert server["OS-EXT-SRV-ATTR:host"] is None and server["OS-EXT-STS:task_state"] is None
    assert domain(cloud, sid) is None, "the offloaded guest's domain is still defined"
    shelved = cli.json("image", "show", "renew-shelved")
    assert shelved["status"] == "active" and shelved["properties"]["instance_uuid"] == sid
    t0 = time.monotonic()
    cli.run("server", "unshelve", "--wait", "renew", timeout=300)
    server = cli.json("server", "show", "renew")
    assert server["status"] == "ACTIVE" and server["OS-EXT-SRV-ATTR:host"] == host  # the one host there is
    wait_console(cli, "renew", READY)  # a new domain: a new serial log
    took["unshelve"] = time.monotonic() - t0
    assert "guest-marker-written" not in console(cli, "renew")
    read_sector(cloud, sid, GUEST_SECTOR)
    wait_console(cli, "renew", guest_marker, within=60)
    wait_for("the shelve image deleted", lambda: images_named(cli, "renew-shelved") == [])

    # 4. Soft delete, then restore: the guest is powered off, kept, and runs again.
    t0 = time.monotonic()
    cli.run("server", "delete", "renew")
    cli.wait_status("renew", "SOFT_DELETED", timeout=120)
    wait_for(
        "the soft-deleted guest powered off",
        lambda: cli.json("server", "show", "renew")["OS-EXT-STS:task_state"] is None,
        within=120,
    )
    took["soft delete"] = time.monotonic() - t0
    dom = domain(cloud, sid)
    assert dom is not None and dom.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF  # off, not destroyed
    assert "renew" in {s["Name"] for s in cli.json("server", "list")}
    t0 = time.monotonic()
    cli.run("server", "restore", "renew")
    cli.wait_status("renew", "ACTIVE", timeout=120)
    took["restore"] = time.monotonic() - t0
    assert domain(cloud, sid).state()[0] == libvirt.VIR_DOMAIN_RUNNING
    actions = [a["Action"] for a in cli.json("server", "event", "list", "renew")]
    for name in ("createBackup", "rebuild", "shelve", "unshelve", "delete", "restore"):
        assert name in actions, (name, actions)

    # A soft-deleted server is deleted for good by forceDelete (``delete --force``).
    cli.run("server", "delete", "renew")
    cli.wait_status("renew", "SOFT_DELETED", timeout=120)
    wait_for(
        "the soft-deleted guest powered off",
        lambda: cli.json("server", "show", "renew")["OS-EXT-STS:task_state"] is None,
        within=120,
    )
    cli.run("server", "delete", "--force", "--wait", "renew", timeout=120)
    assert domain(cloud, sid) is None
    assert "renew" not in {s["Name"] for s in cli.json("server", "list")}
    print("renew sequence:", ", ".join(f"{k} {v:.1f}s" for k, v in took.items()))
    for name in ("renew-bk2", "renew-bk3", "tiny-b"):
        cli.run("image", "delete", name)
