"""Migration 0005 keeps existing servers' addresses: their ports move onto the built-in network."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from novalite.db import Database
from novalite.db.migrate import upgrade


async def _legacy_rows(db: Database) -> None:
    """A project, a server and its port as revision 0004 stored them."""
    async with db.begin() as conn:
        await conn.execute(
            sa.text(
                "INSERT INTO projects (id, name, domain_id, description, enabled, created_at) "
                "VALUES ('p-admin', 'admin', 'default', '', true, CURRENT_TIMESTAMP)"
            )
        )
        await conn.execute(
            sa.text(
                "INSERT INTO instances (uuid, project_id, user_id, flavor, vcpus, memory_mb, root_gb, ephemeral_gb, "
                "vm_state, tags, scheduler_hints, image_meta, created_at, updated_at) VALUES "
                "('srv-1', 'p-lab', 'u', '{}', 1, 64, 1, 0, 'active', '[]', '{}', '{}', "
                "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
            )
        )
        await conn.execute(
            sa.text(
                "INSERT INTO ports (id, instance_uuid, network, mac, ip, created_at) VALUES "
                "('port-1', 'srv-1', 'private', 'fa:16:3e:00:00:07', '10.199.0.7', CURRENT_TIMESTAMP)"
            )
        )


async def test_existing_ports_keep_their_addresses(db_url: str, monkeypatch: Any) -> None:
    monkeypatch.delenv("NOVALITE_NETWORK_NAME", raising=False)
    monkeypatch.delenv("NOVALITE_NETWORK_CIDR", raising=False)
    db = Database(db_url)
    try:
        assert await upgrade(db, "0004") == ["0001", "0002", "0003", "0004"]
        await _legacy_rows(db)
        assert await upgrade(db, "0005") == ["0005"]
        async with db.connect() as conn:
            [net] = (await conn.execute(sa.text("SELECT id, name, shared, project_id FROM networks"))).all()
            assert (net.name, bool(net.shared), net.project_id) == ("private", True, "p-admin")
            [sub] = (await conn.execute(sa.text("SELECT id, cidr, gateway_ip, network_id FROM subnets"))).all()
            assert (sub.cidr, sub.gateway_ip, sub.network_id) == ("10.199.0.0/24", "10.199.0.1", net.id)
            [port] = (
                await conn.execute(
                    sa.text("SELECT network_id, network, project_id, device_id, device_owner, ip, mac FROM ports")
                )
            ).all()
            assert port == (net.id, "private", "p-lab", "srv-1", "compute:nova", "10.199.0.7", "fa:16:3e:00:00:07")
            ips = (await conn.execute(sa.text("SELECT port_id, subnet_id, ip_address FROM port_ips"))).all()
            assert [tuple(r) for r in ips] == [("port-1", sub.id, "10.199.0.7")]
    finally:
        await db.close()


async def test_addresses_outside_the_setting_and_a_renamed_network(
    db_url: str, tmp_path: Any, monkeypatch: Any
) -> None:
    """An address outside ``network_cidr`` still gets its row (never handed out twice), and a
    start with another ``network_name`` renames the built-in network instead of making a second."""
    from novalite.config import Settings
    from novalite.store.networks import ensure_default_network

    monkeypatch.delenv("NOVALITE_NETWORK_NAME", raising=False)
    monkeypatch.setenv("NOVALITE_NETWORK_CIDR", "10.99.0.0/24")
    db = Database(db_url)
    try:
        await upgrade(db, "0004")
        await _legacy_rows(db)
        await upgrade(db)
        async with db.begin() as conn:
            [(net_id, cidr)] = (await conn.execute(sa.text("SELECT network_id, cidr FROM subnets"))).all()
            assert cidr == "10.199.0.0/24"  # around the existing address, not the setting's 10.99.0.0/24
            assert (await conn.execute(sa.text("SELECT ip_address FROM port_ips"))).scalar() == "10.199.0.7"
            settings = Settings(state_dir=tmp_path, network_name="lab", network_cidr="10.199.0.0/24")
            assert await ensure_default_network(conn, settings) == net_id
            names = (await conn.execute(sa.text("SELECT name FROM networks"))).scalars().all()
            assert names == ["lab"]
            assert (await conn.execute(sa.text("SELECT network FROM ports"))).scalar() == "lab"
    finally:
        await db.close()
