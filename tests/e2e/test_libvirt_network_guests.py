"""End to end on real QEMU guests (issue 12): guest-to-guest traffic on novalite's own
networks, and a security group rule added and deleted with the ``openstack`` CLI while the
guests run.

One ``novalite serve`` (the ``cloud`` fixture of tests/e2e/test_libvirt_cli.py: libvirt
driver on ``qemu:///system``, TCG, host networking on as for any real hypervisor) and three
tiny guests booted at once:

* networks ``net-a`` and ``net-b`` are ``local`` networks with the *same* subnet
  (10.96.0.0/24; disjoint allocation pools, so every guest's address is distinct): only
  their bridges keep them apart;
* ``g2`` (on A) runs a user_data script listening on TCP 7777 (busybox ``nc``); ``g3`` (on B)
  nothing; ``g1`` (on A) runs a script that, in a loop, pings g2 and g3 and connects to g2's
  TCP 7777, printing one ``nl-probe`` line per round on its serial console, which the test
  reads with ``openstack console log show``;
* all three are in the group ``nl-guests``: egress anywhere, ingress ICMP only.

Asserted: g1 pings g2; g1 never reaches g3 (not once, over the whole test); TCP 7777 from g1
to g2 is refused until ``security group rule create --protocol tcp --dst-port 7777``, then
passes, and is refused again after ``security group rule delete``. Everything is isolated:
the networks' bridges have no address on the host, DHCP runs in namespaces.
"""

from __future__ import annotations

import re
import time

import pytest

from tests.e2e import test_libvirt_cli as lv
from tests.e2e.test_libvirt_cli import READY, console, tiny_image, wait_console

#: The libvirt cloud of tests/e2e/test_libvirt_cli.py, one ``novalite serve`` for this module.
cloud = lv.cloud
tiny_guest_files = lv.tiny_guest_files

pytestmark = [pytest.mark.libvirt, pytest.mark.e2e]

CIDR = "10.96.0.0/24"
POOLS = {"net-a": ("10.96.0.10", "10.96.0.99"), "net-b": ("10.96.0.100", "10.96.0.199")}
BOOT_WAIT = 180.0  # three guests booting at once under TCG on a shared 2-core machine
RULE_WAIT = 20.0  # a rule change seen by g1's probe loop (a round is ~1.5-3.5 s)
PROBE = re.compile(r"nl-probe (\d+) ping-g2=(ok|fail) ping-g3=(ok|fail) tcp-g2=(ok|fail)")

LISTENER = """#!/bin/sh
printf '#!/bin/sh\\necho nl-pong\\n' >/tmp/pong
chmod 0755 /tmp/pong
echo "nl-listen: 7777"
while true; do nc -l -p 7777 -e /tmp/pong; done
"""

PROBER = """#!/bin/sh
n=0
while true; do
    n=$((n + 1))
    if ping -c 1 -W 1 {g2} >/dev/null 2>&1; then a=ok; else a=fail; fi
    if ping -c 1 -W 1 {g3} >/dev/null 2>&1; then b=ok; else b=fail; fi
    if timeout 3 nc -w 2 {g2} 7777 </dev/null 2>/dev/null | grep -q nl-pong; then c=ok; else c=fail; fi
    echo "nl-probe $n ping-g2=$a ping-g3=$b tcp-g2=$c"
    sleep 0.5
done
"""


def probes(cli) -> list[tuple[int, bool, bool, bool]]:  # type: ignore[no-untyped-def]
    """g1's probe rounds so far: (round, ping g2, ping g3, tcp g2)."""
    return [(int(n), a == "ok", b == "ok", c == "ok") for n, a, b, c in PROBE.findall(console(cli, "g1"))]


def wait_probes(cli, what: str, check, within: float = RULE_WAIT):  # type: ignore[no-untyped-def]
    """Poll g1's console until ``check(rounds)`` is true; return the rounds."""
    deadline = time.monotonic() + within
    rounds = probes(cli)
    while not check(rounds):
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {within}s: {what}\n{console(cli, 'g1')[-3000:]}")
        time.sleep(1)
        rounds = probes(cli)
    return rounds


def fixed_ip(cli, server_id: str) -> str:  # type: ignore[no-untyped-def]
    [port] = cli.json("port", "list", "--device-id", server_id)
    [ip] = port["Fixed IP Addresses"]
    return ip["ip_address"]


