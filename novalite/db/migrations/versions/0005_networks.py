"""networks, subnets, port addresses and security groups (Neutron v2.0 subset)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04 02:00:00.000000

The network service (issue 12) owns ``networks``, ``subnets``, ``port_ips`` (one row per
fixed IP, UNIQUE per subnet so no address is handed out twice), ``security_groups``,
``security_group_rules`` and ``default_security_groups``; ``ports`` gains Neutron's
attributes. Existing servers keep their addresses: the network named by the
``network_name`` setting is created with its subnet from ``network_cidr``, and every
existing port is moved onto it with a ``port_ips`` row.
"""

import ipaddress
import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TRUE = "1"


def _stamps() -> list[sa.Column]:  # type: ignore[type-arg]
    return [
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=True),
        sa.Column("revision_number", sa.Integer(), server_default="0", nullable=False),
    ]


def _create_tables() -> None:
    op.create_table(
        "networks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(255), server_default="", nullable=False),
        sa.Column("project_id", sa.String(64), nullable=True),
        sa.Column("shared", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("admin_state_up", sa.Boolean(), server_default=TRUE, nullable=False),
        sa.Column("mtu", sa.Integer(), server_default="1500", nullable=False),
        sa.Column("port_security_enabled", sa.Boolean(), server_default=TRUE, nullable=False),
        sa.Column("router_external", sa.Boolean(), server_default="0", nullable=False),
        sa.Column("provider_network_type", sa.String(16), nullable=True),
        sa.Column("provider_physical_network", sa.String(64), nullable=True),
        sa.Column("provider_segmentation_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(16), server_default="ACTIVE", nullable=False),
        sa.Column("description", sa.String(255), server_default="", nullable=False),
        *_stamps(),
        sa.Column("tags", sa.JSON(), nullable=True),
        sa.UniqueConstraint(
            "provider_network_type",
            "provider_segmentation_id",
            name=op.f("uq_networks_provider_network_type_provider_segmentation_id"),
        ),
        sa.UniqueConstraint(
            "provider_network_type",
            "provider_physical_network",
            name=op.f("uq_networks_provider_network_type_provider_physical_network"),
        ),
    )
    op.create_index(op.f("ix_networks_project_id"), "networks", ["project_id"])
    op.create_table(
        "subnets",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "network_id",
            sa.String(36),
            sa.ForeignKey("networks.id", name=op.f("fk_subnets_network_id_networks"), ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("project_id", sa.String(64), nullable=True),
        sa.Column("name", sa.String(255), server_default="", nullable=False),
        sa.Column("description", sa.String(255), server_default="", nullable=False),
        sa.Column("ip_version", sa.Integer(), nullable=False),
        sa.Column("cidr", sa.String(64), nullable=False),
        sa.Column("gateway_ip", sa.String(64), nullable=True),
        sa.Column("allocation_pools", sa.JSON(), nullable=True),
        sa.Column("dns_nameservers", sa.JSON(), nullable=True),
        sa.Column("host_routes", sa.JSON(), nullable=True),
        sa.Column("enable_dhcp", sa.Boolean(), server_default=TRUE, nullable=False),
        sa.Column("ipv6_ra_mode", sa.String(16), nullable=True),
        sa.Column("ipv6_address_mode", sa.String(16), nullable=True),
        *_stamps(),
        sa.Column("tags", sa.JSON(), nullable=True),
    )
    op.create_index(op.f("ix_subnets_network_id"), "subnets", ["network_id"])
    op.create_index(op.f("ix_subnets_project_id"), "subnets", ["project_id"])
    op.create_table(
        "security_groups",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("project_id", sa.String(64), nullable=True),
        sa.Column("name", sa.String(255), server_default="", nullable=False),
        sa.Column("description", sa.String(255), server_default="", nullable=False),
        sa.Column("stateful", sa.Boolean(), server_default=TRUE, nullable=False),
        *_stamps(),
        sa.Column("tags", sa.JSON(), nullable=True),
    )
    op.create_index(op.f("ix_security_groups_project_id"), "security_groups", ["project_id"])
    op.create_table(
        "default_security_groups",
        sa.Column("project_id", sa.String(64), primary_key=True),
        sa.Column(
            "security_group_id",
            sa.String(36),
            sa.ForeignKey(
                "security_groups.id",
                name=op.f("fk_default_security_groups_security_group_id_security_groups"),
                ondelete="CASCADE",
            ),
            nullable=False,
        ),
    )
    op.create_table(
        "security_group_rules",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column(
            "security_group_id",
            sa.String(36),
            sa.ForeignKey(
                "security_groups.id",
                name=op.f("fk_security_group_rules_security_group_id_security_groups"),
                ondelete="CASCADE",
            ),
            nullable=False,
        ),
        sa.Column("project_id", sa.String(64), nullable=True),
        sa.Column("direction", sa.String(8), nullable=False),
        sa.Column("ethertype", sa.String(8), nullable=False),
        sa.Column("protocol", sa.String(40), nullable=True),
        sa.Column("port_range_min", sa.Integer(), nullable=True),
        sa.Column("port_range_max", sa.Integer(), nullable=True),
        sa.Column("remote_ip_prefix", sa.String(64), nullable=True),
        sa.Column(
            "remote_group_id",
            sa.String(36),
            sa.ForeignKey(
                "security_groups.id",
                name=op.f("fk_security_group_rules_remote_group_id_security_groups"),
                ondelete="CASCADE",
            ),
            nullable=True,
        ),
        sa.Column("description", sa.String(255), server_default="", nullable=False),
        *_stamps(),
    )
    op.create_index(op.f("ix_security_group_rules_security_group_id"), "security_group_rules", ["security_group_id"])


def _extend_ports() -> None:
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f("uq_ports_network_ip"), type_="unique")
        batch_op.add_column(sa.Column("network_id", sa.String(36), nullable=True))
        batch_op.add_column(sa.Column("project_id", sa.String(64), nullable=True))
        for name in ("name", "description", "device_id", "device_owner", "binding_host_id"):
            batch_op.add_column(sa.Column(name, sa.String(255), server_default="", nullable=False))
        batch_op.add_column(sa.Column("admin_state_up", sa.Boolean(), server_default=TRUE, nullable=False))
        batch_op.add_column(sa.Column("status", sa.String(16), server_default="DOWN", nullable=False))
        batch_op.add_column(sa.Column("port_security_enabled", sa.Boolean(), server_default=TRUE, nullable=False))
        batch_op.add_column(sa.Column("security_groups", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("allowed_address_pairs", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("tags", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("updated_at", sa.DateTime(), nullable=True))
        batch_op.add_column(sa.Column("revision_number", sa.Integer(), server_default="0", nullable=False))
        batch_op.create_foreign_key(batch_op.f("fk_ports_network_id_networks"), "networks", ["network_id"], ["id"])
        batch_op.create_index(batch_op.f("ix_ports_network_id"), ["network_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ports_project_id"), ["project_id"], unique=False)
    op.create_table(
        "port_ips",
        sa.Column(
            "port_id",
            sa.String(36),
            sa.ForeignKey("ports.id", name=op.f("fk_port_ips_port_id_ports"), ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column(
            "subnet_id",
            sa.String(36),
            sa.ForeignKey("subnets.id", name=op.f("fk_port_ips_subnet_id_subnets"), ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("ip_address", sa.String(64), nullable=False),
        sa.UniqueConstraint("subnet_id", "ip_address", name=op.f("uq_port_ips_subnet_id_ip_address")),
    )
    op.create_index(op.f("ix_port_ips_port_id"), "port_ips", ["port_id"])


def _old_settings() -> tuple[str, str]:
    """The built-in network's name and CIDR as the running cloud configures them."""
    try:
        from novalite.config import load_settings

        settings = load_settings()
        return settings.network_name, settings.network_cidr
    except Exception:  # an unreadable config must not block the upgrade: the defaults
        return "private", "10.199.0.0/24"


def _covering(net: ipaddress.IPv4Network | ipaddress.IPv6Network, ips: list[str]) -> Any:
    """``net`` if it holds every existing address, else the smallest network around them all
    (the setting was changed, or came from a ``--config`` file this migration cannot see):
    every address must get its ``port_ips`` row, or it could be handed out a second time."""
    addresses = [ipaddress.ip_address(ip) for ip in ips]
    if all(a in net for a in addresses):
        return net
    wide = ipaddress.ip_network(f"{addresses[0]}/{24 if addresses[0].version == 4 else 64}", strict=False)
    while not all(a in wide for a in addresses if a.version == wide.version) and wide.prefixlen > 8:
        wide = wide.supernet()
    return wide


def _adopt_existing_ports() -> None:
    """Create the built-in network and subnet and move every existing port onto it."""
    bind = op.get_bind()
    ports = sa.table(
        "ports",
        sa.column("id"),
        sa.column("instance_uuid"),
        sa.column("network"),
        sa.column("ip"),
        sa.column("network_id"),
        sa.column("project_id"),
        sa.column("device_id"),
        sa.column("device_owner"),
        sa.column("status"),
        sa.column("security_groups", sa.JSON()),
    )
    rows = bind.execute(sa.select(ports.c.id, ports.c.instance_uuid, ports.c.ip)).fetchall()
    if not rows:
        return  # a new cloud: the start-up bootstrap creates the network with the settings
    name, cidr = _old_settings()
    net = _covering(ipaddress.ip_network(cidr), [r.ip for r in rows if r.ip])
    instances = sa.table("instances", sa.column("uuid"), sa.column("project_id"))
    projects = sa.table("projects", sa.column("id"), sa.column("name"))
    admin = bind.execute(sa.select(projects.c.id).where(projects.c.name == "admin")).scalar()
    now = datetime.now(UTC).replace(tzinfo=None)
    network_id, subnet_id = str(uuid.uuid4()), str(uuid.uuid4())
    hosts = list(net.hosts()) if net.num_addresses <= 65536 else []
    gateway = str(hosts[0]) if hosts else str(net.network_address + 1)
    pool_start = str(hosts[1]) if len(hosts) > 1 else str(net.network_address + 2)
    pool_end = str(hosts[-1]) if hosts else str(net.broadcast_address - 1)
    bind.execute(
        sa.table(
            "networks",
            sa.column("id"),
            sa.column("name"),
            sa.column("project_id"),
            sa.column("shared"),
            sa.column("description"),
            sa.column("created_at"),
            sa.column("updated_at"),
            sa.column("tags", sa.JSON()),
        )
        .insert()
        .values(
            id=network_id,
            name=name,
            project_id=admin,
            shared=True,
            description="novalite's built-in network",  # novalite.store.networks.BUILTIN_DESCRIPTION
            created_at=now,
            updated_at=now,
            tags=[],
        )
    )
    bind.execute(
        sa.table(
            "subnets",
            sa.column("id"),
            sa.column("network_id"),
            sa.column("project_id"),
            sa.column("name"),
            sa.column("ip_version"),
            sa.column("cidr"),
            sa.column("gateway_ip"),
            sa.column("allocation_pools", sa.JSON()),
            sa.column("dns_nameservers", sa.JSON()),
            sa.column("host_routes", sa.JSON()),
            sa.column("created_at"),
            sa.column("updated_at"),
            sa.column("tags", sa.JSON()),
        )
        .insert()
        .values(
            id=subnet_id,
            network_id=network_id,
            project_id=admin,
            name=f"{name}-subnet",
            ip_version=net.version,
            cidr=str(net),
            gateway_ip=gateway,
            allocation_pools=[{"start": pool_start, "end": pool_end}],
            dns_nameservers=[],
            host_routes=[],
            created_at=now,
            updated_at=now,
            tags=[],
        )
    )
    owners = dict(bind.execute(sa.select(instances.c.uuid, instances.c.project_id)).fetchall())
    port_ips = sa.table("port_ips", sa.column("port_id"), sa.column("subnet_id"), sa.column("ip_address"))
    for row in rows:
        bind.execute(
            ports.update()
            .where(ports.c.id == row.id)
            .values(
                network_id=network_id,
                network=name,
                project_id=owners.get(row.instance_uuid),
                device_id=row.instance_uuid or "",
                device_owner="compute:nova" if row.instance_uuid else "",
                status="ACTIVE",
                security_groups=[],
            )
        )
        if row.ip and ipaddress.ip_address(row.ip) in net:
            bind.execute(port_ips.insert().values(port_id=row.id, subnet_id=subnet_id, ip_address=row.ip))


def upgrade() -> None:
    _create_tables()
    _extend_ports()
    _adopt_existing_ports()


def downgrade() -> None:
    op.drop_index(op.f("ix_port_ips_port_id"), table_name="port_ips")
    op.drop_table("port_ips")
    with op.batch_alter_table("ports", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ports_project_id"))
        batch_op.drop_index(batch_op.f("ix_ports_network_id"))
        batch_op.drop_constraint(batch_op.f("fk_ports_network_id_networks"), type_="foreignkey")
        for name in (
            "revision_number",
            "updated_at",
            "tags",
            "allowed_address_pairs",
            "security_groups",
            "port_security_enabled",
            "status",
            "admin_state_up",
            "binding_host_id",
            "device_owner",
            "device_id",
            "description",
            "name",
            "project_id",
            "network_id",
        ):
            batch_op.drop_column(name)
        batch_op.create_unique_constraint(batch_op.f("uq_ports_network_ip"), ["network", "ip"])
    op.drop_index(op.f("ix_security_group_rules_security_group_id"), table_name="security_group_rules")
    op.drop_table("security_group_rules")
    op.drop_table("default_security_groups")
    op.drop_index(op.f("ix_security_groups_project_id"), table_name="security_groups")
    op.drop_table("security_groups")
    op.drop_index(op.f("ix_subnets_project_id"), table_name="subnets")
    op.drop_index(op.f("ix_subnets_network_id"), table_name="subnets")
    op.drop_table("subnets")
    op.drop_index(op.f("ix_networks_project_id"), table_name="networks")
    op.drop_table("networks")
