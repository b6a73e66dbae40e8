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
``migrate_delay``
    Seconds :meth:`FakeDriver.migrate_disk_and_power_off` takes (default 0: the "disk copy"
    of a resize or cold migration; :meth:`FakeDriver.finish_migration` takes ``boot_delay``).
    ``fail`` names the moving operations too (``migrate_disk_and_power_off``,
    ``finish_migration``, ``confirm_migration``, ``finish_revert_migration``).
``live_migration_delay``
    Seconds :meth:`FakeDriver.live_migration` takes (default 0), reporting progress every
    ``live_migration_step`` seconds (default 0.05), so tests can watch a live migration in
    progress, abort it or force it to complete. ``fail`` names the live migration steps too
    (``check_can_live_migrate_destination``, ``pre_live_migration``, ``live_migration``,
    ``post_live_migration_at_destination``); a failed ``live_migration`` fails halfway.
    ``pre_live_migration_delay`` (default 0): seconds the destination's preparation takes.
    ``attach_interface`` and ``detach_interface`` (issue 12) fail too when named.
``state_file``
    A path where the fake hypervisor keeps its guests across restarts of the agent (default:
    none, guests live in memory only). Without it, guests live only as long as the driver
    object: a restarted agent (a new driver) has none, and a hard reboot or a power on
    recreates a lost guest from the instance's definition (the contract of
    :meth:`ComputeDriver.reboot`), so a restart is repaired as on a real host. With it, the
    guests outlive the agent as a real hypervisor's do when the agent dies: every change
    (a guest defined, booted, powered off, destroyed...) rewrites the file atomically (a
    temporary file, then ``os.replace``), and :meth:`FakeDriver.init_host` loads it. A guest
    is recorded when :meth:`FakeDriver.spawn` *starts*, so a boot the process died in leaves
    a guest behind (powered off: it never finished booting), which the agent must clean up
    before it builds again. Several hosts may share one file (the ``fake_hosts`` of one
    process get the same options): it holds one section per host, rewritten under an
    ``fcntl`` lock on ``<state_file>.lock``. The file survives a killed process, not a lost
    machine (no fsync: it stands for a hypervisor's memory, not for a disk).
``image_files``
    True: guests boot from the image's bytes (the agent fetches the file first, as for
    libvirt), which become the guest's disk content: a snapshot copies it, so a server booted
    from a snapshot has the original's disk (issue 11). Default false: no download, the disk
    content only names the image.
``snapshot_delay``
    Seconds :meth:`FakeDriver.snapshot` takes (default 0); ``fail: {"snapshot": ...}`` and
    ``{"rebuild": ...}`` make those operations fail.
``screen``
    True (default): a running guest has a screen, an RFB server on 127.0.0.1 that draws its
    console log (:mod:`novalite_drivers.fakescreen`), so the console page shows something in
    demo mode. It starts when the console is first asked for (:meth:`FakeDriver.get_vnc_console`;
    a boot storm of thousands of guests opens no sockets) and stops when the guest powers off,
    suspends or is destroyed, and with the driver; the next start gets a new port, as a real
    guest's VNC server does. False: no screens (``get_vnc_console`` raises ``NotSupported``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from novalite_drivers.base import (
    ComputeDriver,
    ConsoleAddress,
    DriverError,
    HostResources,
    Instance,
    InstanceNotFound,
    InvalidState,
    LiveMigrationProgress,
    MigrationAborted,
    NotSupported,
    Port,
    PowerState,
)
from novalite_drivers.fakescreen import FakeScreen


@dataclass
class FakeGuest:
    """One in-memory guest."""

    instance: Instance
    state: PowerState = PowerState.RUNNING
    console: list[str] = field(default_factory=list)
    #: The root disk's content (bytes as latin-1 text, so the state file can keep it): what a
    #: snapshot copies (issue 11).
    disk: str = ""

    def log(self, line: str) -> None:
        self.console.append(f"[{time.time():.3f}] {line}")

    def to_json(self, booting: bool = False) -> dict[str, Any]:
        """The guest as the state file keeps it (``booting``: its spawn has not finished)."""
        return {
            "instance": dataclasses.asdict(self.instance),
            "state": int(self.state),
            "console": list(self.console),
            "disk": self.disk,
            "booting": booting,
        }

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> FakeGuest:
        return cls(
            Instance.from_dict(record["instance"]),
            PowerState(int(record["state"])),
            list(record.get("console", [])),
            str(record.get("disk", "")),
        )


