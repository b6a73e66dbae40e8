"""The hypervisor driver interface: the one seam between novalite and a hypervisor.

A driver is small on purpose. It knows its hypervisor and nothing else: it never
imports novalite's API, database or bus, and it never decides policy (which host,
which state an instance is *allowed* to be in). The compute agent calls it with plain
dataclasses and turns whatever it returns or raises into database updates through the
conductor.

Every method is a coroutine. A driver whose library blocks (libvirt-python) runs the
blocking calls in a thread so that the agent's event loop keeps serving heartbeats.

Contracts common to all methods:

* ``instance`` is an :class:`Instance`; drivers key their state by ``instance.uuid``
  and may use ``instance.name`` (unique, hypervisor-friendly) for their own objects.
* A method that fails raises a :class:`DriverError` subclass with a message a user
  can read; the agent records it as the instance's fault.
* Cleanup duty is stated per method: when a method raises, it must leave nothing
  behind that a later :meth:`ComputeDriver.destroy` could not remove.
* The instance's definition is the database's, not the hypervisor's: every operation
  gets the same :class:`Instance` payload :meth:`ComputeDriver.spawn` got. A hypervisor
  can lose a guest (the fake driver's live in memory; a libvirt domain can be undefined
  behind novalite's back), so :meth:`ComputeDriver.reboot` with ``hard=True`` and
  :meth:`ComputeDriver.power_on` recreate a missing guest from that payload, as Nova's
  hard reboot does, keeping the disks that still exist.

Optional capabilities (pause, suspend, consoles) have defaults that raise
:class:`NotSupported`, so a minimal driver implements only what its hypervisor can do.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar


class PowerState(enum.IntEnum):
    """Power states with Nova's numeric values (shown as ``OS-EXT-STS:power_state``)."""

    NOSTATE = 0
    RUNNING = 1
    PAUSED = 3
    SHUTDOWN = 4
    CRASHED = 6
    SUSPENDED = 7


class DriverError(Exception):
    """Base of every error a driver raises; its message is shown to the user as the fault."""


class InstanceNotFound(DriverError):
    """The hypervisor has no guest for this instance."""


class NotSupported(DriverError):
    """The driver (or its hypervisor) cannot do this operation."""


class MigrationAborted(DriverError):
    """A live migration stopped because it was aborted (:meth:`ComputeDriver.live_migration_abort`)."""


class InvalidState(DriverError):
    """The guest is in a state where the hypervisor refuses the operation."""


@dataclass
class Port:
    """One network interface of a guest: novalite allocated the MAC and the fixed IP."""

    mac: str
    ip: str | None = None
    network: str | None = None  # the hypervisor-side network name (e.g. a libvirt network)
    prefix_len: int | None = None
    gateway: str | None = None
    #: The network service's view of the port (issue 12), filled by the controller side:
    id: str | None = None  # the Neutron port id
    network_id: str | None = None  # the Neutron network id
    network_type: str = "local"  # provider:network_type: flat | vxlan | local
    segmentation_id: int | None = None  # the VXLAN VNI
    physical_network: str | None = None  # flat: the host bridge named by the operator's mapping
    mtu: int | None = None
    port_security_enabled: bool = True
    #: Security-group rules already resolved to addresses (remote groups expanded to the
    #: members' IPs), each {"direction", "ethertype", "protocol", "port_range_min",
    #: "port_range_max", "remote_ip_prefix"}; [] with port security on = drop all ingress.
    #: None = the controller sent none (a message of an older version): filter nothing.
    security_rules: list[dict[str, Any]] | None = None
    allowed_address_pairs: list[dict[str, str]] = field(default_factory=list)
    tag: str | None = None  # the device tag of a create's networks entry (2.32+)
    #: This host's DHCP server address on the port's subnet (Neutron's ``network:dhcp`` port
    #: of the host); None: the driver picks one (docs/network.md, "The data path").
    dhcp_server: str | None = None


@dataclass
class Image:
    """The image an instance boots from. ``path`` is a local file when the driver asked for one."""

    id: str
    disk_format: str = "raw"
    container_format: str = "bare"
    properties: dict[str, Any] = field(default_factory=dict)
    path: str | None = None
    kernel_path: str | None = None
    ramdisk_path: str | None = None


