"""``novalite status``: the operator's one-screen view of a running cloud, read through its public API.

It logs in as the ``openstack`` CLI would — the cloud named by ``--os-cloud`` / ``$OS_CLOUD``
(default ``novalite``) in ``$OS_CLIENT_CONFIG_FILE``, ``./clouds.yaml``,
``~/.config/openstack/clouds.yaml``, ``/etc/openstack/clouds.yaml`` or, last, the clouds.yaml
``novalite serve`` wrote into its state dir — and reads only public admin APIs (Keystone
tokens, ``os-services``, ``os-hypervisors/detail``, ``servers/detail?all_tenants``), so it works
from any machine that can reach the API and needs no database access (it must not import the
database layer: ``novalite agent`` hosts run it too).

Exit status, for cron and monitoring: 0 every service is up; 1 some service is down (forced
down or silent for longer than ``service_down_time``); 2 the status could not be read (API
unreachable, login refused, not an admin, no clouds.yaml).

Only aiohttp and PyYAML: openstacksdk is a test dependency, not a runtime one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import ssl
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import aiohttp
import yaml

#: 2.53 gives uuids and ``forced_down``; 2.88 drops the hypervisors' usage fields, so 2.87 is the last with them.
COMPUTE_MICROVERSION = "2.87"
DEFAULT_CLOUD = "novalite"
#: ``--watch`` bounds: faster than once a second only loads the API; slower than an hour is cron's job.
WATCH_MIN, WATCH_MAX = 1.0, 3600.0
#: A clock difference between this machine and the API smaller than this is noise of the Date header.
_SKEW_TOLERANCE = 2.0

EXIT_OK, EXIT_DOWN, EXIT_UNAVAILABLE = 0, 1, 2


class StatusError(Exception):
    """The status cannot be read at all (exit 2); the message says why in the operator's words."""


# -- clouds.yaml ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CloudConfig:
    """The parts of a clouds.yaml entry needed to log in and find the compute endpoint."""

    name: str
    source: Path
    auth_url: str
    username: str
    password: str
    project_name: str | None
    project_id: str | None
    user_domain: dict[str, str]
    project_domain: dict[str, str]
    region: str | None
    interface: str
    verify: bool | str


def clouds_yaml_candidates(state_dir: Path | None) -> list[Path]:
    """Where the ``openstack`` CLI looks (``$OS_CLIENT_CONFIG_FILE`` first), then novalite's own file."""
    found: list[Path] = []
    explicit = os.environ.get("OS_CLIENT_CONFIG_FILE")
    if explicit:
        found.append(Path(explicit).expanduser())
    found += [
        Path.cwd() / "clouds.yaml",
        Path("~/.config/openstack/clouds.yaml").expanduser(),
        Path("/etc/openstack/clouds.yaml"),
    ]
    if state_dir is not None:
        found.append(state_dir / "clouds.yaml")
    return found


def _domain(auth: dict[str, Any], kind: str) -> dict[str, str]:
    """Keystone's domain reference for the user or the project (``*_domain_id`` wins over ``*_domain_name``)."""
    for key, field in ((f"{kind}_domain_id", "id"), (f"{kind}_domain_name", "name"), ("domain_id", "id")):
        if auth.get(key):
            return {field: str(auth[key])}
    if auth.get("domain_name"):
        return {"name": str(auth["domain_name"])}
    return {"id": "default"}


