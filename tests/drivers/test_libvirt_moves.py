"""The libvirt driver's moves (issue 10) between two real libvirt daemons on this machine:
qemu:///system (host "hv-a") and a second system daemon in its own mount namespace (host
"hv-b", tests/drivers/libvirtd2.py), with the tiny guest under TCG. One sequence, one guest
boot:

1. cold resize hv-a -> hv-b over the agents' transfer channel (the root disk flattened, its
   content kept: qemu-img compare, a marker written beyond the image), grown disk, more
   vCPUs and RAM; revert restores the original disk and definition on hv-a;
2. again, started on hv-b this time (the guest boots from the moved disk), confirm;
3. live migrations of the running guest, which prints its uptime on the serial console
   every 0.1 s: hv-b -> hv-a aborted (the guest stays, the destination is cleaned up),
   hv-b -> hv-a forced to complete, hv-a -> hv-b as is (total time and downtime printed);
   the serial output goes on after each.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import os
import re
import subprocess
import time
import uuid as uuidlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from novalite_drivers.base import InvalidState, LiveMigrationProgress, MigrationAborted, PowerState
from novalite_drivers.libvirt import LibvirtDriver

from novalite.agent.transfer import TransferReceiver, new_ticket, send_files

from .libvirtd2 import SecondLibvirtd
from .test_libvirt_moves_unit import has_marker, img_info, write_marker
from .test_libvirt_qemu import READY, tiny_instance, wait_console

pytestmark = pytest.mark.libvirt

GiB = 1024**3
# Linux keycodes: what the tick loop needs beyond test_libvirt_qemu's keys.
KEYS = dict(
    zip(
        "abcdefghijklmnopqrstuvwxyz",
        [30, 48, 46, 32, 18, 33, 34, 35, 23, 36, 37, 38, 50, 49, 24, 25, 16, 19, 31, 20, 22, 47, 17, 45, 21, 44],
        strict=True,
    )
)
KEYS.update({str(n): 1 + n for n in range(1, 10)} | {"0": 11, " ": 57, ".": 52, "/": 53, "\n": 28, ";": 39, "=": 13})
SHIFTED = {">": 52, "&": 8, ":": 39, "S": 31, "M": 50}
TICK_LOOP = "while true; do cat /proc/uptime; usleep 100000; done >/dev/ttyS0 &\n"


def type_keys(dom, text: str) -> None:
    import libvirt

    for ch in text:
        codes = [42, SHIFTED[ch]] if ch in SHIFTED else [KEYS[ch]]
        dom.sendKey(libvirt.VIR_KEYCODE_SET_LINUX, 20, codes, len(codes), 0)


def uptimes(text: str) -> list[float]:
    return [float(m) for m in re.findall(r"^(\d+\.\d\d) \d+\.\d\d\r?$", text, re.M)]


async def ticks_after(d: LibvirtDriver, inst, after: float, within: float = 30) -> list[float]:
    """Uptimes the guest printed on this host, once it printed one later than ``after``."""
    deadline = time.monotonic() + within
    while True:
        ticks = uptimes(await d.get_console_output(inst))
        if ticks and ticks[-1] > after + 0.5:
            return ticks
        assert time.monotonic() < deadline, f"no tick after {after} on {d.host}: {ticks[-5:]}"
        await asyncio.sleep(0.2)


@pytest.fixture
def second_daemon(qemu_host: str) -> Iterator[SecondLibvirtd]:
    daemon = SecondLibvirtd(Path("/var/tmp") / f"novalite-libvirtd2-{uuidlib.uuid4().hex[:8]}")
    daemon.start()
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture
def two_instance_paths() -> Iterator[tuple[Path, Path]]:
    base = Path("/var/tmp/novalite-test-instances")
    base.mkdir(mode=0o755, exist_ok=True)
    paths = []
    for side in "ab":
        p = base / f"{uuidlib.uuid4().hex[:10]}{side}"
        p.mkdir(mode=0o755)
        os.chmod(p, 0o755)
        paths.append(p)
    yield paths[0], paths[1]
    for p in paths:
        subprocess.run(["rm", "-rf", str(p)], check=False)


@pytest.fixture
async def hosts(qemu_host: str, second_daemon: SecondLibvirtd, two_instance_paths) -> AsyncIterator:
    a_path, b_path = two_instance_paths
    common = {"virt_type": "qemu", "shutdown_timeout": 20, "resize_shutdown_timeout": 0}
    hv_a = LibvirtDriver(
        "hv-a",
        {
            **common,
            "uri": qemu_host,
            "instances_path": str(a_path),
            "migration_uri": second_daemon.first_daemon_uri,  # as hv-b's daemon reaches it
            "migration_address": "127.0.0.1",
        },
    )
    hv_b = LibvirtDriver(
        "hv-b",
        {
            **common,
            "uri": second_daemon.uri,
            "instances_path": str(b_path),
            "migration_uri": second_daemon.uri,
            "migration_address": "127.0.0.1",
        },
    )
    await hv_a.init_host()
    await hv_b.init_host()
    try:
        yield hv_a, hv_b
    finally:
        for d in (hv_a, hv_b):
            from novalite_drivers.base import Instance

            for u in await d.list_instances():
                dom = d._connection().lookupByUUIDString(u)
                if d.instances_path in dom.XMLDesc(0):
                    await d.destroy(Instance(uuid=u, name=dom.name()))
            await d.cleanup_host()


async def transfer(files, dest: LibvirtDriver, inst, source: str) -> float:
    """The agents' part of a cold move: the destination receives, the source streams."""
    receiver = TransferReceiver("127.0.0.1:0")
    t = time.monotonic()
    try:
        ticket = new_ticket()
        url = await receiver.expect("migration-1", inst.uuid, ticket, await dest.receive_migration(inst, source))
        await send_files(url, ticket, list(files))
    finally:
        await receiver.close()
    return time.monotonic() - t


