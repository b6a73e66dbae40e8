"""``novalite status`` against a running cloud, run as the operator runs it: a subprocess with a clouds.yaml.

The cloud is the in-process one of tests/conftest.py (two fake hosts, hv-1 and hv-2); it writes
its clouds.yaml into its state dir, and the command finds it through OS_CLIENT_CONFIG_FILE /
OS_CLOUD exactly as the ``openstack`` CLI would. Subprocesses are awaited, never waited on
synchronously: the API runs in this test's event loop and must keep answering.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from novalite.config import Settings
from tests.conftest import Cloud, free_port, make_settings
from tests.functional.helpers import create_server, make_image, wait_status


@pytest.fixture
async def db_url(tmp_path: Path) -> AsyncIterator[str]:
    """SQLite only: ``status`` reads nothing but the public API, so the database behind it makes no difference."""
    yield f"sqlite:///{tmp_path / 'novalite.db'}"


@dataclass
class Run:
    code: int
    out: str
    err: str


def _env(tmp_path: Path, clouds_yaml: Path, cloud: str = "novalite") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OS_", "NOVALITE_"))}
    # A state dir of its own: the command must find the cloud through OS_CLIENT_CONFIG_FILE, not by luck.
    env.update(
        OS_CLIENT_CONFIG_FILE=str(clouds_yaml),
        OS_CLOUD=cloud,
        NOVALITE_STATE_DIR=str(tmp_path / "client-state"),
        NOVALITE_LOG_LEVEL="WARNING",
    )
    return env


async def status(tmp_path: Path, clouds_yaml: Path, *args: str, cloud: str = "novalite") -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "novalite.cli",
        "status",
        *args,
        env=_env(tmp_path, clouds_yaml, cloud),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(), err.decode())


def clouds_yaml_of(cloud: Cloud) -> Path:
    path = cloud.node.settings.state_dir / "clouds.yaml"
    assert path.is_file(), "the cloud fixture writes its clouds.yaml into the state dir"
    return path


async def boot(cloud: Cloud, count: int) -> list[str]:
    image = await make_image(cloud)
    ids = []
    for i in range(count):
        r = await create_server(cloud, image, name=f"vm{i}")
        assert r.status == 202, r
        ids.append(r.body["server"]["id"])
    for server_id in ids:
        await wait_status(cloud, server_id, "ACTIVE")
    return ids


async def force_down(cloud: Cloud, host: str) -> None:
    r = await cloud.get("/compute/v2.1/os-services?binary=nova-compute", microversion="2.53")
    assert r.status == 200, r
    (service,) = [s for s in r.body["services"] if s["host"] == host]
    r = await cloud.put(f"/compute/v2.1/os-services/{service['id']}", json={"forced_down": True}, microversion="2.53")
    assert r.status == 200, r


async def test_status_shows_hosts_and_servers_and_exits_0(cloud: Cloud, tmp_path: Path) -> None:
    await boot(cloud, 2)
    run = await status(tmp_path, clouds_yaml_of(cloud))
    assert run.code == 0, run
    assert "hv-1" in run.out and "hv-2" in run.out
    assert "nova-compute" in run.out and "nova-conductor" in run.out
    assert "Servers: 2 (ACTIVE 2)" in run.out
    assert "Builds in flight: 0" in run.out
    assert "OK: every service is up" in run.out


async def test_json_counts_match_what_was_created(cloud: Cloud, tmp_path: Path) -> None:
    await boot(cloud, 2)
    run = await status(tmp_path, clouds_yaml_of(cloud), "--json")
    assert run.code == 0, run
    facts: dict[str, Any] = json.loads(run.out)
    assert facts["ok"] is True and facts["down"] == []
    assert facts["servers"] == {"total": 2, "by_status": {"ACTIVE": 2}}
    assert facts["builds_in_flight"] == 0
    hosts = {h["name"]: h for h in facts["hosts"]}
    assert set(hosts) == {"hv-1", "hv-2"}
    # m1.tiny is 1 vCPU, 512 MB, 1 GB: the usage figures are the two servers', and free is total minus used.
    assert sum(h["vcpus_used"] for h in hosts.values()) == 2
    assert sum(h["servers"] for h in hosts.values()) == 2
    for h in hosts.values():
        assert h["state"] == "up"
        assert h["vcpus_free"] == h["vcpus"] - h["vcpus_used"]
        assert h["memory_mb_free"] == h["memory_mb"] - h["memory_mb_used"]
        assert h["local_gb_free"] == h["local_gb"] - h["local_gb_used"]
    computes = [s for s in facts["services"] if s["binary"] == "nova-compute"]
    assert sorted(s["host"] for s in computes) == ["hv-1", "hv-2"]
    for s in facts["services"]:
        # report_interval is 0.5 s in the fixture: every heartbeat is fresh.
        assert s["state"] == "up" and s["heartbeat_age_seconds"] is not None
        assert 0 <= s["heartbeat_age_seconds"] < 10, s


async def test_a_service_down_exits_1_and_names_it(cloud: Cloud, tmp_path: Path) -> None:
    await force_down(cloud, "hv-2")
    run = await status(tmp_path, clouds_yaml_of(cloud))
    assert run.code == 1, run
    line = next(line for line in run.out.splitlines() if "nova-compute" in line and "hv-2" in line)
    assert "DOWN (forced)" in line
    hv2 = next(line for line in run.out.splitlines() if line.strip().startswith("hv-2 "))
    assert "DOWN" in hv2
    assert "DOWN: 1 service(s) down: nova-compute on hv-2" in run.out

    run = await status(tmp_path, clouds_yaml_of(cloud), "--json")
    assert run.code == 1, run
    facts = json.loads(run.out)
    assert facts["ok"] is False and facts["down"] == ["nova-compute on hv-2"]
    assert {h["name"]: h["state"] for h in facts["hosts"]} == {"hv-1": "up", "hv-2": "down"}


async def test_wrong_password_exits_2_with_a_message(cloud: Cloud, tmp_path: Path) -> None:
    text = clouds_yaml_of(cloud).read_text()
    bad = tmp_path / "bad-clouds.yaml"
    bad.write_text(text.replace("password: 'admin-secret'", "password: 'not-the-password'"))
    assert bad.read_text() != text
    run = await status(tmp_path, bad)
    assert run.code == 2, run
    assert "authentication failed for user 'admin'" in run.err
    assert "Traceback" not in run.err and run.out == ""


async def test_unreachable_api_exits_2_with_a_message(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    clouds = tmp_path / "clouds.yaml"
    clouds.write_text(
        "clouds:\n"
        "  lab:\n"
        "    auth:\n"
        f"      auth_url: http://127.0.0.1:{port}/identity/v3\n"
        "      username: admin\n"
        "      password: x\n"
        "      project_name: admin\n"
        "      user_domain_name: Default\n"
        "      project_domain_name: Default\n"
    )
    run = await status(tmp_path, clouds, cloud="lab")
    assert run.code == 2, run
    assert f"cannot reach the API at http://127.0.0.1:{port}/identity/v3" in run.err
    assert "Traceback" not in run.err

    run = await status(tmp_path, clouds, cloud="no-such-cloud")
    assert run.code == 2, run
    assert "cloud 'no-such-cloud' is not defined in any clouds.yaml" in run.err


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


async def test_watch_refreshes_and_ctrl_c_exits_0(cloud: Cloud, tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "novalite.cli",
        "status",
        "--json",
        "--watch",
        "1",
        env=_env(tmp_path, clouds_yaml_of(cloud)),
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        # Ctrl-C as in a terminal: a test run started in the background by a shell without job
        # control (as CI may be) inherits SIGINT ignored, and so would the command.
        preexec_fn=_default_sigint,
    )
    assert proc.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), timeout=30))
        await force_down(cloud, "hv-1")
        # The next refreshes see the change without restarting the command.
        for _ in range(5):
            later = json.loads(await asyncio.wait_for(proc.stdout.readline(), timeout=30))
            if not later["ok"]:
                break
        proc.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert first["ok"] is True
    assert later["down"] == ["nova-compute on hv-1"]
    assert proc.returncode == 0, err
    assert b"Traceback" not in err


async def test_watch_period_is_bounded(tmp_path: Path) -> None:
    run = await status(tmp_path, tmp_path / "unused.yaml", "--watch", "0.01")
    assert run.code == 2
    assert "must be between 1 and 3600 seconds" in run.err


class TestBuildsInFlight:
    """A slow hypervisor keeps a build in BUILD long enough to be counted."""

    @pytest.fixture
    def cloud_settings(self, tmp_path: Path, db_url: str) -> Settings:
        return make_settings(tmp_path, db_url, driver_options={"boot_delay": 20})

    async def test_builds_in_flight_are_counted(self, cloud: Cloud, tmp_path: Path) -> None:
        image = await make_image(cloud)
        r = await create_server(cloud, image, name="slow")
        assert r.status == 202, r
        run = await status(tmp_path, clouds_yaml_of(cloud), "--json")
        assert run.code == 0, run
        facts = json.loads(run.out)
        assert facts["builds_in_flight"] == 1
        assert facts["servers"]["by_status"] == {"BUILD": 1}


async def test_a_non_admin_gets_exit_2_and_is_told_why(cloud: Cloud, tmp_path: Path) -> None:
    r = await cloud.post("/identity/v3/projects", json={"project": {"name": "lab", "domain_id": "default"}})
    assert r.status == 201, r
    project = r.body["project"]["id"]
    user = {"name": "alice", "password": "s3cret-alice", "domain_id": "default", "default_project_id": project}
    r = await cloud.post("/identity/v3/users", json={"user": user})
    assert r.status == 201, r
    user_id = r.body["user"]["id"]
    r = await cloud.get("/identity/v3/roles?name=member")
    (role,) = r.body["roles"]
    r = await cloud.put(f"/identity/v3/projects/{project}/users/{user_id}/roles/{role['id']}")
    assert r.status == 204, r
    alice = tmp_path / "alice-clouds.yaml"
    alice.write_text(
        clouds_yaml_of(cloud)
        .read_text()
        .replace("username: admin", "username: alice")
        .replace("password: 'admin-secret'", "password: 's3cret-alice'")
        .replace("project_name: admin", "project_name: lab")
    )
    run = await status(tmp_path, alice)
    assert run.code == 2, run
    assert "user 'alice' may not read /os-services (HTTP 403): novalite status needs the admin role" in run.err
    assert "Traceback" not in run.err
