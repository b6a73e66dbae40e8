#!/usr/bin/env python3
"""Snapshot and shelve timings of real QEMU guests through novalite (libvirt driver, TCG; issue 11).

Starts ``novalite serve`` with the libvirt driver on ``qemu:///system`` (as
scripts/bench_libvirt.py does: fresh state dir, the isolated network ``novalite-bench``),
and for two guests, one after the other:

* ``tiny``: the tiny guest (scripts/build-tiny-guest.sh), a 48 MiB disk of which ~16 MiB is
  used;
* ``1g``: the same guest on a 1 GiB disk whose space past the guest's partition is filled
  with non-zero data (~960 MiB), so that ``qemu-img convert`` and the upload move real bytes
  (zero clusters would be skipped),

it boots the guest (m1.tiny, no network) and, through the HTTP API:

1. ``createImage`` until the image is ``active`` and the server has no task;
2. ``shelve`` (``shelved_offload_time`` 0) until SHELVED_OFFLOADED;
3. ``unshelve`` until ACTIVE, and until the guest is ready again (its console's ready line).

What dominates comes from timestamps: the server's task states polled every 50 ms
(``image_snapshot`` = the driver's pause + ``qemu-img convert`` + resume, ``image_uploading``
= the upload, and the shelve's and unshelve's steps alike), the libvirt domain's state (the
shelve's ACPI power-off), the image API's own log lines in serve.log (``api.request`` of the
upload's ``PUT .../file`` and the unshelve's ``GET .../file``, with their ms), and a
``qemu-img convert -U`` of the same root disk timed here, alone. Nothing is asserted; the
figures go to docs/benchmarks.md.

    python scripts/bench_snapshot.py
    python scripts/bench_snapshot.py --only tiny --keep-state
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
from bench_libvirt import CIDR, NETWORK, READY, Api, build_guest, network_exists, remove_network
from benchlib import ADMIN_PASSWORD, free_port, serve

C = "/compute/v2.1"
MiB = 1024 * 1024
GiB = 1024 * MiB


def start_server(state: Path, port: int, instances: Path, uri: str) -> subprocess.Popen[str]:
    """``novalite serve`` with the libvirt driver (TCG) on the isolated network ``novalite-bench``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOVALITE_")}
    env.update(
        NOVALITE_STATE_DIR=str(state),
        NOVALITE_LISTEN=f"127.0.0.1:{port}",
        NOVALITE_CONSOLE_LISTEN="127.0.0.1:0",
        NOVALITE_ADMIN_PASSWORD=ADMIN_PASSWORD,
        NOVALITE_LOG_LEVEL="INFO",  # the image API's api.request lines are part of the breakdown
        NOVALITE_DRIVER="libvirt",
        NOVALITE_DRIVER_OPTIONS=json.dumps(
            {"uri": uri, "virt_type": "qemu", "instances_path": str(instances), "shutdown_timeout": 30}
        ),
        NOVALITE_NETWORK_NAME=NETWORK,
        NOVALITE_GUEST_NETWORK_NAME=NETWORK,
        NOVALITE_NETWORK_CIDR=CIDR,
        NOVALITE_SHELVED_OFFLOAD_TIME="0",
    )
    return serve(state, env)


