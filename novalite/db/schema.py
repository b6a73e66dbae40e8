"""The database schema (SQLAlchemy Core), one for SQLite and PostgreSQL.

Alembic migrations in ``novalite/db/migrations`` create exactly these tables; a test
compares the migrated database with this metadata so the two never drift.

Groups:

* identity: projects, users, roles, role_assignments, tokens
* images: images, image_members
* compute: flavors (+ extra specs, access), keypairs, instances (+ metadata, faults,
  actions, action events), ports, console_auth_tokens, quotas
* hosts and placement: services, compute_nodes, resource_providers, inventories,
  allocations — claims are atomic through the provider ``generation``
* network (issue 12, at the end): networks, subnets, port_ips (fixed IPs, UNIQUE per
  subnet), security_groups, default_security_groups, security_group_rules; ``ports`` is shared
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def ts(name: str, nullable: bool = True) -> Column[Any]:
    return Column(name, DateTime(timezone=False), nullable=nullable)


# -- identity ---------------------------------------------------------------------------

projects = Table(
    "projects",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("domain_id", String(64), nullable=False, server_default="default"),
    Column("description", Text, nullable=False, server_default=""),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    ts("created_at", False),
    UniqueConstraint("domain_id", "name"),
)

users = Table(
    "users",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False),
    Column("domain_id", String(64), nullable=False, server_default="default"),
    Column("password_hash", String(255)),
    Column("default_project_id", String(64)),
    Column("email", String(255)),
    Column("description", Text),
    Column("enabled", Boolean, nullable=False, server_default="1"),
    ts("created_at", False),
    # Consecutive failed password logins and the time of the last one (as Keystone's
    # ``failed_auth_count``/``failed_auth_at``): in the database, so every API process
    # sharing it enforces the same lockout. A successful login resets both.
    Column("failed_auth_count", Integer, nullable=False, server_default="0"),
    ts("failed_auth_at"),
    UniqueConstraint("domain_id", "name"),
)

roles = Table(
    "roles",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("description", Text),
)

role_assignments = Table(
    "role_assignments",
    metadata,
    Column("user_id", String(64), ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    Column("project_id", String(64), ForeignKey("projects.id", ondelete="CASCADE"), primary_key=True),
    Column("role_id", String(64), ForeignKey("roles.id", ondelete="CASCADE"), primary_key=True),
)

tokens = Table(
    "tokens",
    metadata,
    # SHA-256 of the token: a leaked database does not leak usable tokens.
    Column("id_hash", String(64), primary_key=True),
    Column("user_id", String(64), nullable=False, index=True),
    Column("project_id", String(64)),
    Column("roles", JSON, nullable=False),
    Column("audit_id", String(32), nullable=False),
    ts("issued_at", False),
    ts("expires_at", False),
)

# -- images -----------------------------------------------------------------------------

images = Table(
    "images",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255)),
    Column("owner", String(64), index=True),
    Column("visibility", String(16), nullable=False, server_default="shared"),
    Column("status", String(30), nullable=False),
    Column("disk_format", String(20)),
    Column("container_format", String(20)),
    Column("size", BigInteger),
    Column("virtual_size", BigInteger),
    Column("checksum", String(32)),
    Column("os_hash_algo", String(64)),
    Column("os_hash_value", String(128)),
    Column("min_disk", Integer, nullable=False, server_default="0"),
    Column("min_ram", Integer, nullable=False, server_default="0"),
    Column("protected", Boolean, nullable=False, server_default="0"),
    Column("os_hidden", Boolean, nullable=False, server_default="0"),
    Column("properties", JSON, nullable=False),
    Column("tags", JSON, nullable=False),
    Column("path", Text),
    ts("created_at", False),
    ts("updated_at", False),
)

image_members = Table(
    "image_members",
    metadata,
    Column("image_id", String(36), ForeignKey("images.id", ondelete="CASCADE"), primary_key=True),
    Column("member_id", String(64), primary_key=True),
    Column("status", String(20), nullable=False, server_default="pending"),
    ts("created_at", False),
    ts("updated_at", False),
)

# -- compute resources ------------------------------------------------------------------

flavors = Table(
    "flavors",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flavorid", String(255), nullable=False, unique=True),
    Column("name", String(255), nullable=False, unique=True),
    Column("vcpus", Integer, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("root_gb", Integer, nullable=False),
    Column("ephemeral_gb", Integer, nullable=False, server_default="0"),
    Column("swap", Integer, nullable=False, server_default="0"),
    Column("rxtx_factor", Float, nullable=False, server_default="1.0"),
    Column("is_public", Boolean, nullable=False, server_default="1"),
    Column("disabled", Boolean, nullable=False, server_default="0"),
    Column("description", Text),
    Column("extra_specs", JSON, nullable=False),
    ts("created_at", False),
)

flavor_projects = Table(
    "flavor_projects",
    metadata,
    Column("flavor_id", Integer, ForeignKey("flavors.id", ondelete="CASCADE"), primary_key=True),
    Column("project_id", String(64), primary_key=True),
)

keypairs = Table(
    "keypairs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(255), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("fingerprint", String(255), nullable=False),
    Column("public_key", Text, nullable=False),
    Column("type", String(10), nullable=False, server_default="ssh"),
    ts("created_at", False),
    UniqueConstraint("user_id", "name"),
)

instances = Table(
    "instances",
    metadata,
    # The integer id names the guest on the hypervisor (instance-0000002a), as in Nova.
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("display_name", String(255)),
    Column("display_description", Text),
    Column("hostname", String(255)),
    Column("project_id", String(64), nullable=False),
    Column("user_id", String(64), nullable=False),
    Column("image_ref", String(36)),
    Column("flavor", JSON, nullable=False),
    Column("vcpus", Integer, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("root_gb", Integer, nullable=False),
    Column("ephemeral_gb", Integer, nullable=False),
    Column("vm_state", String(30), nullable=False),
    Column("task_state", String(30)),
    Column("power_state", Integer, nullable=False, server_default="0"),
    Column("host", String(255)),
    Column("node", String(255)),
    Column("availability_zone", String(255)),
    Column("requested_az", String(255)),
    Column("key_name", String(255)),
    Column("key_data", Text),
    Column("user_data", Text),
    Column("config_drive", Boolean, nullable=False, server_default="0"),
    Column("reservation_id", String(255)),
    Column("launch_index", Integer, nullable=False, server_default="0"),
    Column("locked", Boolean, nullable=False, server_default="0"),
    Column("locked_reason", Text),
    # Who locked it, as Nova records it: "owner" (the project) or "admin" (someone else,
    # an admin). An admin's lock is undone by an admin only (unlock_override).
    Column("locked_by", String(16)),
    Column("access_ip_v4", String(39)),
    Column("access_ip_v6", String(39)),
    Column("tags", JSON, nullable=False),
    Column("scheduler_hints", JSON, nullable=False),
    Column("image_meta", JSON, nullable=False),
    Column("progress", Integer, nullable=False, server_default="0"),
    # Which placement of the build this is (1 for the first host, +1 per reschedule):
    # messages about a build carry it, so a stale one (an earlier attempt's, redelivered
    # or delayed) is recognized and changes nothing.
    Column("build_attempt", Integer, nullable=False, server_default="0"),
    # Nova's system_metadata: what an action must remember about the server across its steps
    # (shelved_image_id, shelved_at, old_vm_state, ...); None reads as {}.
    Column("system_metadata", JSON),
    # A resize's flavors while it waits for confirm or revert (None otherwise).
    Column("old_flavor", JSON),
    Column("new_flavor", JSON),
    ts("launched_at"),
    ts("terminated_at"),
    ts("created_at", False),
    ts("updated_at", False),
    ts("deleted_at"),
    Column("deleted", Boolean, nullable=False, server_default="0"),
    Index(None, "project_id", "deleted", "created_at"),
    Index(None, "host", "deleted"),
    Index(None, "updated_at"),
)

instance_metadata = Table(
    "instance_metadata",
    metadata,
    Column("instance_uuid", String(36), ForeignKey("instances.uuid", ondelete="CASCADE"), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("value", String(255), nullable=False),
)

instance_faults = Table(
    "instance_faults",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance_uuid", String(36), ForeignKey("instances.uuid", ondelete="CASCADE"), index=True),
    Column("code", Integer, nullable=False),
    Column("message", String(255), nullable=False),
    Column("details", Text),
    Column("host", String(255)),
    ts("created_at", False),
)

instance_actions = Table(
    "instance_actions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("instance_uuid", String(36), nullable=False, index=True),
    Column("request_id", String(255), nullable=False),
    Column("action", String(255), nullable=False),
    Column("project_id", String(64)),
    Column("user_id", String(64)),
    Column("message", String(255)),
    ts("start_time", False),
    ts("finish_time"),
    ts("updated_at", False),
    UniqueConstraint("instance_uuid", "request_id"),
)

instance_action_events = Table(
    "instance_action_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("action_id", Integer, ForeignKey("instance_actions.id", ondelete="CASCADE"), index=True),
    Column("event", String(255), nullable=False),
    Column("result", String(255)),
    Column("traceback", Text),
    Column("host", String(255)),
    Column("details", Text),
    ts("start_time", False),
    ts("finish_time"),
)

ports = Table(
    "ports",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("instance_uuid", String(36), ForeignKey("instances.uuid", ondelete="CASCADE"), index=True),
    Column("network", String(255), nullable=False),  # the network's name (the servers' views group by it)
    Column("mac", String(17), nullable=False, unique=True),
    Column("ip", String(39)),  # the first fixed IP (port_ips holds them all, uniquely)
    ts("created_at", False),
    # Neutron's attributes (issue 12, migration 0005); the network API owns them.
    Column("network_id", String(36), ForeignKey("networks.id"), index=True),
    Column("project_id", String(64), index=True),
    Column("name", String(255), nullable=False, server_default=""),
    Column("description", String(255), nullable=False, server_default=""),
    Column("device_id", String(255), nullable=False, server_default=""),
    Column("device_owner", String(255), nullable=False, server_default=""),
    Column("binding_host_id", String(255), nullable=False, server_default=""),
    Column("admin_state_up", Boolean, nullable=False, server_default="1"),
    Column("status", String(16), nullable=False, server_default="DOWN"),
    Column("port_security_enabled", Boolean, nullable=False, server_default="1"),
    Column("security_groups", JSON),
    Column("allowed_address_pairs", JSON),
    Column("tags", JSON),
    ts("updated_at"),
    Column("revision_number", Integer, nullable=False, server_default="0"),
    # What Nova keeps about a server's port (migration 0006; novalite.store.server_ports).
    Column("device_tag", String(60)),
    Column("device_index", Integer, nullable=False, server_default="0"),
    Column("preserve_on_delete", Boolean, nullable=False, server_default="0"),
)

console_auth_tokens = Table(
    "console_auth_tokens",
    metadata,
    Column("token_hash", String(64), primary_key=True),
    Column("instance_uuid", String(36), ForeignKey("instances.uuid", ondelete="CASCADE"), index=True),
    Column("console_type", String(32), nullable=False),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("compute_host", String(255)),
    ts("expires_at", False),
    ts("created_at", False),
)

quotas = Table(
    "quotas",
    metadata,
    Column("project_id", String(64), primary_key=True),
    Column("resource", String(64), primary_key=True),
    Column("hard_limit", Integer, nullable=False),
)

# -- hosts and placement ----------------------------------------------------------------

services = Table(
    "services",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("host", String(255), nullable=False),
    Column("binary", String(255), nullable=False),
    Column("topic", String(255)),
    Column("availability_zone", String(255)),
    Column("disabled", Boolean, nullable=False, server_default="0"),
    Column("disabled_reason", String(255)),
    Column("forced_down", Boolean, nullable=False, server_default="0"),
    Column("report_count", Integer, nullable=False, server_default="0"),
    ts("last_seen_up"),
    ts("created_at", False),
    ts("updated_at", False),
    UniqueConstraint("host", "binary"),
)

compute_nodes = Table(
    "compute_nodes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("host", String(255), nullable=False),
    Column("hypervisor_hostname", String(255), nullable=False, unique=True),
    Column("hypervisor_type", String(255), nullable=False),
    Column("hypervisor_version", Integer, nullable=False),
    Column("vcpus", Integer, nullable=False),
    Column("memory_mb", Integer, nullable=False),
    Column("local_gb", Integer, nullable=False),
    Column("cpu_info", JSON, nullable=False),
    Column("host_ip", String(39)),
    ts("created_at", False),
    ts("updated_at", False),
)

resource_providers = Table(
    "resource_providers",
    metadata,
    Column("uuid", String(36), primary_key=True),
    Column("name", String(255), nullable=False, unique=True),
    # Bumped by every claim with a conditional UPDATE: a claim that read an older
    # generation affects no row and retries, so racing claimers never overcommit.
    Column("generation", Integer, nullable=False, server_default="0"),
)

inventories = Table(
    "inventories",
    metadata,
    Column("provider_uuid", String(36), ForeignKey("resource_providers.uuid", ondelete="CASCADE"), primary_key=True),
    Column("resource_class", String(64), primary_key=True),
    Column("total", Integer, nullable=False),
    Column("reserved", Integer, nullable=False, server_default="0"),
    Column("min_unit", Integer, nullable=False, server_default="1"),
    Column("max_unit", Integer, nullable=False),
    Column("step_size", Integer, nullable=False, server_default="1"),
    Column("allocation_ratio", Float, nullable=False, server_default="1.0"),
)

allocations = Table(
    "allocations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("provider_uuid", String(36), ForeignKey("resource_providers.uuid", ondelete="CASCADE"), nullable=False),
    Column("consumer_uuid", String(36), nullable=False, index=True),
    Column("resource_class", String(64), nullable=False),
    Column("used", Integer, nullable=False),
    Index(None, "provider_uuid", "resource_class"),
)

#: Messages committed with the state change that causes them (the transactional outbox):
#: the relay (novalite/relay.py) sends them after the commit, in id order, and deletes
#: each once the transport accepted it. A crash between commit and send loses nothing;
#: one between send and delete sends it again, which consumers tolerate (same envelope id).
outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("topic", String(255), nullable=False),
    Column("body", Text, nullable=False),
    ts("created_at", False),
)

#: Keys the controllers share (the image ticket key): generated once, in the database,
#: so that every controller process of a cloud signs and verifies with the same key.
cloud_secrets = Table(
    "cloud_secrets",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    ts("created_at", False),
)

#: One row per move of a server (resize, cold or live migration, evacuation), as Nova's
#: ``migrations`` table: the API lists them (``/os-migrations``, ``/servers/{id}/migrations``)
#: and, while a move is under way, the row's uuid is the placement consumer that holds the
#: source host's resources, so a revert always finds its room still there.
migrations = Table(
    "migrations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uuid", String(36), nullable=False, unique=True),
    Column("instance_uuid", String(36), nullable=False),
    Column("migration_type", String(16), nullable=False),  # resize | migration | live-migration | evacuation
    Column("status", String(32), nullable=False),
    Column("source_compute", String(255)),
    Column("source_node", String(255)),
    Column("dest_compute", String(255)),
    Column("dest_node", String(255)),
    Column("dest_host", String(255)),
    Column("old_flavor", JSON),
    Column("new_flavor", JSON),
    Column("user_id", String(64)),
    Column("project_id", String(64)),
    Column("memory_total", Integer),
    Column("memory_processed", Integer),
    Column("memory_remaining", Integer),
    Column("disk_total", Integer),
    Column("disk_processed", Integer),
    Column("disk_remaining", Integer),
    ts("created_at", False),
    ts("updated_at"),
    Column("deleted", Boolean, nullable=False, server_default="0"),
    Index(None, "instance_uuid", "created_at"),
)

# -- network (issue 12: a Neutron v2.0 subset) -------------------------------------------
#: Neutron's networks; provider attributes are set by admins only. ``tags`` is a JSON list.
networks = Table(
    "networks",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255), nullable=False, server_default=""),
    Column("project_id", String(64), index=True),
    Column("shared", Boolean, nullable=False, server_default="0"),
    Column("admin_state_up", Boolean, nullable=False, server_default="1"),
    Column("mtu", Integer, nullable=False, server_default="1500"),
    Column("port_security_enabled", Boolean, nullable=False, server_default="1"),
    Column("router_external", Boolean, nullable=False, server_default="0"),
    Column("provider_network_type", String(16)),
    Column("provider_physical_network", String(64)),
    Column("provider_segmentation_id", Integer),
    Column("status", String(16), nullable=False, server_default="ACTIVE"),
    Column("description", String(255), nullable=False, server_default=""),
    ts("created_at", False),
    ts("updated_at"),
    Column("revision_number", Integer, nullable=False, server_default="0"),
    Column("tags", JSON),
    # One VXLAN per VNI, one flat network per physical network (NULLs never collide).
    UniqueConstraint("provider_network_type", "provider_segmentation_id"),
    UniqueConstraint("provider_network_type", "provider_physical_network"),
)

subnets = Table(
    "subnets",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("network_id", String(36), ForeignKey("networks.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("project_id", String(64), index=True),
    Column("name", String(255), nullable=False, server_default=""),
    Column("description", String(255), nullable=False, server_default=""),
    Column("ip_version", Integer, nullable=False),
    Column("cidr", String(64), nullable=False),
    Column("gateway_ip", String(64)),
    Column("allocation_pools", JSON),
    Column("dns_nameservers", JSON),
    Column("host_routes", JSON),
    Column("enable_dhcp", Boolean, nullable=False, server_default="1"),
    Column("ipv6_ra_mode", String(16)),
    Column("ipv6_address_mode", String(16)),
    ts("created_at", False),
    ts("updated_at"),
    Column("revision_number", Integer, nullable=False, server_default="0"),
    Column("tags", JSON),
)

#: One row per fixed IP of a port: the UNIQUE (subnet_id, ip_address) makes two concurrent
#: allocations of one address impossible (the second insert fails and tries the next).
port_ips = Table(
    "port_ips",
    metadata,
    Column("port_id", String(36), ForeignKey("ports.id", ondelete="CASCADE"), nullable=False, index=True),
    Column("subnet_id", String(36), ForeignKey("subnets.id", ondelete="CASCADE"), nullable=False),
    Column("ip_address", String(64), nullable=False),
    UniqueConstraint("subnet_id", "ip_address"),
)

security_groups = Table(
    "security_groups",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("project_id", String(64), index=True),
    Column("name", String(255), nullable=False, server_default=""),
    Column("description", String(255), nullable=False, server_default=""),
    Column("stateful", Boolean, nullable=False, server_default="1"),
    ts("created_at", False),
    ts("updated_at"),
    Column("revision_number", Integer, nullable=False, server_default="0"),
    Column("tags", JSON),
)

#: Each project's ``default`` group, created on first use; the primary key makes two
#: concurrent first uses agree on one group (as Neutron's ``default_security_group`` table).
default_security_groups = Table(
    "default_security_groups",
    metadata,
    Column("project_id", String(64), primary_key=True),
    Column("security_group_id", String(36), ForeignKey("security_groups.id", ondelete="CASCADE"), nullable=False),
)

security_group_rules = Table(
    "security_group_rules",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("security_group_id", String(36), ForeignKey("security_groups.id", ondelete="CASCADE"), nullable=False),
    Column("project_id", String(64)),
    Column("direction", String(8), nullable=False),
    Column("ethertype", String(8), nullable=False),
    Column("protocol", String(40)),
    Column("port_range_min", Integer),
    Column("port_range_max", Integer),
    Column("remote_ip_prefix", String(64)),
    Column("remote_group_id", String(36), ForeignKey("security_groups.id", ondelete="CASCADE")),
    Column("description", String(255), nullable=False, server_default=""),
    ts("created_at", False),
    ts("updated_at"),
    Column("revision_number", Integer, nullable=False, server_default="0"),
    Index(None, "security_group_id"),
)
