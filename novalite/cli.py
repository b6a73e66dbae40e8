"""The ``novalite`` command: ``serve``, ``agent``, ``status``, ``db upgrade``, ``--version``."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from novalite import __version__
from novalite.config import ALL_SERVICES, Settings, load_settings
from novalite.log import setup_logging
from novalite.shutdown import ShutdownSignals


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", help="TOML config file (default: $NOVALITE_CONFIG)")
    parser.add_argument("--state-dir", help="where state lives ($NOVALITE_STATE_DIR)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING ($NOVALITE_LOG_LEVEL)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="novalite", description="A compute cloud in one Python process.")
    parser.add_argument("--version", action="version", version=f"novalite {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the API and control plane (and, by default, local compute hosts)")
    _common(serve)
    serve.add_argument("--listen", help="host:port of the API ($NOVALITE_LISTEN, default 127.0.0.1:8774)")
    serve.add_argument(
        "--services",
        help=f"comma-separated subset of {','.join(ALL_SERVICES)} (default: all)",
    )
    serve.add_argument("--driver", help="hypervisor driver of the local compute hosts ($NOVALITE_DRIVER)")
    serve.add_argument("--fake-hosts", type=int, help="how many fake hypervisor hosts to run in-process")

    agent = sub.add_parser("agent", help="run only the compute agent beside a hypervisor (no database access)")
    _common(agent)
    agent.add_argument("--host", help="this compute host's name (default: the machine's hostname)")
    agent.add_argument("--driver", help="hypervisor driver ($NOVALITE_DRIVER)")

    status = sub.add_parser("status", help="services, hosts and servers of a running cloud, read through its API")
    _common(status)
    status.add_argument("--os-cloud", help="cloud in clouds.yaml ($OS_CLOUD, default novalite)")
    status.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    status.add_argument("--watch", type=_watch_seconds, metavar="N", help="refresh every N seconds until Ctrl-C")
    status.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each API request")

    db = sub.add_parser("db", help="database maintenance")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    upgrade = db_sub.add_parser("upgrade", help="apply pending schema migrations")
    _common(upgrade)
    return parser


def _watch_seconds(raw: str) -> float:
    from novalite.status import watch_seconds

    return watch_seconds(raw)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    overrides: dict[str, Any] = {"state_dir": args.state_dir, "log_level": args.log_level}
    try:
        if args.command == "serve":
            overrides.update(listen=args.listen, driver=args.driver, fake_hosts=args.fake_hosts)
            overrides["services"] = args.services or None  # comma-separated: Settings splits and checks it
            settings = load_settings(args.config, **overrides)
        elif args.command == "agent":
            overrides.update(host=args.host, driver=args.driver, services=["compute"])
            settings = load_settings(args.config, **overrides)
        else:
            settings = load_settings(args.config, **overrides)
    except (ValueError, OSError) as exc:  # ConfigError names the setting, its source and what was expected
        print(f"novalite: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    if args.command == "status":
        from novalite.status import run as status

        return status(
            os_cloud=args.os_cloud,
            state_dir=settings.state_dir,
            as_json=args.json,
            watch=args.watch,
            timeout=args.timeout,
        )
    if args.command == "db":
        return asyncio.run(_db_upgrade(settings))
    if args.command == "agent":
        if settings.database_url:
            print(
                "novalite agent: refusing to start with a database URL (NOVALITE_DATABASE_URL / database_url): "
                "the compute agent reaches the database only through the conductor.",
                file=sys.stderr,
            )
            return 2
        if settings.transport_url.startswith("memory:"):
            print(
                "novalite agent: needs a shared transport (NOVALITE_TRANSPORT_URL=rabbit://...): with the "
                "in-process transport there is no conductor to talk to.",
                file=sys.stderr,
            )
            return 2
    return asyncio.run(_serve(settings, agent=args.command == "agent"))


async def _db_upgrade(settings: Settings) -> int:
    from novalite.db import Database
    from novalite.db.migrate import current_revision, upgrade

    db = Database(settings.db_url)
    try:
        before = await current_revision(db)
        print(f"database at revision {before or '(empty)'}; applying what is newer", flush=True)
        applied = await upgrade(db, progress=lambda rev, doc: print(f"  applied {rev}: {doc}", flush=True))
        print(f"database at revision {await current_revision(db)} ({len(applied)} migration(s) applied)")
    finally:
        await db.close()
    return 0


async def _serve(settings: Settings, agent: bool) -> int:
    # Each command imports only the process it runs: ``novalite agent`` must not even load
    # the database layer (tests/unit/test_agent_isolation.py checks its sys.modules).
    if agent:
        from novalite.agent.node import AgentNode

        process: Any = AgentNode(settings)
    else:
        from novalite.node import Node

        process = Node(settings)
    signals = ShutdownSignals(settings.stop_timeout)
    signals.install()
    try:
        info = await process.start()
    except Exception as exc:
        print(f"novalite: failed to start: {exc}", file=sys.stderr)
        await process.stop()
        return 1
    if agent:
        hosts = ", ".join(process.compute.hosts)
        print(f"novalite agent {__version__}: compute host(s) {hosts}, driver {settings.driver}", flush=True)
    else:
        _print_banner(process, info)
    await signals.stopping.wait()
    await process.stop()
    signals.uninstall()
    return 0


def _print_banner(node: Any, info: Any) -> None:
    settings = node.settings
    lines = [
        f"novalite {__version__} serving {', '.join(node.roles)}",
        f"  API:          {info.api_url}  (identity /identity/v3, compute /compute/v2.1, image /image, "
        "network /network)",
        f"  dashboard:    {info.api_url}/dashboard",
        f"  state dir:    {info.state_dir}",
        f"  database:     {_redact(settings.db_url)}{_schema_note(info)}",
        f"  transport:    {_redact(settings.transport_url)}",
    ]
    console_url = getattr(node.rt, "console_url", None) if node.rt is not None else None
    if console_url:  # the proxy's real port (it may have fallen back from a busy one)
        lines.append(f"  console:      {console_url}/vnc.html?token=…  (openstack console url show --novnc SERVER)")
    if "compute" in node.roles:
        lines.append(f"  hypervisor:   driver {_driver_summary(node)} on {', '.join(node.compute_hosts())}")
        if node.guest_network:
            lines.append(f"  guest network: {node.guest_network}")
        hint = _resize_hint(node)
        if hint:
            lines.append(hint)
    lines.append(f"  admin password: {info.admin_password_source}")
    if info.generated_password:
        lines.append(f"  admin password (shown once): {info.generated_password}")
    if info.clouds_yaml:
        lines.append(f"  clouds.yaml:  {info.clouds_yaml}")
        lines.append(f"  use it:       export OS_CLIENT_CONFIG_FILE={info.clouds_yaml} OS_CLOUD=novalite")
    print("\n".join(lines), flush=True)


def _resize_hint(node: Any) -> str | None:
    """One compute host and no same-host resize (Nova's default): every resize would end with
    "No valid host was found" — say how to allow it (issue 10)."""
    if len(node.compute_hosts()) != 1 or node.settings.allow_resize_to_same_host:
        return None
    return (
        "  hint:         one compute host: resizes need allow_resize_to_same_host = true "
        "(NOVALITE_ALLOW_RESIZE_TO_SAME_HOST=true); migrations need a second host"
    )


def _schema_note(info: Any) -> str:
    applied = getattr(info, "migrations_applied", None)
    return f"  (schema migrated now: {', '.join(applied)})" if applied else ""


def _driver_summary(node: Any) -> str:
    """``libvirt (virt_type qemu: TCG emulation, qemu:///system)`` or just the driver's name."""
    settings = node.settings
    agents = node.rt.services.get("ComputeAgent", []) if node.rt is not None else []
    driver = agents[0].driver if agents else None
    virt_type = getattr(driver, "virt_type", None)
    if virt_type is None:
        return str(settings.driver)
    kind = {"qemu": "TCG emulation", "kvm": "hardware virtualisation"}.get(virt_type, virt_type)
    uri = getattr(driver, "uri", None)
    return f"{settings.driver} (virt_type {virt_type}: {kind}{f', {uri}' if uri else ''})"


def _redact(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}"
    return url


if __name__ == "__main__":
    sys.exit(main())
