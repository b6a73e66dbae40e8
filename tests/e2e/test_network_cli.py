"""End to end: the real ``openstack`` CLI's network commands against ``novalite serve``."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import free_port
from tests.e2e.cli import Cli, cli_for_state, read_banner, stop_serve

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    state = tmp_path_factory.mktemp("state")
    env = dict(
        os.environ,
        NOVALITE_STATE_DIR=str(state),
        NOVALITE_LISTEN=f"127.0.0.1:{free_port()}",
        NOVALITE_CONSOLE_LISTEN=f"127.0.0.1:{free_port()}",
        NOVALITE_FAKE_HOSTS="1",
    )
    env.pop("NOVALITE_ADMIN_PASSWORD", None)
    env.pop("NOVALITE_NETWORK_NAME", None)
    with open(state / "serve.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "novalite.cli", "serve"], stdout=subprocess.PIPE, stderr=log, text=True, env=env
        )
    text = read_banner(proc)
    if "use it:" not in text:
        stop_serve(proc)
        pytest.fail(f"novalite serve did not start:\n{text}\n{(state / 'serve.log').read_text()}")
    try:
        yield cli_for_state(state)
    finally:
        stop_serve(proc)


def test_private_network_is_there_on_first_start(cli: Cli) -> None:
    networks = cli.json("network", "list")
    [private] = [n for n in networks if n["Name"] == "private"]
    assert len(private["Subnets"]) == 1
    subnet = cli.json("subnet", "show", private["Subnets"][0])
    assert subnet["cidr"] == "10.199.0.0/24"
    assert cli.json("network", "show", "private")["shared"] is True


def test_network_subnet_port_lifecycle(cli: Cli) -> None:
    net = cli.json("network", "create", "lab-net")
    assert net["name"] == "lab-net" and net["status"] == "ACTIVE"
    assert net["id"] in cli.run("network", "list", "-f", "value", "-c", "ID")
    subnet = cli.json("subnet", "create", "--network", "lab-net", "--subnet-range", "10.9.0.0/24", "lab-subnet")
    assert subnet["cidr"] == "10.9.0.0/24" and subnet["gateway_ip"] == "10.9.0.1"
    assert subnet["network_id"] == net["id"]
    assert cli.json("network", "show", "lab-net")["subnets"] == [subnet["id"]]
    port = cli.json("port", "create", "--network", "lab-net", "p1")
    [fixed] = port["fixed_ips"]
    assert fixed["subnet_id"] == subnet["id"] and fixed["ip_address"].startswith("10.9.0.")
    assert port["status"] == "DOWN"
    fixed_port = cli.json(
        "port", "create", "--network", "lab-net", "--fixed-ip", "subnet=lab-subnet,ip-address=10.9.0.50", "p2"
    )
    assert fixed_port["fixed_ips"] == [{"subnet_id": subnet["id"], "ip_address": "10.9.0.50"}]
    out = cli.run(
        "port",
        "create",
        "--network",
        "lab-net",
        "--fixed-ip",
        "subnet=lab-subnet,ip-address=10.9.0.50",
        "p3",
        check=False,
    )
    assert "already allocated" in out
    listed = cli.json("port", "list", "--network", "lab-net")
    assert {p["Name"] for p in listed} == {"p1", "p2"}
    out = cli.run("network", "delete", "lab-net", check=False)
    assert "in use" in out.lower()
    cli.run("port", "delete", "p1", "p2")
    cli.run("subnet", "delete", "lab-subnet")
    cli.run("network", "delete", "lab-net")
    assert "lab-net" not in cli.run("network", "list", "-f", "value", "-c", "Name")


def test_security_groups_and_rules(cli: Cli) -> None:
    groups = cli.json("security", "group", "list")
    assert "default" in [g["Name"] for g in groups]
    web = cli.json("security", "group", "create", "--description", "web servers", "web")
    assert web["name"] == "web"
    rule = cli.json("security", "group", "rule", "create", "--protocol", "tcp", "--dst-port", "80", "web")
    assert rule["port_range_min"] == 80 and rule["port_range_max"] == 80 and rule["direction"] == "ingress"
    rules = cli.json("security", "group", "rule", "list", "web")
    assert rule["id"] in [r["ID"] for r in rules]
    cli.run("security", "group", "rule", "delete", rule["id"])
    assert rule["id"] not in cli.run("security", "group", "rule", "list", "web", "-f", "value", "-c", "ID")
    cli.run("security", "group", "delete", "web")
    assert "web" not in [g["Name"] for g in cli.json("security", "group", "list")]


def test_servers_on_networks_ports_and_security_groups(cli: Cli, tmp_path) -> None:
    """Nova's side (issue 12): ``server create --nic net-id=…,v4-fixed-ip=…`` / ``--port`` /
    ``--network`` / ``--security-group``, ``server add/remove security group``, ``server
    add/remove port``, ``port list --server``; the user's port outlives its server."""
    image_file = tmp_path / "tiny.img"
    image_file.write_bytes(b"\0" * 65536)
    cli.run("image", "create", "--file", str(image_file), "--disk-format", "raw", "--public", "net-img")
    net = cli.json("network", "create", "srv-net")
    cli.json("subnet", "create", "--network", "srv-net", "--subnet-range", "10.11.0.0/24", "srv-subnet")
    cli.json("network", "create", "other-net")
    cli.json("subnet", "create", "--network", "other-net", "--subnet-range", "10.12.0.0/24", "other-subnet")
    mine = cli.json("port", "create", "--network", "srv-net", "srv-port")
    cli.json("security", "group", "create", "web")

    server = cli.json(
        "server", "create", "--flavor", "m1.tiny", "--image", "net-img",
        "--nic", f"net-id={net['id']},v4-fixed-ip=10.11.0.20", "--port", "srv-port",
        "--security-group", "web", "--wait", "vm-net",
    )  # fmt: skip
    shown = cli.json("server", "show", "vm-net")
    addresses = shown["addresses"]
    assert addresses == {"srv-net": ["10.11.0.20", mine["fixed_ips"][0]["ip_address"]]}, addresses
    assert [g["name"] for g in shown["security_groups"]] == ["web", "default"]
    ports = cli.json("port", "list", "--server", "vm-net")
    assert {p["ID"] for p in ports} >= {mine["id"]} and len(ports) == 2

    cli.run("server", "add", "security", "group", "vm-net", "default")
    cli.run("server", "remove", "security", "group", "vm-net", "web")
    assert {g["name"] for g in cli.json("server", "show", "vm-net")["security_groups"]} == {"default"}
    out = cli.run("server", "remove", "security", "group", "vm-net", "web", check=False)
    assert "not associated" in out

    extra = cli.json("port", "create", "--network", "other-net", "extra-port")
    cli.run("server", "add", "port", "vm-net", "extra-port")
    assert "other-net" in cli.json("server", "show", "vm-net")["addresses"]
    interfaces = cli.json("port", "list", "--server", "vm-net")
    assert extra["id"] in {p["ID"] for p in interfaces}
    cli.run("server", "remove", "port", "vm-net", "extra-port")
    assert "other-net" not in cli.json("server", "show", "vm-net")["addresses"]
    assert cli.json("port", "show", "extra-port")["device_id"] == ""

    second = cli.json(
        "server", "create", "--flavor", "m1.tiny", "--image", "net-img", "--network", "other-net", "--wait", "vm-two"
    )
    assert list(cli.json("server", "show", "vm-two")["addresses"]) == ["other-net"]
    out = cli.run(
        "server", "create", "--flavor", "m1.tiny", "--image", "net-img", "--port", "srv-port", "vm-three", check=False
    )
    assert f"Port {mine['id']} is still in use." in out

    cli.run("server", "delete", "--wait", server["id"], second["id"])
    kept = cli.json("port", "show", "srv-port")
    assert kept["device_id"] == "" and kept["status"] == "DOWN"
    left = {p["Name"] for p in cli.json("port", "list", "--network", "srv-net")}
    assert left == {"srv-port"}  # the port made for vm-net went with it
