"""Hosts: the services table (heartbeats, admin state) and compute nodes (hypervisors)."""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from novalite.db import Connection
from novalite.db import schema as t
from novalite.store import placement
from novalite.timeutil import utcnow

NODE_NAMESPACE = uuidlib.UUID("5b1c8a86-7a4c-4b8e-a2a4-6e6f76616c69")
#: The binary of compute services: the only services with compute nodes, and the only ones admins may update.
COMPUTE_BINARY = "nova-compute"


def node_uuid(hypervisor_hostname: str) -> str:
    """A compute node's uuid, stable across restarts without any state on the host."""
    return str(uuidlib.uuid5(NODE_NAMESPACE, hypervisor_hostname))


# -- services ---------------------------------------------------------------------------------


async def upsert_service(
    conn: Connection, host: str, binary: str, topic: str | None, availability_zone: str | None
) -> sa.Row[Any] | None:
    """Create the service row if new and mark it seen now; returns the row."""
    now = utcnow()
    row = await get_service_by_host(conn, host, binary)
    if row is None:
        await conn.execute(
            t.services.insert().values(
                uuid=str(uuidlib.uuid4()),
                host=host,
                binary=binary,
                topic=topic,
                availability_zone=availability_zone,
                report_count=1,
                last_seen_up=now,
                created_at=now,
                updated_at=now,
            )
        )
    else:
        await conn.execute(
            t.services.update()
            .where(t.services.c.id == row.id)
            .values(
                report_count=t.services.c.report_count + 1,
                last_seen_up=now,
                updated_at=now,
                availability_zone=availability_zone or row.availability_zone,
            )
        )
    return await get_service_by_host(conn, host, binary)


async def list_services(conn: Connection, *, host: str | None = None, binary: str | None = None) -> list[sa.Row[Any]]:
    """Services in id order (the order Nova lists them in), optionally one host's and/or one binary's."""
    query = sa.select(t.services).order_by(t.services.c.id)
    if host is not None:
        query = query.where(t.services.c.host == host)
    if binary is not None:
        query = query.where(t.services.c.binary == binary)
    return list(await conn.execute(query))


async def get_service(conn: Connection, key: int | str) -> sa.Row[Any] | None:
    """A service by integer id (the API's id below microversion 2.53) or by uuid string (from 2.53)."""
    where = t.services.c.id == key if isinstance(key, int) else t.services.c.uuid == key
    return (await conn.execute(sa.select(t.services).where(where))).first()


async def get_service_by_host(conn: Connection, host: str, binary: str) -> sa.Row[Any] | None:
    """The one service of ``binary`` on ``host`` (the pair is unique)."""
    return (await conn.execute(_SERVICE_BY_HOST, {"host": host, "binary": binary})).first()


#: Built once: every server action checks its host's service.
_SERVICE_BY_HOST = sa.select(t.services).where(
    t.services.c.host == sa.bindparam("host"), t.services.c.binary == sa.bindparam("binary")
)


