"""The libvirt driver: QEMU guests (TCG by default, KVM on request) through libvirt.

Options (the ``[driver.libvirt]`` config section):

``uri``
    libvirt connection URI (default ``qemu:///system``; ``test:///path/node.xml`` for tests).
``virt_type``
    ``qemu`` (default: TCG, pure emulation, works everywhere) or ``kvm``. Never auto-detected:
    a host can advertise KVM (``/dev/kvm`` exists, domcapabilities lists it) and still be
    unable to run KVM guests, e.g. inside some VMs.
``instances_path``
    Where each instance gets ``<uuid>/`` with its disks, config drive and console log
    (default ``/var/lib/novalite/instances``). Base images are cached in ``_base/`` below it.
``network``
    The libvirt network a port without ``network`` is attached to (default ``default``).
``network_map``
    novalite network name -> libvirt network name, for ports whose network is named
    otherwise on the hypervisor (a name not in the map is the libvirt network's own).
``overlay_local_ip``, ``overlay_dev``, ``physical_bridges``, ``network_state_path``, ``host_networking``
    The data path of Neutron networks' ports (per-network bridges, VXLAN, DHCP, security
    groups with nftables): see :mod:`.datapath`.
``force_config_drive``
    Attach a config drive to every guest, not only to those that asked for one.
``shutdown_timeout``
    Seconds a graceful (ACPI) shutdown or a soft reboot may take before the driver falls back
    to a hard one (default 60). ``reboot_timeout`` overrides it for soft reboots.
``machine_type``
    QEMU machine type (default ``pc``: its IDE bus carries the config drive cdrom).
``cpu_mode``
    ``host-model``/``host-passthrough``/``none``; default ``host-model`` for kvm, the
    hypervisor's default CPU for qemu.
``vnc_listen``
    Address the guests' VNC servers listen on (default ``127.0.0.1``).
``migration_uri``
    The libvirt URI the *other* hosts' libvirtd reach this host's daemon at, as the destination
    of a live migration (peer-to-peer: the source's daemon connects to it). Default
    ``qemu+tcp://<this machine's FQDN>/system``. Two daemons on one machine (the tests):
    ``qemu+unix:///system?socket=<its socket>``, or ``qemu+tcp://127.0.0.1/system``.
``migration_address``
    The address QEMU's migration stream (and the NBD copy of the disks) goes to on this
    host, as ``VIR_MIGRATE_PARAM_URI`` ``tcp://<address>`` (default: none, libvirt uses the
    destination's hostname). ``127.0.0.1`` for two daemons on one machine.
``live_migration_bandwidth``
    MiB/s a live migration may use (memory and disk copy; default 0: unlimited). QEMU counts
    the zero areas of a disk at this rate too: a limit makes the block copy of a large,
    mostly empty disk slow.
``resize_shutdown_timeout``
    Seconds the guest gets to shut down (ACPI) before a resize or cold migration powers it
    off hard (default: ``shutdown_timeout``).

Moves (issue 10, see docs/moving-servers.md): a resize or cold migration keeps the source's
instance directory as ``<uuid>_resize/`` (the powered-off original, with its domain) until
confirm or revert; the files to send to another host (the root disk flattened into one
qcow2, the ephemeral disk, config drive, kernel copies, console log) are returned to the
agent, which streams them to the destination's agent; a same-host resize copies them
locally. Live migration is libvirt's peer-to-peer migration with a block copy of the
non-shared disks (``VIR_MIGRATE_NON_SHARED_DISK`` over NBD).

Events: libvirt's default event loop runs in a daemon thread (one per process); domain
lifecycle and reboot events are handed to the asyncio loop that called :meth:`init_host`.
For a domain nobody is operating on through this driver, the driver re-reads its power state
and calls :meth:`emit_lifecycle` when it changed (so a guest that powers itself off is
reported as SHUTDOWN). Events caused by the driver's own operations are not reported.

Soft reboot: ``virDomainReboot`` (ACPI power button with QEMU: the guest shuts down and
QEMU resets it instead of exiting). The driver waits for libvirt's REBOOT event (or a
STARTED lifecycle event) for ``reboot_timeout`` seconds; if none comes, the guest ignored
the request and the driver reboots hard (destroy + start).

Hard reboot and power on of an instance whose domain is gone (undefined behind novalite's
back) redefine it from the instance, as Nova's ``_hard_reboot`` does: spawn's build path,
keeping the disks, config drive and kernel copies found in ``<uuid>/`` and creating only
what is missing (a missing root disk needs the image file; without it the driver refuses
rather than boot a blank disk).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from novalite_drivers.base import (
    ComputeDriver,
    ConsoleAddress,
    DriverError,
    GuestNetwork,
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
from novalite_drivers.libvirt import configdrive
from novalite_drivers.libvirt import migration as migmod
from novalite_drivers.libvirt import network as netmod
from novalite_drivers.libvirt.datapath import DatapathMixin
from novalite_drivers.libvirt.xml import (
    NOVALITE_NS,
    DiskSpec,
    DomainSpec,
    build_domain_xml,
    domain_macs,
    metadata_for,
    vnc_address,
)

try:
    import libvirt
except ImportError:  # pragma: no cover - reported by init_host
    libvirt = None

LOG = logging.getLogger("novalite_drivers.libvirt")
GiB = 1024**3
T = TypeVar("T")

#: How much of the serial log get_console_output returns at most (its tail).
MAX_CONSOLE_BYTES = 100 * 1024

# -- process-wide libvirt event loop ------------------------------------------------------------

_event_lock = threading.Lock()
_event_thread: threading.Thread | None = None
_event_impl: str | None = None


def _run_default_event_loop() -> None:
    while True:
        try:
            libvirt.virEventRunDefaultImpl()
        except Exception:  # keep the thread alive whatever a callback did
            LOG.exception("libvirt event loop iteration failed")
            time.sleep(0.1)


def ensure_event_loop() -> str:
    """Register an event implementation with libvirt once per process; return which.

    libvirt accepts exactly one implementation per process and it must be registered before
    the connections that want events are opened. The default implementation, run in a daemon
    thread, serves every driver instance and every asyncio loop (tests create one loop per
    test; an implementation bound to one loop would die with it). If the application already
    registered libvirtaio's implementation, that one is used.
    """
    global _event_thread, _event_impl
    with _event_lock:
        if _event_impl is not None:
            return _event_impl
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # no stderr noise
        try:
            import libvirtaio

            if getattr(libvirtaio, "_current_impl", None) is not None:
                _event_impl = "libvirtaio"
                return _event_impl
        except ImportError:  # pragma: no cover
            pass
        libvirt.virEventRegisterDefaultImpl()
        _event_thread = threading.Thread(target=_run_default_event_loop, name="libvirt-events", daemon=True)
        _event_thread.start()
        _event_impl = "default"
        return _event_impl


# -- helpers -----------------------------------------------------------------------------------


def _map_state(state: int, reason: int, has_managed_save: bool) -> PowerState:
    if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
        return PowerState.RUNNING
    if state == libvirt.VIR_DOMAIN_PAUSED:
        return PowerState.PAUSED
    if state == libvirt.VIR_DOMAIN_SHUTDOWN:  # being shut down
        return PowerState.SHUTDOWN
    if state == libvirt.VIR_DOMAIN_SHUTOFF:
        if has_managed_save:
            return PowerState.SUSPENDED
        if reason == libvirt.VIR_DOMAIN_SHUTOFF_CRASHED:
            return PowerState.CRASHED
        return PowerState.SHUTDOWN
    if state == libvirt.VIR_DOMAIN_CRASHED:
        return PowerState.CRASHED
    if state == libvirt.VIR_DOMAIN_PMSUSPENDED:
        return PowerState.SUSPENDED
    return PowerState.NOSTATE


def _msg(exc: BaseException) -> str:
    if libvirt is not None and isinstance(exc, libvirt.libvirtError):
        return exc.get_error_message() or str(exc)
    return str(exc)


def _translate(exc: Exception, what: str, uuid: str | None = None) -> DriverError:
    if isinstance(exc, DriverError):
        return exc
    if libvirt is not None and isinstance(exc, libvirt.libvirtError):
        code = exc.get_error_code()
        if code == libvirt.VIR_ERR_NO_DOMAIN:
            return InstanceNotFound(f"no libvirt domain for instance {uuid}" if uuid else _msg(exc))
        if code == libvirt.VIR_ERR_OPERATION_INVALID:
            return InvalidState(f"{what}: {_msg(exc)}")
        if code in (libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED):
            return NotSupported(f"{what}: {_msg(exc)}")
        return DriverError(f"{what}: {_msg(exc)}")
    if isinstance(exc, subprocess.CalledProcessError):
        err = (exc.stderr or b"").decode(errors="replace").strip() if isinstance(exc.stderr, bytes) else ""
        return DriverError(f"{what}: {exc.cmd[0]} failed: {err or exc}")
    if isinstance(exc, OSError):
        return DriverError(f"{what}: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
    return DriverError(f"{what}: {exc!r}")


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, check=True, capture_output=True)
    return proc.stdout.decode()


def _qemu_img_info(path: str, fmt: str | None = None) -> dict[str, Any]:
    cmd = ["qemu-img", "info", "--output=json"]
    if fmt:
        cmd += ["-f", fmt]
    info: dict[str, Any] = json.loads(_run(*cmd, path))
    return info


@dataclass
class _LiveJob:
    """A live migration running from this host (what abort and force complete act on)."""

    dom: Any
    paused_before: bool
    aborted: bool = False
    forced: bool = False


def _qemu_img_info_shared(path: str) -> dict[str, Any]:
    """``qemu-img info`` of a disk a running QEMU may hold (``-U``: no lock taken)."""
    info: dict[str, Any] = json.loads(_run("qemu-img", "info", "-U", "--output=json", path))
    return info


def _dhcp_name(hostname: str) -> str:
    name = re.sub(r"[^a-z0-9-]", "-", hostname.lower()).strip("-")
    return name[:63]


class LibvirtDriver(DatapathMixin, ComputeDriver):
    """QEMU guests through libvirt. See the module docstring for options and behaviour."""

    name = "libvirt"
    needs_image_file = True

    def __init__(self, host: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(host, options)
        o = self.options
        self.uri: str = o.get("uri") or "qemu:///system"
        self.virt_type: str = o.get("virt_type") or "qemu"
        self.instances_path: str = os.path.abspath(o.get("instances_path") or "/var/lib/novalite/instances")
        self.network: str | None = o.get("network") or "default"
        self.network_map: dict[str, str] = dict(o.get("network_map") or {})
        self.force_config_drive: bool = _as_bool(o.get("force_config_drive", False))
        self.shutdown_timeout: float = float(o.get("shutdown_timeout", 60))
        self.reboot_timeout: float = float(o.get("reboot_timeout", self.shutdown_timeout))
        self.machine_type: str | None = o.get("machine_type", "pc") or None
        cpu_mode = o.get("cpu_mode")
        if cpu_mode is None:
            cpu_mode = "host-model" if self.virt_type == "kvm" else None
        self.cpu_mode: str | None = None if cpu_mode in (None, "", "none") else cpu_mode
        self.vnc_listen: str = o.get("vnc_listen", "127.0.0.1")
        self.migration_uri: str = o.get("migration_uri") or f"qemu+tcp://{socket.getfqdn()}/system"
        self.migration_address: str | None = o.get("migration_address") or None
        self.live_migration_bandwidth: int = int(o.get("live_migration_bandwidth", 0) or 0)
        self.resize_shutdown_timeout: float = float(o.get("resize_shutdown_timeout", self.shutdown_timeout))
        #: Live migrations running from this host, by uuid.
        self._live: dict[str, _LiveJob] = {}

        self._conn: Any = None
        self._conn_lock = threading.RLock()
        self._callback_ids: list[int] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: asyncio.Queue[str] | None = None
        self._event_task: asyncio.Task[None] | None = None
        self._busy: collections.Counter[str] = collections.Counter()
        self._generation: collections.Counter[str] = collections.Counter()
        self._known_state: dict[str, PowerState] = {}
        self._reboot_waiters: dict[str, asyncio.Event] = {}
        self._base_lock = threading.Lock()
        self._init_datapath()  # the data path's options and state (datapath.py)

    # -- the machine ---------------------------------------------------------------------------

    @classmethod
    def prepare_host(cls, options: dict[str, Any], network: GuestNetwork) -> str | None:
        """Register libvirt's event loop (before any connection, so that the agents' later
        connections get lifecycle events), then check or create the guest network
        (:func:`.network.prepare_guest_network`; option ``create_network``, default true)."""
        if libvirt is not None:
            ensure_event_loop()
        return netmod.prepare_guest_network(
            options.get("uri") or "qemu:///system",
            network.name,
            network.cidr,
            create=_as_bool(options.get("create_network", True)),
        )

    # -- connection -------------------------------------------------------------------------

    async def init_host(self) -> None:
        if libvirt is None:
            raise DriverError("the libvirt driver needs libvirt-python: pip install libvirt-python")
        if self.virt_type not in ("qemu", "kvm"):
            raise DriverError(f"virt_type must be 'qemu' or 'kvm', not {self.virt_type!r}")
        self._loop = asyncio.get_running_loop()
        ensure_event_loop()
        await asyncio.to_thread(self._connection)
        await asyncio.to_thread(self._make_instances_dir)
        self._events = asyncio.Queue()
        self._event_task = asyncio.create_task(self._event_worker(), name="libvirt-lifecycle")

    async def cleanup_host(self) -> None:
        if self._event_task is not None:
            self._event_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._event_task
            self._event_task = None
        await asyncio.to_thread(self._disconnect)

    def _make_instances_dir(self) -> None:
        try:
            os.makedirs(self.instances_path, mode=0o755, exist_ok=True)
        except OSError as exc:
            raise DriverError(f"cannot create instances_path {self.instances_path}: {exc.strerror}") from None

    def _connection(self) -> Any:
        """The open connection, reopened (with event callbacks) if libvirtd went away."""
        with self._conn_lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                LOG.warning("libvirt connection to %s lost; reconnecting", self.uri)
                self._disconnect()
            try:
                conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                raise DriverError(
                    f"cannot connect to libvirt at {self.uri}: {_msg(exc)}"
                    " (is libvirtd running? see scripts/setup-libvirt.sh)"
                ) from None
            if conn is None:  # pragma: no cover - old bindings
                raise DriverError(f"cannot connect to libvirt at {self.uri}")
            with contextlib.suppress(libvirt.libvirtError):
                conn.setKeepAlive(5, 3)
            self._callback_ids = [
                conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle_cb, None),
                conn.domainEventRegisterAny(None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._reboot_cb, None),
            ]
            self._conn = conn
            return conn

    def _disconnect(self) -> None:
        with self._conn_lock:
            conn, self._conn = self._conn, None
            if conn is None:
                return
            for cid in self._callback_ids:
                with contextlib.suppress(libvirt.libvirtError):
                    conn.domainEventDeregisterAny(cid)
            self._callback_ids = []
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, uuid: str | None = None) -> T:
        """Run a blocking function in a thread; turn its errors into DriverErrors."""
        try:
            return await asyncio.to_thread(fn, *args)
        except DriverError:
            raise
        except Exception as exc:
            raise _translate(exc, what, uuid) from None

    def _lookup(self, uuid: str) -> Any:
        try:
            return self._connection().lookupByUUIDString(uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise InstanceNotFound(f"no libvirt domain for instance {uuid} on {self.host}") from None
            raise _translate(exc, f"cannot look up instance {uuid}") from None

    def _instance_dir(self, uuid: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", uuid) or ".." in uuid:
            raise DriverError(f"invalid instance uuid {uuid!r}")
        return os.path.join(self.instances_path, uuid)

    # -- events -----------------------------------------------------------------------------

    def _post(self, uuid: str, kind: str, event: int = -1, detail: int = -1) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # loop closed between the check and the call
            loop.call_soon_threadsafe(self._on_event, uuid, kind, event, detail)

    def _lifecycle_cb(self, _conn: Any, dom: Any, event: int, detail: int, _opaque: Any) -> None:
        self._post(dom.UUIDString(), "lifecycle", event, detail)

    def _reboot_cb(self, _conn: Any, dom: Any, _opaque: Any) -> None:
        self._post(dom.UUIDString(), "reboot")

    def _on_event(self, uuid: str, kind: str, event: int, detail: int) -> None:
        LOG.debug("libvirt event %s %s %s/%s (busy %s)", uuid, kind, event, detail, self._busy[uuid])
        # QEMU reports a guest reset as a REBOOT event; the test driver only as STARTED/BOOTED.
        # (STARTED/RESTORED after a resume is not a reboot.)
        if kind == "reboot" or (
            kind == "lifecycle"
            and event == libvirt.VIR_DOMAIN_EVENT_STARTED
            and detail == libvirt.VIR_DOMAIN_EVENT_STARTED_BOOTED
        ):
            waiter = self._reboot_waiters.get(uuid)
            if waiter is not None:
                waiter.set()
        if kind == "lifecycle" and event not in (
            libvirt.VIR_DOMAIN_EVENT_DEFINED,
            libvirt.VIR_DOMAIN_EVENT_UNDEFINED,
        ):
            if self._events is not None:
                self._events.put_nowait(uuid)

    async def _event_worker(self) -> None:
        assert self._events is not None
        while True:
            uuid = await self._events.get()
            generation = self._generation[uuid]
            if self._busy[uuid]:
                continue
            try:
                state = await asyncio.to_thread(self._owned_state, uuid)
            except Exception:
                LOG.debug("cannot read state of %s after an event", uuid, exc_info=True)
                continue
            # An operation ran (or runs) meanwhile: it records the state itself.
            if state is None or self._busy[uuid] or self._generation[uuid] != generation:
                continue
            if self._known_state.get(uuid) == state:
                continue
            LOG.info("instance %s changed to %s on its own (was %s)", uuid, state.name, self._known_state.get(uuid))
            self._known_state[uuid] = state
            try:
                await self.emit_lifecycle(uuid, state)
            except Exception:
                LOG.exception("lifecycle callback failed for %s", uuid)

    def _owned_state(self, uuid: str) -> PowerState | None:
        """The power state of ``uuid`` if it is a novalite domain, else None."""
        try:
            dom = self._connection().lookupByUUIDString(uuid)
            if uuid not in self._known_state and not self._is_ours(dom):
                return None
            return self._dom_state(dom)
        except libvirt.libvirtError:
            return None

    @staticmethod
    def _is_ours(dom: Any) -> bool:
        try:
            dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NOVALITE_NS, 0)
            return True
        except libvirt.libvirtError:
            return False

    @staticmethod
    def _dom_state(dom: Any) -> PowerState:
        state, reason = dom.state()
        has_save = False
        if state == libvirt.VIR_DOMAIN_SHUTOFF:
            try:
                has_save = bool(dom.hasManagedSaveImage(0))
            except libvirt.libvirtError:
                has_save = False
        return _map_state(state, reason, has_save)

    @contextlib.asynccontextmanager
    async def _operation(self, instance: Instance) -> AsyncIterator[None]:
        """Mark an operation in progress: its own events are not reported as lifecycle events."""
        uuid = instance.uuid
        self._busy[uuid] += 1
        self._generation[uuid] += 1
        try:
            yield
        finally:
            try:
                state = await asyncio.to_thread(self._owned_state, uuid)
            except Exception:
                state = None
            if state is None:
                self._known_state.pop(uuid, None)
            else:
                self._known_state[uuid] = state
            self._generation[uuid] += 1
            self._busy[uuid] -= 1
            if self._busy[uuid] <= 0:
                del self._busy[uuid]

    # -- host -------------------------------------------------------------------------------

    async def get_host_resources(self) -> HostResources:
        return await self._call("cannot read host resources", self._host_resources_sync)

    def _host_resources_sync(self) -> HostResources:
        conn = self._connection()
        info = conn.getInfo()  # [model, memory MiB, cpus, MHz, nodes, sockets, cores, threads]
        self._make_instances_dir()
        disk = shutil.disk_usage(self.instances_path)
        cpu_info: dict[str, Any] = {"arch": info[0], "topology": {}}
        try:
            caps = ET.fromstring(conn.getCapabilities())
            cpu = caps.find("./host/cpu")
            if cpu is not None:
                for tag in ("arch", "model", "vendor"):
                    el = cpu.find(tag)
                    if el is not None and el.text:
                        cpu_info[tag] = el.text
                topo = cpu.find("topology")
                if topo is not None:
                    cpu_info["topology"] = {k: int(v) for k, v in topo.attrib.items() if v.isdigit()}
        except (libvirt.libvirtError, ET.ParseError):
            pass
        if not cpu_info["topology"]:
            cpu_info["topology"] = {"sockets": info[5], "cores": info[6], "threads": info[7]}
        try:
            hostname = conn.getHostname()
        except libvirt.libvirtError:
            hostname = self.host
        return HostResources(
            vcpus=int(info[2]),
            memory_mb=int(info[1]),
            local_gb=int(disk.total // GiB),
            hypervisor_type=conn.getType(),
            hypervisor_version=int(conn.getVersion()),
            hypervisor_hostname=hostname or self.host,
            cpu_info=cpu_info,
            host_ip=self.overlay_local_ip,
        )

    async def list_instances(self) -> list[str]:
        return await self._call("cannot list instances", self._list_sync)

    def _list_sync(self) -> list[str]:
        return [dom.UUIDString() for dom in self._connection().listAllDomains(0) if self._is_ours(dom)]

    # -- spawn / destroy --------------------------------------------------------------------

    async def spawn(self, instance: Instance) -> None:
        cancelled = threading.Event()
        async with self._operation(instance):
            fut = asyncio.ensure_future(asyncio.to_thread(self._spawn_sync, instance, cancelled))
            try:
                await asyncio.shield(fut)
            except asyncio.CancelledError:
                # The thread cannot be interrupted: it notices, cleans up and stops.
                cancelled.set()
                raise

    def _spawn_sync(self, instance: Instance, cancelled: threading.Event) -> None:
        conn = self._connection()
        try:
            conn.lookupByUUIDString(instance.uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise _translate(exc, "cannot spawn") from None
        else:
            # Not ours to clean up: it is the existing guest.
            raise DriverError(f"instance {instance.uuid} already exists on {self.host}")
        try:
            self._build(instance, conn, cancelled)
        except BaseException as exc:
            try:
                self._destroy_sync(instance)
            except Exception:
                LOG.exception("cleanup after failed spawn of %s failed", instance.uuid)
            if isinstance(exc, Exception):
                raise _translate(exc, f"cannot spawn instance {instance.uuid}") from None
            raise

    def _check_cancelled(self, cancelled: threading.Event) -> None:
        if cancelled.is_set():
            raise DriverError("spawn was cancelled")

    def _build(
        self, instance: Instance, conn: Any, cancelled: threading.Event, reuse: bool = False, start: bool = True
    ) -> None:
        """Create the instance's files, define its domain and start it.

        ``reuse`` is the hard reboot of a guest whose domain is gone (Nova's ``_hard_reboot``
        regenerates the domain from the instance): the files that exist (disks, the config
        drive, the kernel and ramdisk copies) are the guest's and are kept; only what is
        missing is created, as spawn would. Without it (spawn), a directory left by a crash is
        removed first: nothing in it belongs to a live guest.
        """
        idir = self._instance_dir(instance.uuid)
        if not reuse and os.path.exists(idir):
            shutil.rmtree(idir)
        os.makedirs(idir, mode=0o755, exist_ok=reuse)
        os.chmod(idir, 0o755)  # qemu runs as another user and must reach the files
        image = instance.image
        disks: list[DiskSpec] = []
        letters = iter("abcdefghijklmnopqrstuvwxyz")

        def kept(path: str) -> bool:
            return reuse and os.path.exists(path)

        root = os.path.join(idir, "disk")
        kernel_copy = os.path.join(idir, "kernel")
        if kept(root):
            disks.append(DiskSpec(root, "vd" + next(letters)))
        elif reuse and image is not None and not (image.path or image.kernel_path or kept(kernel_copy)):
            # A blank disk would be a new, empty guest, not this one.
            raise DriverError(
                f"the root disk of instance {instance.uuid} is gone and its image is not on this host:"
                " it cannot be recreated"
            )
        elif image is not None and image.path:
            base, fmt, virtual_size = self._cached_base(image)
            _run("qemu-img", "create", "-q", "-f", "qcow2", "-F", fmt, "-b", base, root)
            want = instance.root_gb * GiB
            if instance.root_gb and want < virtual_size:
                raise DriverError(
                    f"the flavor's root disk ({instance.root_gb} GB) is smaller than the image"
                    f" ({virtual_size / GiB:.1f} GB)"
                )
            if want > virtual_size:
                _run("qemu-img", "resize", "-q", "-f", "qcow2", root, str(want))
            disks.append(DiskSpec(root, "vd" + next(letters)))
        elif instance.root_gb:
            _run("qemu-img", "create", "-q", "-f", "qcow2", root, f"{instance.root_gb}G")
            disks.append(DiskSpec(root, "vd" + next(letters)))
        elif (image is None or not image.kernel_path) and not kept(kernel_copy):
            raise DriverError("nothing to boot: the instance has no image and no root disk")
        if instance.ephemeral_gb:
            eph = os.path.join(idir, "disk.eph0")
            if not kept(eph):
                _run("qemu-img", "create", "-q", "-f", "qcow2", eph, f"{instance.ephemeral_gb}G")
            disks.append(DiskSpec(eph, "vd" + next(letters)))
        self._check_cancelled(cancelled)

        kernel = initrd = cmdline = None
        if kept(kernel_copy) or (image is not None and image.kernel_path):
            kernel = kernel_copy
            if not kept(kernel_copy):
                assert image is not None and image.kernel_path
                shutil.copyfile(image.kernel_path, kernel)
            ramdisk_copy = os.path.join(idir, "ramdisk")
            if kept(ramdisk_copy):
                initrd = ramdisk_copy
            elif image is not None and image.ramdisk_path:
                initrd = ramdisk_copy
                shutil.copyfile(image.ramdisk_path, initrd)
            props = image.properties if image is not None else {}
            cmdline = str(props.get("os_command_line") or "root=/dev/vda console=tty0 console=ttyS0")

        if instance.config_drive or self.force_config_drive:
            iso = os.path.join(idir, "disk.config")
            if not kept(iso):
                configdrive.build_config_drive(instance, iso)
            disks.append(DiskSpec(iso, "hda", bus="ide", device="cdrom", format="raw", readonly=True))
        self._check_cancelled(cancelled)

        nics = self._plug_ports_sync(conn, instance)  # bridges, overlay, DHCP, firewall: datapath.py

        spec = DomainSpec(
            uuid=instance.uuid,
            name=self._domain_name(conn, instance),
            vcpus=instance.vcpus,
            memory_mb=instance.memory_mb,
            virt_type=self.virt_type,
            machine=self.machine_type,
            cpu_mode=self.cpu_mode,
            disks=disks,
            nics=nics,
            kernel=kernel,
            initrd=initrd,
            cmdline=cmdline,
            console_log=os.path.join(idir, "console.log"),
            vnc_listen=self.vnc_listen,
            metadata=metadata_for(instance, self.host),
        )
        xml = build_domain_xml(spec)
        with open(os.path.join(idir, "libvirt.xml"), "w") as f:  # for operators; not read back
            f.write(xml)
        self._check_cancelled(cancelled)
        dom = conn.defineXML(xml)
        self._check_cancelled(cancelled)
        if not start:
            return
        dom.create()
        state, _reason = dom.state()
        if state not in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
            raise DriverError(f"the guest did not start (libvirt state {state})")

    @staticmethod
    def _domain_name(conn: Any, instance: Instance) -> str:
        """``instance.name``, unless another domain (e.g. another novalite cloud's, sharing this
        libvirt host: both number their instances from 1) has that name: then it gets a suffix."""
        name = instance.name or f"instance-{instance.uuid}"
        try:
            other = conn.lookupByName(name)
        except libvirt.libvirtError:
            return name
        with contextlib.suppress(libvirt.libvirtError):
            if other.UUIDString() == instance.uuid:
                return name  # this instance's own domain, redefined (a resize, a revert)
        return f"{name}-{instance.uuid[:8]}"

    def _cached_base(self, image: Any) -> tuple[str, str, int]:
        """Copy the image into ``_base/`` once; return (path, format, virtual size)."""
        fmt = (image.disk_format or "raw").lower()
        if fmt not in ("qcow2", "raw"):
            raise DriverError(f"the libvirt driver cannot boot disk_format {fmt!r} (only qcow2 and raw)")
        if not os.path.isfile(image.path):
            raise DriverError(f"image file {image.path} does not exist")
        base_dir = os.path.join(self.instances_path, "_base")
        os.makedirs(base_dir, mode=0o755, exist_ok=True)
        safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", image.id) or "image"
        base = os.path.join(base_dir, f"{safe_id}.{fmt}")
        with self._base_lock:
            src_size = os.path.getsize(image.path)
            if not os.path.exists(base) or os.path.getsize(base) != src_size:
                tmp = f"{base}.{os.getpid()}.{threading.get_ident()}.tmp"
                try:
                    shutil.copyfile(image.path, tmp)
                    os.chmod(tmp, 0o644)
                    os.replace(tmp, base)
                finally:
                    if os.path.exists(tmp):
                        os.unlink(tmp)
        # Trust the declared format, and never let a qcow2 image point at another file.
        info = _qemu_img_info(base, fmt)
        if fmt == "qcow2":
            if info.get("format") != "qcow2":
                raise DriverError(f"image {image.id} is declared qcow2 but is {info.get('format')}")
            if info.get("backing-filename") or info.get("format-specific", {}).get("data", {}).get("data-file"):
                raise DriverError(f"image {image.id} refers to other files; refusing to use it")
        return base, fmt, int(info["virtual-size"])

    async def destroy(self, instance: Instance) -> None:
        async with self._operation(instance):
            await self._call(f"cannot destroy instance {instance.uuid}", self._destroy_sync, instance)
        self._known_state.pop(instance.uuid, None)

    def _libvirt_network(self, port: Port) -> str | None:
        """The libvirt network ``port`` is attached to."""
        if port.network:
            return self.network_map.get(port.network, port.network)
        return self.network

    def _destroy_sync(self, instance: Instance) -> None:
        conn = self._connection()
        macs = {(p.mac.lower(), self._libvirt_network(p) or "") for p in instance.ports}
        try:
            dom = conn.lookupByUUIDString(instance.uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            dom = None
        if dom is not None:
            with contextlib.suppress(libvirt.libvirtError, ET.ParseError):
                macs |= set(domain_macs(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
            self._hard_stop(dom)
            self._undefine(dom)
        for mac, net in sorted(macs):
            if net:
                netmod.remove_dhcp_host(conn, net, mac)
                netmod.release_leases(conn, net, mac=mac)
        self._unplug_ports_sync(conn, instance)  # firewall, DHCP, an unused bridge: datapath.py
        idir = self._instance_dir(instance.uuid)
        if os.path.lexists(idir):
            shutil.rmtree(idir)

    @staticmethod
    def _hard_stop(dom: Any) -> None:
        for attempt in range(3):
            try:
                if not dom.isActive():
                    return
                dom.destroy()
                return
            except libvirt.libvirtError as exc:
                if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                    return
                if attempt == 2:
                    raise
                time.sleep(1)  # "device or resource busy" while QEMU is still exiting

    @staticmethod
    def _undefine(dom: Any) -> None:
        base = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        for flags in (
            base | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA,
            base,
            None,
        ):
            try:
                if flags is None:
                    with contextlib.suppress(libvirt.libvirtError):
                        if dom.hasManagedSaveImage(0):
                            dom.managedSaveRemove(0)
                    dom.undefine()
                else:
                    dom.undefineFlags(flags)
                return
            except libvirt.libvirtError as exc:
                code = exc.get_error_code()
                if code == libvirt.VIR_ERR_NO_DOMAIN:
                    return
                if flags is None or code not in (
                    libvirt.VIR_ERR_INVALID_ARG,
                    libvirt.VIR_ERR_NO_SUPPORT,
                    libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED,
                ):
                    raise

    # -- power ------------------------------------------------------------------------------

    async def get_power_state(self, instance: Instance) -> PowerState:
        return await self._call(
            f"cannot read the power state of {instance.uuid}",
            lambda: self._dom_state(self._lookup(instance.uuid)),
            uuid=instance.uuid,
        )

    async def power_off(self, instance: Instance, timeout: float = 60.0) -> None:
        async with self._operation(instance):
            what = f"cannot power off instance {instance.uuid}"
            dom = await self._call(what, self._lookup, instance.uuid)
            state, _ = await self._call(what, dom.state)
            if state == libvirt.VIR_DOMAIN_SHUTOFF:
                # Powering off discards a suspended guest's memory: the next start is a boot.
                await self._call(what, self._remove_managed_save, dom)
                return
            if timeout > 0 and state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
                try:
                    await self._call(what, dom.shutdown)  # ACPI power button (no guest agent)
                except DriverError as exc:
                    LOG.info("graceful shutdown of %s refused (%s); powering off hard", instance.uuid, exc)
                else:
                    if await self._wait_inactive(dom, timeout):
                        return
                    LOG.info("%s ignored ACPI shutdown for %.0fs; powering off hard", instance.uuid, timeout)
            await self._call(what, self._hard_stop, dom)

    async def _wait_inactive(self, dom: Any, seconds: float) -> bool:
        deadline = time.monotonic() + seconds
        while True:
            try:
                if not await asyncio.to_thread(dom.isActive):
                    return True
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise InstanceNotFound(f"instance {dom.UUIDString()} disappeared") from None
                raise _translate(exc, "cannot read domain state") from None
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(0.2)

    @staticmethod
    def _remove_managed_save(dom: Any) -> None:
        if dom.hasManagedSaveImage(0):
            dom.managedSaveRemove(0)

    async def power_on(self, instance: Instance) -> None:
        async with self._operation(instance):
            what = f"cannot power on instance {instance.uuid}"
            dom = await self._call(what, self._find, instance.uuid)
            if dom is None:
                # Nova powers on by hard rebooting: a lost domain is redefined, not an error.
                await self._call(what, self._recreate_sync, instance)
                return
            if await self._call(what, dom.isActive):
                return
            await self._call(what, self._replug_sync, instance)  # bridges after a host reboot: datapath.py
            await self._call(what, dom.create)

    async def reboot(self, instance: Instance, hard: bool = False) -> None:
        async with self._operation(instance):
            what = f"cannot reboot instance {instance.uuid}"
            dom = await self._call(what, self._find, instance.uuid)
            if dom is None:
                if not hard:
                    raise InstanceNotFound(f"no libvirt domain for instance {instance.uuid} on {self.host}")
                await self._call(what, self._recreate_sync, instance)
                return
            if not hard:
                state, _ = await self._call(what, dom.state)
                if state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
                    if await self._soft_reboot(instance, dom):
                        return
                    LOG.info("soft reboot of %s did not happen; rebooting hard", instance.uuid)
            await self._call(what, self._replug_sync, instance)  # bridges after a host reboot: datapath.py
            await self._call(what, self._hard_reboot_sync, dom)

    async def _soft_reboot(self, instance: Instance, dom: Any) -> bool:
        waiter = asyncio.Event()
        self._reboot_waiters[instance.uuid] = waiter
        try:
            try:
                await asyncio.to_thread(dom.reboot, 0)
            except libvirt.libvirtError as exc:
                LOG.info("soft reboot of %s refused: %s", instance.uuid, _msg(exc))
                return False
            try:
                await asyncio.wait_for(waiter.wait(), self.reboot_timeout)
            except TimeoutError:
                return False
            return True
        finally:
            self._reboot_waiters.pop(instance.uuid, None)

    def _find(self, uuid: str) -> Any:
        """The domain of ``uuid``, or None if libvirt has none (other lookup errors raise)."""
        try:
            return self._lookup(uuid)
        except InstanceNotFound:
            return None

    def _recreate_sync(self, instance: Instance) -> None:
        """Define and start the domain of an instance libvirt lost, from the instance itself.

        Nova's ``_hard_reboot`` regenerates the domain XML from the instance and keeps its
        disks; so does this: the build path of spawn with the existing files reused. Refused
        (InstanceNotFound) when nothing of the guest is on this host and there is no image file
        to build it from. On failure the new definition is removed; the disks stay.
        """
        idir = self._instance_dir(instance.uuid)
        image = instance.image
        if not os.path.isdir(idir) and not (image is not None and (image.path or image.kernel_path)):
            raise InstanceNotFound(
                f"no libvirt domain for instance {instance.uuid} on {self.host}, and neither its disks"
                " nor its image are here to recreate it from"
            )
        LOG.warning("instance %s has no domain on %s: recreating it from its definition", instance.uuid, self.host)
        conn = self._connection()
        try:
            self._build(instance, conn, threading.Event(), reuse=True)
        except BaseException as exc:
            try:
                dom = conn.lookupByUUIDString(instance.uuid)
            except libvirt.libvirtError:
                dom = None
            if dom is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._hard_stop(dom)
                    self._undefine(dom)
            if isinstance(exc, Exception):
                raise _translate(exc, f"cannot recreate instance {instance.uuid}") from None
            raise

    def _hard_reboot_sync(self, dom: Any) -> None:
        # destroy + start, not virDomainReset: a fresh QEMU process fixes more, and it also
        # starts a guest that was shut off or stuck paused.
        self._hard_stop(dom)
        self._remove_managed_save(dom)
        dom.create()

    async def pause(self, instance: Instance) -> None:
        async with self._operation(instance):
            what = f"cannot pause instance {instance.uuid}"
            dom = await self._call(what, self._lookup, instance.uuid)
            state = await self._call(what, self._dom_state, dom)
            if state != PowerState.RUNNING:
                raise InvalidState(f"cannot pause a guest in power state {state.name}")
            await self._call(what, dom.suspend)

    async def unpause(self, instance: Instance) -> None:
        async with self._operation(instance):
            what = f"cannot unpause instance {instance.uuid}"
            dom = await self._call(what, self._lookup, instance.uuid)
            state = await self._call(what, self._dom_state, dom)
            if state != PowerState.PAUSED:
                raise InvalidState(f"cannot unpause a guest in power state {state.name}")
            await self._call(what, dom.resume)

    async def suspend(self, instance: Instance) -> None:
        async with self._operation(instance):
            what = f"cannot suspend instance {instance.uuid}"
            dom = await self._call(what, self._lookup, instance.uuid)
            state = await self._call(what, self._dom_state, dom)
            if state == PowerState.SUSPENDED:
                return
            if state not in (PowerState.RUNNING, PowerState.PAUSED):
                raise InvalidState(f"cannot suspend a guest in power state {state.name}")
            # SAVE_RUNNING: a guest suspended while paused comes back running.
            await self._call(what, dom.managedSave, libvirt.VIR_DOMAIN_SAVE_RUNNING)

    async def resume(self, instance: Instance) -> None:
        async with self._operation(instance):
            what = f"cannot resume instance {instance.uuid}"
            dom = await self._call(what, self._lookup, instance.uuid)
            state = await self._call(what, self._dom_state, dom)
            if state == PowerState.RUNNING:
                return
            if state != PowerState.SUSPENDED:
                raise InvalidState(f"cannot resume a guest in power state {state.name}")
            await self._call(what, self._replug_sync, instance)  # bridges after a host reboot: datapath.py
            await self._call(what, dom.create)  # restores the managed save image

    # -- images (issue 11) ------------------------------------------------------------------

    async def snapshot(self, instance: Instance, target: str) -> str:
        """``qemu-img convert`` of the root disk (with its backing chain) into one qcow2 file.

        A running guest is paused for the copy (its disk is consistent and still while QEMU
        holds it open; ``-U`` reads it without taking QEMU's lock) and resumed after, whatever
        happens; a guest that is off or paused is copied as it is."""
        async with self._operation(instance):
            await self._call(f"cannot snapshot instance {instance.uuid}", self._snapshot_sync, instance, target)
        return "qcow2"

    def _snapshot_sync(self, instance: Instance, target: str) -> None:
        dom = self._lookup(instance.uuid)
        root = os.path.join(self._instance_dir(instance.uuid), "disk")
        if not os.path.exists(root):
            raise DriverError(f"instance {instance.uuid} has no root disk to snapshot")
        paused = self._dom_state(dom) == PowerState.RUNNING
        if paused:
            dom.suspend()
        try:
            _run("qemu-img", "convert", "-U", "-q", "-f", "qcow2", "-O", "qcow2", root, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(target)
            raise
        finally:
            if paused:
                dom.resume()

    async def rebuild(self, instance: Instance, preserve_ephemeral: bool = False) -> None:
        """Undefine the domain, drop the root disk, config drive and kernel copies (and the
        ephemeral disk unless ``preserve_ephemeral``), then build the guest again from
        ``instance`` as a hard reboot of a lost domain does: what was kept is reused, the
        rest (a root disk from the new image) is made anew."""
        if instance.image is not None and not instance.image.path:
            raise DriverError(f"cannot rebuild instance {instance.uuid}: its new image is not on this host")
        cancelled = threading.Event()
        async with self._operation(instance):
            await self._call(
                f"cannot rebuild instance {instance.uuid}", self._rebuild_sync, instance, preserve_ephemeral, cancelled
            )

    def _rebuild_sync(self, instance: Instance, preserve_ephemeral: bool, cancelled: threading.Event) -> None:
        conn = self._connection()
        dom = self._lookup(instance.uuid)
        self._hard_stop(dom)
        self._undefine(dom)
        idir = self._instance_dir(instance.uuid)
        doomed = ["disk", "disk.config", "kernel", "ramdisk"] + ([] if preserve_ephemeral else ["disk.eph0"])
        for name in doomed:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(idir, name))
        try:
            self._build(instance, conn, cancelled, reuse=True)
        except BaseException:
            # Cleanup duty: no domain left defined; the rest goes with destroy.
            with contextlib.suppress(Exception):
                self._hard_stop(self._lookup(instance.uuid))
                self._undefine(self._lookup(instance.uuid))
            raise

    # -- moving servers: resize and cold migration (issue 10) ---------------------------------

    def _resize_dir(self, uuid: str) -> str:
        return self._instance_dir(uuid) + "_resize"

    async def migrate_disk_and_power_off(
        self, instance: Instance, dest_host: str, flavor: dict[str, Any]
    ) -> list[str] | None:
        """Check the new sizes (no disk shrinks), power off (ACPI for ``resize_shutdown_timeout``
        seconds, then hard), keep the original as ``<uuid>_resize/``; then either copy its files
        into a new ``<uuid>/`` (same-host resize: nothing to send) or return the files to send
        (the root disk flattened into one qcow2 when it has a backing file)."""
        what = f"cannot migrate instance {instance.uuid}"
        async with self._operation(instance):
            dom = await self._call(what, self._lookup, instance.uuid)
            await self._call(what, self._check_resize, instance, flavor)
            state = await self._call(what, self._dom_state, dom)
            await self.power_off(instance, timeout=self.resize_shutdown_timeout)
            try:
                return await self._call(what, self._stage_move_sync, instance, dest_host)
            except BaseException:
                # Cleanup duty: the files are back (see _stage_move_sync); the guest as it was.
                if state in (PowerState.RUNNING, PowerState.PAUSED):
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(dom.create)
                raise

    def _check_resize(self, instance: Instance, flavor: dict[str, Any]) -> None:
        """Nova's libvirt driver refuses to shrink a disk ("Unable to resize disk down.")."""
        idir = self._instance_dir(instance.uuid)
        root = os.path.join(idir, "disk")
        new_root = int(flavor.get("root_gb") or 0)
        if new_root and os.path.exists(root):
            size = int(_qemu_img_info_shared(root)["virtual-size"])
            if new_root * GiB < size:
                raise DriverError("Unable to resize disk down.")
        eph = os.path.join(idir, "disk.eph0")
        if os.path.exists(eph):
            size = int(_qemu_img_info_shared(eph)["virtual-size"])
            if int(flavor.get("ephemeral_gb") or 0) * GiB < size:
                raise DriverError("Unable to resize disk down.")

    def _stage_move_sync(self, instance: Instance, dest_host: str) -> list[str]:
        uuid = instance.uuid
        idir, rdir = self._instance_dir(uuid), self._resize_dir(uuid)
        if not os.path.isdir(idir):
            raise DriverError(f"instance {uuid} has no files on {self.host}")
        if os.path.lexists(rdir):
            # What an interrupted earlier move left: the guest's own files are in <uuid>/.
            LOG.warning("removing the leftover %s of an earlier move", rdir)
            shutil.rmtree(rdir)
        same = dest_host == self.host
        with open(os.path.join(idir, migmod.MOVE_FILE), "w") as f:
            json.dump({"source_host": self.host, "dest_host": dest_host, "same_host": same}, f)
        os.rename(idir, rdir)
        try:
            if same:
                os.makedirs(idir, mode=0o755)
                os.chmod(idir, 0o755)
                for name in migmod.MOVED_FILES:
                    src = os.path.join(rdir, name)
                    if os.path.isfile(src):
                        # The overlay keeps its backing file (_base/ is this host's): a cheap copy.
                        _run("cp", "--sparse=always", "--reflink=auto", src, os.path.join(idir, name))
                return []
            out = os.path.join(rdir, "outgoing")
            os.makedirs(out, mode=0o755)
            files = []
            root = os.path.join(rdir, "disk")
            if os.path.isfile(root):
                if _qemu_img_info(root, "qcow2").get("backing-filename"):
                    flat = os.path.join(out, "disk")
                    _run("qemu-img", "convert", "-q", "-f", "qcow2", "-O", "qcow2", root, flat)
                    files.append(flat)
                else:
                    files.append(root)
            for name in migmod.MOVED_FILES[1:]:
                path = os.path.join(rdir, name)
                if os.path.isfile(path) and os.access(path, os.R_OK):
                    files.append(path)
            return files
        except BaseException:
            if same and os.path.lexists(idir):
                shutil.rmtree(idir, ignore_errors=True)
            shutil.rmtree(os.path.join(rdir, "outgoing"), ignore_errors=True)
            with contextlib.suppress(OSError):
                os.unlink(os.path.join(rdir, migmod.MOVE_FILE))
            os.rename(rdir, idir)
            raise

    async def receive_migration(self, instance: Instance, source_host: str) -> str:
        async with self._operation(instance):
            return await self._call(
                f"cannot receive instance {instance.uuid}", self._receive_sync, instance, source_host
            )

    def _receive_sync(self, instance: Instance, source_host: str) -> str:
        if source_host == self.host or self._find(instance.uuid) is not None:
            raise DriverError(f"instance {instance.uuid} already exists on {self.host}")
        idir = self._instance_dir(instance.uuid)
        if os.path.lexists(idir):
            # No domain uses it: what an interrupted earlier move to this host left.
            LOG.warning("removing the leftover %s of an earlier move", idir)
            shutil.rmtree(idir)
        os.makedirs(idir, mode=0o755)
        os.chmod(idir, 0o755)
        return idir

    async def finish_migration(self, instance: Instance, source_host: str, power_on: bool = True) -> None:
        """Grow the disks that arrived in ``<uuid>/`` to the new flavor (``qemu-img resize``),
        define the domain with its vCPUs and RAM, and start it if ``power_on``."""
        async with self._operation(instance):
            await self._call(
                f"cannot finish the migration of instance {instance.uuid}",
                self._finish_migration_sync,
                instance,
                power_on,
            )

    def _finish_migration_sync(self, instance: Instance, power_on: bool) -> None:
        idir = self._instance_dir(instance.uuid)
        root, eph = os.path.join(idir, "disk"), os.path.join(idir, "disk.eph0")
        if not os.path.isfile(root) and not os.path.isfile(os.path.join(idir, "kernel")):
            raise DriverError(f"the disks of instance {instance.uuid} are not on {self.host}")
        for path, gb in ((root, instance.root_gb), (eph, instance.ephemeral_gb)):
            if gb and os.path.isfile(path) and int(_qemu_img_info(path, "qcow2")["virtual-size"]) < gb * GiB:
                _run("qemu-img", "resize", "-q", "-f", "qcow2", path, str(gb * GiB))
        conn = self._connection()
        try:
            self._build(instance, conn, threading.Event(), reuse=True, start=power_on)
        except BaseException:
            # Cleanup duty: no domain left defined here; the disks stay (a hard reboot retries).
            dom = self._find(instance.uuid)
            if dom is not None:
                with contextlib.suppress(libvirt.libvirtError):
                    self._hard_stop(dom)
                    self._undefine(dom)
            raise

    async def confirm_migration(self, instance: Instance) -> None:
        """Remove ``<uuid>_resize/``; after a move to another host also the powered-off
        original domain (and its DHCP entries). Never a domain that runs here."""
        async with self._operation(instance):
            await self._call(f"cannot confirm the migration of {instance.uuid}", self._confirm_sync, instance)

    def _confirm_sync(self, instance: Instance) -> None:
        rdir = self._resize_dir(instance.uuid)
        if not os.path.lexists(rdir):
            return  # confirmed already
        info: dict[str, Any] = {}
        with contextlib.suppress(OSError, ValueError):
            with open(os.path.join(rdir, migmod.MOVE_FILE)) as f:
                info = json.load(f)
        if not info.get("same_host"):
            conn = self._connection()
            dom = self._find(instance.uuid)
            if dom is not None and not dom.isActive():
                macs: set[tuple[str, str]] = set()
                with contextlib.suppress(libvirt.libvirtError, ET.ParseError):
                    macs = set(domain_macs(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)))
                self._undefine(dom)
                for mac, net in sorted(macs):
                    netmod.remove_dhcp_host(conn, net, mac)
                    netmod.release_leases(conn, net, mac=mac)
            elif dom is not None:
                LOG.warning("instance %s runs on %s: its domain is kept at confirm", instance.uuid, self.host)
        shutil.rmtree(rdir)

    async def finish_revert_migration(self, instance: Instance, power_on: bool = True) -> None:
        """Put ``<uuid>_resize/`` back as ``<uuid>/`` (whatever the resized copy left there goes)
        and define the domain again with ``instance``'s (old) flavor, started if ``power_on``.
        Also what the agent calls when the disks could not be sent."""
        async with self._operation(instance):
            await self._call(f"cannot revert the migration of {instance.uuid}", self._revert_sync, instance, power_on)

    def _revert_sync(self, instance: Instance, power_on: bool) -> None:
        idir, rdir = self._instance_dir(instance.uuid), self._resize_dir(instance.uuid)
        conn = self._connection()
        dom = self._find(instance.uuid)
        if not os.path.isdir(rdir):
            if dom is not None and os.path.isdir(idir):  # reverted already
                if power_on and not dom.isActive():
                    dom.create()
                return
            raise DriverError(
                f"the original disks of instance {instance.uuid} are gone from {self.host}: it cannot be reverted"
            )
        if dom is not None and dom.isActive():
            self._hard_stop(dom)  # a resized copy still running here (same host): it goes
        if os.path.lexists(idir):
            shutil.rmtree(idir)
        shutil.rmtree(os.path.join(rdir, "outgoing"), ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(rdir, migmod.MOVE_FILE))
        os.rename(rdir, idir)
        self._build(instance, conn, threading.Event(), reuse=True, start=power_on)

    # -- live migration (issue 10, second half) ---------------------------------------------

    async def check_can_live_migrate_destination(
        self, instance: Instance, source_host: str, block_migration: bool | None
    ) -> dict[str, Any]:
        """Block migration only (no shared storage assumed); returns where the source's
        daemon reaches this one and the paths and networks the guest gets here."""
        if block_migration is False:
            raise DriverError(
                f"{self.host} is not on shared storage: Shared storage live-migration requires either"
                " shared storage or boot-from-volume with no local disks."
            )
        what = f"cannot live-migrate instance {instance.uuid} to {self.host}"
        if await self._call(what, self._find, instance.uuid) is not None:
            raise DriverError(f"instance {instance.uuid} already exists on {self.host}")
        return {
            "block_migration": True,
            "uri": self.migration_uri,
            "migrate_uri": f"tcp://{self.migration_address}" if self.migration_address else None,
            "instance_dir": self._instance_dir(instance.uuid),
            "vnc_listen": self.vnc_listen,
            "host": self.host,
            "networks": {p.mac.lower(): self._libvirt_network(p) for p in instance.ports},
        }

    async def pre_live_migration(self, instance: Instance, source_host: str, migrate_data: dict[str, Any]) -> None:
        """Make ``<uuid>/`` with empty disks of the guest's sizes for the block copy to fill
        (a transient storage pool lets libvirt make a disk whose size only the source knows),
        a config drive made anew, kernel copies from the image cache, DHCP entries."""
        async with self._operation(instance):
            what = f"cannot prepare {self.host} for instance {instance.uuid}"
            try:
                await self._call(what, self._pre_live_sync, instance)
            except BaseException:
                with contextlib.suppress(Exception):
                    await asyncio.to_thread(self._rollback_live_sync, instance)
                raise

    def _incoming_pool(self, uuid: str) -> str:
        return f"novalite-incoming-{uuid}"

    def _pre_live_sync(self, instance: Instance) -> None:
        conn = self._connection()
        if self._find(instance.uuid) is not None:
            raise DriverError(f"instance {instance.uuid} already exists on {self.host}")
        idir = self._instance_dir(instance.uuid)
        if os.path.lexists(idir):
            shutil.rmtree(idir)
        os.makedirs(idir, mode=0o755)
        os.chmod(idir, 0o755)
        open(os.path.join(idir, migmod.INCOMING_FILE), "w").close()
        image = instance.image
        root = os.path.join(idir, "disk")
        unknown = False
        if instance.root_gb:
            _run("qemu-img", "create", "-q", "-f", "qcow2", root, str(instance.root_gb * GiB))
        elif image is not None and image.path and os.path.isfile(image.path):
            size = int(_qemu_img_info(image.path, (image.disk_format or "raw").lower())["virtual-size"])
            _run("qemu-img", "create", "-q", "-f", "qcow2", root, str(size))
        else:
            unknown = True
        if instance.ephemeral_gb:
            eph = os.path.join(idir, "disk.eph0")
            _run("qemu-img", "create", "-q", "-f", "qcow2", eph, f"{instance.ephemeral_gb}G")
        if unknown:
            # Only the source knows the root disk's size: libvirt creates the disks it does
            # not find in a storage pool over the directory, with the size the source sends.
            name = self._incoming_pool(instance.uuid)
            with contextlib.suppress(libvirt.libvirtError):
                conn.storagePoolLookupByName(name).destroy()
            conn.storagePoolCreateXML(
                f"<pool type='dir'><name>{name}</name><target><path>{idir}</path></target></pool>", 0
            )
        if instance.config_drive or self.force_config_drive:
            configdrive.build_config_drive(instance, os.path.join(idir, "disk.config"))
        if image is not None and image.kernel_path:
            shutil.copyfile(image.kernel_path, os.path.join(idir, "kernel"))
            if image.ramdisk_path:
                shutil.copyfile(image.ramdisk_path, os.path.join(idir, "ramdisk"))
        for port in instance.ports:
            net = self._libvirt_network(port)
            if net and port.ip:
                netmod.add_dhcp_host(conn, net, port.mac, port.ip, _dhcp_name(instance.hostname or instance.name))
                netmod.release_leases(conn, net, ip=port.ip, mac=port.mac.lower())

    async def live_migration(
        self,
        instance: Instance,
        dest_host: str,
        migrate_data: dict[str, Any],
        progress: Callable[[LiveMigrationProgress], Awaitable[None]],
    ) -> None:
        """``migrateToURI3`` (live, peer-to-peer, block copy of the writable disks, persistent
        on the destination, undefined here) with the destination's XML; ``jobStats`` every
        half second as progress. Afterwards the instance directory here is removed."""
        what = f"cannot live-migrate instance {instance.uuid} to {dest_host}"
        uri = migrate_data.get("uri")
        if not uri:
            raise DriverError(f"{what}: the destination did not say where its libvirt daemon is (migration_uri)")
        async with self._operation(instance):
            dom = await self._call(what, self._lookup, instance.uuid)
            state = await self._call(what, self._dom_state, dom)
            if state not in (PowerState.RUNNING, PowerState.PAUSED):
                raise InvalidState(f"{what}: a guest in power state {state.name} cannot be live-migrated")
            xml = await self._call(what, dom.XMLDesc, libvirt.VIR_DOMAIN_XML_MIGRATABLE)
            dest_xml = migmod.destination_xml(
                xml,
                self._instance_dir(instance.uuid),
                str(migrate_data.get("instance_dir") or self._instance_dir(instance.uuid)),
                dest_host,
                migrate_data.get("vnc_listen"),
                dict(migrate_data.get("networks") or {}),
            )
            params: dict[str, Any] = {libvirt.VIR_MIGRATE_PARAM_DEST_XML: dest_xml}
            if migrate_data.get("migrate_uri"):
                params[libvirt.VIR_MIGRATE_PARAM_URI] = str(migrate_data["migrate_uri"])
            disks = migmod.writable_disks(xml)
            if disks:
                params[libvirt.VIR_MIGRATE_PARAM_MIGRATE_DISKS] = disks
            if self.live_migration_bandwidth:
                params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = self.live_migration_bandwidth
            flags = (
                libvirt.VIR_MIGRATE_LIVE
                | libvirt.VIR_MIGRATE_PEER2PEER
                | libvirt.VIR_MIGRATE_PERSIST_DEST
                | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE
            )
            if disks:
                flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
            job = self._live[instance.uuid] = _LiveJob(dom, paused_before=state == PowerState.PAUSED)
            fut = asyncio.ensure_future(asyncio.to_thread(dom.migrateToURI3, uri, params, flags))
            try:
                while not fut.done():
                    await asyncio.wait({fut}, timeout=0.5)
                    if fut.done():
                        break
                    stats = await asyncio.to_thread(self._job_stats, dom)
                    if stats:
                        with contextlib.suppress(Exception):
                            await progress(migmod.progress_from_stats(stats))
                try:
                    fut.result()
                except Exception as exc:
                    if job.aborted:
                        raise MigrationAborted(f"live migration of {instance.uuid} aborted") from None
                    raise _translate(exc, what) from None
            except BaseException:
                if not fut.done():  # the agent is stopping: the copy must not go on alone
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(dom.abortJob)
                    with contextlib.suppress(BaseException):
                        await asyncio.wait({fut}, timeout=30)
                if job.forced and not job.paused_before:
                    with contextlib.suppress(Exception):
                        await asyncio.to_thread(dom.resume)  # force complete paused it: it goes on here
                raise
            finally:
                self._live.pop(instance.uuid, None)
            try:
                await asyncio.to_thread(self._after_live_sync, instance, xml)
            except Exception:  # the guest runs there: a leftover here is no failure of the move
                LOG.exception("cleanup of %s after its live migration failed", instance.uuid)

    @staticmethod
    def _job_stats(dom: Any) -> dict[str, Any]:
        try:
            stats: dict[str, Any] = dom.jobStats()
        except libvirt.libvirtError:
            return {}
        return stats if stats.get("type", 0) != libvirt.VIR_DOMAIN_JOB_NONE else {}

    def _after_live_sync(self, instance: Instance, xml: str) -> None:
        """The guest left: its files here and its DHCP entries go (the domain is undefined)."""
        conn = self._connection()
        dom = self._find(instance.uuid)
        if dom is not None and not dom.isActive():
            self._undefine(dom)  # an older libvirt that kept the definition
        with contextlib.suppress(ET.ParseError):
            for mac, net in sorted(set(domain_macs(xml))):
                netmod.remove_dhcp_host(conn, net, mac)
        idir = self._instance_dir(instance.uuid)
        if self._find(instance.uuid) is None and os.path.lexists(idir):
            shutil.rmtree(idir)
        self._known_state.pop(instance.uuid, None)

    def _running_job(self, instance: Instance) -> _LiveJob:
        job = self._live.get(instance.uuid)
        if job is None:
            raise InvalidState(f"no live migration of {instance.uuid} is running on {self.host}")
        return job

    async def live_migration_abort(self, instance: Instance) -> None:
        job = self._running_job(instance)
        job.aborted = True
        await self._call(f"cannot abort the live migration of {instance.uuid}", job.dom.abortJob)

    async def live_migration_force_complete(self, instance: Instance) -> None:
        """Pause the guest for the rest of the copy (it converges: nothing is dirtied) and lift
        any bandwidth limit of the memory copy; libvirt starts it on the destination when the
        copy ends (it was running when the migration began)."""
        job = self._running_job(instance)
        what = f"cannot force the live migration of {instance.uuid} to complete"
        if not job.paused_before and not job.forced:
            job.forced = True
            await self._call(what, job.dom.suspend)
        with contextlib.suppress(DriverError):
            await self._call(what, job.dom.migrateSetMaxSpeed, 1 << 20)  # MiB/s: no limit

    async def post_live_migration_at_destination(self, instance: Instance, source_host: str) -> None:
        """The guest is ours: libvirt persisted it (``PERSIST_DEST``); the preparation's marker
        and transient pool go, the definition is written for operators."""
        async with self._operation(instance):
            await self._call(f"cannot finish the live migration of {instance.uuid}", self._post_live_sync, instance)

    def _post_live_sync(self, instance: Instance) -> None:
        conn = self._connection()
        dom = self._lookup(instance.uuid)
        self._drop_incoming_pool(conn, instance.uuid)
        idir = self._instance_dir(instance.uuid)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(idir, migmod.INCOMING_FILE))
        with contextlib.suppress(OSError, libvirt.libvirtError):
            with open(os.path.join(idir, "libvirt.xml"), "w") as f:
                f.write(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))

    def _drop_incoming_pool(self, conn: Any, uuid: str) -> None:
        try:
            pool = conn.storagePoolLookupByName(self._incoming_pool(uuid))
        except libvirt.libvirtError:
            return
        with contextlib.suppress(libvirt.libvirtError):
            pool.destroy()  # transient: destroying it undefines it, the files stay

    async def rollback_live_migration_at_destination(self, instance: Instance) -> None:
        """Remove what the preparation made (and a partial copy) — only while the marker of an
        incoming guest is there: a guest that is this host's for good is never touched."""
        async with self._operation(instance):
            await self._call(
                f"cannot roll back the live migration of {instance.uuid}", self._rollback_live_sync, instance
            )

    def _rollback_live_sync(self, instance: Instance) -> None:
        conn = self._connection()
        self._drop_incoming_pool(conn, instance.uuid)
        idir = self._instance_dir(instance.uuid)
        dom = self._find(instance.uuid)
        if dom is not None and not os.path.exists(os.path.join(idir, migmod.INCOMING_FILE)):
            return  # this host's guest for good (or one this rollback does not know)
        self._destroy_sync(instance)

    # -- consoles ---------------------------------------------------------------------------

    async def get_console_output(self, instance: Instance) -> str:
        await self._call("cannot read console output", self._lookup, instance.uuid)
        path = os.path.join(self._instance_dir(instance.uuid), "console.log")
        return await self._call("cannot read console output", _read_tail, path, MAX_CONSOLE_BYTES)

    async def get_vnc_console(self, instance: Instance) -> ConsoleAddress:
        what = f"cannot get the VNC console of {instance.uuid}"
        dom = await self._call(what, self._lookup, instance.uuid)
        xml = await self._call(what, dom.XMLDesc, 0)
        addr = vnc_address(xml)
        if addr is None:
            raise InvalidState(f"instance {instance.uuid} has no VNC server (is it running?)")
        listen, port = addr
        if listen in ("0.0.0.0", "::", ""):
            listen = "127.0.0.1"
        return ConsoleAddress(listen, port)


def _read_tail(path: str, limit: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            data = f.read()
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", errors="replace")


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)
