"""The fake driver: guests that live in a dict, for tests, demos and scale runs.

It behaves like a hypervisor that always obeys, with a configurable host size and
boot delay, and failures that can be injected per operation so tests can drive the
control plane's error paths (a build that fails, a reboot that fails...).

Options (the ``[driver.fake]`` config section, or ``novalite serve --fake-*``):

``vcpus``, ``memory_mb``, ``local_gb``
    The host's capacity (defaults 16, 32768, 500).
``boot_delay``
    Seconds :meth:`FakeDriver.spawn` takes (default 0).
``fail``
    ``{"spawn": "message", ...}``: operations that raise :class:`DriverError`.
    ``fail_name_prefix`` restricts failures to instances whose hostname starts with it.

Guests live only as long as the driver object: a restarted agent (a new driver) has
none. A hard reboot or a power on recreates a lost guest from the instance's definition
(the contract of :meth:`ComputeDriver.reboot`), so a restart is repaired as on a real host.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from novalite_drivers.base import (
    ComputeDriver,
    ConsoleAddress,
    DriverError,
    HostResources,
    Instance,
    InstanceNotFound,
    InvalidState,
    PowerState,
)


@dataclass
class FakeGuest:
    """One in-memory guest."""

    instance: Instance
    state: PowerState = PowerState.RUNNING
    console: list[str] = field(default_factory=list)

    def log(self, line: str) -> None:
        self.console.append(f"[{time.time():.3f}] {line}")


class FakeDriver(ComputeDriver):
    """A hypervisor in memory. Every operation succeeds unless a failure was injected."""

    name = "fake"
    needs_image_file = False

    def __init__(self, host: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(host, options)
        self.guests: dict[str, FakeGuest] = {}
        self.boot_delay = float(self.options.get("boot_delay", 0))
        self.failures: dict[str, str] = dict(self.options.get("fail", {}))
        self.fail_prefix: str = self.options.get("fail_name_prefix", "")

    def _maybe_fail(self, op: str, instance: Instance) -> None:
        message = self.failures.get(op)
        if message and instance.hostname.startswith(self.fail_prefix):
            raise DriverError(message)

    def _guest(self, instance: Instance) -> FakeGuest:
        try:
            return self.guests[instance.uuid]
        except KeyError:
            raise InstanceNotFound(f"no guest for instance {instance.uuid} on {self.host}") from None

    async def get_host_resources(self) -> HostResources:
        return HostResources(
            vcpus=int(self.options.get("vcpus", 16)),
            memory_mb=int(self.options.get("memory_mb", 32768)),
            local_gb=int(self.options.get("local_gb", 500)),
            hypervisor_type="fake",
            hypervisor_version=1000,
            hypervisor_hostname=self.host,
            cpu_info={"arch": "x86_64", "model": "fake", "vendor": "novalite"},
        )

    async def list_instances(self) -> list[str]:
        return list(self.guests)

    async def spawn(self, instance: Instance) -> None:
        if instance.uuid in self.guests:
            raise DriverError(f"instance {instance.uuid} already exists on {self.host}")
        if self.boot_delay:
            await asyncio.sleep(self.boot_delay)
        self._maybe_fail("spawn", instance)  # nothing was created yet: no cleanup to do
        self._boot(instance, "booting")

    def _boot(self, instance: Instance, how: str) -> FakeGuest:
        """Create the guest from the instance's definition, running (spawn, or a recreate)."""
        guest = FakeGuest(instance)
        guest.log(f"novalite fake guest {instance.hostname or instance.name} {how}")
        for port in instance.ports:
            guest.log(f"eth: {port.mac} ip {port.ip}")
        guest.log("login:")
        self.guests[instance.uuid] = guest
        return guest

    async def destroy(self, instance: Instance) -> None:
        self._maybe_fail("destroy", instance)
        self.guests.pop(instance.uuid, None)

    async def power_off(self, instance: Instance, timeout: float = 60.0) -> None:
        guest = self._guest(instance)
        self._maybe_fail("power_off", instance)
        guest.state = PowerState.SHUTDOWN
        guest.log("power off")

    async def power_on(self, instance: Instance) -> None:
        # Like Nova's libvirt driver, power on is a hard reboot: a lost guest is recreated.
        if instance.uuid not in self.guests:
            self._maybe_fail("power_on", instance)
            self._boot(instance, "recreated from its definition and booting (power on)")
            return
        guest = self._guest(instance)
        self._maybe_fail("power_on", instance)
        guest.state = PowerState.RUNNING
        guest.log("power on")

    async def reboot(self, instance: Instance, hard: bool = False) -> None:
        if hard and instance.uuid not in self.guests:
            # The guest was lost (a restart of this driver forgets every guest): a hard
            # reboot recreates it from the instance's definition, as Nova's does.
            self._maybe_fail("reboot", instance)
            self._boot(instance, "recreated from its definition and booting (hard reboot)")
            return
        guest = self._guest(instance)
        self._maybe_fail("reboot", instance)
        guest.state = PowerState.RUNNING
        guest.log("hard reboot" if hard else "reboot")

    async def get_power_state(self, instance: Instance) -> PowerState:
        return self._guest(instance).state

    async def pause(self, instance: Instance) -> None:
        guest = self._guest(instance)
        if guest.state != PowerState.RUNNING:
            raise InvalidState(f"cannot pause a guest in power state {guest.state.name}")
        guest.state = PowerState.PAUSED

    async def unpause(self, instance: Instance) -> None:
        guest = self._guest(instance)
        if guest.state != PowerState.PAUSED:
            raise InvalidState(f"cannot unpause a guest in power state {guest.state.name}")
        guest.state = PowerState.RUNNING

    async def suspend(self, instance: Instance) -> None:
        guest = self._guest(instance)
        self._maybe_fail("suspend", instance)
        guest.state = PowerState.SUSPENDED
        guest.log("suspended")

    async def resume(self, instance: Instance) -> None:
        guest = self._guest(instance)
        guest.state = PowerState.RUNNING
        guest.log("resumed")

    async def get_console_output(self, instance: Instance) -> str:
        return "\n".join(self._guest(instance).console) + "\n"

    async def get_vnc_console(self, instance: Instance) -> ConsoleAddress:
        self._guest(instance)
        raise DriverError("the fake driver's guests have no screen")

    # -- test hooks: what a real guest would do on its own ---------------------------------

    async def guest_powers_off(self, uuid: str) -> None:
        """Simulate a guest that shut itself down; the agent hears it as a lifecycle event."""
        self.guests[uuid].state = PowerState.SHUTDOWN
        await self.emit_lifecycle(uuid, PowerState.SHUTDOWN)
