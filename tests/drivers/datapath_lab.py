"""A lab of network namespaces for the datapath tests (tests/drivers/test_datapath_*.py).

Namespaces stand in for hosts and guests: a "host" namespace holds bridges, VXLAN devices,
the nftables tables; a "guest" namespace holds the far end (``eth0``) of a veth whose near
end, in the host namespace, plays the guest's tap. Nothing touches the machine's own
interfaces; every address used lives only inside these namespaces. Needs root, iproute2,
nftables (scripts/setup-libvirt.sh installs them); the tests fail, never skip, without.
"""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import subprocess
import textwrap
import time

import pytest

_seq = itertools.count(1)


def require_tools(*tools: str) -> None:
    if os.geteuid() != 0:
        pytest.fail("the datapath tests need root (network namespaces)", pytrace=False)
    missing = [t for t in ("ip", "nft", "bridge", *tools) if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: run scripts/setup-libvirt.sh", pytrace=False)


def sh(ns: str, *cmd: str, check: bool = True, timeout: float = 20) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, *cmd], capture_output=True, text=True, check=check, timeout=timeout
    )


class Lab:
    def __init__(self) -> None:
        self.prefix = f"nlt{os.getpid() % 100000}x{next(_seq)}"
        self.namespaces: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []

    def netns(self, name: str) -> str:
        full = f"{self.prefix}-{name}"
        subprocess.run(["ip", "netns", "add", full], check=True, capture_output=True)
        subprocess.run(["ip", "-n", full, "link", "set", "lo", "up"], check=True, capture_output=True)
        self.namespaces.append(full)
        return full

    def guest(self, host: str, tap: str, name: str, mac: str, cidr: str | None, bridge: str | None = None) -> str:
        """A guest namespace whose eth0 is the far end of ``tap`` (in ``host``, on ``bridge``)."""
        g = self.netns(name)
        ip = ["ip", "-n", host]
        subprocess.run([*ip, "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", g], check=True)
        subprocess.run(["ip", "-n", g, "link", "set", "eth0", "address", mac], check=True)
        if cidr:
            subprocess.run(["ip", "-n", g, "addr", "add", cidr, "dev", "eth0"], check=True)
        subprocess.run(["ip", "-n", g, "link", "set", "eth0", "up"], check=True)
        if bridge:
            subprocess.run([*ip, "link", "set", tap, "master", bridge], check=True)
        subprocess.run([*ip, "link", "set", tap, "up"], check=True)
        return g

    def ping(self, ns: str, addr: str, count: int = 1, wait: float = 1.0) -> bool:
        r = sh(ns, "ping", "-n", "-q", "-c", str(count), "-W", str(wait), "-i", "0.2", addr, check=False)
        return r.returncode == 0

    def ping_eventually(self, ns: str, addr: str, seconds: float = 5.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.ping(ns, addr, wait=0.5):
                return True
        return False

    def listen(self, ns: str, ports: list[int]) -> None:
        """TCP servers on ``ports`` in ``ns`` (answer "ok" and close), until the lab ends."""
        code = textwrap.dedent(
            f"""
            import socket, selectors, sys
            sel = selectors.DefaultSelector()
            for p in {ports!r}:
                s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("0.0.0.0", p)); s.listen(16); sel.register(s, selectors.EVENT_READ)
            print("ready", flush=True)
            while True:
                for key, _ in sel.select():
                    c, _ = key.fileobj.accept(); c.sendall(b"ok"); c.close()
            """
        )
        proc = subprocess.Popen(["ip", "netns", "exec", ns, "python3", "-c", code], stdout=subprocess.PIPE, text=True)
        self.procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"

    def connect(self, ns: str, addr: str, port: int, timeout: float = 0.5) -> bool:
        code = (
            "import socket,sys\n"
            f"try:\n s=socket.create_connection(({addr!r},{port}),timeout={timeout})\n"
            " sys.exit(0 if s.recv(2)==b'ok' else 1)\n"
            "except OSError: sys.exit(1)\n"
        )
        return sh(ns, "python3", "-c", code, check=False).returncode == 0

    def close(self) -> None:
        for proc in self.procs:
            with_suppress_kill(proc)
        out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        mine = [line.split()[0] for line in out.splitlines() if line.startswith(self.prefix + "-")]
        for ns in set(mine) | set(self.namespaces):
            # processes left inside (dnsmasq) go with their namespace's last reference
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except (ProcessLookupError, ValueError):
                    pass
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def with_suppress_kill(proc: subprocess.Popen[str]) -> None:
    try:
        proc.kill()
        proc.wait(timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        pass