def load_cloud(name: str | None, state_dir: Path | None) -> CloudConfig:
    """The named cloud from the first clouds.yaml that defines it; :class:`StatusError` if none does."""
    cloud = name or os.environ.get("OS_CLOUD") or DEFAULT_CLOUD
    searched: list[str] = []
    for path in clouds_yaml_candidates(state_dir):
        if not path.is_file():
            continue
        searched.append(str(path))
        try:
            doc = yaml.safe_load(path.read_text())
        except (OSError, ValueError, yaml.YAMLError) as exc:
            raise StatusError(f"cannot read {path}: {exc}") from None
        clouds = doc.get("clouds") if isinstance(doc, dict) else None
        entry = clouds.get(cloud) if isinstance(clouds, dict) else None
        if not isinstance(entry, dict):
            continue
        auth = entry.get("auth") or {}
        missing = [k for k in ("auth_url", "username", "password") if not auth.get(k)]
        if missing:
            raise StatusError(f"cloud {cloud!r} in {path} has no {', '.join(missing)} under auth")
        verify: bool | str = entry.get("cacert") or entry.get("verify", True)
        return CloudConfig(
            name=cloud,
            source=path,
            auth_url=str(auth["auth_url"]).rstrip("/"),
            username=str(auth["username"]),
            password=str(auth["password"]),
            project_name=str(auth["project_name"]) if auth.get("project_name") else None,
            project_id=str(auth["project_id"]) if auth.get("project_id") else None,
            user_domain=_domain(auth, "user"),
            project_domain=_domain(auth, "project"),
            region=str(entry["region_name"]) if entry.get("region_name") else None,
            interface=str(entry.get("interface") or "public"),
            verify=verify if isinstance(verify, str) else bool(verify),
        )
    where = ", ".join(searched) if searched else "no clouds.yaml found (set OS_CLIENT_CONFIG_FILE)"
    raise StatusError(f"cloud {cloud!r} is not defined in any clouds.yaml ({where})")


# -- the API -------------------------------------------------------------------------------------------------


class Client:
    """A Keystone-authenticated reader of the compute API; re-logs in once when the token expires."""

    def __init__(self, cloud: CloudConfig, session: aiohttp.ClientSession) -> None:
        self.cloud = cloud
        self.session = session
        self.token: str | None = None
        self.compute_url: str | None = None
        #: API clock minus ours, in seconds (from the Date header), to age heartbeats on the API's clock.
        self.skew = 0.0
        #: The three reads of a refresh run at once; one login serves them all (a password check costs ~0.3 s).
        self._login_lock = asyncio.Lock()

    def _ssl(self) -> ssl.SSLContext | bool:
        verify = self.cloud.verify
        if isinstance(verify, str):
            return ssl.create_default_context(cafile=verify)
        return True if verify else False

    async def login(self) -> None:
        cloud = self.cloud
        scope: dict[str, Any]
        if cloud.project_id:
            scope = {"project": {"id": cloud.project_id}}
        elif cloud.project_name:
            scope = {"project": {"name": cloud.project_name, "domain": cloud.project_domain}}
        else:
            raise StatusError(f"cloud {cloud.name!r} in {cloud.source} names no project to scope the token to")
        body = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": cloud.username, "domain": cloud.user_domain, "password": cloud.password}
                    },
                },
                "scope": scope,
            }
        }
        url = f"{cloud.auth_url}/auth/tokens"
        async with self._call("POST", url, json=body) as resp:
            if resp.status in (401, 403):
                raise StatusError(
                    f"authentication failed for user {cloud.username!r} at {cloud.auth_url} "
                    f"(HTTP {resp.status}: {await _error_text(resp)}); check the password in {cloud.source}"
                )
            if resp.status != 201:
                raise StatusError(f"login at {url} failed: HTTP {resp.status}: {await _error_text(resp)}")
            self.token = resp.headers.get("X-Subject-Token")
            doc = await resp.json()
        self.compute_url = _endpoint(doc.get("token", {}).get("catalog", []), "compute", cloud)
        if not self.token or not self.compute_url:
            raise StatusError(f"the token from {cloud.auth_url} has no compute endpoint in its catalog")

    def _call(self, method: str, url: str, **kw: Any) -> Any:
        """The request context manager, with the errors of an unreachable API turned into :class:`StatusError`."""
        return _Guarded(self.session.request(method, url, ssl=self._ssl(), **kw), url)

    async def get(self, path: str) -> dict[str, Any]:
        """GET a compute path (or a full ``next`` link) as the admin, logging in again once on 401."""
        refused: str | None = None  # the token the API rejected, so it is replaced exactly once
        for attempt in (1, 2):
            async with self._login_lock:
                if self.token is None or self.token == refused:
                    await self.login()
                token = self.token
            assert self.compute_url is not None
            url = path if path.startswith("http") else f"{self.compute_url}{path}"
            headers = {
                "X-Auth-Token": token or "",
                "OpenStack-API-Version": f"compute {COMPUTE_MICROVERSION}",
                "X-OpenStack-Nova-API-Version": COMPUTE_MICROVERSION,
            }
            async with self._call("GET", url, headers=headers) as resp:
                if resp.status == 401 and attempt == 1:
                    refused = token
                    continue
                if resp.status == 403:
                    raise StatusError(
                        f"user {self.cloud.username!r} may not read {path} (HTTP 403): novalite status needs the "
                        "admin role"
                    )
                if resp.status != 200:
                    raise StatusError(f"GET {url} failed: HTTP {resp.status}: {await _error_text(resp)}")
                self._note_clock(resp.headers.get("Date"))
                body: dict[str, Any] = await resp.json()
                return body
        raise StatusError(f"GET {path}: the API refused a fresh token (HTTP 401)")

    async def get_all(self, path: str, key: str) -> list[dict[str, Any]]:
        """Every item of a paginated collection, following its ``*_links`` ``next`` hrefs."""
        items: list[dict[str, Any]] = []
        next_path: str | None = path
        while next_path:
            body = await self.get(next_path)
            items += body.get(key, [])
            links = body.get(f"{key}_links") or []
            next_path = next((link["href"] for link in links if link.get("rel") == "next"), None)
        return items

    def _note_clock(self, date_header: str | None) -> None:
        if not date_header:
            return
        try:
            api_now = parsedate_to_datetime(date_header).astimezone(UTC).replace(tzinfo=None)
        except (TypeError, ValueError):
            return
        skew = (api_now - _utcnow()).total_seconds()
        # The header has whole seconds: only a real clock difference is worth correcting for.
        self.skew = skew if abs(skew) > _SKEW_TOLERANCE else 0.0


