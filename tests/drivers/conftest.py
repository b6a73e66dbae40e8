"""Fixtures for the libvirt driver tests.

Unit tests run on libvirt's ``test:///`` driver with a node XML written per test (fresh
state, no daemon). QEMU tests use the real ``qemu:///system`` with the tiny guest built by
scripts/build-tiny-guest.sh, on the ISOLATED libvirt network ``novalite-test`` (no
``<forward>``: guest traffic never leaves the host). They fail, never skip, when libvirtd
is not up: CI runs scripts/setup-libvirt.sh first.
"""

from __future__ import annotations

import ipaddress
import itertools
import json
import os
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GUEST_CACHE = Path(os.environ.get("NOVALITE_GUEST_CACHE", "/var/tmp/novalite-guest"))
QEMU_URI = os.environ.get("NOVALITE_TEST_LIBVIRT_URI", "qemu:///system")
TEST_NETWORK = "novalite-test"
TEST_BRIDGE = "nlvtest0"
TEST_CIDR = "10.213.77.1/24"  # static addresses .10-.99, libvirt's dynamic range .100-.199
UNIT_NETWORK = "novalite-unit"
UNIT_CIDR = "10.213.99.1/24"

NODE_XML = """<node>
  <network>
    <name>{name}</name>
    <bridge name='nlunit0'/>
    <ip address='10.213.99.1' netmask='255.255.255.0'>
      <dhcp><range start='10.213.99.100' end='10.213.99.199'/></dhcp>
    </ip>
  </network>
</node>
"""


def require_libvirt_python() -> None:
    try:
        import libvirt  # noqa: F401
    except ImportError:
        pytest.fail(
            "libvirt-python is not installed: run scripts/setup-libvirt.sh (or pip install libvirt-python)",
            pytrace=False,
        )
    if shutil.which("qemu-img") is None:
        pytest.fail("qemu-img is missing: run scripts/setup-libvirt.sh", pytrace=False)


# -- unit: the test:/// driver ---------------------------------------------------------------


@pytest.fixture
def test_uri(tmp_path: Path) -> str:
    """A ``test:///`` URI with its own node XML: every test starts from an empty host."""
    require_libvirt_python()
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML.format(name=UNIT_NETWORK))
    return f"test://{node}"


@pytest.fixture
def small_image(tmp_path: Path) -> Path:
    """A tiny qcow2 (64 MiB virtual) standing in for a downloaded image."""
    require_libvirt_python()
    path = tmp_path / "image.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(path), "64M"], check=True)
    return path


@pytest.fixture
async def unit_driver(test_uri: str, tmp_path: Path) -> AsyncIterator:
    from novalite_drivers.libvirt import LibvirtDriver

    driver = LibvirtDriver(
        "unit-host",
        {
            "uri": test_uri,
            "instances_path": str(tmp_path / "instances"),
            "network": UNIT_NETWORK,
            "shutdown_timeout": 1,
        },
    )
    await driver.init_host()
    try:
        yield driver
    finally:
        await driver.cleanup_host()


# -- QEMU: the real qemu:///system -----------------------------------------------------------


