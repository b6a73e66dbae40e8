"""The fake driver's ``state_file``: guests that outlive the agent, as a real hypervisor's do.

Without the option a new driver has no guests (today's behaviour, which the hard reboot
tests rely on). With it, guests, their power state, definition and console come back in
the next driver's ``init_host``; a boot the process died in (SIGKILL, a real subprocess)
leaves a guest behind, powered off, that ``destroy`` removes; a failed boot leaves none;
the hosts of one process share one file without losing each other's guests.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from novalite_drivers.base import DriverError, Instance, InstanceNotFound, Port, PowerState
from novalite_drivers.fake import FakeDriver, read_state_file


def instance(n: int, hostname: str = "") -> Instance:
    return Instance(
        uuid=f"00000000-0000-0000-0000-{n:012d}",
        name=f"instance-{n:08x}",
        hostname=hostname or f"vm{n}",
        vcpus=2,
        memory_mb=1024,
        ports=[Port(mac=f"fa:16:3e:00:00:{n:02x}", ip=f"10.0.0.{n}")],
        metadata={"k": "v"},
    )


def files(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir())


async def restarted(host: str, options: dict[str, Any]) -> FakeDriver:
    driver = FakeDriver(host, options)
    await driver.init_host()
    return driver


async def test_without_state_file_a_new_driver_has_no_guests(tmp_path: Path) -> None:
    first = await restarted("hv", {})
    await first.spawn(instance(1))
    assert await first.list_instances() == [instance(1).uuid]
    assert await (await restarted("hv", {})).list_instances() == []
    assert files(tmp_path) == []


async def test_guests_come_back_with_state_definition_and_console(tmp_path: Path) -> None:
    options = {"state_file": str(tmp_path / "hv" / "guests.json")}
    first = await restarted("hv", options)
    a, b = instance(1), instance(2)
    await first.spawn(a)
    await first.spawn(b)
    await first.power_off(b)

    second = await restarted("hv", options)
    assert sorted(await second.list_instances()) == [a.uuid, b.uuid]
    assert await second.get_power_state(a) == PowerState.RUNNING
    assert await second.get_power_state(b) == PowerState.SHUTDOWN
    assert second.guests[a.uuid].instance == a  # the definition, ports and metadata included
    assert await second.get_console_output(a) == await first.get_console_output(a)
    # What the second driver changes, a third sees.
    await second.power_on(b)
    await second.destroy(a)
    third = await restarted("hv", options)
    assert await third.list_instances() == [b.uuid]
    assert await third.get_power_state(b) == PowerState.RUNNING
    # Nothing but the file and its lock in the directory: every temporary was replaced.
    assert files(tmp_path / "hv") == ["guests.json", "guests.json.lock"]


async def test_failed_boot_leaves_no_guest_behind(tmp_path: Path) -> None:
    state_file = tmp_path / "guests.json"
    options = {"state_file": str(state_file), "fail": {"spawn": "no room"}, "fail_name_prefix": "bad"}
    driver = await restarted("hv", options)
    with pytest.raises(DriverError, match="no room"):
        await driver.spawn(instance(1, hostname="bad1"))
    await driver.spawn(instance(2))
    assert set(read_state_file(state_file)["hv"]) == {instance(2).uuid}
    assert await (await restarted("hv", options)).list_instances() == [instance(2).uuid]


async def test_guest_is_recorded_while_it_boots(tmp_path: Path) -> None:
    state_file = tmp_path / "guests.json"
    driver = await restarted("hv", {"state_file": str(state_file), "boot_delay": 30})
    booting = asyncio.create_task(driver.spawn(instance(1)))
    await asyncio.sleep(0.05)
    record = read_state_file(state_file)["hv"][instance(1).uuid]
    assert record["booting"] is True
    # The running driver itself shows it only once booted, as without a state file.
    assert await driver.list_instances() == []
    booting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await booting


KILLED_MID_BOOT = textwrap.dedent(
    """
    import asyncio, sys
    from novalite_drivers.base import Instance
    from novalite_drivers.fake import FakeDriver

    async def main():
        driver = FakeDriver("hv", {"state_file": sys.argv[1]})
        await driver.init_host()
        await driver.spawn(Instance(uuid="done", name="instance-done"))
        driver.boot_delay = 60
        boot = asyncio.create_task(driver.spawn(Instance(uuid="midboot", name="instance-midboot")))
        await asyncio.sleep(0.1)
        print("booting", flush=True)
        await boot

    asyncio.run(main())
    """
)


def kill_mid_boot(state_file: Path) -> None:
    """Run a driver in a subprocess, SIGKILL it while its second guest boots."""
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED_MID_BOOT, str(state_file)], stdout=subprocess.PIPE, env=dict(os.environ)
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"booting\n", "the subprocess did not start booting"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_a_boot_the_process_died_in_leaves_a_guest_off(tmp_path: Path) -> None:
    state_file = tmp_path / "guests.json"
    await asyncio.to_thread(kill_mid_boot, state_file)

    driver = await restarted("hv", {"state_file": str(state_file)})
    assert sorted(await driver.list_instances()) == ["done", "midboot"]
    left = Instance(uuid="midboot", name="instance-midboot")
    assert await driver.get_power_state(left) == PowerState.SHUTDOWN
    assert "boot interrupted" in await driver.get_console_output(left)
    assert read_state_file(state_file)["hv"]["midboot"]["booting"] is False
    # What the agent does before it builds again (compute.interrupted_build_cleanup).
    await driver.destroy(left)
    with pytest.raises(InstanceNotFound):
        await driver.get_power_state(left)
    await driver.spawn(left)
    again = await restarted("hv", {"state_file": str(state_file)})
    assert await again.get_power_state(left) == PowerState.RUNNING


async def test_hosts_sharing_a_file_keep_their_own_guests(tmp_path: Path) -> None:
    options = {"state_file": str(tmp_path / "guests.json")}
    one, two = await restarted("hv-1", options), await restarted("hv-2", options)
    await one.spawn(instance(1))
    await two.spawn(instance(2))
    await one.spawn(instance(3))
    await two.destroy(instance(2))
    await two.spawn(instance(4))
    hosts = read_state_file(options["state_file"])
    assert {h: sorted(g) for h, g in hosts.items()} == {
        "hv-1": sorted([instance(1).uuid, instance(3).uuid]),
        "hv-2": [instance(4).uuid],
    }
    assert await (await restarted("hv-2", options)).list_instances() == [instance(4).uuid]
    assert json.loads((tmp_path / "guests.json").read_text())["version"] == 1