async def live(src: LibvirtDriver, dst: LibvirtDriver, inst, seen: list[LiveMigrationProgress]) -> asyncio.Task:
    data = await dst.check_can_live_migrate_destination(inst, src.host, None)
    assert data["block_migration"] is True
    await dst.pre_live_migration(inst, src.host, data)

    async def progress(p: LiveMigrationProgress) -> None:
        seen.append(p)

    return asyncio.create_task(src.live_migration(inst, dst.host, data, progress))


async def test_cold_and_live_moves_between_two_daemons(hosts, tiny_guest):
    hv_a, hv_b = hosts
    inst = tiny_instance(tiny_guest, None, memory_mb=128, root_gb=1, config_drive=True)
    a_dir, b_dir = Path(hv_a.instances_path) / inst.uuid, Path(hv_b.instances_path) / inst.uuid
    figures: dict[str, float] = {}

    await hv_a.spawn(inst)
    await hv_a.power_off(inst, timeout=0)  # not booted: it boots once, on hv-b below
    write_marker(a_dir / "disk")

    # 1. Cold resize to hv-b, finished stopped, then reverted.
    flavor = {"vcpus": 2, "memory_mb": 192, "root_gb": 2, "ephemeral_gb": 0}
    resized = dataclasses.replace(inst, vcpus=2, memory_mb=192, root_gb=2)
    files = await hv_a.migrate_disk_and_power_off(inst, "hv-b", flavor)
    await transfer(files, hv_b, inst, "hv-a")
    original = Path(hv_a.instances_path) / f"{inst.uuid}_resize" / "disk"
    cmp = await asyncio.to_thread(
        subprocess.run, ["qemu-img", "compare", "-q", str(original), str(b_dir / "disk")], capture_output=True
    )
    assert cmp.returncode == 0, cmp.stderr  # the same guest-visible content (flattened there)
    await hv_b.finish_migration(resized, "hv-a", power_on=False)
    assert img_info(b_dir / "disk")["virtual-size"] == 2 * GiB and has_marker(b_dir / "disk")
    xml = hv_b._connection().lookupByUUIDString(inst.uuid).XMLDesc(0)
    assert "<vcpu placement='static'>2</vcpu>" in xml and "<memory unit='KiB'>196608</memory>" in xml
    await hv_b.destroy(resized)
    await hv_a.finish_revert_migration(inst, power_on=False)
    assert await hv_a.get_power_state(inst) == PowerState.SHUTDOWN
    assert img_info(a_dir / "disk")["virtual-size"] == 1 * GiB and has_marker(a_dir / "disk")
    assert not b_dir.exists()

    # 2. Again, started on hv-b: the guest boots from the moved disk; confirm.
    t = time.monotonic()
    files = await hv_a.migrate_disk_and_power_off(inst, "hv-b", flavor)
    figures["cold_transfer_s"] = await transfer(files, hv_b, inst, "hv-a")
    await hv_b.finish_migration(resized, "hv-a", power_on=True)
    figures["cold_migrate_s"] = time.monotonic() - t
    await hv_a.confirm_migration(inst)
    assert inst.uuid not in await hv_a.list_instances() and not a_dir.exists()
    await wait_console(hv_b, resized, READY, within=120)
    figures["boot_s"] = time.monotonic() - t
    dom_b = hv_b._connection().lookupByUUIDString(inst.uuid)
    await asyncio.to_thread(type_keys, dom_b, TICK_LOOP)
    before = (await ticks_after(hv_b, resized, 0))[-1]

    # 3a. Live migration hv-b -> hv-a at 1 MiB/s, aborted: the guest stays and keeps running.
    with pytest.raises(InvalidState):
        await hv_b.live_migration_abort(resized)
    hv_b.live_migration_bandwidth = 1
    seen: list[LiveMigrationProgress] = []
    task = await live(hv_b, hv_a, resized, seen)
    while not seen:
        assert not task.done(), task
        await asyncio.sleep(0.1)
    await hv_b.live_migration_abort(resized)
    with pytest.raises(MigrationAborted):
        await task
    assert await hv_b.get_power_state(resized) == PowerState.RUNNING
    await hv_a.rollback_live_migration_at_destination(resized)
    assert inst.uuid not in await hv_a.list_instances() and not a_dir.exists()
    before = (await ticks_after(hv_b, resized, before))[-1]

    # 3b. hv-b -> hv-a, its memory copy slowed to 1 MiB/s once it starts (after the block
    # copy, which QEMU would slow as much, zeros included): it would take minutes, until forced
    # to complete (paused for the rest of the copy, the limit lifted); it runs on hv-a after.
    hv_b.live_migration_bandwidth = 0
    seen = []
    t = time.monotonic()
    task = await live(hv_b, hv_a, resized, seen)
    dom_b = hv_b._connection().lookupByUUIDString(inst.uuid)
    while not (await asyncio.to_thread(hv_b._job_stats, dom_b)).get("memory_total"):
        assert not task.done(), task
        await asyncio.sleep(0.02)
    await asyncio.to_thread(dom_b.migrateSetMaxSpeed, 1, 0)
    await asyncio.sleep(1.5)
    assert not task.done(), "it converged on its own: nothing to force"
    await hv_b.live_migration_force_complete(resized)
    t_forced = time.monotonic()
    await asyncio.wait_for(task, 60)
    figures["forced_after_s"] = time.monotonic() - t_forced
    figures["forced_total_s"] = time.monotonic() - t
    await hv_a.post_live_migration_at_destination(resized, "hv-b")
    assert await hv_a.get_power_state(resized) == PowerState.RUNNING
    assert inst.uuid not in await hv_b.list_instances() and not b_dir.exists()
    assert any(p.disk_total for p in seen)  # the block copy showed in the progress
    after = await ticks_after(hv_a, resized, before)
    print(f"serial ticks on hv-a after the forced migration: {after[:3]}...")

    # 3c. hv-a -> hv-b, unlimited: the total and the guest's downtime.
    seen = []
    t = time.monotonic()
    task = await live(hv_a, hv_b, resized, seen)
    last_on_a: list[float] = []
    while not task.done():  # what the guest printed on hv-a, up to its last moment there
        with contextlib.suppress(OSError):
            last_on_a = uptimes((a_dir / "console.log").read_text(errors="replace")) or last_on_a
        await asyncio.sleep(0.05)
    await asyncio.wait_for(task, 120)
    figures["live_s"] = time.monotonic() - t
    await hv_b.post_live_migration_at_destination(resized, "hv-a")
    assert await hv_b.get_power_state(resized) == PowerState.RUNNING
    import libvirt

    stats = await asyncio.to_thread(
        hv_b._connection().lookupByUUIDString(inst.uuid).jobStats, libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED
    )
    figures["downtime_ms"] = float(stats.get("downtime", -1))
    assert inst.uuid not in await hv_a.list_instances() and not a_dir.exists()
    ticks = await ticks_after(hv_b, resized, after[-1])
    assert ticks == sorted(ticks) and last_on_a and ticks[0] > last_on_a[-1]  # the same guest, going on
    gaps = [b - a for a, b in itertools.pairwise([last_on_a[-1], *ticks])]
    figures["max_tick_gap_s"] = max(gaps)  # in the guest's time, across the switch of hosts
    assert gaps[0] < 5, (last_on_a[-3:], ticks[:3])
    await hv_b.destroy(resized)
    print("figures:", {k: round(v, 3) for k, v in figures.items()})
