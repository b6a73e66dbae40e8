"""End to end (issue 11): ``novalite serve`` with fake hosts that boot from the image's bytes,
driven by the real ``openstack`` CLI: server image create, backups with rotation, rebuild,
shelve and unshelve, as a user types them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.e2e.cli import Cli, cli_for_state, read_banner

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cli(tmp_path_factory):  # type: ignore[no-untyped-def]
    state = tmp_path_factory.mktemp("state")
    env = dict(
        os.environ,
        NOVALITE_STATE_DIR=str(state),
        NOVALITE_LISTEN=f"127.0.0.1:{free_port()}",
        NOVALITE_CONSOLE_LISTEN=f"127.0.0.1:{free_port()}",
        NOVALITE_FAKE_HOSTS="2",
        NOVALITE_REPORT_INTERVAL="1",
        NOVALITE_DRIVER_OPTIONS=json.dumps({"image_files": True}),
    )
    env.pop("NOVALITE_ADMIN_PASSWORD", None)
    with open(state / "serve.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "novalite.cli", "serve"], stdout=subprocess.PIPE, stderr=log, text=True, env=env
        )
    text = read_banner(proc)
    assert "use it:" in text, f"novalite serve did not start:\n{text}\n{(state / 'serve.log').read_text()}"
    yield cli_for_state(state)
    proc.terminate()
    proc.wait(timeout=30)


def test_snapshot_backup_rebuild_shelve(cli: Cli, tmp_path: Path) -> None:
    disk = tmp_path / "tiny.img"
    disk.write_bytes(b"tiny guest disk\n" * 64)
    cli.run("image", "create", "--file", str(disk), "--disk-format", "raw", "--public", "tiny")
    cli.run("server", "create", "--flavor", "m1.tiny", "--image", "tiny", "--nic", "none", "--wait", "vm1")

    cli.run("server", "image", "create", "--name", "snap1", "--wait", "vm1")
    image = cli.json("image", "show", "snap1")
    assert image["status"] == "active"
    props = image["properties"]
    assert props["image_type"] == "snapshot" and props["base_image_ref"] == cli.json("image", "show", "tiny")["id"]
    assert image["size"] == disk.stat().st_size  # the guest's disk, as the driver copied it
    cli.run("server", "create", "--flavor", "m1.tiny", "--image", "snap1", "--nic", "none", "--wait", "vm2")
    assert cli.json("server", "show", "vm2")["status"] == "ACTIVE"

    for n in range(3):
        # One name per backup: the CLI finds the new backup by its name.
        cli.run(
            "server", "backup", "create", "--name", f"nightly-{n}", "--type", "daily", "--rotate", "2", "--wait", "vm1"
        )
        cli.wait_status("vm1", "ACTIVE")
    names = sorted(i["Name"] for i in cli.json("image", "list") if i["Name"].startswith("nightly"))
    assert names == ["nightly-1", "nightly-2"], names  # the oldest rotated out

    cli.run("server", "rebuild", "--image", "snap1", "--wait", "vm1")
    assert cli.json("server", "show", "vm1")["image"].startswith("snap1")

    cli.run("server", "shelve", "vm1")
    cli.wait_status("vm1", "SHELVED_OFFLOADED")
    cli.run("server", "unshelve", "vm1")
    cli.wait_status("vm1", "ACTIVE")
    assert "vm1-shelved" not in cli.run("image", "list", "-f", "value", "-c", "Name")