#: The state file's layout version (``{"version": 1, "hosts": {host: {uuid: guest}}}``).
STATE_FORMAT = 1


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock beside ``path``, so that processes sharing it never lose
    each other's sections (in one process the event loop already serializes writes)."""
    with open(f"{path}.lock", "a") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def read_state_file(path: str | Path) -> dict[str, dict[str, dict[str, Any]]]:
    """Every host's guests in a state file, ``{host: {uuid: record}}`` (empty if none yet).

    Public so that tests and tools can see what the fake hypervisors hold.
    """
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        return {}
    if data.get("version") != STATE_FORMAT:
        raise DriverError(f"fake driver state file {path} has format {data.get('version')!r}, not {STATE_FORMAT}")
    return dict(data.get("hosts", {}))


class FakeDriver(ComputeDriver):
    """A hypervisor in memory. Every operation succeeds unless a failure was injected."""

    name = "fake"
    needs_image_file = False

    def __init__(self, host: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(host, options)
        self.guests: dict[str, FakeGuest] = {}
        self.boot_delay = float(self.options.get("boot_delay", 0))
        self.migrate_delay = float(self.options.get("migrate_delay", 0))
        #: The powered-off originals of guests moved away (or resized in place), by uuid, kept
        #: until the move is confirmed or reverted (in memory only, as a resize's leftovers).
        self.originals: dict[str, FakeGuest] = {}
        self.failures: dict[str, str] = dict(self.options.get("fail", {}))
        self.fail_prefix: str = self.options.get("fail_name_prefix", "")
        state_file = self.options.get("state_file")
        self.state_file: Path | None = Path(state_file) if state_file else None
        #: Guests whose spawn has started and not finished: kept in the state file only
        #: (no other operation sees them, as without a state file), so that a process
        #: that dies mid-boot leaves them behind.
        self.booting: dict[str, Instance] = {}
        self.screen = bool(self.options.get("screen", True))
        #: The screens of guests whose console was asked for, by uuid (see ``screen``).
        self.screens: dict[str, FakeScreen] = {}
        #: ``image_files`` (issue 11): boot from the image's bytes (the agent fetches the file),
        #: so a guest's disk is its image's content and a snapshot of it boots as the original.
        self.needs_image_file = bool(self.options.get("image_files", False))
        self.snapshot_delay = float(self.options.get("snapshot_delay", 0))
        self.live_migration_delay = float(self.options.get("live_migration_delay", 0))
        self.live_migration_step = float(self.options.get("live_migration_step", 0.05))
        self.pre_live_migration_delay = float(self.options.get("pre_live_migration_delay", 0))
        #: Live migrations running from this host, by uuid: {"abort": bool, "force": bool}.
        self.live_migrations: dict[str, dict[str, bool]] = {}
        #: Guests this host was prepared to receive (pre_live_migration), by uuid.
        self.incoming: set[str] = set()
        #: The data path (issue 12), what a real host would plug: port key (its id, else its
        #: MAC) -> the port as plugged, with "instance" (the guest's uuid) and "bridge".
        self.plugged: dict[str, dict[str, Any]] = {}
        #: network id -> {"vni", "peers"} as set_overlay_peers last gave them.
        self.overlay_peers: dict[str, dict[str, Any]] = {}

    async def init_host(self) -> None:
        """Load this host's guests from the state file, if there is one.

        A guest whose boot was interrupted comes back powered off: it was defined on the
        hypervisor but never finished booting. Its record is saved as such at once.
        """
        if self.state_file is None:
            return
        records = read_state_file(self.state_file).get(self.host, {})
        for uuid, record in records.items():
            guest = FakeGuest.from_json(record)
            if record.get("booting"):
                guest.state = PowerState.SHUTDOWN
                guest.log("boot interrupted: the guest was being created when its manager stopped")
            self.guests[uuid] = guest
            for port in guest.instance.ports:  # what the host still has plugged
                self._plug(uuid, port)
        if any(r.get("booting") for r in records.values()):
            self._save()

    def _save(self) -> None:
        """Rewrite this host's section of the state file atomically (no-op without one).

        Synchronous on purpose: nothing else of this process runs between reading the
        file and replacing it, so the hosts of one process sharing the file never race.
        """
        if self.state_file is None:
            return
        mine = {uuid: guest.to_json() for uuid, guest in self.guests.items()}
        for uuid, instance in self.booting.items():
            mine.setdefault(uuid, FakeGuest(instance, PowerState.NOSTATE).to_json(booting=True))
        self.state_file.parent.mkdir(parents=True, exist_ok=True)
        with _file_lock(self.state_file):
            hosts = read_state_file(self.state_file)
            hosts[self.host] = mine
            fd, tmp = tempfile.mkstemp(dir=self.state_file.parent, prefix=f".{self.state_file.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "w") as fh:
                    json.dump({"version": STATE_FORMAT, "hosts": hosts}, fh)
                os.replace(tmp, self.state_file)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise

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
            host_ip=self.options.get("overlay_local_ip") or None,  # as libvirt's option
        )

    async def list_instances(self) -> list[str]:
        return list(self.guests)

    async def spawn(self, instance: Instance) -> None:
        if instance.uuid in self.guests:
            raise DriverError(f"instance {instance.uuid} already exists on {self.host}")
        # From here a real hypervisor has the guest (being created): recorded in the state
        # file, so that a process killed mid-boot leaves it behind. A cancelled spawn (the
        # agent stopping) leaves it too, as a real one would.
        self.booting[instance.uuid] = instance
        self._save()
        try:
            if self.boot_delay:
                await asyncio.sleep(self.boot_delay)
            self._maybe_fail("spawn", instance)
        except DriverError:
            # Cleanup duty: the failed guest is removed before the error reaches the agent.
            self.booting.pop(instance.uuid, None)
            self._save()
            raise
        self.booting.pop(instance.uuid, None)
        self._boot(instance, "booting")

    def _boot(self, instance: Instance, how: str) -> FakeGuest:
        """Create the guest from the instance's definition, running (spawn, or a recreate)."""
        guest = FakeGuest(instance, disk=self._image_disk(instance))
        guest.log(f"novalite fake guest {instance.hostname or instance.name} {how}")
        for port in instance.ports:
            guest.log(f"eth: {port.mac} ip {port.ip}")
            self._plug(instance.uuid, port)
        guest.log("login:")
        self.guests[instance.uuid] = guest
        self._save()
        return guest

    async def attach_interface(self, instance: Instance, port: Port) -> None:
        """Records the NIC on the guest (``guest.instance.ports``) and on its console."""
        self._maybe_fail("attach_interface", instance)
        guest = self._guest(instance)
        if all(p.mac != port.mac for p in guest.instance.ports):
            guest.instance.ports.append(port)
        self._plug(instance.uuid, port)
        guest.log(f"eth attached: {port.mac} ip {port.ip}")
        self._save()

    async def detach_interface(self, instance: Instance, port: Port) -> None:
        self._maybe_fail("detach_interface", instance)
        guest = self.guests.get(instance.uuid)
        if guest is None:  # lost with the guest: nothing to unplug (the contract)
            return
        guest.instance.ports = [p for p in guest.instance.ports if p.mac != port.mac]
        self._unplug(port)
        guest.log(f"eth detached: {port.mac}")
        self._save()

    # -- the data path (issue 12): recorded, not built --------------------------------------

    @staticmethod
    def _port_key(port: Port) -> str:
        return port.id or port.mac.lower()

    def _plug(self, uuid: str, port: Port) -> None:
        """Record what the libvirt driver would plug for ``port`` (see its datapath.py)."""
        kind = port.network_type or "local"
        if kind == "flat":
            bridge = f"physnet:{port.physical_network}"
        elif port.network_id:
            bridge = f"nlb{port.network_id.replace('-', '')[:12]}"
        else:
            bridge = f"libvirt:{port.network}"
        self.plugged[self._port_key(port)] = {**dataclasses.asdict(port), "instance": uuid, "bridge": bridge}

    def _unplug(self, port: Port) -> None:
        self.plugged.pop(self._port_key(port), None)

    async def set_overlay_peers(self, network_id: str, vni: int, peers: list[str]) -> None:
        self._maybe_fail("set_overlay_peers", Instance(uuid="", name=""))
        self.overlay_peers[network_id] = {"vni": int(vni), "peers": sorted(set(peers))}

    async def update_port_security(self, instance: Instance, port: Port) -> None:
        """The port's new rules replace the recorded ones (and the guest's copy of the port)."""
        self._maybe_fail("update_port_security", instance)
        key = self._port_key(port)
        if key not in self.plugged:
            return  # not plugged on this host: ignored, as the contract says
        self.plugged[key].update(
            port_security_enabled=port.port_security_enabled,
            security_rules=None if port.security_rules is None else list(port.security_rules),
            allowed_address_pairs=list(port.allowed_address_pairs),
        )
        guest = self.guests.get(instance.uuid)
        if guest is not None:
            for p in guest.instance.ports:
                if self._port_key(p) == key:
                    p.port_security_enabled = port.port_security_enabled
                    p.security_rules = None if port.security_rules is None else list(port.security_rules)
                    p.allowed_address_pairs = list(port.allowed_address_pairs)
            guest.log(f"security of {port.mac} updated: {len(port.security_rules or [])} rule(s)")
            self._save()

    async def cleanup_host(self) -> None:
        for uuid in list(self.screens):
            await self._screen_off(uuid)

    async def destroy(self, instance: Instance) -> None:
        self._maybe_fail("destroy", instance)
        await self._screen_off(instance.uuid)
        gone = self.guests.pop(instance.uuid, None)
        for key in [k for k, v in self.plugged.items() if v["instance"] == instance.uuid]:
            del self.plugged[key]
        if self.booting.pop(instance.uuid, None) is not None or gone is not None:
            self._save()

    async def power_off(self, instance: Instance, timeout: float = 60.0) -> None:
        guest = self._guest(instance)
        self._maybe_fail("power_off", instance)
        guest.state = PowerState.SHUTDOWN
        guest.log("power off")
        await self._screen_off(instance.uuid)
        self._save()

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
        self._save()

    async def reboot(self, instance: Instance, hard: bool = False) -> None:
        if hard and instance.uuid not in self.guests:
            # The guest was lost (a restart of this driver without a state file forgets
            # every guest): a hard reboot recreates it from the instance's definition, as
            # Nova's does.
            self._maybe_fail("reboot", instance)
            self._boot(instance, "recreated from its definition and booting (hard reboot)")
            return
        guest = self._guest(instance)
        self._maybe_fail("reboot", instance)
        guest.state = PowerState.RUNNING
        guest.log("hard reboot" if hard else "reboot")
        self._save()

    async def get_power_state(self, instance: Instance) -> PowerState:
        return self._guest(instance).state

    async def pause(self, instance: Instance) -> None:
        guest = self._guest(instance)
        if guest.state != PowerState.RUNNING:
            raise InvalidState(f"cannot pause a guest in power state {guest.state.name}")
        guest.state = PowerState.PAUSED
        self._save()

    async def unpause(self, instance: Instance) -> None:
        guest = self._guest(instance)
        if guest.state != PowerState.PAUSED:
            raise InvalidState(f"cannot unpause a guest in power state {guest.state.name}")
        guest.state = PowerState.RUNNING
        self._save()

    async def suspend(self, instance: Instance) -> None:
        guest = self._guest(instance)
        self._maybe_fail("suspend", instance)
        guest.state = PowerState.SUSPENDED
        guest.log("suspended")
        await self._screen_off(instance.uuid)
        self._save()

    async def resume(self, instance: Instance) -> None:
        guest = self._guest(instance)
        guest.state = PowerState.RUNNING
        guest.log("resumed")
        self._save()

    async def get_console_output(self, instance: Instance) -> str:
        return "\n".join(self._guest(instance).console) + "\n"

    async def get_vnc_console(self, instance: Instance) -> ConsoleAddress:
        """The guest's screen, started on the first call; the same address until it stops."""
        guest = self._guest(instance)
        if not self.screen:
            raise NotSupported("the fake driver's screens are off (option screen = false)")
        if guest.state not in (PowerState.RUNNING, PowerState.PAUSED):
            raise InvalidState(f"the guest is {guest.state.name.lower()}: its screen is off")
        screen = self.screens.get(instance.uuid)
        if screen is None:
            uuid = instance.uuid
            screen = FakeScreen(
                f"{instance.hostname or instance.name} - novalite fake guest",
                lines=lambda: self.guests[uuid].console if uuid in self.guests else [],
                on_line=lambda line: self._typed(uuid, line),
            )
            await screen.start()
            if instance.uuid in self.screens:  # another call started one meanwhile
                await screen.stop()
            else:
                self.screens[instance.uuid] = screen
        return ConsoleAddress("127.0.0.1", self.screens[instance.uuid].port)

    async def _screen_off(self, uuid: str) -> None:
        screen = self.screens.pop(uuid, None)
        if screen is not None:
            await screen.stop()

    def _typed(self, uuid: str, line: str) -> None:
        """A line typed on the screen: the fake guest echoes it into its console log."""
        guest = self.guests.get(uuid)
        if guest is not None and guest.state == PowerState.RUNNING:
            guest.log(f"$ {line}")
            self._save()

    # -- test hooks: what a real guest would do on its own ---------------------------------

    async def guest_powers_off(self, uuid: str) -> None:
        """Simulate a guest that shut itself down; the agent hears it as a lifecycle event."""
        self.guests[uuid].state = PowerState.SHUTDOWN
        await self._screen_off(uuid)
        self._save()
        await self.emit_lifecycle(uuid, PowerState.SHUTDOWN)

    # -- images (issue 11) -----------------------------------------------------------------

    #: The most bytes of an image file a fake disk holds (the fake is for tests and demos).
    MAX_DISK_BYTES = 16 * 1024 * 1024

    def _image_disk(self, instance: Instance) -> str:
        """A new root disk's content: the image file's bytes when the agent fetched it
        (``image_files``), else a line naming the image."""
        image = instance.image
        if image is None:
            return ""
        if image.path and os.path.exists(image.path):
            with open(image.path, "rb") as fh:
                return fh.read(self.MAX_DISK_BYTES).decode("latin-1")
        return f"fake disk of image {image.id}\n"

    async def snapshot(self, instance: Instance, target: str) -> str:
        """Copy the guest's disk content into ``target`` (raw); ``snapshot_delay`` seconds,
        and ``fail: {"snapshot": ...}`` raises after the delay, with ``target`` removed."""
        guest = self._guest(instance)
        try:
            if self.snapshot_delay:
                await asyncio.sleep(self.snapshot_delay)
            self._maybe_fail("snapshot", instance)
            self._write_snapshot(guest, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(target)
            raise
        guest.log("snapshot taken")
        return "raw"

    @staticmethod
    def _write_snapshot(guest: FakeGuest, target: str) -> None:
        """Synchronous, as the state file's writes: a fake disk is small."""
        Path(target).write_bytes(guest.disk.encode("latin-1"))

    async def rebuild(self, instance: Instance, preserve_ephemeral: bool = False) -> None:
        """A new guest from the new definition and image, after ``boot_delay``; the old one is
        gone first. ``fail: {"rebuild": ...}`` raises with no guest left."""
        self._guest(instance)
        await self._screen_off(instance.uuid)
        self.guests.pop(instance.uuid, None)
        self._save()
        if self.boot_delay:
            await asyncio.sleep(self.boot_delay)
        self._maybe_fail("rebuild", instance)
        self._boot(instance, "rebuilt and booting")

    # -- test hooks (issue 11) --------------------------------------------------------------

    def write_disk(self, uuid: str, data: str) -> None:
        """Simulate the guest writing ``data`` at the end of its disk."""
        self.guests[uuid].disk += data
        self._save()

    def disk_content(self, uuid: str) -> str:
        """The guest's disk content (latin-1 text of its bytes)."""
        return self.guests[uuid].disk

    # -- moving servers (issue 10) --------------------------------------------------------

    #: Disks "sent" between the fake hosts of one process, by (destination host, uuid): the
    #: wire a real driver copies over. A destination in another process finds nothing and
    #: makes a new disk from the image, as a spawn does.
    sent_disks: ClassVar[dict[tuple[str, str], str]] = {}

    async def migrate_disk_and_power_off(self, instance: Instance, dest_host: str, flavor: dict[str, Any]) -> None:
        """Power off and set the original aside (``originals``) until confirm or revert; a
        failure injected here leaves the guest as it was (the cleanup duty)."""
        guest = self._guest(instance)
        if self.migrate_delay:
            await asyncio.sleep(self.migrate_delay)
        self._maybe_fail("migrate_disk_and_power_off", instance)
        guest.state = PowerState.SHUTDOWN
        guest.log(f"power off: disks sent to {dest_host}")
        await self._screen_off(instance.uuid)
        self.originals[instance.uuid] = self.guests.pop(instance.uuid)
        self.sent_disks[(dest_host, instance.uuid)] = guest.disk
        self._save()

    async def finish_migration(self, instance: Instance, source_host: str, power_on: bool = True) -> None:
        if instance.uuid in self.guests:
            raise DriverError(f"instance {instance.uuid} already exists on {self.host}")
        if self.boot_delay:
            await asyncio.sleep(self.boot_delay)
        self._maybe_fail("finish_migration", instance)  # nothing defined yet: nothing to clean
        disk = self.sent_disks.pop((self.host, instance.uuid), None)
        guest = self._boot(instance, f"migrated from {source_host} and booting")
        if disk is not None:
            guest.disk = disk
        if not power_on:
            guest.state = PowerState.SHUTDOWN
        self._save()

    async def confirm_migration(self, instance: Instance) -> None:
        self._maybe_fail("confirm_migration", instance)
        self.originals.pop(instance.uuid, None)

    async def finish_revert_migration(self, instance: Instance, power_on: bool = True) -> None:
        self._maybe_fail("finish_revert_migration", instance)
        original = self.originals.pop(instance.uuid, None)
        if original is None:
            # The original was lost (this driver restarted): recreate it from its definition.
            original = self._boot(instance, "recreated from its definition (revert)")
        else:
            original.instance = instance
            self.guests[instance.uuid] = original
        original.state = PowerState.RUNNING if power_on else PowerState.SHUTDOWN
        original.log("resize reverted" + (": power on" if power_on else ""))
        self._save()

    # -- live migration (issue 10, second half) ---------------------------------------------

    #: Live-migrated guests on the wire between the fake hosts of one process, by
    #: (destination host, uuid); a destination in another process boots it from its definition.
    sent_guests: ClassVar[dict[tuple[str, str], FakeGuest]] = {}

    async def check_can_live_migrate_destination(
        self, instance: Instance, source_host: str, block_migration: bool | None
    ) -> dict[str, Any]:
        self._maybe_fail("check_can_live_migrate_destination", instance)
        if instance.uuid in self.guests:
            raise DriverError(f"instance {instance.uuid} already exists on {self.host}")
        return {"block_migration": True if block_migration is None else bool(block_migration)}

    async def pre_live_migration(self, instance: Instance, source_host: str, migrate_data: dict[str, Any]) -> None:
        if self.pre_live_migration_delay:
            await asyncio.sleep(self.pre_live_migration_delay)
        self._maybe_fail("pre_live_migration", instance)  # nothing made yet: nothing to clean
        self.incoming.add(instance.uuid)

    async def live_migration(
        self,
        instance: Instance,
        dest_host: str,
        migrate_data: dict[str, Any],
        progress: Callable[[LiveMigrationProgress], Awaitable[None]],
    ) -> None:
        """Copy the guest's "memory" for ``live_migration_delay`` seconds in steps; the guest
        keeps running here until the end, and stays here on any failure (the cleanup duty)."""
        guest = self._guest(instance)
        control = self.live_migrations[instance.uuid] = {"abort": False, "force": False}
        try:
            total = max(1, int(instance.memory_mb)) * 1024 * 1024
            delay = self.live_migration_delay
            steps = max(1, int(delay / self.live_migration_step)) if delay else 1
            for step in range(1, steps + 1):
                if control["abort"]:
                    raise MigrationAborted(f"live migration of {instance.uuid} aborted")
                if control["force"]:
                    break
                if delay:
                    await asyncio.sleep(delay / steps)
                done = total * step // steps
                await progress(LiveMigrationProgress(total, done, total - done))
                if step * 2 >= steps:
                    self._maybe_fail("live_migration", instance)
            if control["abort"]:
                raise MigrationAborted(f"live migration of {instance.uuid} aborted")
            self._maybe_fail("live_migration", instance)
        finally:
            self.live_migrations.pop(instance.uuid, None)
        guest.log(f"live-migrated to {dest_host}")
        await self._screen_off(instance.uuid)
        self.sent_guests[(dest_host, instance.uuid)] = self.guests.pop(instance.uuid)
        self._save()

    def _running_migration(self, instance: Instance) -> dict[str, bool]:
        control = self.live_migrations.get(instance.uuid)
        if control is None:
            raise InvalidState(f"no live migration of {instance.uuid} is running on {self.host}")
        return control

    async def live_migration_abort(self, instance: Instance) -> None:
        self._running_migration(instance)["abort"] = True

    async def live_migration_force_complete(self, instance: Instance) -> None:
        self._running_migration(instance)["force"] = True

    async def post_live_migration_at_destination(self, instance: Instance, source_host: str) -> None:
        self._maybe_fail("post_live_migration_at_destination", instance)
        self.incoming.discard(instance.uuid)
        guest = self.sent_guests.pop((self.host, instance.uuid), None)
        if guest is None:
            if instance.uuid in self.guests:
                return  # done already (idempotent)
            guest = self._boot(instance, f"live-migrated from {source_host} (recreated from its definition)")
        guest.instance = instance
        guest.log(f"live migration from {source_host} finished")
        self.guests[instance.uuid] = guest
        self._save()

    async def rollback_live_migration_at_destination(self, instance: Instance) -> None:
        self.incoming.discard(instance.uuid)
        self.sent_guests.pop((self.host, instance.uuid), None)