def test_guests_reach_each_other_and_security_group_rules_apply_live(cloud, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from novalite_drivers.libvirt import bridges

    cli = cloud["cli"]
    tiny_image(cloud)
    took: dict[str, float] = {}
    nets = {}
    for name, (start, end) in POOLS.items():
        nets[name] = cli.json("network", "create", "--provider-network-type", "local", name)["id"]
        cli.json(
            "subnet", "create", "--network", name, "--subnet-range", CIDR,
            "--allocation-pool", f"start={start},end={end}", f"{name}-v4",
        )  # fmt: skip
    group = cli.json("security", "group", "create", "nl-guests")
    assert {(r["direction"], r["protocol"]) for r in group["rules"]} == {("egress", None)}, group["rules"]
    cli.json("security", "group", "rule", "create", "--ingress", "--protocol", "icmp", "nl-guests")
    listener = tmp_path / "listener.sh"
    listener.write_text(LISTENER)

    def create(name: str, net: str, *extra: str) -> str:
        return cli.json(
            "server", "create", "--flavor", "m1.tiny", "--image", "tiny", "--network", net,
            "--security-group", "nl-guests", *extra, name,
        )["id"]  # fmt: skip

    ids: dict[str, str] = {}
    try:
        t0 = time.monotonic()
        ids["g2"] = create("g2", "net-a", "--config-drive", "True", "--user-data", str(listener))
        ids["g3"] = create("g3", "net-b")
        g2_ip, g3_ip = fixed_ip(cli, ids["g2"]), fixed_ip(cli, ids["g3"])
        prober = tmp_path / "prober.sh"
        prober.write_text(PROBER.format(g2=g2_ip, g3=g3_ip))
        ids["g1"] = create("g1", "net-a", "--config-drive", "True", "--user-data", str(prober), "--wait")
        g1_ip = fixed_ip(cli, ids["g1"])
        for name in ("g2", "g3"):
            cli.wait_status(name, "ACTIVE", timeout=BOOT_WAIT)
        took["all ACTIVE"] = time.monotonic() - t0
        for name, ip in (("g1", g1_ip), ("g2", g2_ip), ("g3", g3_ip)):
            out = wait_console(cli, name, READY, within=BOOT_WAIT)
            assert f"novalite-guest-ip: {ip}" in out, (name, ip, out[-2000:])  # its port's address, by DHCP
        took["all ready"] = time.monotonic() - t0
        addresses = cli.json("server", "show", "g3")["addresses"]
        assert addresses == {"net-b": [g3_ip]}, addresses
        br_a, br_b = bridges.bridge_name(nets["net-a"]), bridges.bridge_name(nets["net-b"])
        assert br_a in bridges.list_bridges() and br_b in bridges.list_bridges()

        # g1 pings g2 (same network); the listener is up, yet TCP 7777 is not allowed in.
        wait_console(cli, "g2", "nl-listen: 7777", within=BOOT_WAIT)
        rounds = wait_probes(cli, "g1 pings g2", lambda r: any(p[1] for p in r), within=BOOT_WAIT)
        took["g1 pings g2"] = time.monotonic() - t0
        first = max(p[0] for p in rounds)
        rounds = wait_probes(cli, "two more rounds", lambda r: max(p[0] for p in r) >= first + 2)
        later = [p for p in rounds if p[0] > first]
        assert all(p[1] for p in later), f"g1 stopped reaching g2: {later}"
        assert not any(p[3] for p in rounds), f"TCP 7777 passed without a rule: {rounds}"

        # The rule added: g1's next rounds connect.
        rule = cli.json(
            "security", "group", "rule", "create", "--ingress", "--protocol", "tcp", "--dst-port", "7777", "nl-guests"
        )
        t_rule = time.monotonic()
        last = max(p[0] for p in probes(cli))
        rounds = wait_probes(cli, "TCP 7777 passes after the rule", lambda r: any(p[3] for p in r if p[0] > last))
        took["TCP open after rule create"] = time.monotonic() - t_rule
        opened = min(p[0] for p in rounds if p[0] > last and p[3])
        rounds = wait_probes(cli, "a round after", lambda r: max(p[0] for p in r) >= opened + 1)
        assert all(p[3] for p in rounds if p[0] > opened), f"TCP 7777 not steadily open: {rounds}"

        # The rule deleted: refused again, and stays so.
        cli.run("security", "group", "rule", "delete", rule["id"])
        t_rule = time.monotonic()
        last = max(p[0] for p in probes(cli))
        rounds = wait_probes(cli, "TCP 7777 refused again", lambda r: any(not p[3] for p in r if p[0] > last))
        took["TCP closed after rule delete"] = time.monotonic() - t_rule
        closed = min(p[0] for p in rounds if p[0] > last and not p[3])
        rounds = wait_probes(cli, "a round after", lambda r: max(p[0] for p in r) >= closed + 1)
        assert not any(p[3] for p in rounds if p[0] > closed), f"TCP 7777 still passes: {rounds}"

        # Over the whole test: g3 on the other network never answered.
        assert not any(p[2] for p in rounds), f"g1 reached g3 on another network: {rounds}"
        assert len(rounds) >= 6
    finally:
        if ids:
            cli.run("server", "delete", "--wait", *ids.values(), timeout=240, check=False)
    print(
        "network guests:",
        ", ".join(f"{k} {v:.1f}s" for k, v in took.items()),
        f"({len(rounds)} probe rounds)",
    )
    for name in ("net-a", "net-b"):
        assert bridges.bridge_name(nets[name]) not in bridges.list_bridges(), f"{name}'s bridge left behind"
        cli.run("network", "delete", name)
    cli.run("security", "group", "delete", "nl-guests")
