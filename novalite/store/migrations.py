"""Migration records: one row per move of a server (resize, cold and live migration,
evacuation), as Nova's.

A migration's ``uuid`` is a placement consumer while the move is under way: it holds the
source host's resources (old flavor) from the start of the move until confirm (freed) or
revert (given back to the instance), see :func:`novalite.store.placement.swap_for_move`.

Statuses (Nova's): ``pre-migrating`` (scheduling) → ``migrating`` (the source host copies
and powers off) → ``post-migrating`` (the destination finishes) → ``finished`` (VERIFY_RESIZE)
→ ``confirming`` → ``confirmed``, or ``reverting`` → ``reverted``; ``error`` when it failed.
Live migrations: ``accepted`` → ``preparing`` → ``running`` → ``post-migrating`` →
``completed`` (``error``, or ``cancelled`` when aborted); evacuations: ``accepted`` →
``pre-migrating`` → ``done`` (the old host still to clean up) → ``completed`` (``failed``).
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from novalite.db import Connection
from novalite.db import schema as t
from novalite.store import placement
from novalite.timeutil import utcnow

RESIZE = "resize"
MIGRATION = "migration"
LIVE_MIGRATION = "live-migration"
EVACUATION = "evacuation"
#: Statuses of a move that still holds (or is about to hold) resources on two hosts: a
#: resize's, a live migration's (``accepted`` → ``queued`` → ``preparing`` → ``running`` →
#: ``post-migrating``), and an evacuation's ``done`` (the dead source host keeps its claim
#: until its agent has removed the old guest: then ``completed``).
IN_PROGRESS = (
    "pre-migrating",
    "migrating",
    "post-migrating",
    "finished",
    "confirming",
    "reverting",
    "accepted",
    "queued",
    "preparing",
    "running",
    "done",
)
#: Statuses of live migrations in progress (what ``/servers/{id}/migrations`` lists, as Nova).
LIVE_IN_PROGRESS = ("queued", "preparing", "running", "post-migrating")

#: The progress columns a live migration's source reports (bytes).
PROGRESS_FIELDS = (
    "memory_total",
    "memory_processed",
    "memory_remaining",
    "disk_total",
    "disk_processed",
    "disk_remaining",
)

#: The largest value the progress columns hold (INTEGER; a schema migration to BIGINT is due).
PROGRESS_MAX = 2**31 - 1

_BY_UUID = sa.select(t.migrations).where(t.migrations.c.uuid == sa.bindparam("u"))


@dataclass(frozen=True)
class NewMigration:
    instance_uuid: str
    migration_type: str
    source_compute: str
    source_node: str | None
    old_flavor: dict[str, Any]
    new_flavor: dict[str, Any]
    user_id: str | None
    project_id: str | None


async def create_migration(
    conn: Connection, new: NewMigration, status: str = "pre-migrating", dest_compute: str | None = None
) -> str:
    """Insert a migration (``pre-migrating``, or ``accepted`` for live migrations and
    evacuations, as Nova); returns its uuid."""
    uuid = str(uuidlib.uuid4())
    now = utcnow()
    await conn.execute(
        t.migrations.insert().values(
            uuid=uuid,
            instance_uuid=new.instance_uuid,
            migration_type=new.migration_type,
            status=status,
            source_compute=new.source_compute,
            dest_compute=dest_compute,
            source_node=new.source_node,
            old_flavor=new.old_flavor,
            new_flavor=new.new_flavor,
            user_id=new.user_id,
            project_id=new.project_id,
            created_at=now,
            updated_at=now,
        )
    )
    return uuid


async def get_migration(conn: Connection, uuid: str, *, lock: bool = False) -> sa.Row[Any] | None:
    query = _BY_UUID.with_for_update() if lock else _BY_UUID
    return (await conn.execute(query, {"u": uuid})).first()


async def update_migration(
    conn: Connection, uuid: str, *, expect_status: Collection[str] | None = None, **values: Any
) -> bool:
    """Set ``values`` (and ``updated_at``); with ``expect_status`` only while the status is one
    of those (the state check and the change in one statement). True if it changed."""
    values.setdefault("updated_at", utcnow())
    query = t.migrations.update().where(t.migrations.c.uuid == uuid)
    if expect_status is not None:
        query = query.where(t.migrations.c.status.in_(list(expect_status)))
    return bool((await conn.execute(query.values(**values))).rowcount)


async def instance_migration(conn: Connection, instance_uuid: str, status: str) -> sa.Row[Any] | None:
    """The instance's newest migration in ``status`` (``finished``: the one a confirm or revert acts on)."""
    c = t.migrations.c
    query = (
        sa.select(t.migrations)
        .where(c.instance_uuid == instance_uuid, c.status == status, c.deleted.is_(False))
        .order_by(c.created_at.desc(), c.id.desc())
        .limit(1)
    )
    return (await conn.execute(query)).first()


async def release_for_deleted_instance(conn: Connection, instance_uuid: str) -> None:
    """The instance is being deleted: free what its unfinished moves hold (the source host of
    a server deleted in VERIFY_RESIZE, a destination claimed for a move in flight) and mark
    those moves as ended, so that nothing leaks with it."""
    c = t.migrations.c
    # A live migration aborted while its destination prepared is ``cancelled`` and still holds
    # its claims until the destination reports: freed too.
    holding = [*IN_PROGRESS, "cancelled"]
    rows = await conn.execute(
        sa.select(c.uuid, c.status).where(c.instance_uuid == instance_uuid, c.status.in_(holding))
    )
    for uuid, status in list(rows):
        await placement.release(conn, uuid)
        if status not in ("done", "cancelled"):
            # A finished evacuation stays ``done``: the old host's agent still has to find it
            # and remove the guest it left there when it comes back.
            await update_migration(conn, uuid, status="error")


