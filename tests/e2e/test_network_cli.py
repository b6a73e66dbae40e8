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
