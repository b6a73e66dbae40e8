"""A second system libvirtd on this machine, as the destination host of moves (issue 10).

Recipe (1) of the issue's facts: a private mount namespace (``unshare -m --propagation
private``) in which the daemon's own directories are bind-mounted over /run/libvirt,
/var/lib/libvirt, /var/cache/libvirt, /var/log/libvirt and /etc/libvirt (libvirt.conf,
qemu.conf, virtlogd.conf and nwfilter/ copied, not the networks), its own ``host_uuid`` (two
daemons with one host UUID refuse to migrate between them: "the same host") and its own
migration ports; ``virtlogd`` and ``libvirtd`` daemonized with their own pid files.

From this process the daemon is ``qemu+unix:///system?socket=<base>/run/libvirt-sock``. Its
namespace hides the first daemon's /run/libvirt, so that directory is bind-mounted first
at ``<base>/host-run``: inside the namespace the first daemon is
``qemu+unix:///system?socket=<base>/host-run/libvirt-sock`` (what the second daemon
connects to when it is the source of a peer-to-peer migration). It has no networks: guests
moved between the two have no NICs.

Needs root. :meth:`SecondLibvirtd.stop` destroys its guests, ends both daemons (by their pid
files) and removes its directories.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
import uuid
from pathlib import Path


class SecondLibvirtd:
    def __init__(self, base: Path, migration_ports: tuple[int, int] = (49400, 49463)) -> None:
        self.base = base
        self.migration_ports = migration_ports
        self.host_uuid = str(uuid.uuid4())

    @property
    def uri(self) -> str:
        """This daemon, from this process."""
        return f"qemu+unix:///system?socket={self.base}/run/libvirt-sock"

    @property
    def first_daemon_uri(self) -> str:
        """The machine's own daemon, as seen from inside this daemon's namespace."""
        return f"qemu+unix:///system?socket={self.base}/host-run/libvirt-sock"

    def start(self, timeout: float = 60.0) -> None:
        b = self.base
        for d in ("run", "lib", "cache", "log/qemu", "etc", "host-run"):
            (b / d).mkdir(parents=True, exist_ok=True)
        for name in ("libvirt.conf", "qemu.conf", "virtlogd.conf"):
            src = Path("/etc/libvirt") / name
            if src.exists():
                shutil.copy(src, b / "etc" / name)
        if Path("/etc/libvirt/nwfilter").is_dir():
            shutil.copytree("/etc/libvirt/nwfilter", b / "etc" / "nwfilter", dirs_exist_ok=True)
        conf = Path("/etc/libvirt/libvirtd.conf")
        text = conf.read_text() if conf.exists() else ""
        (b / "etc" / "libvirtd.conf").write_text(f'{text}\nhost_uuid = "{self.host_uuid}"\n')
        with open(b / "etc" / "qemu.conf", "a") as f:
            lo, hi = self.migration_ports
            f.write(f"\nmigration_port_min = {lo}\nmigration_port_max = {hi}\n")
        Path("/var/cache/libvirt").mkdir(parents=True, exist_ok=True)
        script = f"""set -e
mount --bind /run/libvirt {b}/host-run
mount --bind {b}/run /run/libvirt
mount --bind {b}/lib /var/lib/libvirt
mount --bind {b}/cache /var/cache/libvirt
mount --bind {b}/log /var/log/libvirt
mount --bind {b}/etc /etc/libvirt
virtlogd -d -p {b}/virtlogd.pid
libvirtd -d -p {b}/libvirtd.pid
"""
        (b / "start.sh").write_text(script)
        subprocess.run(["unshare", "-m", "--propagation", "private", "sh", str(b / "start.sh")], check=True)
        deadline = time.monotonic() + timeout
        while True:
            proc = subprocess.run(["virsh", "-c", self.uri, "version"], capture_output=True, text=True)
            if proc.returncode == 0:
                return
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the second libvirtd did not answer at {self.uri}: {proc.stderr}")
            time.sleep(0.3)

    def _pid(self, name: str) -> int | None:
        try:
            return int((self.base / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def stop(self) -> None:
        import libvirt

        with contextlib.suppress(libvirt.libvirtError):
            conn = libvirt.open(self.uri)
            try:
                for dom in conn.listAllDomains(0):
                    with contextlib.suppress(libvirt.libvirtError):
                        if dom.isActive():
                            dom.destroy()
                    with contextlib.suppress(libvirt.libvirtError):
                        dom.undefine()
            finally:
                conn.close()
        for name in ("libvirtd", "virtlogd"):
            pid = self._pid(name)
            if pid is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.base, ignore_errors=True)