@dataclass
class Instance:
    """Everything a driver needs to know about one guest."""

    uuid: str
    name: str
    hostname: str = ""
    vcpus: int = 1
    memory_mb: int = 512
    root_gb: int = 1
    ephemeral_gb: int = 0
    swap_mb: int = 0
    image: Image | None = None
    ports: list[Port] = field(default_factory=list)
    user_data: str | None = None  # base64 text, as the API received it
    key_data: str | None = None
    key_name: str | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    config_drive: bool = False
    project_id: str = ""
    availability_zone: str | None = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Instance:
        data = dict(data)
        image = data.pop("image", None)
        ports = data.pop("ports", None) or []
        known = {f for f in cls.__dataclass_fields__}
        inst = cls(**{k: v for k, v in data.items() if k in known})
        inst.image = Image(**image) if image else None
        inst.ports = [Port(**p) for p in ports]
        return inst


@dataclass
class LiveMigrationProgress:
    """What :meth:`ComputeDriver.live_migration` reports while it copies (bytes)."""

    memory_total: int = 0
    memory_processed: int = 0
    memory_remaining: int = 0
    disk_total: int = 0
    disk_processed: int = 0
    disk_remaining: int = 0


@dataclass
class HostResources:
    """What a host offers; the agent reports it to the conductor as the node's inventory."""

    vcpus: int
    memory_mb: int
    local_gb: int
    hypervisor_type: str
    hypervisor_version: int = 1
    hypervisor_hostname: str = ""
    cpu_info: dict[str, Any] = field(default_factory=dict)
    #: The address other hosts send this host's VXLAN overlay traffic to (its tunnel
    #: endpoint); the conductor hands it to the other hosts as their peer. None: no overlays.
    host_ip: str | None = None


@dataclass(frozen=True)
class GuestNetwork:
    """The network novalite puts guests' ports on: its name on the hypervisor side and its
    IPv4 subnet (novalite allocates the MACs and fixed IPs in it)."""

    name: str
    cidr: str


@dataclass
class ConsoleAddress:
    """Where a guest's graphical console listens, as the compute host sees it."""

    host: str
    port: int
    protocol: str = "vnc"


#: Called by a driver when a guest changes power state on its own (it shut itself down,
#: crashed, was paused by the hypervisor). Arguments: instance uuid, new power state.
LifecycleCallback = Callable[[str, PowerState], Awaitable[None]]


