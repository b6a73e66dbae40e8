#!/usr/bin/env python3
"""Boot timings of real QEMU guests through novalite (libvirt driver, TCG).

Builds (or reuses) the tiny guest (scripts/build-tiny-guest.sh), starts ``novalite serve``
with the libvirt driver on a fresh state dir and the ISOLATED libvirt network
``novalite-bench`` (created by novalite when missing, removed afterwards if it was), uploads
the guest's qcow2, and through the HTTP API measures, from the client sending
``POST /servers``:

* create → ACTIVE (polling ``GET /servers/{id}`` every 50 ms),
* create → the guest's banner in ``os-getConsoleOutput`` (polling every 200 ms),
* create → the guest's "ready" line (it has its DHCP address and has looked for a config drive),

for ``--runs`` guests one after the other (the first with a cold image cache: download from
the image API and the copy into ``_base``), then ``--burst`` guests created at once. It also
prints where the time goes: the API's answer to POST, the agent's build (image fetch + spawn,
from the instance action's event), and the guest's own boot (firmware + boot loader + kernel
+ init, under TCG). Nothing is asserted; the figures go to docs/benchmarks.md.

    python scripts/bench_libvirt.py                  # 3 single guests, then 5 at once
    python scripts/bench_libvirt.py --runs 5 --burst 8
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from benchlib import ADMIN_PASSWORD, admin_token, free_port, serve

REPO = Path(__file__).resolve().parents[1]
NETWORK = "novalite-bench"
CIDR = "10.213.79.0/24"
BANNER = "novalite-tiny-guest booted"
READY = "novalite-guest-ready"


def build_guest(cache: Path) -> Path:
    subprocess.run([str(REPO / "scripts" / "build-tiny-guest.sh"), str(cache)], check=True, capture_output=True)
    return cache / "tiny-guest.qcow2"


def network_exists(uri: str, name: str) -> bool:
    return subprocess.run(["virsh", "-c", uri, "net-info", name], capture_output=True).returncode == 0


def remove_network(uri: str, name: str) -> None:
    subprocess.run(["virsh", "-c", uri, "net-destroy", name], capture_output=True)
    subprocess.run(["virsh", "-c", uri, "net-undefine", name], capture_output=True)


def start_server(state: Path, port: int, instances: Path, uri: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVALITE_")}
    env.update(
        NOVALITE_STATE_DIR=str(state),
        NOVALITE_LISTEN=f"127.0.0.1:{port}",
        NOVALITE_CONSOLE_LISTEN="127.0.0.1:0",
        NOVALITE_ADMIN_PASSWORD=ADMIN_PASSWORD,
        NOVALITE_LOG_LEVEL=os.environ.get("NOVALITE_LOG_LEVEL", "INFO"),
        NOVALITE_DRIVER="libvirt",
        NOVALITE_DRIVER_OPTIONS=json.dumps(
            {"uri": uri, "virt_type": "qemu", "instances_path": str(instances), "shutdown_timeout": 10}
        ),
        NOVALITE_NETWORK_NAME=NETWORK,
        NOVALITE_GUEST_NETWORK_NAME=NETWORK,  # the libvirt network its ports are on (default "novalite")
        NOVALITE_NETWORK_CIDR=CIDR,
    )
    return serve(state, env, show_banner=True)


def iso(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


class Api:
    def __init__(self, session: aiohttp.ClientSession, base: str) -> None:
        self.session = session
        self.base = base
        self.token = ""

    async def login(self) -> None:
        self.token = await admin_token(self.session, self.base)

    async def request(self, method: str, path: str, **kw: Any) -> tuple[int, Any, dict[str, str]]:
        headers = {"X-Auth-Token": self.token, "OpenStack-API-Version": "compute 2.100"}
        async with self.session.request(method, f"{self.base}{path}", headers=headers, **kw) as resp:
            raw = await resp.read()
            return resp.status, (json.loads(raw) if raw else None), dict(resp.headers)

    async def upload_image(self, path: Path) -> str:
        data = await asyncio.to_thread(path.read_bytes)
        status, image, _ = await self.request(
            "POST", "/image/v2/images", json={"name": "tiny", "disk_format": "qcow2", "container_format": "bare"}
        )
        assert status == 201, image
        async with self.session.put(
            f"{self.base}/image/v2/images/{image['id']}/file",
            data=data,
            headers={"X-Auth-Token": self.token, "Content-Type": "application/octet-stream"},
        ) as resp:
            assert resp.status == 204, await resp.text()
        return image["id"]

    async def console(self, sid: str) -> str:
        status, body, _ = await self.request(
            "POST", f"/compute/v2.1/servers/{sid}/action", json={"os-getConsoleOutput": {"length": None}}
        )
        return body["output"] if status == 200 else ""


async def boot_one(api: Api, image: str, flavor: str, name: str, timeout: float) -> dict[str, Any]:
    """Create one server; time ACTIVE, banner and ready; then delete it and wait until gone."""
    body = {"server": {"name": name, "imageRef": image, "flavorRef": flavor, "networks": "auto"}}
    t0 = time.monotonic()
    wall0 = time.time()
    status, created, headers = await api.request("POST", "/compute/v2.1/servers", json=body)
    assert status == 202, created
    accepted = time.monotonic() - t0
    sid = created["server"]["id"]
    request_id = headers.get("X-Compute-Request-Id") or headers.get("x-openstack-request-id", "")
    result: dict[str, Any] = {"id": sid, "accepted": accepted}
    deadline = t0 + timeout

    async def active() -> None:
        while time.monotonic() < deadline:
            _, srv, _ = await api.request("GET", f"/compute/v2.1/servers/{sid}")
            if srv["server"]["status"] == "ACTIVE":
                result["active"] = time.monotonic() - t0
                return
            if srv["server"]["status"] == "ERROR":
                raise RuntimeError(f"{name} went to ERROR: {srv['server'].get('fault')}")
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{name} not ACTIVE within {timeout}s")

    async def console() -> None:
        while time.monotonic() < deadline:
            out = await api.console(sid)
            now = time.monotonic() - t0
            if BANNER in out and "banner" not in result:
                result["banner"] = now
            if READY in out:
                result["ready"] = now
                result.setdefault("banner", now)
                return
            await asyncio.sleep(0.2)
        raise TimeoutError(f"{name}: no {READY!r} in the console within {timeout}s")

    await asyncio.gather(active(), console())
    # The agent's side of the build, from the instance action's events.
    _, actions, _ = await api.request("GET", f"/compute/v2.1/servers/{sid}/os-instance-actions")
    for action in actions.get("instanceActions", []):
        if action["action"] != "create":
            continue
        rid = request_id or action["request_id"]
        _, detail, _ = await api.request("GET", f"/compute/v2.1/servers/{sid}/os-instance-actions/{rid}")
        for ev in detail["instanceAction"].get("events", []):
            if ev["event"] == "compute__do_build_and_run_instance" and ev.get("finish_time"):
                result["build"] = iso(ev["finish_time"]) - iso(ev["start_time"])
                result["until_build_start"] = iso(ev["start_time"]) - wall0
    return result


async def delete_all(api: Api, ids: list[str], timeout: float = 120) -> float:
    t0 = time.monotonic()
    await asyncio.gather(*(api.request("DELETE", f"/compute/v2.1/servers/{sid}") for sid in ids))
    for sid in ids:
        while time.monotonic() - t0 < timeout:
            status, _, _ = await api.request("GET", f"/compute/v2.1/servers/{sid}")
            if status == 404:
                break
            await asyncio.sleep(0.1)
    return time.monotonic() - t0


def fmt(values: list[float]) -> str:
    if not values:
        return "-"
    if len(values) == 1:
        return f"{values[0]:.2f} s"
    return f"median {statistics.median(values):.2f} s (min {min(values):.2f}, max {max(values):.2f})"


def report(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title} ({len(rows)} guest(s)):")
    for key, label in (
        ("accepted", "POST /servers answered"),
        ("until_build_start", "create -> agent starts the build"),
        ("build", "agent build (image fetch + spawn)"),
        ("active", "create -> ACTIVE"),
        ("banner", "create -> banner in console"),
        ("ready", "create -> guest ready (DHCP done)"),
    ):
        print(f"  {label:36s} {fmt([r[key] for r in rows if key in r])}")
    boot = [r["banner"] - r["active"] for r in rows if "banner" in r and "active" in r]
    print(f"  {'ACTIVE -> banner (guest boot, TCG)':36s} {fmt(boot)}")


async def run(args: argparse.Namespace) -> None:
    disk = build_guest(Path(args.guest_cache))
    state = Path(tempfile.mkdtemp(prefix="novalite-bench-libvirt-"))
    instances = Path(tempfile.mkdtemp(prefix="novalite-bench-instances-", dir="/var/tmp"))
    os.chmod(instances, 0o755)
    had_network = network_exists(args.uri, NETWORK)
    port = free_port()
    proc = start_server(state, port, instances, args.uri)
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, f"http://127.0.0.1:{port}")
            await api.login()
            image = await api.upload_image(disk)
            _, flavors, _ = await api.request("GET", "/compute/v2.1/flavors")
            flavor = next(f["id"] for f in flavors["flavors"] if f["name"] == args.flavor)

            singles = []
            for i in range(args.runs):
                r = await boot_one(api, image, flavor, f"bench-{i}", args.timeout)
                r["delete"] = await delete_all(api, [r["id"]])
                singles.append(r)
                label = "cold image cache" if i == 0 else "warm"
                print(
                    f"guest {i} ({label}): ACTIVE {r['active']:.2f} s, banner {r['banner']:.2f} s, "
                    f"ready {r['ready']:.2f} s, build {r.get('build', float('nan')):.2f} s, "
                    f"delete {r['delete']:.2f} s",
                    file=sys.stderr,
                )
            report("One guest at a time, first one (cold image cache)", singles[:1])
            if len(singles) > 1:
                report("One guest at a time, warm image cache", singles[1:])
                print(f"  {'delete (until 404)':36s} {fmt([r['delete'] for r in singles[1:]])}")

            if args.burst:
                t0 = time.monotonic()
                burst = await asyncio.gather(
                    *(boot_one(api, image, flavor, f"burst-{i}", args.timeout) for i in range(args.burst))
                )
                all_ready = time.monotonic() - t0
                report(f"{args.burst} guests created at once on one host", burst)
                print(f"  {'all ready':36s} {all_ready:.2f} s")
                print(f"  {'delete all (until 404)':36s} {await delete_all(api, [r['id'] for r in burst]):.2f} s")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not had_network:
            remove_network(args.uri, NETWORK)
        shutil.rmtree(instances, ignore_errors=True)
        if not args.keep_state:
            shutil.rmtree(state, ignore_errors=True)
        else:
            print(f"state dir kept: {state}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="guests booted one after the other (default 3)")
    parser.add_argument("--burst", type=int, default=5, help="guests created at once (default 5; 0: none)")
    parser.add_argument("--flavor", default="m1.tiny")
    parser.add_argument("--uri", default="qemu:///system")
    parser.add_argument("--guest-cache", default=os.environ.get("NOVALITE_GUEST_CACHE", "/var/tmp/novalite-guest"))
    parser.add_argument("--timeout", type=float, default=180.0, help="per guest, until ready")
    parser.add_argument("--keep-state", action="store_true", help="keep the state dir (serve.log) afterwards")
    args = parser.parse_args()
    if subprocess.run(["virsh", "-c", args.uri, "version"], capture_output=True).returncode != 0:
        sys.exit(f"libvirt is not reachable at {args.uri}: run scripts/setup-libvirt.sh first")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