@dataclass(frozen=True)
class ServiceUpdate:
    """An admin's change to a service; ``None`` leaves a field alone.

    ``disabled_reason`` goes with ``disabled``: enabling or disabling always writes the
    reason too (None clears it), as Nova does.
    """

    disabled: bool | None = None
    disabled_reason: str | None = None
    forced_down: bool | None = None

    @property
    def empty(self) -> bool:
        return self.disabled is None and self.forced_down is None

    def values(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        if self.disabled is not None:
            values.update(disabled=self.disabled, disabled_reason=self.disabled_reason)
        if self.forced_down is not None:
            values["forced_down"] = self.forced_down
        return values


async def update_service(conn: Connection, service_id: int, change: ServiceUpdate) -> sa.Row[Any]:
    """Apply ``change`` to the service and return its new row (the caller checked it exists)."""
    await conn.execute(t.services.update().where(t.services.c.id == service_id).values(**change.values()))
    return (await conn.execute(sa.select(t.services).where(t.services.c.id == service_id))).one()


async def update_service_by_host(conn: Connection, host: str, binary: str, change: ServiceUpdate) -> bool:
    """Apply ``change`` to the service of ``binary`` on ``host``; False when there is no such service."""
    updated = await conn.execute(
        t.services.update().where(t.services.c.host == host, t.services.c.binary == binary).values(**change.values())
    )
    return bool(updated.rowcount)


async def count_instances_on_host(conn: Connection, host: str) -> int:
    """Live (not deleted) instances the host runs: a compute service with any may not be deleted."""
    return int(
        await conn.scalar(
            sa.select(sa.func.count()).where(t.instances.c.host == host, t.instances.c.deleted == sa.false())
        )
        or 0
    )


async def delete_service(conn: Connection, service: sa.Row[Any]) -> None:
    """Delete a service; a compute service takes its host's compute nodes and their resource providers along.

    The caller checks first that the host runs no instance (:func:`count_instances_on_host`).
    """
    if service.binary == COMPUTE_BINARY:
        nodes = [
            r.uuid
            for r in await conn.execute(sa.select(t.compute_nodes.c.uuid).where(t.compute_nodes.c.host == service.host))
        ]
        for node in nodes:
            await placement.delete_provider(conn, node)
        await conn.execute(t.compute_nodes.delete().where(t.compute_nodes.c.host == service.host))
    await conn.execute(t.services.delete().where(t.services.c.id == service.id))


# -- compute nodes ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Hypervisor:
    """A compute node with its host's nova-compute service (None if that service row is gone)."""

    node: sa.Row[Any]
    service: sa.Row[Any] | None


async def _with_services(conn: Connection, nodes: list[sa.Row[Any]]) -> list[Hypervisor]:
    if not nodes:
        return []
    services = {
        r.host: r
        for r in await conn.execute(
            sa.select(t.services).where(
                t.services.c.binary == COMPUTE_BINARY, t.services.c.host.in_({n.host for n in nodes})
            )
        )
    }
    return [Hypervisor(node=n, service=services.get(n.host)) for n in nodes]


async def list_hypervisors(conn: Connection, *, hostname_like: str | None = None) -> list[Hypervisor]:
    """Compute nodes in id order, each with its service.

    ``hostname_like`` keeps the nodes whose hypervisor hostname contains it; it is a SQL
    ``LIKE`` term, so ``%`` and ``_`` in it are wildcards (as in Nova).
    """
    query = sa.select(t.compute_nodes).order_by(t.compute_nodes.c.id)
    if hostname_like is not None:
        query = query.where(t.compute_nodes.c.hypervisor_hostname.like(f"%{hostname_like}%"))
    return await _with_services(conn, list(await conn.execute(query)))


async def get_hypervisor(conn: Connection, key: int | str) -> Hypervisor | None:
    """A compute node by integer id (the API's id below microversion 2.53) or by uuid string (from 2.53).

    Comes with its service.
    """
    where = t.compute_nodes.c.id == key if isinstance(key, int) else t.compute_nodes.c.uuid == key
    found = await _with_services(conn, list(await conn.execute(sa.select(t.compute_nodes).where(where))))
    return found[0] if found else None


async def instances_on_hosts(conn: Connection, hosts: Collection[str]) -> list[sa.Row[Any]]:
    """The live instances on these hosts in id order: uuid, display_name, id, host, node, task_state."""
    if not hosts:
        return []
    return list(
        await conn.execute(
            sa.select(
                t.instances.c.uuid,
                t.instances.c.display_name,
                t.instances.c.id,
                t.instances.c.host,
                t.instances.c.node,
                t.instances.c.task_state,
            )
            .where(t.instances.c.deleted == sa.false(), t.instances.c.host.in_(set(hosts)))
            .order_by(t.instances.c.id)
        )
    )


@dataclass(frozen=True)
class HypervisorUsage:
    """What the hypervisor views count: placement usage by provider uuid, and the instances on the nodes' hosts."""

    providers: dict[str, placement.ProviderUsage]
    instances: list[sa.Row[Any]]


async def hypervisor_usage(
    conn: Connection, hypervisors: Collection[Hypervisor], *, with_instances: bool = True
) -> HypervisorUsage:
    """Usage for these hypervisors' views; ``with_instances=False`` skips the instance query (no view needs it)."""
    instances = await instances_on_hosts(conn, {h.node.host for h in hypervisors}) if with_instances else []
    return HypervisorUsage(providers=await placement.all_usages(conn), instances=instances)


async def list_compute_node_states(conn: Connection) -> list[sa.Row[Any]]:
    """Every compute node joined with its nova-compute service, in one query: the scheduler's host states.

    Columns: uuid, host, hypervisor_hostname, hypervisor_type, cpu_info (the node's) and
    disabled, forced_down, last_seen_up, availability_zone (the service's). A node whose
    service row is gone is left out.
    """
    result = await conn.execute(
        sa.select(
            t.compute_nodes.c.uuid,
            t.compute_nodes.c.host,
            t.compute_nodes.c.hypervisor_hostname,
            t.compute_nodes.c.hypervisor_type,
            t.compute_nodes.c.cpu_info,
            t.services.c.disabled,
            t.services.c.forced_down,
            t.services.c.last_seen_up,
            t.services.c.availability_zone,
        ).join(
            t.services,
            sa.and_(t.services.c.host == t.compute_nodes.c.host, t.services.c.binary == COMPUTE_BINARY),
        )
    )
    return list(result)


# -- compute nodes --------------------------------------------------------------------------------


async def upsert_compute_node(conn: Connection, uuid: str, **values: Any) -> None:
    """Create the compute node ``uuid`` or update it with ``values`` (an agent's resource report)."""
    now = utcnow()
    exists = await conn.scalar(sa.select(t.compute_nodes.c.id).where(t.compute_nodes.c.uuid == uuid))
    if exists:
        await conn.execute(
            t.compute_nodes.update().where(t.compute_nodes.c.uuid == uuid).values(updated_at=now, **values)
        )
    else:
        await conn.execute(t.compute_nodes.insert().values(uuid=uuid, created_at=now, updated_at=now, **values))
