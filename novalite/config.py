"""Configuration: a TOML file, then ``NOVALITE_<SETTING>`` environment overrides, then flags.

Defaults serve a lab on one machine: SQLite in the state dir, the in-process bus, every
service in one process, one fake hypervisor host. The example file ``config/novalite.toml``
documents every setting.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ALL_SERVICES = ("api", "conductor", "scheduler", "console", "compute")


@dataclass
class Settings:
    #: Where the embedded database, images, tokens and the generated clouds.yaml live.
    state_dir: Path = Path("~/.local/state/novalite")
    #: host:port the API (Keystone, Nova and Glance paths) listens on.
    listen: str = "127.0.0.1:8774"
    #: The URL clients use to reach the API (what the service catalog advertises).
    #: Empty: derived from ``listen``.
    public_url: str = ""
    #: SQLAlchemy-style URL; empty means ``sqlite:///<state_dir>/novalite.db``.
    database_url: str = ""
    database_pool_size: int = 10
    #: ``memory://`` (in-process) or ``rabbit://user:pass@host:5672/vhost``.
    transport_url: str = "memory://"
    #: Services this process runs (``novalite serve --services``).
    services: list[str] = field(default_factory=lambda: list(ALL_SERVICES))
    #: Hypervisor driver of the local compute agent(s).
    driver: str = "fake"
    #: Driver options (the ``[driver]`` table in TOML).
    driver_options: dict[str, Any] = field(default_factory=dict)
    #: Compute host name of the local agent; with ``fake_hosts`` > 1, hosts are ``<host>-N``.
    host: str = ""
    #: How many fake hypervisor hosts ``novalite serve`` runs in-process (fake driver only).
    fake_hosts: int = 1
    availability_zone: str = "nova"
    region: str = "RegionOne"
    #: Password of the ``admin`` user created on first start; empty: generated and printed once.
    admin_password: str = ""
    token_ttl: int = 3600
    report_interval: float = 10.0
    service_down_time: float = 60.0
    #: A build not ACTIVE after this many seconds goes to ERROR (Nova's instance_build_timeout).
    build_timeout: float = 600.0
    #: How long an RPC call to an agent waits before giving up.
    rpc_timeout: float = 60.0
    #: Seconds between power-state syncs of each agent.
    sync_power_state_interval: float = 60.0
    cpu_allocation_ratio: float = 4.0
    ram_allocation_ratio: float = 1.0
    disk_allocation_ratio: float = 1.0
    reserved_host_memory_mb: int = 0
    reserved_host_disk_gb: int = 0
    scheduler_max_attempts: int = 3
    ram_weight_multiplier: float = 1.0
    cpu_weight_multiplier: float = 1.0
    disk_weight_multiplier: float = 1.0
    #: Default quotas per project (Nova's defaults).
    quota_instances: int = 10
    quota_cores: int = 20
    quota_ram: int = 51200
    quota_key_pairs: int = 100
    quota_metadata_items: int = 128
    #: The network guests get a port on when a server asks for ``networks: auto`` (for the
    #: libvirt driver: the libvirt network of that name; novalite assigns MAC and IP).
    network_name: str = "novalite"
    network_cidr: str = "10.199.0.0/24"
    console_token_ttl: int = 600
    #: Origins the console proxy accepts (empty: the console public URL's origin).
    console_allowed_origins: list[str] = field(default_factory=list)
    #: host:port the console proxy (noVNC page + websocket) listens on; port 0 picks a free one,
    #: and so does a busy port when ``console_public_url`` is empty (console URLs say the real one).
    console_listen: str = "127.0.0.1:6080"
    #: The URL browsers reach the console proxy at (console URLs start with it).
    #: Empty: derived from ``console_listen``.
    console_public_url: str = ""
    #: Directory of noVNC (holding ``core/rfb.js``); empty: the first found of
    #: scripts/setup-novnc.sh's install dir and Debian's /usr/share/novnc.
    novnc_path: str = ""
    log_level: str = "INFO"

    @property
    def listen_host(self) -> str:
        return self.listen.rsplit(":", 1)[0] or "127.0.0.1"

    @property
    def listen_port(self) -> int:
        return int(self.listen.rsplit(":", 1)[1])

    @property
    def public_base(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host = self.listen_host
        if host in ("0.0.0.0", "::", ""):
            host = "127.0.0.1"
        return f"http://{host}:{self.listen_port}"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'novalite.db'}"


def _coerce(value: str, kind: Any, name: str) -> Any:
    kind_name = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
    try:
        if kind_name.startswith("list"):
            return [v.strip() for v in value.split(",") if v.strip()]
        if kind_name.startswith("dict"):
            import json

            return json.loads(value)
        if kind_name == "bool":
            return value.lower() in ("1", "true", "yes", "on")
        if kind_name == "int":
            return int(value)
        if kind_name == "float":
            return float(value)
        if kind_name == "Path":
            return Path(value)
    except ValueError as exc:
        raise ValueError(f"invalid value {value!r} for {name}: {exc}") from None
    return value


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (or ``$NOVALITE_CONFIG``), apply ``NOVALITE_*`` env vars, then ``overrides``."""
    values: dict[str, Any] = {}
    path = path or os.environ.get("NOVALITE_CONFIG")
    if path:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        if "driver" in data and isinstance(data["driver"], dict):
            table = data.pop("driver")
            data["driver"] = table.pop("name", "fake")
            data["driver_options"] = table
        values.update(data)
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ValueError(f"unknown setting(s) in {path}: {', '.join(sorted(unknown))}")
    for name, f in fields.items():
        env = os.environ.get(f"NOVALITE_{name.upper()}")
        if env is not None:
            values[name] = _coerce(env, f.type, f"NOVALITE_{name.upper()}")
    values.update({k: v for k, v in overrides.items() if v is not None})
    for name in ("state_dir",):
        if name in values:
            values[name] = Path(values[name])
    settings = Settings(**values)
    settings.state_dir = settings.state_dir.expanduser().resolve()
    bad = set(settings.services) - set(ALL_SERVICES)
    if bad:
        raise ValueError(f"unknown service(s) {', '.join(sorted(bad))}; choose from {', '.join(ALL_SERVICES)}")
    return settings