class _Guarded:
    """``async with`` around an aiohttp request: connection failures and timeouts become :class:`StatusError`."""

    def __init__(self, request: Any, url: str) -> None:
        self.request = request
        self.url = url

    async def __aenter__(self) -> aiohttp.ClientResponse:
        try:
            resp: aiohttp.ClientResponse = await self.request.__aenter__()
        except (aiohttp.ClientError, OSError) as exc:
            raise StatusError(f"cannot reach the API at {self.url}: {exc}") from None
        except TimeoutError:
            raise StatusError(f"the API at {self.url} did not answer in time") from None
        return resp

    async def __aexit__(self, *exc: Any) -> None:
        await self.request.__aexit__(*exc)


async def _error_text(resp: aiohttp.ClientResponse) -> str:
    """The API's own message (OpenStack error bodies nest it one level down), else the raw body."""
    raw = await resp.text()
    try:
        doc = json.loads(raw)
    except ValueError:
        return raw.strip()[:200]
    if isinstance(doc, dict):
        for value in doc.values():
            if isinstance(value, dict) and "message" in value:
                return str(value["message"])
    return raw.strip()[:200]


def _endpoint(catalog: list[dict[str, Any]], service_type: str, cloud: CloudConfig) -> str | None:
    """The URL of ``service_type`` for the cloud's interface (and region, when it names one)."""
    for service in catalog:
        if service.get("type") != service_type:
            continue
        for ep in service.get("endpoints", []):
            if ep.get("interface") != cloud.interface:
                continue
            if cloud.region and cloud.region not in (ep.get("region"), ep.get("region_id")):
                continue
            return str(ep["url"]).rstrip("/")
    return None


# -- the facts ------------------------------------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt.astimezone(UTC).replace(tzinfo=None) if dt.tzinfo else dt


def _free(total: Any, used: Any) -> int | None:
    return total - used if isinstance(total, int) and isinstance(used, int) else None