def _host_routes_overlapping(cidr: str) -> list[str]:
    net = ipaddress.ip_interface(cidr).network
    try:
        out = subprocess.run(["ip", "-j", "-4", "route"], check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return []
    bad = []
    for route in json.loads(out or "[]"):
        dst = route.get("dst", "")
        if dst in ("", "default") or route.get("dev") == TEST_BRIDGE:
            continue
        try:
            if ipaddress.ip_network(dst, strict=False).overlaps(net):
                bad.append(f"{dst} dev {route.get('dev')}")
        except ValueError:
            continue
    return bad


@pytest.fixture(scope="session")
def qemu_host() -> str:
    """Check that libvirtd answers and the isolated test network exists; return the URI."""
    require_libvirt_python()
    import libvirt
    from novalite_drivers.libvirt import ensure_event_loop, ensure_isolated_network

    ensure_event_loop()  # before the first connection, so later ones get events
    try:
        conn = libvirt.open(QEMU_URI)
    except libvirt.libvirtError as exc:
        pytest.fail(
            f"libvirtd is not reachable at {QEMU_URI} ({exc.get_error_message()}): run scripts/setup-libvirt.sh first",
            pytrace=False,
        )
    try:
        overlaps = _host_routes_overlapping(TEST_CIDR)
        if overlaps:
            pytest.fail(f"the test network {TEST_CIDR} collides with host routes: {overlaps}", pytrace=False)
        ensure_isolated_network(conn, TEST_NETWORK, TEST_BRIDGE, TEST_CIDR)
        net_xml = conn.networkLookupByName(TEST_NETWORK).XMLDesc(0)
        assert "<forward" not in net_xml, f"{TEST_NETWORK} must be isolated (no <forward>): {net_xml}"
    finally:
        conn.close()
    return QEMU_URI


@pytest.fixture(scope="session")
def tiny_guest() -> dict[str, str]:
    """Build (or reuse) the tiny guest: paths of the qcow2 disk, kernel and initramfs."""
    proc = subprocess.run(
        [str(REPO / "scripts" / "build-tiny-guest.sh"), str(GUEST_CACHE)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/build-tiny-guest.sh failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    paths = {
        "disk": str(GUEST_CACHE / "tiny-guest.qcow2"),
        "kernel": str(GUEST_CACHE / "vmlinuz"),
        "ramdisk": str(GUEST_CACHE / "initrd.gz"),
    }
    for p in paths.values():
        assert os.path.isfile(p), p
    return paths


_addresses = itertools.count(10)


@pytest.fixture
def next_port(qemu_host: str):
    """Hand out (mac, ip) pairs on the test network: unique within the session, and not
    in use by another test run on this host (their DHCP entries are skipped)."""
    import libvirt
    from novalite_drivers.base import Port
    from novalite_drivers.libvirt.network import dhcp_hosts

    def in_use() -> set[str]:
        conn = libvirt.open(qemu_host)
        try:
            return {h.get("ip", "") for h in dhcp_hosts(conn, TEST_NETWORK)}
        finally:
            conn.close()

    def make() -> Port:
        taken = in_use()
        n = next(_addresses)
        while f"10.213.77.{n}" in taken:
            n = next(_addresses)
        if n > 99:
            raise RuntimeError("out of test addresses")
        return Port(
            mac=f"fa:16:3e:77:{os.getpid() % 256:02x}:{n:02x}",
            ip=f"10.213.77.{n}",
            network=TEST_NETWORK,
            prefix_len=24,
            gateway="10.213.77.1",
        )

    return make


@pytest.fixture
def qemu_instances_path() -> Iterator[Path]:
    # Not under pytest's tmp_path: that is mode 0700 and QEMU runs as another user.
    base = Path("/var/tmp/novalite-test-instances")
    base.mkdir(mode=0o755, exist_ok=True)
    path = base / uuid.uuid4().hex[:12]
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
async def qemu_driver(qemu_host: str, qemu_instances_path: Path) -> AsyncIterator:
    from novalite_drivers.libvirt import LibvirtDriver

    driver = LibvirtDriver(
        "qemu-host",
        {
            "uri": qemu_host,
            "virt_type": "qemu",
            "instances_path": str(qemu_instances_path),
            "network": TEST_NETWORK,
            "shutdown_timeout": 30,
        },
    )
    await driver.init_host()
    spawned_before = set(await driver.list_instances())
    try:
        yield driver
    finally:
        # Whatever a failing test left behind: only the instances this driver created.
        for u in set(await driver.list_instances()) - spawned_before:
            from novalite_drivers.base import Instance

            try:
                dom = driver._connection().lookupByUUIDString(u)
                if str(qemu_instances_path) in dom.XMLDesc(0):
                    await driver.destroy(Instance(uuid=u, name=dom.name()))
            except Exception:
                pass
        await driver.cleanup_host()
