"""Instances: their rows, metadata and faults, the payload an agent gets, and the end of a delete.

The API and the conductor read and write instances only through these functions, so an
instance is created one way (:func:`create_instances`) and changed one way
(:func:`update_instance`, conditional when the change depends on the state it read).
Listing with filters and paging lives in :mod:`novalite.store.server_lists`.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from novalite import states
from novalite.config import Settings
from novalite.context import RequestContext
from novalite.db import Connection
from novalite.db import schema as t
from novalite.errors import Invalid, NotFound, QuotaExceeded
from novalite.servicegroup import is_up
from novalite.store import actions, hosts, placement, server_ports
from novalite.store.migrations import release_for_deleted_instance
from novalite.store.network import allocate_port
from novalite.store.quotas import instances_that_fit, limits_for, lock_project_usage, quota_overs, usage_for
from novalite.timeutil import utcnow


def instance_name(instance_id: int) -> str:
    """The guest's name on the hypervisor, as Nova's default template: instance-0000002a."""
    return f"instance-{instance_id:08x}"


# -- reading instances ----------------------------------------------------------------------


# Per-server reads of the build path, built once (statement construction costs more than
# SQLite's execution of them; docs/benchmarks.md).
_INSTANCE = sa.select(t.instances).where(t.instances.c.uuid == sa.bindparam("uuid_"))
_LIVE_INSTANCE = _INSTANCE.where(t.instances.c.deleted.is_(False))
_INSTANCE_LOCKED = _INSTANCE.with_for_update()
_LIVE_INSTANCE_LOCKED = _LIVE_INSTANCE.with_for_update()
_METADATA = sa.select(t.instance_metadata).where(t.instance_metadata.c.instance_uuid == sa.bindparam("uuid_"))


async def get_instance(
    conn: Connection, instance_uuid: str, *, include_deleted: bool = True, lock: bool = False
) -> sa.Row[Any] | None:
    """The instance's row, whoever owns it (the conductor's view); None if there is none.

    ``lock``: the row stays locked (``SELECT … FOR UPDATE``) until the transaction ends. Every
    read that decides a write takes it, so two writers (a delete and a failed build's
    reschedule, a delete and a scheduler's claim) are ordered instead of each acting on what
    the other is about to change. SQLite needs no lock: its writers are serialized.
    """
    if lock:
        query = _INSTANCE_LOCKED if include_deleted else _LIVE_INSTANCE_LOCKED
    else:
        query = _INSTANCE if include_deleted else _LIVE_INSTANCE
    return (await conn.execute(query, {"uuid_": instance_uuid})).first()


async def visible_instance(
    conn: Connection, ctx: RequestContext, instance_uuid: str, *, allow_deleted: bool = False, lock: bool = False
) -> sa.Row[Any]:
    """The instance, if the caller may see it; NotFound (never Forbidden) otherwise, so ids don't leak.
    ``lock`` as :func:`get_instance` (for a handler that writes what it read)."""
    row = await get_instance(conn, instance_uuid, include_deleted=allow_deleted, lock=lock)
    if row is None or (not ctx.is_admin and row.project_id != ctx.project_id):
        raise NotFound(f"Instance {instance_uuid} could not be found.")
    return row


async def instances_on_host(conn: Connection, host: str, uuids: Collection[str] | None = None) -> list[sa.Row[Any]]:
    """The live (not deleted) instances the database places on ``host``, optionally only ``uuids``."""
    query = sa.select(t.instances).where(t.instances.c.host == host, t.instances.c.deleted.is_(False))
    if uuids is not None:
        query = query.where(t.instances.c.uuid.in_(list(uuids)))
    return list((await conn.execute(query)).fetchall())


async def building_instances(conn: Connection) -> list[sa.Row[Any]]:
    """Live instances still in BUILD (for the conductor's watchdog)."""
    query = sa.select(t.instances.c.uuid, t.instances.c.host, t.instances.c.created_at).where(
        t.instances.c.vm_state == states.BUILDING, t.instances.c.deleted.is_(False)
    )
    return list((await conn.execute(query)).fetchall())


async def soft_deleted_instances(conn: Connection, deleted_before: datetime | None = None) -> list[sa.Row[Any]]:
    """Live instances soft-deleted (``deleted_at`` set on a row not yet deleted), for the
    conductor's reclaim; with ``deleted_before``, only those soft-deleted before that time."""
    c = t.instances.c
    query = sa.select(t.instances).where(c.deleted.is_(False), c.deleted_at.is_not(None))
    if deleted_before is not None:
        query = query.where(c.deleted_at <= deleted_before)
    return list((await conn.execute(query.order_by(c.deleted_at))).fetchall())


# -- writing instances ----------------------------------------------------------------------


async def update_instance(
    conn: Connection, instance_uuid: str, *, expect: Mapping[str, Any] | None = None, **values: Any
) -> bool:
    """Set ``values`` (and ``updated_at``) on one instance; True if it changed.

    ``expect`` makes it a conditional UPDATE: it applies only while each named column still
    holds its value (None matches NULL), so a state check and the change it allows are one
    atomic step, and a writer that lost a race changes nothing.
    """
    values.setdefault("updated_at", utcnow())
    expect = expect or {}
    # NULL and booleans are matched with IS (part of the statement); other values are bound.
    shape = (
        tuple((name, value if value is None or isinstance(value, bool) else ...) for name, value in expect.items()),
        tuple(values),
    )
    statement = _UPDATES.get(shape)
    if statement is None:
        statement = _UPDATES[shape] = _update_statement(shape)
    params = {f"e_{name}": value for name, value in expect.items() if not (value is None or isinstance(value, bool))}
    params.update({f"v_{name}": value for name, value in values.items()})
    params["uuid_"] = instance_uuid
    result = await conn.execute(statement, params)
    return bool(result.rowcount)


#: Conditional UPDATEs by shape (which columns are expected how, which are set): a few dozen
#: shapes exist, and each is built once instead of on every call (several per server built).
_UPDATES: dict[Any, Any] = {}


def _update_statement(shape: Any) -> Any:
    expect_shape, names = shape
    columns = t.instances.c
    where = [columns.uuid == sa.bindparam("uuid_")]
    for name, kind in expect_shape:
        column = columns[name]
        where.append(column.is_(kind) if kind is not ... else column == sa.bindparam(f"e_{name}"))
    return t.instances.update().where(*where).values({name: sa.bindparam(f"v_{name}") for name in names})


_START_BUILD_ATTEMPT = (
    t.instances.update()
    .where(
        t.instances.c.uuid == sa.bindparam("uuid_"),
        t.instances.c.vm_state == states.BUILDING,
        t.instances.c.host.is_(None),
        t.instances.c.deleted.is_(False),
    )
    .values(build_attempt=t.instances.c.build_attempt + 1, updated_at=sa.bindparam("now"))
    .returning(t.instances.c.build_attempt)
)


async def start_build_attempt(conn: Connection, instance_uuid: str) -> int | None:
    """Begin the next build attempt of an instance that waits for a host; its number, or
    None if the instance does not wait for one (deleted, placed, failed, gone).

    One statement (a conditional increment), because it runs once per server built.
    """
    result = await conn.execute(_START_BUILD_ATTEMPT, {"uuid_": instance_uuid, "now": utcnow()})
    row = result.first()
    return int(row[0]) if row is not None else None


@dataclass(frozen=True)
class NewInstances:
    """One ``POST /servers``: ``count`` instances alike but for name, hostname and launch index."""

    count: int
    name: str
    hostname: str
    project_id: str | None
    user_id: str | None
    request_id: str
    flavor: dict[str, Any]  # the flavor as embedded in the instance (flavorid, name, sizes, extra_specs)
    image_ref: str
    image_meta: dict[str, Any]
    reservation_id: str
    description: str | None = None
    availability_zone: str | None = None
    key_name: str | None = None
    key_data: str | None = None
    user_data: str | None = None
    config_drive: bool = False
    access_ip_v4: str | None = None
    access_ip_v6: str | None = None
    tags: list[str] = field(default_factory=list)
    scheduler_hints: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    with_port: bool = False
    #: The resolved ``networks``/``security_groups`` (issue 12); when set, ``with_port`` is ignored.
    network_plan: server_ports.NetworkPlan | None = None


async def create_instances(conn: Connection, settings: Settings, new: NewInstances) -> list[str]:
    """Write the instances in BUILD/scheduling, with metadata, a port if asked, and a ``create``
    action each; returns their uuids. NoMoreAddresses if the network is full."""
    now = utcnow()
    uuids = []
    for index in range(new.count):
        uuid = str(uuidlib.uuid4())
        uuids.append(uuid)
        await conn.execute(
            t.instances.insert().values(
                uuid=uuid,
                display_name=new.name if new.count == 1 else f"{new.name}-{index + 1}",
                display_description=new.description,
                hostname=new.hostname if new.count == 1 else f"{new.hostname}-{index + 1}",
                project_id=new.project_id,
                user_id=new.user_id,
                image_ref=new.image_ref,
                flavor=new.flavor,
                vcpus=new.flavor["vcpus"],
                memory_mb=new.flavor["memory_mb"],
                root_gb=new.flavor["root_gb"],
                ephemeral_gb=new.flavor["ephemeral_gb"],
                vm_state=states.BUILDING,
                task_state=states.SCHEDULING,
                power_state=0,
                requested_az=new.availability_zone,
                availability_zone=new.availability_zone,
                key_name=new.key_name,
                key_data=new.key_data,
                user_data=new.user_data,
                config_drive=new.config_drive,
                reservation_id=new.reservation_id,
                launch_index=index,
                access_ip_v4=new.access_ip_v4,
                access_ip_v6=new.access_ip_v6,
                tags=list(new.tags),
                scheduler_hints=dict(new.scheduler_hints),
                image_meta=new.image_meta,
                created_at=now,
                updated_at=now,
            )
        )
        if new.metadata:
            await conn.execute(
                t.instance_metadata.insert(),
                [{"instance_uuid": uuid, "key": k, "value": v} for k, v in new.metadata.items()],
            )
        if new.network_plan is not None:
            await server_ports.attach_planned(
                conn, new.network_plan, uuid, new.project_id or "", new.availability_zone or settings.availability_zone
            )
        elif new.with_port:
            await allocate_port(conn, settings, uuid)
        await actions.start_action(conn, uuid, "create", new.request_id, new.user_id, new.project_id)
    return uuids


#: The most instances one ``POST /servers`` creates when the quota sets no lower bound: ``max_count``
#: is "at most", so it is trimmed to this as it is to the quota headroom (Nova has no such cap, but an
#: unlimited project must not be able to ask for 10**21 rows in one transaction).
MAX_INSTANCES_PER_REQUEST = 1000


async def instances_allowed(
    conn: Connection, settings: Settings, project_id: str, flavor: Mapping[str, Any], min_count: int, max_count: int
) -> int:
    """How many of ``min_count``..``max_count`` instances of ``flavor`` the project's quota allows;
    QuotaExceeded if not even ``min_count`` (the error for ``min_count``, as Nova reports it).

    One limits and one usage query, whatever the counts: the answer is computed from the headroom,
    never found by trying smaller counts (which stalled the API for a huge ``max_count``).

    Takes the project's quota lock first (:func:`~novalite.store.quotas.lock_project_usage`), held
    until the caller's transaction ends: the caller must create the instances in that same
    transaction, so concurrent creates of one project, from any API process, never both pass.
    """
    await lock_project_usage(conn, project_id)
    limits = await limits_for(conn, settings, project_id)
    usage = await usage_for(conn, project_id)
    vcpus, memory_mb = int(flavor["vcpus"]), int(flavor["memory_mb"])
    fit = instances_that_fit(limits, usage, vcpus, memory_mb)
    bound = MAX_INSTANCES_PER_REQUEST if fit is None else min(fit, MAX_INSTANCES_PER_REQUEST)
    if min_count > bound:
        wanted = {"instances": min_count, "cores": vcpus * min_count, "ram": memory_mb * min_count}
        error = quota_overs(limits, usage, wanted)
        if error is None:  # within quota, but over the per-request cap
            raise Invalid(f"min_count must be <= {MAX_INSTANCES_PER_REQUEST}")
        raise error
    return min(max_count, bound)


async def finalize_delete(conn: Connection, instance_uuid: str) -> set[str]:
    """Mark an instance deleted and free what it held (allocations, ports, console tokens);
    the security groups its ports were in (issue 12: other guests' rules list their members).

    The row is marked first: the UPDATE locks it, so a scheduler's claim for it (which locks
    the row and refuses a deleted instance) either committed before — and is released
    below — or waits and is refused. Releasing first could miss a claim committed between."""
    now = utcnow()
    await update_instance(
        conn,
        instance_uuid,
        vm_state=states.DELETED,
        task_state=None,
        power_state=0,
        deleted=True,
        deleted_at=now,
        terminated_at=now,
        updated_at=now,
    )
    await placement.release(conn, instance_uuid)
    await release_for_deleted_instance(conn, instance_uuid)  # a move's claims (issue 10)
    groups = await server_ports.release_ports(conn, instance_uuid)  # the user's ports kept, unbound (issue 12)
    await conn.execute(t.console_auth_tokens.delete().where(t.console_auth_tokens.c.instance_uuid == instance_uuid))
    return groups


# -- metadata -------------------------------------------------------------------------------


async def get_metadata(conn: Connection, instance_uuid: str) -> dict[str, str]:
    rows = await conn.execute(_METADATA, {"uuid_": instance_uuid})
    return {r.key: r.value for r in rows}


async def set_metadata(
    conn: Connection, instance_uuid: str, meta: Mapping[str, str], *, replace: bool, max_items: int
) -> dict[str, str]:
    """Merge ``meta`` into the instance's metadata (or replace it); returns the result.

    QuotaExceeded (metadata_items) if the result would hold more than ``max_items`` keys.
    """
    current = {} if replace else await get_metadata(conn, instance_uuid)
    current.update(meta)
    if len(current) > max_items:
        raise QuotaExceeded("metadata_items", len(current), 0, max_items)
    await conn.execute(t.instance_metadata.delete().where(t.instance_metadata.c.instance_uuid == instance_uuid))
    if current:
        await conn.execute(
            t.instance_metadata.insert(),
            [{"instance_uuid": instance_uuid, "key": k, "value": v} for k, v in current.items()],
        )
    await update_instance(conn, instance_uuid)  # the view shows metadata: bump updated_at
    return current


async def delete_metadata_item(conn: Connection, instance_uuid: str, key: str) -> bool:
    """Remove one key; False if the instance had no such key."""
    result = await conn.execute(
        t.instance_metadata.delete().where(
            t.instance_metadata.c.instance_uuid == instance_uuid, t.instance_metadata.c.key == key
        )
    )
    if not result.rowcount:
        return False
    await update_instance(conn, instance_uuid)  # the view shows metadata: bump updated_at
    return True


# -- what an agent gets ---------------------------------------------------------------------


async def instance_payload(conn: Connection, instance_uuid: str) -> dict[str, Any] | None:
    """Everything an agent needs about one instance, as plain JSON (the driver's Instance)."""
    row = await get_instance(conn, instance_uuid)
    if row is None:
        return None
    return await payload_from_row(conn, row)


async def payload_from_row(conn: Connection, row: Any) -> dict[str, Any]:
    meta = await get_metadata(conn, row.uuid)
    ports = await server_ports.payload_ports(conn, row.uuid)
    flavor = row.flavor or {}
    image = None
    if row.image_ref:
        im = row.image_meta or {}
        image = {
            "id": row.image_ref,
            "disk_format": im.get("disk_format") or "raw",
            "container_format": im.get("container_format") or "bare",
            "properties": im.get("properties") or {},
        }
    return {
        "uuid": row.uuid,
        "name": instance_name(row.id),
        "hostname": row.hostname or "",
        "vcpus": row.vcpus,
        "memory_mb": row.memory_mb,
        "root_gb": row.root_gb,
        "ephemeral_gb": row.ephemeral_gb,
        "swap_mb": int(flavor.get("swap") or 0),
        "image": image,
        "ports": ports,
        "user_data": row.user_data,
        "key_data": row.key_data,
        "key_name": row.key_name,
        "metadata": meta,
        "config_drive": bool(row.config_drive),
        "project_id": row.project_id,
        "availability_zone": row.availability_zone,
        # Not driver fields: what the agent needs to act on the instance's records.
        "vm_state": row.vm_state,
        "task_state": row.task_state,
        "host": row.host,
        "build_attempt": int(row.build_attempt or 0),
    }


# -- faults ---------------------------------------------------------------------------------

#: A fault with this code records a failed build attempt that was rescheduled; it is not
#: shown as the instance's fault.
RETRY_FAULT_CODE = 0


async def add_fault(
    conn: Connection, instance_uuid: str, message: str, code: int = 500, details: str = "", host: str | None = None
) -> None:
    await conn.execute(
        t.instance_faults.insert().values(
            instance_uuid=instance_uuid,
            code=code,
            message=message[:255],
            details=details,
            host=host,
            created_at=utcnow(),
        )
    )


async def retried_build_hosts(conn: Connection, instance_uuid: str) -> list[str | None]:
    """The host of each build attempt that failed and was rescheduled (None if it had none)."""
    rows = await conn.execute(
        sa.select(t.instance_faults.c.host).where(
            t.instance_faults.c.instance_uuid == instance_uuid, t.instance_faults.c.code == RETRY_FAULT_CODE
        )
    )
    return [r.host for r in rows]


async def shown_faults(conn: Connection, instance_uuids: Collection[str]) -> dict[str, sa.Row[Any]]:
    """The newest fault shown to users (not a retried attempt) of each instance that has one."""
    faults: dict[str, sa.Row[Any]] = {}
    if not instance_uuids:
        return faults
    for f in await conn.execute(
        sa.select(t.instance_faults)
        .where(t.instance_faults.c.instance_uuid.in_(list(instance_uuids)), t.instance_faults.c.code != 0)
        .order_by(t.instance_faults.c.id)
    ):
        faults[f.instance_uuid] = f  # the newest wins
    return faults


# -- the compute hosts instances run on -----------------------------------------------------


async def compute_host_is_up(conn: Connection, host: str, down_time: float) -> bool:
    """Whether ``host``'s compute service reported within ``down_time`` (and is not forced down)."""
    service = await hosts.get_service_by_host(conn, host, hosts.COMPUTE_BINARY)
    return service is not None and is_up(service, down_time)