async def collect(client: Client) -> dict[str, Any]:
    """Read services, hosts and servers and reduce them to the facts ``status`` prints (and ``--json`` emits)."""
    services_doc, hypervisors, servers = await asyncio.gather(
        client.get("/os-services"),
        client.get_all("/os-hypervisors/detail", "hypervisors"),
        client.get_all("/servers/detail?all_tenants=1", "servers"),
    )
    now = _utcnow()
    services = []
    for svc in sorted(services_doc.get("services", []), key=lambda s: (s.get("binary", ""), s.get("host", ""))):
        seen = _parse_time(svc.get("updated_at"))
        age = max(0.0, (now - seen).total_seconds() + client.skew) if seen else None
        services.append(
            {
                "binary": svc.get("binary"),
                "host": svc.get("host"),
                "zone": svc.get("zone"),
                "state": svc.get("state"),
                "status": svc.get("status"),
                "forced_down": bool(svc.get("forced_down")),
                "disabled_reason": svc.get("disabled_reason"),
                "updated_at": svc.get("updated_at"),
                "heartbeat_age_seconds": round(age, 1) if age is not None else None,
            }
        )
    hosts = []
    for hv in sorted(hypervisors, key=lambda h: h.get("hypervisor_hostname", "")):
        hosts.append(
            {
                "name": hv.get("hypervisor_hostname"),
                "host": (hv.get("service") or {}).get("host"),
                "state": hv.get("state"),
                "status": hv.get("status"),
                "servers": hv.get("running_vms"),
                "vcpus": hv.get("vcpus"),
                "vcpus_used": hv.get("vcpus_used"),
                "vcpus_free": _free(hv.get("vcpus"), hv.get("vcpus_used")),
                "memory_mb": hv.get("memory_mb"),
                "memory_mb_used": hv.get("memory_mb_used"),
                "memory_mb_free": hv.get("free_ram_mb", _free(hv.get("memory_mb"), hv.get("memory_mb_used"))),
                "local_gb": hv.get("local_gb"),
                "local_gb_used": hv.get("local_gb_used"),
                "local_gb_free": hv.get("free_disk_gb", _free(hv.get("local_gb"), hv.get("local_gb_used"))),
            }
        )
    by_status: dict[str, int] = {}
    for server in servers:
        status = str(server.get("status", "UNKNOWN"))
        by_status[status] = by_status.get(status, 0) + 1
    down = [f"{s['binary']} on {s['host']}" for s in services if s["state"] != "up"]
    return {
        "cloud": client.cloud.name,
        "compute_url": client.compute_url,
        "checked_at": now.isoformat(timespec="seconds") + "Z",
        "ok": not down,
        "down": down,
        "services": services,
        "hosts": hosts,
        "servers": {"total": len(servers), "by_status": dict(sorted(by_status.items()))},
        "builds_in_flight": by_status.get("BUILD", 0),
    }


def exit_code(facts: dict[str, Any]) -> int:
    return EXIT_OK if facts["ok"] else EXIT_DOWN


# -- output ---------------------------------------------------------------------------------------------------


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    if seconds < 172800:
        return f"{seconds / 3600:.0f}h ago"
    return f"{seconds / 86400:.0f}d ago"


def _table(rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]


def _usage(used: Any, total: Any, free: Any, unit: str) -> str:
    if total is None:
        return "-"
    return f"{used}/{total}{unit} ({free} free)"


