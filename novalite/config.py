"""Configuration: a TOML file, then ``NOVALITE_<SETTING>`` environment variables, then flags.

Every setting is declared once, typed and documented, on :class:`Settings`; the example file
``config/novalite.toml`` is rendered from those declarations by :func:`example_toml` (a test
keeps the two equal). Defaults serve a lab on one machine: SQLite in the state dir, the
in-process bus, every service in one process, one fake hypervisor host.

``Settings(...)`` built directly (as tests do) reads only its keyword arguments; only
:func:`load_settings` consults the file and the environment, so that a bad value can be
reported with where it came from.
"""

from __future__ import annotations

import ipaddress
import json
import os
import textwrap
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, PydanticBaseSettingsSource, SettingsConfigDict

ALL_SERVICES = ("api", "conductor", "scheduler", "console", "compute")
ENV_PREFIX = "NOVALITE_"
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class ConfigError(ValueError):
    """A setting has a bad value; the message names the setting, its source and what was expected."""


class Settings(BaseSettings):
    """Every novalite setting: the Field description is its documentation (and the example file's comment)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    state_dir: Path = Field(
        default=Path("~/.local/state/novalite"),
        description="Where the embedded database, the image files, tokens and the generated clouds.yaml live.",
    )
    listen: str = Field(
        default="127.0.0.1:8774",
        description="host:port the API (Keystone at /identity, Nova at /compute, Glance at /image) listens on. "
        "Keep it on loopback unless the lab network is trusted.",
    )
    public_url: str = Field(
        default="",
        description="The URL clients reach the API at, as advertised in the service catalog. Empty: "
        "http://<listen address>. Set it when behind a proxy or listening on 0.0.0.0.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy-style database URL. Empty: sqlite:///<state_dir>/novalite.db (single process). "
        "For a split deployment, PostgreSQL:",
        examples=["postgresql://novalite:secret@db.lab:5432/novalite"],
    )
    database_pool_size: int = Field(
        default=10, ge=1, description="Size of the database connection pool (as many more may open under load)."
    )
    count_sql_statements: bool = Field(
        default=False,
        description="Count the SQL statements this process runs (novalite_db_statements_total in /metrics): "
        "for benchmarks (scripts/bench_table.py); it costs about a microsecond per statement.",
    )
    transport_url: str = Field(
        default="memory://",
        description="The message bus. memory:// runs every service in this process. For a split deployment, RabbitMQ:",
        examples=["rabbit://novalite:secret@mq.lab:5672/novalite"],
    )
    services: list[str] = Field(
        default_factory=lambda: list(ALL_SERVICES),
        description=f"Which services this process runs (novalite serve --services): any of "
        f"{', '.join(ALL_SERVICES)}. A list, or a comma-separated string.",
    )
    admin_password: str = Field(
        default="",
        description='Password of the "admin" user created on first start. Empty: generated, printed once, '
        "and kept in <state_dir>/clouds.yaml (mode 0600).",
    )
    token_ttl: int = Field(default=3600, gt=0, description="Lifetime of a Keystone token, in seconds.")
    image_ticket_ttl: int = Field(
        default=900,
        gt=0,
        description="Lifetime, in seconds, of an image download ticket: the signed grant to download one image "
        "(header X-Image-Ticket) that a compute host gets for a build instead of the user's token, so no "
        "token rests in the broker or on a host. A stolen ticket gives one image for this long, nothing else.",
    )
    image_ticket_secret: str = Field(
        default="",
        description="Key (at least 16 characters) that signs image download tickets; only controllers need it. "
        "Empty: a random key generated once into the database, which every controller shares.",
    )
    lockout_failure_attempts: int = Field(
        default=10,
        ge=0,
        description="Consecutive failed password logins after which a user is locked out for lockout_duration "
        "(Keystone's [security_compliance] lockout_failure_attempts); 0 disables the lockout. Keystone leaves it "
        "off by default; novalite turns it on because an edge cloud's API is often reachable from networks the "
        "operator does not control, and 10 tries every 5 minutes makes online guessing hopeless while a user "
        "who mistypes is only delayed. A successful login resets the count; so does an admin re-enabling the "
        "user or setting a new password.",
    )
    lockout_duration: float = Field(
        default=300.0,
        ge=0,
        description="Seconds a locked-out user stays locked, counted from the last failed login (Keystone's "
        'lockout_duration); while locked every login is answered 401 "The account is locked for user: <id>." '
        "without checking the password. 0: locked until an admin re-enables the user or sets a new password.",
    )
    password_check_concurrency: int = Field(
        default=2,
        gt=0,
        description="Password hashes (Argon2: ~50 ms of CPU and 64 MiB each) an API process computes at once "
        "for logins; more logins wait in a short queue, so a flood of logins cannot take every CPU and thread.",
    )
    password_check_queue: int = Field(
        default=16,
        ge=0,
        description="Logins that may wait for a password check beyond password_check_concurrency; any more are "
        "answered 429 Too Many Requests with Retry-After at once, without hashing.",
    )
    password_check_queue_per_user: int = Field(
        default=4,
        ge=0,
        description="Of password_check_queue, how many logins of one user (or one unknown user name) may wait; "
        "waiting users take turns, so a flood against one account leaves the others' logins unhindered.",
    )
    max_request_body_size: int = Field(
        default=114688,
        gt=0,
        description="Largest JSON request body, in bytes, the API reads (Nova's max_request_body_size); a larger "
        "one is answered 413 before it is read. Image data uploads are bounded by image_size_cap instead.",
    )
    image_size_cap: int = Field(
        default=1099511627776,
        gt=0,
        description="Largest image, in bytes, that can be uploaded (Glance's image_size_cap, 1 TiB); a larger "
        "upload is answered 413 and leaves no data behind.",
    )
    stop_timeout: float = Field(
        default=5.0,
        gt=0,
        description="Seconds a process stopping on SIGTERM/SIGINT waits for in-flight requests and services "
        "before it exits anyway (a second signal exits at once).",
    )
    region: str = Field(default="RegionOne", description="The region the service catalog advertises.")
    availability_zone: str = Field(default="nova", description="The availability zone of the compute hosts.")
    host: str = Field(
        default="",
        description="Compute host name of the local agent; empty: the machine's hostname. With the fake driver, "
        "fake_hosts > 1 runs several hosts named <host>-1 ... <host>-N in this process.",
    )
    fake_hosts: int = Field(
        default=1, ge=1, description="How many fake hypervisor hosts novalite serve runs in-process (fake driver only)."
    )
    report_interval: float = Field(
        default=10.0, gt=0, description="Seconds between the heartbeats of each service (Nova's default)."
    )
    overlay_sync_interval: float = Field(
        default=2.0,
        gt=0,
        description="Seconds between two looks of the conductor at who is on which VXLAN network: a host "
        "learns its overlay peers within this time of a server being placed or removed.",
    )
    service_down_time: float = Field(
        default=60.0, gt=0, description="A service whose last heartbeat is older than this many seconds is down."
    )
    build_timeout: float = Field(
        default=600.0,
        gt=0,
        description="A build not ACTIVE after this many seconds goes to ERROR (Nova's instance_build_timeout).",
    )
    reclaim_instance_interval: int = Field(
        default=0,
        ge=0,
        description="Seconds a deleted server stays SOFT_DELETED (powered off, still holding its resources and "
        "quota, restorable with `openstack server restore`) before the conductor deletes it; 0 deletes at "
        "once (Nova's reclaim_instance_interval).",
    )
    shelved_offload_time: int = Field(
        default=0,
        ge=-1,
        description="What `openstack server shelve` does with the guest once its snapshot is taken: 0 offloads "
        "it at once (destroyed, its host's resources freed, SHELVED_OFFLOADED), -1 never (SHELVED, kept on its "
        "host until unshelve or shelveOffload); more than 0 keeps it SHELVED that many seconds, then the conductor "
        "offloads it (Nova's shelved_offload_time).",
    )
    allow_resize_to_same_host: bool = Field(
        default=False,
        description="Let a resize choose the server's own host (Nova's default: false, the source host is "
        "excluded). A one-host lab needs true, or every resize ends with 'No valid host was found'.",
    )
    resize_confirm_window: int = Field(
        default=0,
        ge=0,
        description="Seconds after which the conductor confirms a resize or cold migration left in "
        "VERIFY_RESIZE; 0 never confirms automatically (Nova's resize_confirm_window).",
    )
    rpc_timeout: float = Field(
        default=60.0, gt=0, description="How long an RPC call to an agent waits before giving up."
    )
    sync_power_state_interval: float = Field(
        default=60.0, gt=0, description="Seconds between power-state syncs of each agent."
    )
    cpu_allocation_ratio: float = Field(
        default=4.0, gt=0, description="Virtual CPUs the scheduler places per physical CPU."
    )
    ram_allocation_ratio: float = Field(
        default=1.0, gt=0, description="Guest RAM the scheduler places per MB of host RAM."
    )
    disk_allocation_ratio: float = Field(
        default=1.0, gt=0, description="Guest disk the scheduler places per GB of host disk."
    )
    reserved_host_memory_mb: int = Field(default=0, ge=0, description="Host RAM (MB) kept back from guests.")
    reserved_host_disk_gb: int = Field(default=0, ge=0, description="Host disk (GB) kept back from guests.")
    scheduler_max_attempts: int = Field(
        default=3, ge=1, description="How many hosts a build is tried on before the server goes to ERROR."
    )
    ram_weight_multiplier: float = Field(
        default=1.0,
        description="Weigher multipliers: positive spreads instances over hosts, negative stacks them. "
        "This one weighs free RAM.",
    )
    cpu_weight_multiplier: float = Field(default=1.0, description="Weigher multiplier of free vCPUs (see above).")
    disk_weight_multiplier: float = Field(default=1.0, description="Weigher multiplier of free disk (see above).")
    scheduler_host_subset_size: int = Field(
        default=1,
        ge=1,
        description="The scheduler picks at random among this many best-weighed hosts (Nova's "
        "[filter_scheduler]host_subset_size; 1 = always the best). More spreads concurrent schedulers further "
        "apart at the cost of less optimal choices.",
    )
    shuffle_best_same_weighed_hosts: bool = Field(
        default=True,
        description="Break ties between equally weighed best hosts at random instead of by database row order "
        "(Nova's [filter_scheduler] option, whose default there is false; true here because lab and edge hosts "
        "are often identical, and row order piled concurrent requests onto the first host).",
    )
    quota_instances: int = Field(
        default=10,
        ge=-1,
        description="Default quotas per project (Nova's defaults; -1 = unlimited); admins change them per "
        "project with `openstack quota set`. This one counts servers.",
    )
    quota_cores: int = Field(default=20, ge=-1, description="Default quota of vCPUs per project.")
    quota_ram: int = Field(default=51200, ge=-1, description="Default quota of RAM (MB) per project.")
    quota_key_pairs: int = Field(default=100, ge=-1, description="Default quota of key pairs.")
    quota_metadata_items: int = Field(default=128, ge=-1, description="Default quota of metadata items per server.")
    network_name: str = Field(
        default="private",
        description="Guest networking: the network (a shared one, created on first start with a subnet of "
        "network_cidr, as devstack's `private`) that servers created with `--nic auto` (the default without "
        "--nic) get a port on; novalite assigns the MAC and the fixed IP. On the hypervisor its ports are on "
        "guest_network_name.",
    )
    guest_network_name: str = Field(
        default="novalite",
        description="The hypervisor's network the ports of network_name are attached to: with the libvirt driver, "
        "the libvirt network of that name (created isolated, with network_cidr, when missing). Before the network "
        "service (issue 12) this was network_name itself, whose default was `novalite`: the default keeps "
        "existing libvirt hosts as they were.",
    )
    network_cidr: str = Field(default="10.199.0.0/24", description="The subnet of network_name, in CIDR notation.")
    console_listen: str = Field(
        default="127.0.0.1:6080",
        description="host:port the browser console proxy (websockify + noVNC) listens on; port 0 picks a free one, "
        "and so does a busy port when console_public_url is empty (console URLs say the real one).",
    )
    console_public_url: str = Field(
        default="",
        description="The URL browsers reach the console proxy at (console URLs start with it). Empty: "
        "http://<console_listen>.",
    )
    console_token_ttl: int = Field(default=600, gt=0, description="Lifetime of a console URL's token, in seconds.")
    console_allowed_origins: list[str] = Field(
        default_factory=list,
        description="Origins the console proxy accepts (empty: the origin of the console's public URL). A "
        "list, or a comma-separated string.",
    )
    novnc_path: str = Field(
        default="",
        description="Directory of noVNC (holding core/rfb.js). Empty: the first found of "
        "/usr/local/share/novalite/novnc and ~/.local/share/novalite/novnc (scripts/setup-novnc.sh "
        "puts other versions there), else the copy shipped in the package (noVNC 1.7.0).",
    )
    metrics_enabled: bool = Field(
        default=True,
        description="Serve Prometheus metrics at GET /metrics on the API listener. It needs no token; "
        "metrics_allow_from says who may scrape it (see docs/metrics.md).",
    )
    metrics_allow_from: list[str] = Field(
        default_factory=lambda: ["127.0.0.0/8", "::1/128"],
        description="Networks whose clients may read GET /metrics (it names hosts and counts servers, so "
        "not everyone who can reach the API should): others get 403. Loopback only by default; add your "
        "Prometheus server's address.",
    )
    agent_metrics_listen: str = Field(
        default="",
        description="host:port where `novalite agent` serves its own Prometheus metrics at GET /metrics (driver "
        "call latencies, guests by power state, its bus messages; metrics_allow_from says who may read them); "
        "port 0 picks a free one. Empty: off. `novalite serve` shows its agents' metrics on the API's "
        "/metrics instead.",
        examples=["127.0.0.1:9180"],
    )
    migration_listen: str = Field(
        default="127.0.0.1:0",
        description="host:port where a compute agent receives the disks of servers resized or cold-migrated to its "
        "host (issue 10: the source's agent streams them over HTTP, each transfer opened by a one-time ticket the "
        "conductor issues); port 0 picks a free one. It listens only while a transfer is expected. Hosts must "
        "reach each other there: loopback serves agents on one machine only.",
    )
    migration_address: str = Field(
        default="",
        description="The address other compute hosts reach this host's migration_listen at. Empty: the host of "
        "migration_listen (set it when that is 0.0.0.0).",
    )
    log_level: str = Field(default="INFO", description=f"One of {', '.join(LOG_LEVELS)}.")
    driver: str = Field(default="fake", description="Hypervisor driver of the local compute host(s) ([driver] name).")
    driver_options: dict[str, Any] = Field(
        default_factory=dict,
        description="Options of the driver (the rest of the [driver] table; from the environment: a JSON object).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Only the keyword arguments: ``load_settings`` layers file and environment itself, to name sources."""
        return (init_settings,)

    @field_validator("services", "console_allowed_origins", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        """A JSON list or ``a,b`` string, as env variables and hand-written TOML give them."""
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except ValueError:
                    raise ValueError("expected a list or a comma-separated string") from None
            return [item.strip() for item in text.split(",") if item.strip()]
        return value

    @field_validator("driver_options", mode="before")
    @classmethod
    def _json_object(cls, value: Any) -> Any:
        """The environment can only give the driver's options as a JSON object."""
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = None
            if not isinstance(value, dict):
                raise ValueError("expected a table (in the environment: a JSON object)")
        return value

    @field_validator("services")
    @classmethod
    def _known_services(cls, value: list[str]) -> list[str]:
        """A misspelt service would silently not run."""
        bad = sorted(set(value) - set(ALL_SERVICES))
        if bad:
            raise ValueError(f"unknown service(s) {', '.join(bad)}; choose from {', '.join(ALL_SERVICES)}")
        return value

    @field_validator("state_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        """Paths derived from it (the SQLite URL, clouds.yaml) must not depend on the working directory."""
        return value.expanduser().resolve()

    @field_validator("listen", "console_listen", "agent_metrics_listen", "migration_listen")
    @classmethod
    def _host_port(cls, value: str, info: ValidationInfo) -> str:
        """Fail at start, not when the listener is bound (an empty agent_metrics_listen is off)."""
        if value == "" and info.field_name == "agent_metrics_listen":
            return value
        _host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or int(port) > 65535:
            raise ValueError("expected host:port, e.g. 127.0.0.1:8774")
        return value

    @field_validator("network_cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        """The address allocator needs a network address (no host bits set)."""
        try:
            ipaddress.ip_network(value)
        except ValueError:
            raise ValueError("expected a network address in CIDR notation, e.g. 10.199.0.0/24") from None
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        """An unknown level name would fail only later, inside the logging setup."""
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"expected one of {', '.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("image_ticket_secret")
    @classmethod
    def _ticket_secret(cls, value: str) -> str:
        """A short key would let anyone who guesses it forge image tickets; refuse it at start."""
        if value and len(value) < 16:
            raise ValueError("expected at least 16 characters (or empty: a generated key)")
        return value

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

    def console_public_base(self, port: int | None = None) -> str:
        """The URL browsers reach the console proxy at: ``console_public_url``, or derived from
        ``console_listen`` (with ``port``, the proxy's real port, when it listens on port 0)."""
        if self.console_public_url:
            return self.console_public_url.rstrip("/")
        host, _, listen_port = self.console_listen.rpartition(":")
        if host in ("0.0.0.0", "::", "", "[::]"):
            host = "127.0.0.1"
        return f"http://{host}:{port or int(listen_port)}"

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.state_dir / 'novalite.db'}"


class _EnvSource(EnvSettingsSource):
    """``NOVALITE_*`` variables; a list setting also takes a comma-separated string (``api,conductor``)."""

    def decode_complex_value(self, field_name: str, field: FieldInfo, value: Any) -> Any:
        try:
            decoded = super().decode_complex_value(field_name, field, value)
        except ValueError:
            return value  # not JSON: the field's validator splits it or says what it expected
        return decoded if isinstance(decoded, list | dict) else value


def _read_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The settings of a TOML file; its ``[driver]`` table is ``driver`` (its ``name``) and ``driver_options``."""
    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    if isinstance(data.get("driver"), dict):
        table = data.pop("driver")
        data["driver"] = table.pop("name", "fake")
        data["driver_options"] = table
    unknown = sorted(set(data) - set(Settings.model_fields))
    if unknown:
        raise ConfigError(f"unknown setting(s) in {path}: {', '.join(unknown)}")
    return data


def _expected(error: ErrorDetails) -> str:
    """What a pydantic error says was expected, in words a config file's author reads."""
    kind, ctx = error["type"], error.get("ctx") or {}
    words = {
        "float_parsing": "expected a number",
        "float_type": "expected a number",
        "int_parsing": "expected an integer",
        "int_type": "expected an integer",
        "int_from_float": "expected an integer",
        "string_type": "expected a string",
        "bool_parsing": "expected true or false",
        "bool_type": "expected true or false",
        "list_type": "expected a list or a comma-separated string",
        "dict_type": "expected a table",
        "path_type": "expected a path",
        "extra_forbidden": "unknown setting",
    }
    if kind in words:
        return words[kind]
    bounds = {"greater_than": "gt", "greater_than_equal": "ge", "less_than": "lt", "less_than_equal": "le"}
    if kind in bounds:
        op = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}[bounds[kind]]
        return f"expected a number {op} {ctx[bounds[kind]]:g}"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    return error["msg"].replace("Input should be", "expected", 1)


def _config_error(exc: ValidationError, where: Callable[[str], str]) -> ConfigError:
    problems = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else "?"
        item = f" (item {error['loc'][1]})" if len(error["loc"]) > 1 else ""
        problems.append(f"{where(name)}{item}: {_expected(error)}")
    return ConfigError("; ".join(problems))


def load_settings(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Read ``path`` (or ``$NOVALITE_CONFIG``), apply ``NOVALITE_*`` env vars, then ``overrides``.

    ``overrides`` are the command line's flags (None: not given). A bad value raises
    :class:`ConfigError` naming the setting, where it came from and what was expected.
    """
    path = path or os.environ.get(f"{ENV_PREFIX}CONFIG")
    from_file = _read_file(path) if path else {}
    env = _EnvSource(Settings)
    from_env = env()
    from_flags = {name: value for name, value in overrides.items() if value is not None}

    def where(name: str) -> str:
        if name in from_flags:
            return f"{name} = {from_flags[name]!r} on the command line"
        if name in from_env:
            return f"{ENV_PREFIX}{name.upper()}={env.env_vars.get(f'{ENV_PREFIX}{name}'.lower(), '')!r}"
        if name in from_file:
            return f"{name} = {from_file[name]!r} in {path}"
        return name

    try:
        return Settings(**{**from_file, **from_env, **from_flags})
    except ValidationError as exc:
        raise _config_error(exc, where) from None


# -- the example configuration file ------------------------------------------------------------------------

_EXAMPLE_HEAD = """\
# novalite example configuration. Every setting is optional; the defaults serve a lab on
# one machine. Use it with `novalite serve --config config/novalite.toml` (or
# NOVALITE_CONFIG=...). Any setting can also be given as an environment variable named
# NOVALITE_<SETTING>, e.g. NOVALITE_LISTEN=0.0.0.0:8774; the environment wins over this file,
# and command-line flags win over both.
#
# Generated from novalite/config.py (novalite.config.example_toml()): edit the descriptions
# there, not this file.
"""

_DRIVER_TABLE = """\
# The hypervisor driver of this process's compute host(s) and its options.
[driver]
name = "fake"
# fake driver: host size, boot delay in seconds, injected failures
vcpus = 16
memory_mb = 32768
local_gb = 500
boot_delay = 0
# libvirt driver (see docs/libvirt.md): real QEMU guests. Replace the fake driver's lines
# above with these. Guests' ports are on the libvirt network named guest_network_name (above),
# whose subnet must be network_cidr; when it does not exist, novalite creates it isolated
# (no NAT: guests reach only each other and this host) unless create_network = false.
# name = "libvirt"
# uri = "qemu:///system"
# virt_type = "qemu"          # TCG; "kvm" only where KVM really works (never auto-detected)
# instances_path = "/var/lib/novalite/instances"
# create_network = true
# force_config_drive = false
# shutdown_timeout = 60       # ACPI grace period before a hard power-off
# Neutron networks' data path (docs/network.md, "The data path"): a bridge per network, VXLAN
# between hosts from this host's tunnel address, flat networks on the operator's bridges.
# overlay_local_ip = "192.0.2.10"
# physical_bridges = { lan = "br0" }
# network_state_path = "/var/lib/novalite/network"
"""

#: Settings the example file shows in its ``[driver]`` table rather than as top-level keys.
_TABLE_SETTINGS = ("driver", "driver_options")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))


def example_toml() -> str:
    """The commented example configuration (``config/novalite.toml``): every setting with its default."""
    parts = [_EXAMPLE_HEAD]
    for name, info in Settings.model_fields.items():
        if name in _TABLE_SETTINGS:
            continue
        comment = textwrap.fill(
            info.description or "",
            width=90,
            initial_indent="# ",
            subsequent_indent="# ",
            break_long_words=False,
            break_on_hyphens=False,
        )
        examples = "".join(f"# {name} = {_toml_value(example)}\n" for example in info.examples or ())
        parts.append(f"{comment}\n{examples}{name} = {_toml_value(info.get_default(call_default_factory=True))}\n")
    parts.append(_DRIVER_TABLE)
    return "\n".join(parts)