def big_disk(tiny: Path, out: Path) -> Path:
    """A 1 GiB qcow2: the tiny guest's disk, then non-zero data from 64 MiB to the end."""
    raw = out.with_suffix(".raw")
    subprocess.run(["qemu-img", "convert", "-q", "-f", "qcow2", "-O", "raw", str(tiny), str(raw)], check=True)
    block = bytes(range(1, 256)) * (MiB // 255) + b"\x5a" * (MiB % 255)  # 1 MiB, no zero byte
    with open(raw, "r+b") as f:
        f.truncate(GiB)
        f.seek(64 * MiB)
        for _ in range((GiB - 64 * MiB) // MiB):
            f.write(block)
    subprocess.run(["qemu-img", "convert", "-q", "-f", "raw", "-O", "qcow2", str(raw), str(out)], check=True)
    raw.unlink()
    return out


async def upload(api: Api, path: Path, name: str) -> str:
    status, image, _ = await api.request(
        "POST", "/image/v2/images", json={"name": name, "disk_format": "qcow2", "container_format": "bare"}
    )
    assert status == 201, image
    fh = await asyncio.to_thread(open, path, "rb")
    try:
        async with api.session.put(
            f"{api.base}/image/v2/images/{image['id']}/file",
            data=fh,
            headers={"X-Auth-Token": api.token, "Content-Type": "application/octet-stream"},
        ) as resp:
            assert resp.status == 204, await resp.text()
    finally:
        fh.close()
    return str(image["id"])


DOMAIN_STATES = {
    0: "nostate",
    1: "running",
    2: "blocked",
    3: "paused",
    4: "shutdown",
    5: "shut off",
    6: "crashed",
    7: "suspended",
}


class Watch:
    """Poll a server's (status, task_state), its libvirt domain's state and (optionally) an
    image's status every 50 ms; keep each change (seconds from the start of :meth:`until`)."""

    def __init__(self, api: Api, sid: str, conn: Any) -> None:
        self.api, self.sid, self.conn = api, sid, conn
        self.t0 = time.monotonic()
        self.changes: list[tuple[float, str]] = []
        self.last: dict[str, str] = {}

    def note(self, kind: str, value: object) -> None:
        if self.last.get(kind) != str(value):
            self.last[kind] = str(value)
            self.changes.append((time.monotonic() - self.t0, f"{kind}:{value}"))

    def at(self, key: str, after: float = -1.0) -> float | None:
        """When ``key`` (e.g. ``task:image_uploading``) was first seen after ``after``."""
        return next((t for t, k in self.changes if k == key and t > after), None)

    def wall(self, key: str) -> float | None:
        t = self.at(key)
        return self.wall0 + t if t is not None else None

    def span(self, a: str, b: str) -> float | None:
        ta = self.at(a)
        tb = self.at(b, ta) if ta is not None else None
        return tb - ta if ta is not None and tb is not None else None

    def dom_state(self) -> str:
        try:
            return DOMAIN_STATES.get(self.conn.lookupByUUIDString(self.sid).state()[0], "?")
        except Exception:  # libvirt.libvirtError: no such domain
            return "none"

    async def until(self, done, image_id: str | None = None, timeout: float = 600) -> float:  # type: ignore[no-untyped-def]
        """Poll until ``done(server, image_status)``; the seconds it took."""
        self.t0 = time.monotonic()
        self.wall0 = time.time()
        self.changes, self.last = [], {}
        while time.monotonic() - self.t0 < timeout:
            status, body, _ = await self.api.request("GET", f"{C}/servers/{self.sid}")
            server = body["server"] if status == 200 else {}
            self.note("status", server.get("status"))
            self.note("task", server.get("OS-EXT-STS:task_state"))
            self.note("dom", await asyncio.to_thread(self.dom_state))
            image_status = None
            if image_id:
                st, image, _ = await self.api.request("GET", f"/image/v2/images/{image_id}")
                image_status = image["status"] if st == 200 else "gone"
                self.note("image", image_status)
            if server.get("status") == "ERROR":
                raise RuntimeError(f"{self.sid} in ERROR: {server.get('fault')}")
            if done(server, image_status):
                return time.monotonic() - self.t0
            await asyncio.sleep(0.05)
        raise TimeoutError(f"{self.sid}: not done within {timeout}s: {self.changes}")


class Log:
    """serve.log's JSON lines: when things happened on the server side (wall clock)."""

    def __init__(self, path: Path) -> None:
        self.records = []
        for line in path.read_text().splitlines():
            if line.startswith("{"):
                try:
                    self.records.append(json.loads(line))
                except ValueError:
                    continue

    @staticmethod
    def ts(rec: dict[str, Any]) -> float:
        return datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()

    def request(self, request_id: str) -> tuple[float, float] | None:
        """(start, end) of the API request ``request_id``."""
        for rec in self.records:
            if rec.get("event") == "api.request" and rec.get("request_id") == request_id:
                end = self.ts(rec)
                return end - float(rec["ms"]) / 1000, end
        return None

    def image_data(self, method: str, image_id: str) -> tuple[float, float] | None:
        """(start, end) of the last ``method .../images/<image_id>/file`` request."""
        found = None
        for rec in self.records:
            path = str(rec.get("path", ""))
            if rec.get("event") == "api.request" and rec.get("method") == method and path.endswith(f"/{image_id}/file"):
                end = self.ts(rec)
                found = (end - float(rec["ms"]) / 1000, end)
        return found

    def event(self, name: str, **match: str) -> float | None:
        """When the last ``name`` event with ``match`` fields was logged."""
        found = None
        for rec in self.records:
            if rec.get("event") == name and all(rec.get(k) == v for k, v in match.items()):
                found = self.ts(rec)
        return found


def diff(a: float | None, b: float | None) -> float | None:
    return b - a if a is not None and b is not None else None


async def wait_console(api: Api, sid: str, text: str, count: int = 1, timeout: float = 300) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if (await api.console(sid)).count(text) >= count:
            return time.monotonic() - t0
        await asyncio.sleep(0.2)
    raise TimeoutError(f"{text!r} not in the console of {sid}")


def convert_alone(instances: Path, sid: str) -> float:
    """``qemu-img convert -U`` of the guest's root disk (and backing chain) to qcow2, timed."""
    target = instances / f"bench-convert-{sid}.qcow2"
    t0 = time.monotonic()
    root = str(instances / sid / "disk")
    subprocess.run(["qemu-img", "convert", "-U", "-q", "-f", "qcow2", "-O", "qcow2", root, str(target)], check=True)
    took = time.monotonic() - t0
    target.unlink()
    return took


async def one_guest(api: Api, conn: Any, image: str, label: str, log: Path, instances: Path) -> dict[str, Any]:
    r: dict[str, Any] = {"label": label}
    _, flavors, _ = await api.request("GET", f"{C}/flavors")
    flavor = next(f["id"] for f in flavors["flavors"] if f["name"] == "m1.tiny")
    t0 = time.monotonic()
    status, created, _ = await api.request(
        "POST",
        f"{C}/servers",
        json={"server": {"name": f"bench-{label}", "imageRef": image, "flavorRef": flavor, "networks": "none"}},
    )
    assert status == 202, created
    sid = created["server"]["id"]
    watch = Watch(api, sid, conn)
    await watch.until(lambda s, _i: s.get("status") == "ACTIVE")
    r["boot_active"] = time.monotonic() - t0
    await wait_console(api, sid, READY)
    r["boot_ready"] = time.monotonic() - t0

    # 1. createImage
    t0 = time.monotonic()
    status, body, headers = await api.request(
        "POST", f"{C}/servers/{sid}/action", json={"createImage": {"name": f"{label}-snap"}}
    )
    assert status == 202, body
    snap, snap_req = body["image_id"], headers.get("x-openstack-request-id", "")
    done = await watch.until(lambda s, i: i == "active" and s.get("OS-EXT-STS:task_state") is None, image_id=snap)
    r["snap_total"] = time.monotonic() - t0
    r["snap_paused"] = watch.span("dom:paused", "dom:running")
    _, img, _ = await api.request("GET", f"/image/v2/images/{snap}")
    r["snap_size"] = img.get("size")
    r["convert_alone"] = await asyncio.to_thread(convert_alone, instances, sid)
    await api.request("DELETE", f"/image/v2/images/{snap}")
    logs = Log(log)
    accepted, put = logs.request(snap_req), logs.image_data("PUT", snap)
    # From the API's answer to the upload's start: the cast, pause + convert + resume, two
    # task steps and the upload ticket; then the upload itself (the image API's PUT).
    r["snap_before_upload"] = diff(accepted[1] if accepted else None, put[0] if put else None)
    r["snap_upload"] = diff(put[0], put[1]) if put else None
    r["snap_after_upload"] = diff(put[1] if put else None, watch.wall0 + done)

    # 2. shelve (offload at once)
    t0 = time.monotonic()
    status, body, headers = await api.request("POST", f"{C}/servers/{sid}/action", json={"shelve": None})
    assert status == 202, body
    shelve_req = headers.get("x-openstack-request-id", "")
    done = await watch.until(
        lambda s, _i: s.get("status") == "SHELVED_OFFLOADED" and not s.get("OS-EXT-STS:task_state")
    )
    r["shelve_total"] = time.monotonic() - t0
    _, images, _ = await api.request("GET", "/image/v2/images")
    shelved = next(i for i in images["images"] if i.get("instance_uuid") == sid and i["name"].endswith("-shelved"))
    logs = Log(log)
    accepted, put = logs.request(shelve_req), logs.image_data("PUT", shelved["id"])
    off = watch.wall("dom:shut off")
    r["shelve_poweroff"] = diff(accepted[1] if accepted else None, off)
    r["shelve_convert"] = diff(off, put[0] if put else None)
    r["shelve_upload"] = diff(put[0], put[1]) if put else None
    offloaded = logs.event("conductor.shelve_offloaded", instance=sid)
    r["shelve_destroy"] = diff(put[1] if put else None, offloaded)
    r["shelve_image_size"] = shelved.get("size")

    # 3. unshelve
    t0 = time.monotonic()
    status, body, headers = await api.request("POST", f"{C}/servers/{sid}/action", json={"unshelve": None})
    assert status == 202, body
    unshelve_req = headers.get("x-openstack-request-id", "")
    done = await watch.until(lambda s, _i: s.get("status") == "ACTIVE" and not s.get("OS-EXT-STS:task_state"))
    r["unshelve_active"] = time.monotonic() - t0
    await wait_console(api, sid, READY)
    r["unshelve_ready"] = time.monotonic() - t0
    logs = Log(log)
    accepted = logs.request(unshelve_req)
    sent = logs.event("conductor.unshelve_sent", instance=sid)
    fetched = logs.event("imagecache.fetched", image=shelved["id"])
    r["unshelve_schedule"] = diff(accepted[1] if accepted else None, sent)
    r["unshelve_download"] = diff(sent, fetched)
    r["unshelve_spawn"] = diff(fetched, watch.wall0 + done)
    r["unshelve_boot"] = r["unshelve_ready"] - r["unshelve_active"]

    await api.request("DELETE", f"{C}/servers/{sid}")
    for _ in range(600):
        if (await api.request("GET", f"{C}/servers/{sid}"))[0] == 404:
            break
        await asyncio.sleep(0.1)
    return r


def s(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f} s"


def table(rows: list[dict[str, Any]]) -> str:
    def size(key: str) -> Any:
        return lambda r: f"{r[key] / MiB:.0f} MiB" if r.get(key) else "-"

    lines = [
        ("boot: create → ACTIVE / guest ready", lambda r: f"{s(r['boot_active'])} / {s(r['boot_ready'])}"),
        ("**snapshot** (createImage → image active, no task)", lambda r: s(r["snap_total"])),
        ("  snapshot image size (qcow2)", size("snap_size")),
        ("  API answer → upload starts (pause + qemu-img convert + resume)", lambda r: s(r["snap_before_upload"])),
        ("  guest paused (libvirt domain state, 50 ms polls)", lambda r: s(r["snap_paused"])),
        ("  qemu-img convert -U of the same disk, alone", lambda r: s(r["convert_alone"])),
        ("  upload (the image API's PUT .../file)", lambda r: s(r["snap_upload"])),
        ("  upload end → seen active, no task", lambda r: s(r["snap_after_upload"])),
        ("**shelve** → SHELVED_OFFLOADED", lambda r: s(r["shelve_total"])),
        ("  ACPI power-off (API answer → domain shut off)", lambda r: s(r["shelve_poweroff"])),
        ("  shut off → upload starts (qemu-img convert)", lambda r: s(r["shelve_convert"])),
        ("  upload (PUT .../file)", lambda r: s(r["shelve_upload"])),
        ("  upload end → offloaded (destroy, claim freed)", lambda r: s(r["shelve_destroy"])),
        ("**unshelve** → ACTIVE", lambda r: s(r["unshelve_active"])),
        ("  scheduling (API answer → conductor casts to the host)", lambda r: s(r["unshelve_schedule"])),
        ("  download of the shelve image into the host's cache", lambda r: s(r["unshelve_download"])),
        ("  base copy + qemu-img create + define + start → seen ACTIVE", lambda r: s(r["unshelve_spawn"])),
        ("  ACTIVE → guest ready (its boot under TCG)", lambda r: s(r["unshelve_boot"])),
        ("**shelve + unshelve → guest ready**", lambda r: s(r["shelve_total"] + r["unshelve_ready"])),
    ]
    out = ["| step | " + " | ".join(r["label"] for r in rows) + " |", "|---|" + "---|" * len(rows)]
    for label, get in lines:
        out.append(f"| {label} | " + " | ".join(get(r) for r in rows) + " |")
    return "\n".join(out)


async def run(args: argparse.Namespace) -> None:
    tiny = build_guest(Path(args.guest_cache))
    state = Path(tempfile.mkdtemp(prefix="novalite-bench-snapshot-"))
    instances = Path(tempfile.mkdtemp(prefix="novalite-bench-instances-", dir="/var/tmp"))
    os.chmod(instances, 0o755)
    had_network = network_exists(args.uri, NETWORK)
    port = free_port()
    proc = start_server(state, port, instances, args.uri)
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = libvirt.open(args.uri)
    rows = []
    try:
        async with aiohttp.ClientSession() as session:
            api = Api(session, f"http://127.0.0.1:{port}")
            await api.login()
            if args.only in (None, "tiny"):
                image = await upload(api, tiny, "tiny")
                rows.append(await one_guest(api, conn, image, "tiny", state / "serve.log", instances))
                print(f"tiny: {rows[-1]}", file=sys.stderr)
            if args.only in (None, "1g"):
                path = await asyncio.to_thread(big_disk, tiny, state / "big.qcow2")
                image = await upload(api, path, "tiny-1g")
                path.unlink()
                rows.append(await one_guest(api, conn, image, "1g", state / "serve.log", instances))
                print(f"1g: {rows[-1]}", file=sys.stderr)
        print(table(rows))
    finally:
        conn.close()
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        if not had_network:
            remove_network(args.uri, NETWORK)
        shutil.rmtree(instances, ignore_errors=True)
        if args.keep_state:
            print(f"state dir kept: {state}", file=sys.stderr)
        else:
            shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["tiny", "1g"], help="one guest only")
    parser.add_argument("--uri", default="qemu:///system")
    parser.add_argument("--guest-cache", default=os.environ.get("NOVALITE_GUEST_CACHE", "/var/tmp/novalite-guest"))
    parser.add_argument("--keep-state", action="store_true", help="keep the state dir (serve.log) afterwards")
    args = parser.parse_args()
    if subprocess.run(["virsh", "-c", args.uri, "version"], capture_output=True).returncode != 0:
        sys.exit(f"libvirt is not reachable at {args.uri}: run scripts/setup-libvirt.sh first")
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
