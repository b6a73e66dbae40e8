"""Shared by the end-to-end tests: start ``novalite serve`` as a subprocess, and drive it
with the real ``openstack`` CLI."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

OPENSTACK = shutil.which("openstack") or str(Path(sys.executable).with_name("openstack"))


class Cli:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env

    def run(
        self, *args: str, check: bool = True, user: tuple[str, str, str] | None = None, timeout: float = 180
    ) -> str:
        cmd = [OPENSTACK, *args]
        env = dict(self.env)
        if user:
            env.update(OS_USERNAME=user[0], OS_PASSWORD=user[1], OS_PROJECT_NAME=user[2])
            cmd = [
                OPENSTACK,
                f"--os-username={user[0]}",
                f"--os-password={user[1]}",
                f"--os-project-name={user[2]}",
                *args,
            ]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"openstack {' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        return proc.stdout if check else proc.stdout + proc.stderr

    def json(self, *args: str, **kw: Any) -> Any:
        return json.loads(self.run(*args, "-f", "json", **kw))

    def wait_status(self, server: str, status: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            current = self.run("server", "show", server, "-f", "value", "-c", "status").strip()
            if current == status:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"{server} is {current}, expected {status}")
            time.sleep(0.3)


def read_banner(proc: subprocess.Popen[str], timeout: float = 60) -> str:
    """The lines ``novalite serve`` prints at start, up to its ``use it:`` line."""
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "use it:" in line:
            break
    return "".join(lines)


def start_serve(env: dict[str, str], log: Path, timeout: float = 60) -> tuple[subprocess.Popen[str], str]:
    """Start ``novalite serve`` with ``env`` (stderr to ``log``); return it and its banner.

    Fails (and stops the process) when the banner does not come.
    """
    with open(log, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "novalite.cli", "serve"], stdout=subprocess.PIPE, stderr=err, text=True, env=env
        )
    text = read_banner(proc, timeout)
    if "use it:" not in text:
        stop_serve(proc)
        raise AssertionError(f"novalite serve did not start:\n{text}\n{log.read_text()}")
    return proc, text


def stop_serve(proc: subprocess.Popen[str], timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def cli_for_state(state: Path) -> Cli:
    """A Cli using the clouds.yaml that ``novalite serve`` wrote into ``state``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    env.update(OS_CLIENT_CONFIG_FILE=str(state / "clouds.yaml"), OS_CLOUD="novalite")
    return Cli(env)
