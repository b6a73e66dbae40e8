"""The fake driver's moving operations (issue 10) keep the contracts of drivers/base.py:
the original stays powered off on the source until confirm or revert, a same-host resize
keeps the two apart, and a failure injected in the disk copy leaves the guest as it was."""

from __future__ import annotations

import asyncio

import pytest
from novalite_drivers.base import (
    ComputeDriver,
    DriverError,
    Instance,
    InvalidState,
    LiveMigrationProgress,
    MigrationAborted,
    NotSupported,
    PowerState,
)
from novalite_drivers.fake import FakeDriver

SMALL = {"vcpus": 1, "memory_mb": 2048, "root_gb": 20, "ephemeral_gb": 0, "swap": 0}


def inst(memory_mb: int = 512, hostname: str = "vm") -> Instance:
    return Instance(uuid="u-1", name="instance-00000001", hostname=hostname, memory_mb=memory_mb)


async def test_move_to_another_host_then_confirm() -> None:
    src, dst = FakeDriver("a"), FakeDriver("b")
    await src.spawn(inst())
    await src.migrate_disk_and_power_off(inst(), "b", SMALL)
    assert await src.list_instances() == [] and src.originals["u-1"].state == PowerState.SHUTDOWN
    await dst.finish_migration(inst(2048), "a", power_on=True)
    assert await dst.get_power_state(inst()) == PowerState.RUNNING
    assert dst.guests["u-1"].instance.memory_mb == 2048
    await src.confirm_migration(inst())
    await src.confirm_migration(inst())  # idempotent
    assert src.originals == {}


async def test_same_host_revert_brings_the_original_back() -> None:
    drv = FakeDriver("a")
    await drv.spawn(inst())
    await drv.migrate_disk_and_power_off(inst(), "a", SMALL)
    await drv.finish_migration(inst(2048), "a", power_on=False)
    assert await drv.get_power_state(inst()) == PowerState.SHUTDOWN
    await drv.destroy(inst(2048))  # the revert destroys the resized guest only
    assert "u-1" in drv.originals
    await drv.finish_revert_migration(inst(), power_on=True)
    assert await drv.list_instances() == ["u-1"] and drv.guests["u-1"].instance.memory_mb == 512
    assert await drv.get_power_state(inst()) == PowerState.RUNNING and drv.originals == {}


async def test_failed_disk_copy_leaves_the_guest_running() -> None:
    drv = FakeDriver("a", {"fail": {"migrate_disk_and_power_off": "no room on b"}})
    await drv.spawn(inst())
    with pytest.raises(DriverError, match="no room on b"):
        await drv.migrate_disk_and_power_off(inst(), "b", SMALL)
    assert await drv.get_power_state(inst()) == PowerState.RUNNING and drv.originals == {}


async def test_the_base_driver_cannot_move() -> None:
    base = ComputeDriver("a")
    with pytest.raises(NotSupported):
        await base.migrate_disk_and_power_off(inst(), "b", SMALL)
    with pytest.raises(NotSupported):
        await base.finish_migration(inst(), "a")
    with pytest.raises(NotSupported):
        await base.confirm_migration(inst())
    with pytest.raises(NotSupported):
        await base.finish_revert_migration(inst())


async def test_the_disk_travels_with_the_guest() -> None:
    src, dst = FakeDriver("a"), FakeDriver("b")
    await src.spawn(inst())
    src.write_disk("u-1", "user data\n")
    await src.migrate_disk_and_power_off(inst(), "b", SMALL)
    await dst.finish_migration(inst(2048), "a")
    assert dst.disk_content("u-1").endswith("user data\n")


# -- live migration (issue 10, second half) ---------------------------------------------------


async def _no_progress(_p: LiveMigrationProgress) -> None:
    return None


async def test_live_migration_moves_the_running_guest_and_reports_progress() -> None:
    src, dst = FakeDriver("la", {"live_migration_delay": 0.1}), FakeDriver("lb")
    await src.spawn(inst())
    seen: list[LiveMigrationProgress] = []

    async def progress(p: LiveMigrationProgress) -> None:
        seen.append(p)
        assert await src.get_power_state(inst()) == PowerState.RUNNING  # it runs while it copies

    data = await dst.check_can_live_migrate_destination(inst(), "la", None)
    assert data == {"block_migration": True}
    await dst.pre_live_migration(inst(), "la", data)
    await src.live_migration(inst(), "lb", data, progress)
    assert await src.list_instances() == []
    assert seen and seen[-1].memory_processed == seen[-1].memory_total == 512 * 1024 * 1024
    await dst.post_live_migration_at_destination(inst(), "la")
    await dst.post_live_migration_at_destination(inst(), "la")  # idempotent
    assert await dst.get_power_state(inst()) == PowerState.RUNNING


async def test_a_failed_or_aborted_live_migration_leaves_the_guest_on_the_source() -> None:
    src = FakeDriver("fa", {"live_migration_delay": 0.5, "fail": {"live_migration": "lost"}})
    dst = FakeDriver("fb")
    await src.spawn(inst())
    await dst.pre_live_migration(inst(), "fa", {})
    with pytest.raises(DriverError, match="lost"):
        await src.live_migration(inst(), "fb", {}, _no_progress)
    assert await src.get_power_state(inst()) == PowerState.RUNNING
    await dst.rollback_live_migration_at_destination(inst())
    await dst.rollback_live_migration_at_destination(inst())  # idempotent
    assert await dst.list_instances() == [] and dst.incoming == set()

    src.failures.clear()
    with pytest.raises(InvalidState):
        await src.live_migration_abort(inst())  # nothing running
    task = asyncio.create_task(src.live_migration(inst(), "fb", {}, _no_progress))
    await asyncio.sleep(0.1)
    await src.live_migration_abort(inst())
    with pytest.raises(MigrationAborted):
        await task
    assert await src.get_power_state(inst()) == PowerState.RUNNING


async def test_force_complete_ends_the_copy_at_once() -> None:
    src, dst = FakeDriver("ca", {"live_migration_delay": 30}), FakeDriver("cb")
    await src.spawn(inst())
    task = asyncio.create_task(src.live_migration(inst(), "cb", {}, _no_progress))
    await asyncio.sleep(0.1)
    await src.live_migration_force_complete(inst())
    await asyncio.wait_for(task, 2)
    await dst.post_live_migration_at_destination(inst(), "ca")
    assert await dst.list_instances() == ["u-1"] and await src.list_instances() == []


async def test_the_base_driver_cannot_live_migrate() -> None:
    base = ComputeDriver("x")
    with pytest.raises(NotSupported):
        await base.live_migration(inst(), "y", {}, _no_progress)
    with pytest.raises(NotSupported):
        await base.pre_live_migration(inst(), "y", {})