class ComputeDriver:
    """Base class of hypervisor drivers.

    Subclasses set :attr:`name` and implement at least :meth:`spawn`, :meth:`destroy`,
    :meth:`power_off`, :meth:`power_on`, :meth:`reboot`, :meth:`get_power_state`,
    :meth:`list_instances` and :meth:`get_host_resources`.
    """

    #: The name the driver is selected by (``--driver NAME``).
    name: ClassVar[str] = ""
    #: True when :meth:`spawn` needs the image as a local file in ``instance.image.path``.
    #: (An instance may set it from its options: the fake driver's ``image_files``.)
    needs_image_file: bool = False

    def __init__(self, host: str, options: dict[str, Any] | None = None) -> None:
        """``host`` is the compute host's name; ``options`` is the driver's config section."""
        self.host = host
        self.options = dict(options or {})
        self._lifecycle_callback: LifecycleCallback | None = None

    # -- the machine, before any agent starts -------------------------------------------

    @classmethod
    def prepare_host(cls, options: dict[str, Any], network: GuestNetwork) -> str | None:
        """Make this machine ready for the driver's agents; once per process, before any starts.

        ``options`` is the driver's config section, ``network`` the guest network ports will
        name. Blocking: the process runs it in a thread. Returns a line for the start banner
        (what was found or created), or None. Raises :class:`DriverError` when the machine
        cannot serve guests as configured; the process then refuses to start.
        Cleanup duty: none; what it creates (a network) is meant to outlive the process.
        No-op by default.
        """
        return None

    # -- lifecycle of the driver itself -------------------------------------------------

    async def init_host(self) -> None:
        """Connect to the hypervisor. Called once before any other method. No-op by default."""

    async def cleanup_host(self) -> None:
        """Disconnect; called at agent shutdown. Guests keep running. No-op by default."""

    def set_lifecycle_callback(self, callback: LifecycleCallback | None) -> None:
        """Register the agent's handler for power-state changes the guest made on its own."""
        self._lifecycle_callback = callback

    async def emit_lifecycle(self, uuid: str, state: PowerState) -> None:
        """Deliver a lifecycle event to the agent, if it registered for them."""
        if self._lifecycle_callback is not None:
            await self._lifecycle_callback(uuid, state)

    # -- host -----------------------------------------------------------------------------

    async def get_host_resources(self) -> HostResources:
        """Return the host's total capacity (not what is free: the scheduler computes that)."""
        raise NotImplementedError

    async def list_instances(self) -> list[str]:
        """Return the uuids of every guest this driver manages on the host, running or not."""
        raise NotImplementedError

    # -- instance lifecycle -------------------------------------------------------------

    async def spawn(self, instance: Instance) -> None:
        """Create and start the guest; return once it is running.

        Cleanup duty: if this raises, the driver must have removed the guest and every
        file it created for it (disks, config drive, logs), so a retry on another host
        leaves nothing behind here.
        """
        raise NotImplementedError

    async def destroy(self, instance: Instance) -> None:
        """Stop the guest hard and remove it with all of its disks, saved state and logs.

        Idempotent: destroying a guest that does not exist (or is half-built) succeeds.
        """
        raise NotImplementedError

    async def power_off(self, instance: Instance, timeout: float = 60.0) -> None:
        """Shut the guest down: gracefully (ACPI) for up to ``timeout`` seconds, then hard.

        ``timeout=0`` means a hard power-off at once. Powering off a guest that is
        already off succeeds.
        """
        raise NotImplementedError

    async def power_on(self, instance: Instance) -> None:
        """Start a guest that is shut off. Starting a running guest succeeds.

        A guest the hypervisor no longer has is recreated from ``instance`` exactly as
        :meth:`reboot` with ``hard=True`` does (Nova's libvirt driver powers on by hard
        rebooting, so that a start repairs whatever a hard reboot repairs). A driver that
        cannot recreate it raises :class:`InstanceNotFound` with a message saying so;
        never "succeed" leaving the guest absent.
        """
        raise NotImplementedError

    async def reboot(self, instance: Instance, hard: bool = False) -> None:
        """Reboot: soft asks the guest (falling back to hard if it ignores it), hard resets it.

        Hard reboot is the repair of last resort (Nova's ``_hard_reboot``): it also starts a
        guest that is shut off, paused or suspended, and a guest the hypervisor lost is
        recreated from ``instance`` (the payload :meth:`spawn` gets) and started, reusing
        its disks where they still exist and creating only what is missing. Soft reboot of a
        missing guest raises :class:`InstanceNotFound`.
        Cleanup duty: if recreating fails, the driver removes what it defined for the guest
        but keeps the existing disks (they hold the user's data); :meth:`destroy` removes them.
        """
        raise NotImplementedError

    async def get_power_state(self, instance: Instance) -> PowerState:
        """Return the guest's current power state; raise :class:`InstanceNotFound` if absent."""
        raise NotImplementedError

    # -- optional capabilities ----------------------------------------------------------

    async def pause(self, instance: Instance) -> None:
        """Freeze the guest's vCPUs in memory."""
        raise NotSupported(f"driver {self.name} cannot pause")

    async def unpause(self, instance: Instance) -> None:
        """Resume a paused guest."""
        raise NotSupported(f"driver {self.name} cannot unpause")

    async def suspend(self, instance: Instance) -> None:
        """Save the guest's memory to disk and stop it (Nova's suspend)."""
        raise NotSupported(f"driver {self.name} cannot suspend")

    async def resume(self, instance: Instance) -> None:
        """Restore a suspended guest from its saved state."""
        raise NotSupported(f"driver {self.name} cannot resume")

    async def get_console_output(self, instance: Instance) -> str:
        """Return the guest's serial console log so far (may be empty)."""
        return ""

    async def get_vnc_console(self, instance: Instance) -> ConsoleAddress:
        """Return where the guest's VNC server listens (reachable from the console proxy)."""
        raise NotSupported(f"driver {self.name} has no VNC console")

    # -- network interfaces (issue 12) ------------------------------------------------------

    async def attach_interface(self, instance: Instance, port: Port) -> None:
        """Plug ``port`` into the guest (Nova's ``attach_interface``): a running guest gets
        the NIC at once (hot-plug) and keeps it across reboots and power cycles (the guest's
        persistent definition has it too); a stopped guest gets it on its next start.

        ``instance.ports`` already lists ``port`` (the database's view after the attach);
        ``port`` carries everything the datapath needs (network type, segment, MTU, resolved
        security rules, tag). Attaching a port the guest already has (same MAC) changes
        nothing. Cleanup duty: if this raises, the guest has no half-plugged NIC.
        """
        raise NotSupported(f"driver {self.name} cannot attach interfaces")

    async def detach_interface(self, instance: Instance, port: Port) -> None:
        """Unplug ``port`` (found by its MAC) from the guest, live and persistently (Nova's
        ``detach_interface``). ``instance.ports`` no longer lists it. Detaching a NIC the
        guest does not have is not an error (it may have been lost with the guest)."""
        raise NotSupported(f"driver {self.name} cannot detach interfaces")

    async def set_overlay_peers(self, network_id: str, vni: int, peers: list[str]) -> None:
        """Make ``peers`` (the other hosts' tunnel endpoints, IP addresses) exactly the hosts
        this host's overlay of VXLAN network ``network_id`` (segment ``vni``) reaches: added
        ones get this host's broadcast and unknown traffic, missing ones no longer do.

        The conductor sends the whole list (never a delta), whenever it changes and when the
        agent starts; a host may get it before it has any port on the network (the driver
        then remembers it for when the first one is plugged) or after its last port went
        (then it is a no-op). Idempotent. No-op by default (a driver without overlays).
        """

    async def update_port_security(self, instance: Instance, port: Port) -> None:
        """Apply ``port``'s security now, to a running (or stopped) guest: its
        ``port_security_enabled``, ``security_rules`` (already resolved to addresses) and
        ``allowed_address_pairs`` replace what the host enforced for it (found by
        ``port.id``, else its MAC), effective for new connections within a second;
        connections already established may go on. A port this host does not plug is
        ignored. Idempotent. No-op by default (a driver that does not filter on the host).
        """

    # -- images (issue 11) --------------------------------------------------------------

    async def snapshot(self, instance: Instance, target: str) -> str:
        """Write an image of the guest's root disk into the local file ``target``; return its
        disk format (``raw``, ``qcow2``...). The agent uploads the file, then removes it.

        The image is consistent: a running guest is paused (or quiesced) while its disk is
        read, and left as it was found (running, paused, off) afterwards, whatever happens.
        Cleanup duty: if this raises, ``target`` and every temporary file the driver made
        for the snapshot are removed, and the guest is in the power state it had before.
        """
        raise NotSupported(f"driver {self.name} cannot snapshot")

    async def rebuild(self, instance: Instance, preserve_ephemeral: bool = False) -> None:
        """Replace the guest's root disk with a new one from ``instance.image`` (Nova's rebuild)
        and boot it from that disk, on this host, with ``instance``'s new definition
        (hostname, metadata, user data, key; a config drive is made anew). The ephemeral
        disk is kept with ``preserve_ephemeral``, created blank otherwise. Returns once the
        guest runs; a guest that was off is started (the agent powers it off again if the
        server was SHUTOFF, as Nova).
        Cleanup duty: if this raises, no guest is left defined for the instance and the old
        root disk is gone; :meth:`destroy` removes whatever else remains (the server goes
        to ERROR, and a later rebuild or delete starts from there).
        """
        raise NotSupported(f"driver {self.name} cannot rebuild")

    # -- moving servers (issue 10) --------------------------------------------------------

    async def migrate_disk_and_power_off(
        self, instance: Instance, dest_host: str, flavor: dict[str, Any]
    ) -> list[str] | None:
        """On the source host of a resize or cold migration: power the guest off and make its
        disks available to ``dest_host`` (copy them there, or nothing on shared storage),
        sized for ``flavor`` (``vcpus``, ``memory_mb``, ``root_gb``, ``ephemeral_gb``, ``swap``).

        Returns the local files (absolute paths) the agent must send to ``dest_host``: the
        agent streams each to the destination's agent, which writes it under its base name
        into the directory the destination driver's :meth:`receive_migration` names. None or
        empty: nothing to send (shared storage, a same-host resize, or a driver that copied
        the disks itself). The files are the driver's: it removes them at
        :meth:`confirm_migration` or :meth:`finish_revert_migration`. If the agent cannot send
        them, it calls :meth:`finish_revert_migration` (the move failed on the source).

        The source guest and its disks stay (powered off) until :meth:`confirm_migration`
        or :meth:`finish_revert_migration`; ``dest_host`` may be this host (same-host resize).
        Cleanup duty: if this raises, the driver removes what it copied and leaves the guest
        as it found it (powered on again if it was running), so the server can go on as before.
        """
        raise NotSupported(f"driver {self.name} cannot migrate")

    async def receive_migration(self, instance: Instance, source_host: str) -> str:
        """On the destination of a cold move, before the source's agent sends the files its
        :meth:`migrate_disk_and_power_off` named: the directory (created, empty of the guest's
        files) the agent writes them into. Raises :class:`DriverError` if this host cannot
        take them (it has a guest of ``instance`` already). Cleanup duty: none; the agent
        removes the files it wrote if the transfer fails, and :meth:`destroy` removes the rest.
        """
        raise NotSupported(f"driver {self.name} cannot receive a migration's disks")

    async def finish_migration(self, instance: Instance, source_host: str, power_on: bool = True) -> None:
        """On the destination: create the guest from ``instance`` (the new flavor's sizes) with
        the disks :meth:`migrate_disk_and_power_off` brought, and start it if ``power_on``.

        Cleanup duty: if this raises, the driver removes the guest it defined here (a later
        :meth:`destroy` of it on this host must succeed); the source's copy is not its business.
        """
        raise NotSupported(f"driver {self.name} cannot migrate")

    async def confirm_migration(self, instance: Instance) -> None:
        """On the source, after a confirm: remove the powered-off original guest and its disks
        (the server lives on at the destination). Idempotent: a guest already gone succeeds.
        On a same-host resize only the original's leftovers go, never the resized guest.
        """
        raise NotSupported(f"driver {self.name} cannot migrate")

    async def finish_revert_migration(self, instance: Instance, power_on: bool = True) -> None:
        """On the source, after a revert (the destination's guest was destroyed): bring the
        original guest back with its own disks and definition (``instance`` has the old
        flavor), started if ``power_on``. Cleanup duty: if this raises, the original's disks
        are kept (they hold the user's data); :meth:`destroy` removes them.
        """
        raise NotSupported(f"driver {self.name} cannot migrate")

    # -- live migration (issue 10, second half) ---------------------------------------------
    #
    # The order the agents run them in: the destination checks and prepares
    # (``check_can_live_migrate_destination``, ``pre_live_migration``), the source copies the
    # running guest (``live_migration``, which may be aborted or forced to complete meanwhile),
    # then the destination finishes (``post_live_migration_at_destination``) — or, if anything
    # failed, the destination undoes its preparation (``rollback_live_migration_at_destination``)
    # and the guest goes on running on the source.

    async def check_can_live_migrate_destination(
        self, instance: Instance, source_host: str, block_migration: bool | None
    ) -> dict[str, Any]:
        """On the destination: can this host take the running guest? ``block_migration``
        None means "auto" (the driver decides: block migration without shared storage).
        Returns the migrate data the other steps get (plain JSON, at least
        ``{"block_migration": bool}``). Raises :class:`DriverError` with the reason if not;
        changes nothing (no cleanup duty)."""
        raise NotSupported(f"driver {self.name} cannot live-migrate")

    async def pre_live_migration(self, instance: Instance, source_host: str, migrate_data: dict[str, Any]) -> None:
        """On the destination, before the copy: make what the incoming guest needs (disks
        for a block migration, networking). Cleanup duty: if this raises, it removes what it
        made; otherwise :meth:`rollback_live_migration_at_destination` does if the move fails."""
        raise NotSupported(f"driver {self.name} cannot live-migrate")

    async def live_migration(
        self,
        instance: Instance,
        dest_host: str,
        migrate_data: dict[str, Any],
        progress: Callable[[LiveMigrationProgress], Awaitable[None]],
    ) -> None:
        """On the source: move the running (or paused) guest to ``dest_host``, calling
        ``progress`` now and then while it copies. On success the guest runs on the
        destination and nothing of it is left here (disks on non-shared storage included).
        Raises :class:`MigrationAborted` after :meth:`live_migration_abort`, or
        :class:`DriverError` on failure. Cleanup duty on any failure: the guest keeps running
        here, untouched (in its power state from before), so the server goes on on its source."""
        raise NotSupported(f"driver {self.name} cannot live-migrate")

    async def live_migration_abort(self, instance: Instance) -> None:
        """On the source, while :meth:`live_migration` runs: make it stop and raise
        :class:`MigrationAborted` (with its cleanup duty). :class:`InvalidState` if no
        migration of this guest is running."""
        raise NotSupported(f"driver {self.name} cannot abort a live migration")

    async def live_migration_force_complete(self, instance: Instance) -> None:
        """On the source, while :meth:`live_migration` runs: make it converge now (pause the
        guest for the rest of the copy, or switch to post-copy). :class:`InvalidState` if no
        migration of this guest is running."""
        raise NotSupported(f"driver {self.name} cannot force a live migration to complete")

    async def post_live_migration_at_destination(self, instance: Instance, source_host: str) -> None:
        """On the destination, after the copy: the guest is this host's now (define it for
        good, in the power state it had). Idempotent. If this raises, the guest may still
        run here: the server goes to ERROR on this host (Nova's behaviour), no cleanup duty."""
        raise NotSupported(f"driver {self.name} cannot live-migrate")

    async def rollback_live_migration_at_destination(self, instance: Instance) -> None:
        """On the destination, after a failed or aborted move (or the server's delete during
        it): remove what :meth:`pre_live_migration` made and the copy of the guest, partial or
        whole. Idempotent (also called when the destination had not been prepared); must
        never touch a guest of this instance that runs here for good (after
        :meth:`post_live_migration_at_destination`)."""
        raise NotSupported(f"driver {self.name} cannot live-migrate")