async def evacuated_from(conn: Connection, host: str) -> list[sa.Row[Any]]:
    """Evacuations away from ``host`` whose old guest is still to be removed there (``done``)."""
    c = t.migrations.c
    query = sa.select(t.migrations).where(
        c.source_compute == host, c.migration_type == EVACUATION, c.status == "done", c.deleted.is_(False)
    )
    return list((await conn.execute(query.order_by(c.id))).fetchall())


async def interrupted(conn: Connection) -> list[sa.Row[Any]]:
    """Moves under way (anything but a stable VERIFY_RESIZE or a finished evacuation, and a
    live migration aborted while it was prepared, still holding its claims), for the
    conductor's recovery at start."""
    c = t.migrations.c
    wanted = [s for s in IN_PROGRESS if s not in ("finished", "done")]
    holds = sa.select(t.allocations.c.id).where(t.allocations.c.consumer_uuid == c.uuid).exists()
    aborted = sa.and_(c.status == "cancelled", c.migration_type == LIVE_MIGRATION, holds)
    query = sa.select(t.migrations).where(sa.or_(c.status.in_(wanted), aborted), c.deleted.is_(False)).order_by(c.id)
    return list((await conn.execute(query)).fetchall())


async def unconfirmed_before(conn: Connection, before: datetime) -> list[sa.Row[Any]]:
    """``finished`` migrations (waiting for confirm) last changed before ``before``, oldest first."""
    c = t.migrations.c
    query = (
        sa.select(t.migrations)
        .where(c.status == "finished", c.deleted.is_(False), c.updated_at <= before)
        .order_by(c.updated_at)
    )
    return list((await conn.execute(query)).fetchall())


@dataclass(frozen=True)
class MigrationFilter:
    host: str | None = None  # source or destination compute
    status: str | None = None
    instance_uuid: str | None = None
    migration_type: str | None = None
    user_id: str | None = None
    project_id: str | None = None
    changes_since: datetime | None = None
    changes_before: datetime | None = None
    statuses: tuple[str, ...] | None = None


async def list_migrations(
    conn: Connection, where: MigrationFilter, *, limit: int | None = None, marker: str | None = None
) -> list[sa.Row[Any]]:
    """Migrations newest first (created_at, id descending, as Nova's 2.59 paging); ``marker``
    is the uuid of the last one of the previous page. LookupError if the marker is unknown."""
    c = t.migrations.c
    query = sa.select(t.migrations).where(c.deleted.is_(False))
    if where.host:
        query = query.where(sa.or_(c.source_compute == where.host, c.dest_compute == where.host))
    if where.status:
        query = query.where(c.status == where.status)
    if where.statuses is not None:
        query = query.where(c.status.in_(list(where.statuses)))
    for name in ("instance_uuid", "migration_type", "user_id", "project_id"):
        value = getattr(where, name)
        if value:
            query = query.where(c[name] == value)
    if where.changes_since is not None:
        query = query.where(c.updated_at >= where.changes_since)
    if where.changes_before is not None:
        query = query.where(c.updated_at <= where.changes_before)
    if marker is not None:
        mark = await get_migration(conn, marker)
        if mark is None:
            raise LookupError(marker)
        query = query.where(
            sa.or_(c.created_at < mark.created_at, sa.and_(c.created_at == mark.created_at, c.id < mark.id))
        )
    query = query.order_by(c.created_at.desc(), c.id.desc())
    if limit is not None:
        query = query.limit(limit)
    return list((await conn.execute(query)).fetchall())


async def migration_by_id(conn: Connection, raw_id: str) -> sa.Row[Any] | None:
    """The migration with this integer id (the per-server routes' key); None if none or not a number."""
    try:
        ident = int(raw_id)
    except ValueError:
        return None
    return (await conn.execute(sa.select(t.migrations).where(t.migrations.c.id == ident))).first()


async def flavor_pks(conn: Connection, rows: Collection[Any]) -> dict[str, int]:
    """The flavors' integer ids by flavorid, for the migrations' old/new_instance_type_id."""
    wanted = {str(f.get("flavorid")) for r in rows for f in (r.old_flavor, r.new_flavor) if isinstance(f, dict)}
    if not wanted:
        return {}
    query = sa.select(t.flavors.c.flavorid, t.flavors.c.id).where(t.flavors.c.flavorid.in_(sorted(wanted)))
    return {str(r.flavorid): int(r.id) for r in await conn.execute(query)}


async def outbox_mentions(conn: Connection, instance_uuid: str) -> bool:
    """Whether a message about this instance still waits in the outbox (it will drive the move)."""
    query = sa.select(t.outbox.c.id).where(t.outbox.c.body.contains(instance_uuid)).limit(1)
    return (await conn.execute(query)).first() is not None


def agent_payload(mig: Any) -> dict[str, Any]:
    """What an agent gets about a migration (plain JSON), from the API's casts and the conductor's."""
    return {
        "uuid": mig.uuid,
        "migration_type": mig.migration_type,
        "source_compute": mig.source_compute,
        "source_node": mig.source_node,
        "dest_compute": mig.dest_compute,
        "dest_node": mig.dest_node,
    }