def render_text(facts: dict[str, Any]) -> str:
    """The human view: one table per kind of fact and a verdict line a pager or a cron mail shows first."""
    out = [f"novalite status: cloud {facts['cloud']} at {facts['compute_url']} ({facts['checked_at']})", ""]
    services = facts["services"]
    out.append(f"Services ({len(services)}, {sum(1 for s in services if s['state'] == 'up')} up)")
    if services:
        rows = [["BINARY", "HOST", "STATE", "STATUS", "LAST HEARTBEAT"]]
        for s in services:
            state = str(s["state"]).upper() if s["state"] != "up" else "up"
            if s["forced_down"]:
                state += " (forced)"
            status = str(s["status"]) + (f" ({s['disabled_reason']})" if s["disabled_reason"] else "")
            rows.append([str(s["binary"]), str(s["host"]), state, status, _age(s["heartbeat_age_seconds"])])
        out += _table(rows)
    out.append("")
    hosts = facts["hosts"]
    out.append(f"Hosts ({len(hosts)})")
    if hosts:
        rows = [["HOST", "STATE", "STATUS", "SERVERS", "VCPUS USED/TOTAL", "RAM USED/TOTAL", "DISK USED/TOTAL"]]
        for h in hosts:
            rows.append(
                [
                    str(h["name"]),
                    str(h["state"]) if h["state"] == "up" else str(h["state"]).upper(),
                    str(h["status"]),
                    str(h["servers"] if h["servers"] is not None else "-"),
                    _usage(h["vcpus_used"], h["vcpus"], h["vcpus_free"], ""),
                    _usage(h["memory_mb_used"], h["memory_mb"], h["memory_mb_free"], " MB"),
                    _usage(h["local_gb_used"], h["local_gb"], h["local_gb_free"], " GB"),
                ]
            )
        out += _table(rows)
    out.append("")
    servers = facts["servers"]
    counts = ", ".join(f"{status} {n}" for status, n in servers["by_status"].items())
    out.append(f"Servers: {servers['total']}" + (f" ({counts})" if counts else ""))
    out.append(f"Builds in flight: {facts['builds_in_flight']}")
    out.append("")
    if facts["ok"]:
        out.append("OK: every service is up")
    else:
        out.append(f"DOWN: {len(facts['down'])} service(s) down: {'; '.join(facts['down'])}")
    return "\n".join(out)


# -- the command ----------------------------------------------------------------------------------------------


def watch_seconds(raw: str) -> float:
    """argparse type of ``--watch``: a refresh period within :data:`WATCH_MIN`..:data:`WATCH_MAX` seconds."""
    try:
        value = float(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {raw!r}") from None
    if not WATCH_MIN <= value <= WATCH_MAX:
        raise argparse.ArgumentTypeError(f"must be between {WATCH_MIN:g} and {WATCH_MAX:g} seconds, got {raw}")
    return value


async def _run(cloud: CloudConfig, as_json: bool, watch: float | None, timeout: float) -> int:
    clear = watch is not None and not as_json and sys.stdout.isatty()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session:
        client = Client(cloud, session)
        while True:
            try:
                facts = await collect(client)
                code = exit_code(facts)
                text = json.dumps(facts, indent=None if watch else 2) if as_json else render_text(facts)
            except StatusError as exc:
                _stop_if_cancelled(exc)
                if watch is None:
                    raise
                # Watching rides out an API restart: say so and try again at the next refresh.
                code, text = EXIT_UNAVAILABLE, f"novalite status: {exc}"
                if as_json:
                    text = json.dumps({"cloud": cloud.name, "ok": False, "error": str(exc)})
            if clear:
                sys.stdout.write("\x1b[H\x1b[2J")
            print(text, flush=True)
            if watch is None:
                return code
            if not as_json:
                print(f"\n(refreshing every {watch:g}s; Ctrl-C to stop)", flush=True)
            _stop_if_cancelled()
            await asyncio.sleep(watch)


def _stop_if_cancelled(cause: BaseException | None = None) -> None:
    """End the watch if Ctrl-C cancelled it while a request ran.

    asyncio.run turns Ctrl-C into a cancellation of this task; a request it lands in may
    report it as a timeout or a dropped connection (a StatusError), or swallow it, and the
    watch would then go on ignoring the Ctrl-C.
    """
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from cause


def run(
    *,
    os_cloud: str | None,
    state_dir: Path | None,
    as_json: bool = False,
    watch: float | None = None,
    timeout: float = 10.0,
) -> int:
    """The ``novalite status`` command: print the status once (or every ``watch`` seconds); its exit status."""
    try:
        cloud = load_cloud(os_cloud, state_dir)
        return asyncio.run(_run(cloud, as_json, watch, timeout))
    except StatusError as exc:
        print(f"novalite status: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except KeyboardInterrupt:
        # Ctrl-C is how a --watch ends: the operator asked for it, so it is a success. A single check
        # cut short has no verdict: 130, the shell's "killed by SIGINT".
        return EXIT_OK if watch is not None else 130
