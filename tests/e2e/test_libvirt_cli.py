"""End to end on real QEMU guests: ``novalite serve --driver libvirt`` driven by the ``openstack`` CLI.

One ``novalite serve`` (libvirt driver, ``qemu:///system``, TCG) serves the module. Guests
are the tiny guest of scripts/build-tiny-guest.sh, which prints what it sees on its serial
console (banner, the IP its DHCP got, what it found on the config drive); the tests read it
back with ``openstack console log show``.

Network safety: guests sit on the ISOLATED libvirt network ``novalite-e2e-<pid>`` (no
``<forward>``: nothing leaves this host) on a free /24 of 10.213.100-199.0, which is
novalite's ``network_cidr``. ``novalite serve`` creates it (the libvirt driver's prepare_host); the
fixture removes it afterwards, and removes those of earlier runs that died. Two runs on one
host do not meet (own network, own instances dir; the driver suffixes a domain name another
cloud already uses). Needs libvirtd (scripts/setup-libvirt.sh): without it these tests fail,
they never skip.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.drivers.conftest import GUEST_CACHE, REPO
from tests.e2e.cli import Cli, cli_for_state, start_serve, stop_serve

pytestmark = [pytest.mark.libvirt, pytest.mark.e2e]

URI = os.environ.get("NOVALITE_TEST_LIBVIRT_URI", "qemu:///system")
#: One isolated network per test run (name and subnet), so that runs on one host never meet.
NETWORK = f"novalite-e2e-{os.getpid()}"
FLAVOR_MB = 512  # m1.tiny
BANNER = "novalite-tiny-guest booted"
READY = "novalite-guest-ready"
BOOT_WAIT = 90.0  # create -> banner is ~6-12 s under TCG on an idle 2-core machine


# -- fixtures --------------------------------------------------------------------------------


def _libvirt():
    try:
        import libvirt
    except ImportError:
        pytest.fail("libvirt-python is not installed: run scripts/setup-libvirt.sh", pytrace=False)
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors are raised; no stderr noise
    return libvirt


def _open():
    libvirt = _libvirt()
    try:
        return libvirt.open(URI)
    except libvirt.libvirtError as exc:
        pytest.fail(
            f"libvirtd is not reachable at {URI} ({exc.get_error_message()}): run scripts/setup-libvirt.sh first",
            pytrace=False,
        )


def _network_or_none(conn, name: str):
    libvirt = _libvirt()
    try:
        return conn.networkLookupByName(name)
    except libvirt.libvirtError:
        return None


def _routes_overlapping(cidr: str) -> list[str]:
    net = ipaddress.ip_network(cidr)
    out = subprocess.run(["ip", "-j", "-4", "route"], check=True, capture_output=True, text=True).stdout
    bad = []
    for route in json.loads(out or "[]"):
        dst = route.get("dst", "")
        if dst in ("", "default"):
            continue
        if ipaddress.ip_network(dst, strict=False).overlaps(net):
            bad.append(f"{dst} dev {route.get('dev')}")
    return bad


def _remove_network(conn, name: str) -> None:
    net = _network_or_none(conn, name)
    if net is not None:
        if net.isActive():
            net.destroy()
        if net.isPersistent():
            net.undefine()


def _network_subnets(conn) -> list[ipaddress.IPv4Network]:
    subnets = []
    for net in conn.listAllNetworks(0):
        for ip in ET.fromstring(net.XMLDesc(0)).findall("./ip"):
            if ip.get("address") and (ip.get("family") or "ipv4") == "ipv4":
                mask = ip.get("prefix") or ip.get("netmask") or "32"
                subnets.append(ipaddress.ip_interface(f"{ip.get('address')}/{mask}").network)
    return subnets


def _prepare_network(conn) -> str:
    """Remove networks of earlier runs that died (their pid is gone); pick a free subnet."""
    for net in conn.listAllNetworks(0):
        m = re.fullmatch(r"novalite-e2e-(\d+)", net.name())
        if m and not os.path.exists(f"/proc/{m.group(1)}") and "<forward" not in net.XMLDesc(0):
            _remove_network(conn, net.name())
    taken = _network_subnets(conn)
    start = random.randrange(100)
    for i in range(100):
        cidr = ipaddress.ip_network(f"10.213.{100 + (start + i) % 100}.0/24")
        if not any(cidr.overlaps(t) for t in taken) and not _routes_overlapping(str(cidr)):
            return str(cidr)
    pytest.fail("no free /24 in 10.213.100.0-10.213.199.255 for the test network", pytrace=False)


def _check_host_fits_guests(conn, guests: int = 2) -> None:
    """m1.tiny guests get 512 MiB each: make sure the host has room for them."""
    free_mb = conn.getFreeMemory() // (1024 * 1024)
    with open("/proc/meminfo") as f:
        meminfo = {line.split(":")[0]: int(line.split()[1]) // 1024 for line in f}
    available = min(free_mb, meminfo.get("MemAvailable", free_mb))
    need = guests * (FLAVOR_MB + 128) + 256  # guest RAM + QEMU overhead + slack
    if available < need:
        pytest.fail(f"only {available} MiB free; the libvirt e2e tests need about {need} MiB", pytrace=False)


@pytest.fixture(scope="session")
def tiny_guest_files() -> dict[str, str]:
    """The tiny guest, built (or reused) in the driver tests' cache directory."""
    proc = subprocess.run(
        [str(REPO / "scripts" / "build-tiny-guest.sh"), str(GUEST_CACHE)], capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/build-tiny-guest.sh failed:\n{proc.stdout}\n{proc.stderr}", pytrace=False)
    files = {
        "disk": str(GUEST_CACHE / "tiny-guest.qcow2"),
        "kernel": str(GUEST_CACHE / "vmlinuz"),
        "ramdisk": str(GUEST_CACHE / "initrd.gz"),
    }
    for path in files.values():
        assert os.path.isfile(path), path
    return files


@pytest.fixture(scope="module")
def cloud(request, tmp_path_factory, tiny_guest_files):
    """``novalite serve`` with the libvirt driver; yields what the tests need to look around.

    A module using it may set ``SERVE_ENV`` (a dict of ``NOVALITE_*`` settings) for its serve."""
    libvirt = _libvirt()
    conn = _open()
    _check_host_fits_guests(conn)
    cidr = _prepare_network(conn)
    state = tmp_path_factory.mktemp("state")
    # Not under pytest's tmp dir: that is mode 0700 and QEMU runs as another user.
    instances = Path(tempfile.mkdtemp(prefix="novalite-e2e-", dir="/var/tmp"))
    os.chmod(instances, 0o755)
    options = {
        "uri": URI,
        "virt_type": "qemu",
        "instances_path": str(instances),
        "shutdown_timeout": 30,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOVALITE_", "OS_"))}
    env.update(
        NOVALITE_STATE_DIR=str(state),
        NOVALITE_LISTEN=f"127.0.0.1:{free_port()}",
        NOVALITE_CONSOLE_LISTEN="127.0.0.1:0",
        NOVALITE_DRIVER="libvirt",
        NOVALITE_DRIVER_OPTIONS=json.dumps(options),
        NOVALITE_NETWORK_NAME=NETWORK,  # the network service's name of the built-in network
        NOVALITE_GUEST_NETWORK_NAME=NETWORK,  # and the libvirt network its ports are on
        NOVALITE_NETWORK_CIDR=cidr,
        NOVALITE_REPORT_INTERVAL="2",
        NOVALITE_SYNC_POWER_STATE_INTERVAL="3600",  # power states come from libvirt's events
    )
    env.update(getattr(request.module, "SERVE_ENV", {}))
    proc = None
    try:
        proc, banner = start_serve(env, state / "serve.log")
        net = conn.networkLookupByName(NETWORK)
        assert "<forward" not in net.XMLDesc(0), "novalite must have created an isolated network"
        yield {
            "cli": cli_for_state(state),
            "banner": banner,
            "conn": conn,
            "instances": instances,
            "files": tiny_guest_files,
            "log": state / "serve.log",
            "cidr": cidr,
        }
    finally:
        if proc is not None:
            stop_serve(proc)
        # Whatever a failing test left: only domains whose disks are in our instances dir.
        for dom in conn.listAllDomains(0):
            try:
                if str(instances) in dom.XMLDesc(0):
                    if dom.isActive():
                        dom.destroy()
                    dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE)
            except libvirt.libvirtError:
                pass
        _remove_network(conn, NETWORK)
        conn.close()
        shutil.rmtree(instances, ignore_errors=True)


# -- helpers ---------------------------------------------------------------------------------


def console(cli: Cli, server: str) -> str:
    return cli.run("console", "log", "show", server)


def wait_console(cli: Cli, server: str, text: str, count: int = 1, within: float = BOOT_WAIT) -> str:
    """Poll ``console log show`` until ``text`` appears ``count`` times."""
    deadline = time.monotonic() + within
    out = ""
    while time.monotonic() < deadline:
        out = console(cli, server)
        if out.count(text) >= count:
            return out
        time.sleep(1)
    raise AssertionError(f"{text!r} (x{count}) not in the console of {server} within {within}s:\n{out[-3000:]}")


def domain(cloud, server_id: str):
    libvirt = _libvirt()
    try:
        return cloud["conn"].lookupByUUIDString(server_id)
    except libvirt.libvirtError:
        return None


def dom_state(cloud, server_id: str) -> int:
    dom = domain(cloud, server_id)
    assert dom is not None, f"no libvirt domain for {server_id}"
    return dom.state()[0]


def dhcp_macs(cloud) -> set[str]:
    root = ET.fromstring(cloud["conn"].networkLookupByName(NETWORK).XMLDesc(0))
    return {h.get("mac", "").lower() for h in root.findall("./ip/dhcp/host")}


def delete_and_check_gone(cloud, server: str, server_id: str) -> None:
    cli = cloud["cli"]
    cli.run("server", "delete", "--wait", server)
    assert domain(cloud, server_id) is None, "the libvirt domain is still defined"
    assert not (cloud["instances"] / server_id).exists(), "instance files were left behind"
    assert sorted(p.name for p in cloud["instances"].iterdir()) in ([], ["_base"])
    assert server not in {s["Name"] for s in cli.json("server", "list")}


def tiny_image(cloud) -> str:
    """Upload the tiny guest's qcow2 as image ``tiny`` once per module; return its id."""
    if "tiny_image" not in cloud:
        image = cloud["cli"].json(
            "image", "create", "--file", cloud["files"]["disk"], "--disk-format", "qcow2", "tiny"
        )  # fmt: skip
        assert image["status"] == "active"
        cloud["tiny_image"] = image["id"]
    return cloud["tiny_image"]


def http_get(ip: str, within: float = 20) -> str:
    deadline = time.monotonic() + within
    while True:
        try:
            with urllib.request.urlopen(f"http://{ip}/", timeout=2) as resp:  # the guest's busybox httpd
                return resp.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


# -- tests -----------------------------------------------------------------------------------


def test_banner_names_driver_and_virt_type(cloud):
    banner = cloud["banner"]
    assert "driver libvirt (virt_type qemu: TCG emulation, qemu:///system)" in banner
    assert f"guest network: {NETWORK} {cloud['cidr']} (isolated libvirt network" in banner
    assert "created now" in banner


def test_boot_inspect_power_cycle_and_delete(cloud):
    libvirt = _libvirt()
    cli = cloud["cli"]
    tiny_image(cloud)
    t0 = time.monotonic()
    server = cli.json("server", "create", "--flavor", "m1.tiny", "--image", "tiny", "--nic", "auto", "--wait", "vm1")
    active_after = time.monotonic() - t0
    assert server["status"] == "ACTIVE"
    sid = server["id"]
    dom = domain(cloud, sid)
    assert dom is not None and dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    xml = dom.XMLDesc(0)
    assert "type='qemu'" in xml.split("\n", 1)[0]  # TCG, never KVM
    assert dom.info()[1] == FLAVOR_MB * 1024 and dom.info()[3] == 1  # m1.tiny: 512 MiB, 1 vCPU

    # The guest really booted, and the address it got is the one the API shows.
    out = wait_console(cli, "vm1", READY)
    print(f"vm1: ACTIVE after {active_after:.1f}s (CLI), guest ready after {time.monotonic() - t0:.1f}s")
    assert BANNER in out
    guest_ips = re.findall(r"novalite-guest-ip: (\S+)", out)
    addresses = cli.json("server", "show", "vm1")["addresses"]
    assert list(addresses) == [NETWORK]
    assert guest_ips == addresses[NETWORK], (guest_ips, addresses)
    ip = guest_ips[0]
    assert ipaddress.ip_address(ip) in ipaddress.ip_network(cloud["cidr"])
    assert http_get(ip).startswith("novalite-tiny-guest")  # reachable from the host, on the isolated network
    assert "novalite-config-drive: none" in out

    cli.run("server", "stop", "vm1")
    cli.wait_status("vm1", "SHUTOFF", timeout=60)
    assert dom_state(cloud, sid) == libvirt.VIR_DOMAIN_SHUTOFF
    assert "power button pressed" in console(cli, "vm1")  # a clean ACPI shutdown, not a hard one

    cli.run("server", "start", "vm1")
    cli.wait_status("vm1", "ACTIVE", timeout=60)
    assert dom_state(cloud, sid) == libvirt.VIR_DOMAIN_RUNNING
    wait_console(cli, "vm1", READY, count=2)  # booted again (acpid is up: soft reboot will work)

    cli.run("server", "reboot", "--wait", "vm1")
    cli.wait_status("vm1", "ACTIVE", timeout=60)
    wait_console(cli, "vm1", BANNER, count=3)

    cli.run("server", "pause", "vm1")
    cli.wait_status("vm1", "PAUSED")
    assert dom_state(cloud, sid) == libvirt.VIR_DOMAIN_PAUSED
    cli.run("server", "unpause", "vm1")
    cli.wait_status("vm1", "ACTIVE")
    assert dom_state(cloud, sid) == libvirt.VIR_DOMAIN_RUNNING

    cli.run("server", "suspend", "vm1")
    cli.wait_status("vm1", "SUSPENDED", timeout=60)
    assert dom_state(cloud, sid) == libvirt.VIR_DOMAIN_SHUTOFF and domain(cloud, sid).hasManagedSaveImage(0)
    cli.run("server", "resume", "vm1")
    cli.wait_status("vm1", "ACTIVE", timeout=60)
    assert dom_state(cloud, sid) == libvirt.VIR_DOMAIN_RUNNING
    assert http_get(ip).startswith("novalite-tiny-guest")  # the same guest, memory restored

    # Powered off behind novalite's back (ACPI through libvirt, as when the guest shuts itself
    # down): libvirt's lifecycle event turns the server SHUTOFF, no periodic sync involved.
    domain(cloud, sid).shutdown()
    cli.wait_status("vm1", "SHUTOFF", timeout=30)

    actions = {e["Action"] for e in cli.json("server", "event", "list", "vm1")}
    assert {"create", "stop", "start", "reboot", "pause", "unpause", "suspend", "resume"} <= actions

    mac = dom.XMLDesc(0).split("<mac address='", 1)[1][:17]
    assert mac in dhcp_macs(cloud)
    delete_and_check_gone(cloud, "vm1", sid)
    assert mac not in dhcp_macs(cloud)


def test_kernel_and_ramdisk_image(cloud, tmp_path):
    cli = cloud["cli"]
    files = cloud["files"]
    kernel = cli.json(
        "image", "create", "--file", files["kernel"], "--disk-format", "aki", "--container-format", "aki", "tiny-aki"
    )
    ramdisk = cli.json(
        "image", "create", "--file", files["ramdisk"], "--disk-format", "ari", "--container-format", "ari", "tiny-ari"
    )
    root = tmp_path / "root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(root), "64M"], check=True)
    cli.run(
        "image", "create", "--file", str(root), "--disk-format", "qcow2",
        "--property", f"kernel_id={kernel['id']}",
        "--property", f"ramdisk_id={ramdisk['id']}",
        "--property", "os_command_line=console=tty0 console=ttyS0,115200 novalite-direct-boot",
        "tiny-ami",
    )  # fmt: skip
    server = cli.json("server", "create", "--flavor", "m1.tiny", "--image", "tiny-ami", "--wait", "vm-aki")
    assert server["status"] == "ACTIVE"
    out = wait_console(cli, "vm-aki", BANNER)
    assert "Command line: console=tty0 console=ttyS0,115200 novalite-direct-boot" in out
    assert "SYSLINUX" not in out  # no boot loader: QEMU loaded the kernel and initramfs itself
    xml = domain(cloud, server["id"]).XMLDesc(0)
    assert "<kernel>" in xml and "<initrd>" in xml
    delete_and_check_gone(cloud, "vm-aki", server["id"])


def test_config_drive_read_by_the_guest(cloud, tmp_path):
    cli = cloud["cli"]
    tiny_image(cloud)
    user_data = tmp_path / "user-data.txt"
    user_data.write_text("#cloud-config from the novalite e2e test\nsecond line\n")
    server = cli.json(
        "server", "create", "--flavor", "m1.tiny", "--image", "tiny", "--nic", "auto",
        "--config-drive", "True", "--user-data", str(user_data), "--wait", "vm-cd",
    )  # fmt: skip
    assert server["status"] == "ACTIVE"
    out = wait_console(cli, "vm-cd", READY)
    assert re.search(r"novalite-config-drive: /dev/\w+", out), out[-2000:]
    assert f"novalite-instance-uuid: {server['id']}" in out
    assert "novalite-hostname: vm-cd" in out
    assert "novalite-user-data: #cloud-config from the novalite e2e test" in out
    delete_and_check_gone(cloud, "vm-cd", server["id"])


def test_agent_start_checks_the_guest_network(tmp_path, monkeypatch):
    """The libvirt driver's prepare_host on libvirt's test:/// driver: an existing network must
    serve network_cidr; a missing one is created isolated (unless create_network is off)."""
    from novalite_drivers.base import DriverError, GuestNetwork
    from novalite_drivers.libvirt import LibvirtDriver

    from tests.drivers.conftest import NODE_XML

    libvirt = _libvirt()
    node = tmp_path / "node.xml"
    node.write_text(NODE_XML.format(name="lab"))  # network "lab" on 10.213.99.0/24
    uri = f"test://{node}"

    def prepare_host(name: str, cidr: str, **options) -> str | None:
        return LibvirtDriver.prepare_host({"uri": uri, **options}, GuestNetwork(name, cidr))

    with pytest.raises(DriverError, match=r"serves 10\.213\.99\.0/24, but network_cidr is 10\.213\.98\.0/24"):
        prepare_host("lab", "10.213.98.0/24")
    assert prepare_host("lab", "10.213.99.0/24") == "lab 10.213.99.0/24 (isolated libvirt network on nlunit0)"
    with pytest.raises(DriverError, match="does not exist and create_network is off"):
        prepare_host("other", "10.213.97.0/24", create_network=False)

    # test:/// keeps state per connection: look at what the function created through its own URI.
    created = []
    real_open = libvirt.open

    def spy(name):
        conn = real_open(name)
        created.append(conn)
        conn.close = lambda: 0  # keep it open so the test can look inside
        return conn

    monkeypatch.setattr(libvirt, "open", spy)
    line = prepare_host("other", "10.213.97.0/24")
    assert "isolated libvirt network" in line and "created now" in line
    xml = created[0].networkLookupByName("other").XMLDesc(0)
    assert "<forward" not in xml and "address='10.213.97.1'" in xml and "prefix='24'" in xml


def test_domain_name_clash_gets_a_suffix():
    """Two clouds on one libvirt host both name their first guest instance-00000001."""
    from novalite_drivers.base import Instance
    from novalite_drivers.libvirt import LibvirtDriver

    conn = _libvirt().open("test:///default")  # has a domain named "test"
    try:
        uuid = "8c6a3f7e-0000-4000-8000-000000000001"
        assert LibvirtDriver._domain_name(conn, Instance(uuid=uuid, name="test")) == "test-8c6a3f7e"
        assert LibvirtDriver._domain_name(conn, Instance(uuid=uuid, name="instance-00000001")) == "instance-00000001"
    finally:
        conn.close()
