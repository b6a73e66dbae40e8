"""End to end: ``novalite serve`` as a subprocess, driven by the real ``openstack`` CLI.

This is the README's scenario, step by step, asserting on what the CLI prints.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.cli import Cli, cli_for_state, read_banner

pytestmark = pytest.mark.e2e


def tiny_qcow2(path: Path, virtual_size: int = 64 * 1024 * 1024) -> None:
    """A qcow2 header (magic, version 3, virtual size) padded to 64 KiB: enough for an image service."""
    header = b"QFI\xfb" + struct.pack(">I", 3) + b"\0" * 16 + struct.pack(">Q", virtual_size)
    path.write_bytes(header + b"\0" * (65536 - len(header)))


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    port = free_port()
    env = dict(
        os.environ,
        NOVALITE_STATE_DIR=str(state),
        NOVALITE_LISTEN=f"127.0.0.1:{port}",
        NOVALITE_FAKE_HOSTS="3",
        NOVALITE_REPORT_INTERVAL="1",
    )
    env.pop("NOVALITE_ADMIN_PASSWORD", None)
    log = open(state / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "novalite.cli", "serve"], stdout=subprocess.PIPE, stderr=log, text=True, env=env
    )
    text = read_banner(proc)
    assert "use it:" in text, f"novalite serve did not start:\n{text}\n{(state / 'serve.log').read_text()}"
    info = {"proc": proc, "state": state, "banner": text, "env": env, "port": port}
    yield info
    info["proc"].terminate()
    info["proc"].wait(timeout=30)
    log.close()


def cli_for(served) -> Cli:
    return cli_for_state(served["state"])


def test_serve_banner_tells_where_things_are(served):
    banner = served["banner"]
    assert f"state dir:    {served['state']}" in banner
    assert "admin password (shown once):" in banner  # generated on the first start
    assert f"OS_CLIENT_CONFIG_FILE={served['state'] / 'clouds.yaml'} OS_CLOUD=novalite" in banner
    assert (served["state"] / "novalite.db").exists()
    assert oct((served["state"] / "clouds.yaml").stat().st_mode & 0o777) == "0o600"


def test_the_readme_scenario(served, tmp_path):
    cli = cli_for(served)
    flavors = cli.json("flavor", "list")
    assert "m1.tiny" in {f["Name"] for f in flavors}

    # As the README says: any file is an image for the fake driver, a key made with ssh-keygen.
    image_file = tmp_path / "tiny.img"
    subprocess.run(f"head -c 1048576 /dev/zero > {image_file}", shell=True, check=True)
    image = cli.json("image", "create", "--file", str(image_file), "--disk-format", "raw", "--public", "tiny")
    assert image["status"] == "active" and image["size"] == 1048576 and image["visibility"] == "public"

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "k1")], check=True)
    pub = tmp_path / "k1.pub"
    kp = cli.json("keypair", "create", "--public-key", str(pub), "k1")
    assert kp["name"] == "k1" and kp["fingerprint"]

    server = cli.json(
        "server",
        "create",
        "--flavor",
        "m1.tiny",
        "--image",
        "tiny",
        "--key-name",
        "k1",
        "--nic",
        "none",
        "--wait",
        "vm1",
    )
    assert server["status"] == "ACTIVE"
    listed = cli.json("server", "list")
    assert [(s["Name"], s["Status"]) for s in listed] == [("vm1", "ACTIVE")]
    shown = cli.json("server", "show", "vm1")
    assert shown["key_name"] == "k1"
    assert "m1.tiny" in json.dumps(shown["flavor"]) and "tiny" in json.dumps(shown["image"])

    cli.run("server", "stop", "vm1")
    cli.wait_status("vm1", "SHUTOFF")
    conflict = cli.run("server", "pause", "vm1", check=False)
    assert "409" in conflict or "Cannot 'pause'" in conflict
    cli.run("server", "start", "vm1")
    cli.wait_status("vm1", "ACTIVE")
    cli.run("server", "reboot", "--wait", "vm1")
    cli.wait_status("vm1", "ACTIVE")
    cli.run("server", "pause", "vm1")
    cli.wait_status("vm1", "PAUSED")
    cli.run("server", "unpause", "vm1")
    cli.wait_status("vm1", "ACTIVE")
    cli.run("server", "suspend", "vm1")
    cli.wait_status("vm1", "SUSPENDED")
    cli.run("server", "resume", "vm1")
    cli.wait_status("vm1", "ACTIVE")

    log = cli.run("console", "log", "show", "vm1")
    assert "novalite fake guest vm1 booting" in log

    events = cli.json("server", "event", "list", "vm1")
    actions = [e["Action"] for e in events]
    for expected in ("create", "stop", "start", "reboot", "pause", "unpause", "suspend", "resume"):
        assert expected in actions

    hypervisors = cli.json("hypervisor", "list")
    assert len(hypervisors) == 3 and all(h["State"] == "up" for h in hypervisors)
    services = cli.json("compute", "service", "list")
    binaries = {s["Binary"] for s in services}
    assert {"nova-compute", "nova-conductor", "nova-scheduler"} <= binaries
    assert all(s["State"] == "up" for s in services)
    zones = cli.run("availability", "zone", "list", "--compute")
    assert "nova" in zones and "available" in zones
    limits = cli.json("limits", "show", "--absolute")
    by_name = {row["Name"]: row["Value"] for row in limits}
    assert by_name["total_instances_used"] == 1 and by_name["max_total_instances"] == 10

    cli.run("server", "delete", "--wait", "vm1")
    assert cli.json("server", "list") == []


def test_the_readme_network_steps(served):
    """The README's network lines: a network of one's own, a server on it, its address there."""
    cli = cli_for(served)
    net = cli.json("network", "create", "lab-net")
    assert net["name"] == "lab-net" and net["status"] == "ACTIVE"
    sub = cli.json("subnet", "create", "--network", "lab-net", "--subnet-range", "10.10.0.0/24", "lab-subnet")
    assert sub["cidr"] == "10.10.0.0/24" and sub["gateway_ip"] == "10.10.0.1"
    server = cli.json(
        "server", "create", "--flavor", "m1.tiny", "--image", "tiny", "--network", "lab-net", "--wait", "vm2"
    )
    assert server["status"] == "ACTIVE"
    shown = cli.json("server", "show", "vm2", "-c", "addresses")
    (address,) = shown["addresses"]["lab-net"]
    assert address.startswith("10.10.0.") and address != "10.10.0.1"
    cli.run("server", "delete", "--wait", "vm2")
    assert cli.json("port", "list", "--network", "lab-net") == []  # its port went with it
    cli.run("subnet", "delete", "lab-subnet")
    cli.run("network", "delete", "lab-net")


def test_projects_users_and_isolation(served, tmp_path):
    cli = cli_for(served)
    cli.run("project", "create", "lab")
    cli.run("user", "create", "--project", "lab", "--password", "alice-pw", "alice")
    cli.run("role", "add", "--user", "alice", "--project", "lab", "member")
    alice = ("alice", "alice-pw", "lab")

    image_file = tmp_path / "alice.qcow2"
    tiny_qcow2(image_file)
    cli.run(
        "image", "create", "--file", str(image_file), "--disk-format", "qcow2", "--private", "alice-img", user=alice
    )
    cli.run(
        "server",
        "create",
        "--flavor",
        "m1.tiny",
        "--image",
        "alice-img",
        "--nic",
        "none",
        "--wait",
        "alice-vm",
        user=alice,
    )
    admin_img = tmp_path / "admin.qcow2"
    tiny_qcow2(admin_img)
    cli.run("image", "create", "--file", str(admin_img), "--disk-format", "qcow2", "--private", "admin-img")
    cli.run("server", "create", "--flavor", "m1.tiny", "--image", "admin-img", "--nic", "none", "--wait", "admin-vm")

    mine = cli.json("server", "list", user=alice)
    assert [s["Name"] for s in mine] == ["alice-vm"]
    images = {i["Name"] for i in cli.json("image", "list", user=alice)}
    assert "alice-img" in images and "admin-img" not in images
    denied = cli.run("server", "show", "admin-vm", check=False, user=alice)
    assert "No Server found" in denied or "404" in denied
    forbidden = cli.run("hypervisor", "list", check=False, user=alice)
    assert "403" in forbidden or "Policy doesn't allow" in forbidden
    everyone = cli.json("server", "list", "--all-projects")
    assert {s["Name"] for s in everyone} == {"alice-vm", "admin-vm"}

    cli.run("server", "delete", "--wait", "alice-vm", user=alice)
    cli.run("server", "delete", "--wait", "admin-vm")


def test_second_start_reuses_state(served):
    """Restart on the same state dir: same admin password, servers and images kept."""
    proc = served["proc"]
    cli = cli_for(served)
    cli.run("image", "show", "tiny")
    proc.terminate()
    proc.wait(timeout=30)
    new = subprocess.Popen(
        [sys.executable, "-m", "novalite.cli", "serve"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=served["env"],
    )
    served["proc"] = new
    text = read_banner(new)
    assert "shown once" not in text and "kept from the first start" in text
    assert cli.json("image", "show", "tiny")["status"] == "active"
