"""Running ``ip``, ``bridge``, ``nft`` and friends, on this host or inside a network namespace.

Every host-plumbing function of :mod:`.bridges`, :mod:`.vxlan`, :mod:`.dhcp` and
:mod:`.firewall` takes ``netns``: None is the host itself (what the driver uses), a name is
a network namespace (``ip netns add NAME``) standing in for a host, as the datapath tests
do, so that nothing touches the machine's real interfaces. All functions are blocking; the
driver runs them in a thread.
"""

from __future__ import annotations

import subprocess

from novalite_drivers.base import DriverError


class CommandFailed(DriverError):
    """A host networking command exited non-zero; the message has its stderr."""

    def __init__(self, cmd: list[str], returncode: int, stderr: str) -> None:
        super().__init__(f"{' '.join(cmd)} failed ({returncode}): {stderr.strip() or 'no message'}")
        self.cmd = cmd
        self.returncode = returncode
        self.stderr = stderr


def in_netns(cmd: list[str], netns: str | None) -> list[str]:
    """``cmd`` as run inside ``netns`` (unchanged for the host itself)."""
    return ["ip", "netns", "exec", netns, *cmd] if netns else list(cmd)


def run(cmd: list[str], netns: str | None = None, input: str | None = None, check: bool = True) -> str:
    """Run ``cmd`` (inside ``netns``); return its stdout. CommandFailed when it fails and ``check``."""
    full = in_netns(cmd, netns)
    try:
        proc = subprocess.run(full, input=input, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise DriverError(
            f"{full[0]} is not installed (apt-get install iproute2 nftables; see scripts/setup-libvirt.sh)"
        ) from None
    except subprocess.TimeoutExpired:
        raise DriverError(f"{' '.join(full)} did not finish within 30 s") from None
    if check and proc.returncode != 0:
        raise CommandFailed(full, proc.returncode, proc.stderr)
    return proc.stdout


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    """``ip [-n NETNS] ARGS...``."""
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except FileNotFoundError:
        raise DriverError("ip is not installed (apt-get install iproute2)") from None
    if check and proc.returncode != 0:
        raise CommandFailed(cmd, proc.returncode, proc.stderr)
    return proc.stdout


def link_exists(name: str, netns: str | None = None) -> bool:
    return (
        subprocess.run(
            ["ip", *(["-n", netns] if netns else []), "link", "show", "dev", name],
            capture_output=True,
            timeout=30,
        ).returncode
        == 0
    )


def sysctl(key: str, value: str, netns: str | None = None) -> None:
    """Set ``/proc/sys/<key with / for .>`` (in ``netns``: sysctls of net.* are per namespace)."""
    run(["sysctl", "-q", "-w", f"{key}={value}"], netns)
