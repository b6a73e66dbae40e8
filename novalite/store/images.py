"""Image records: who may see which image, the lookups the API and compute share, Glance's
listing (filters, sort, marker paging), changes, status transitions and members.

Glance's visibility rules, in one place so the image API and the compute side can never
disagree about whether a project may use an image:

* ``public`` and ``community`` images are visible to everyone;
* ``private`` images only to their owner;
* ``shared`` images to their owner and to the projects that are members of the image
  (any member status lets you *use* an image; only ``accepted`` ones are *listed*);
* admin sees everything.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

import sqlalchemy as sa

from novalite.context import RequestContext
from novalite.db import Connection
from novalite.db import schema as t
from novalite.errors import Conflict, Invalid
from novalite.images.files import StoredData
from novalite.timeutil import utcnow

#: Statuses an image goes through (Glance's, without the import-only ones).
QUEUED, SAVING, ACTIVE, DEACTIVATED, KILLED, DELETED = (
    "queued",
    "saving",
    "active",
    "deactivated",
    "killed",
    "deleted",
)
UPLOADING, IMPORTING = "uploading", "importing"


def is_member_of(project_id: str | None, status: str | None = None) -> Any:
    """SQL: ``project_id`` is a member of the image (optionally with ``status``)."""
    cond = [t.image_members.c.image_id == t.images.c.id, t.image_members.c.member_id == project_id]
    if status is not None:
        cond.append(t.image_members.c.status == status)
    return sa.exists(sa.select(1).select_from(t.image_members).where(*cond))


def visible_clause(ctx: RequestContext) -> Any:
    """SQL condition: the image may be read (shown, downloaded, booted) by ``ctx``."""
    if ctx.is_admin:
        return sa.true()
    return sa.or_(
        t.images.c.owner == ctx.project_id,
        t.images.c.visibility.in_(("public", "community")),
        sa.and_(t.images.c.visibility == "shared", is_member_of(ctx.project_id)),
    )


def row_to_dict(row: Any) -> dict[str, Any]:
    image = dict(row._mapping)
    image["properties"] = dict(image.get("properties") or {})
    image["tags"] = list(image.get("tags") or [])
    return image


async def get_image(
    conn: Connection, image_id: str, ctx: RequestContext, *, for_update: bool = False
) -> dict[str, Any] | None:
    """The image record visible to ``ctx`` (all columns; ``properties`` and ``tags`` decoded).

    None when it does not exist *or* may not be seen: callers answer 404 either way, so
    a project cannot probe for the ids of other projects' private images. The compute
    side uses this to check an ``imageRef`` and read ``min_disk``/``min_ram``/``status``,
    the custom properties (``hw_*``) and ``path``.
    """
    query = _GET_IMAGE[(ctx.is_admin, for_update)]
    row = (await conn.execute(query, {"image_id": image_id, "project_id": ctx.project_id})).first()
    return row_to_dict(row) if row is not None else None


def _get_image_statement(admin: bool, for_update: bool) -> Any:
    query = sa.select(t.images).where(t.images.c.id == sa.bindparam("image_id"))
    if not admin:
        project: Any = sa.bindparam("project_id")
        query = query.where(
            sa.or_(
                t.images.c.owner == project,
                t.images.c.visibility.in_(("public", "community")),
                sa.and_(t.images.c.visibility == "shared", is_member_of(project)),
            )
        )
    return query.with_for_update() if for_update else query


#: Built once per (admin, for update): every create reads its image (docs/benchmarks.md).
#: The condition is :func:`visible_clause`'s, with the project bound.
_GET_IMAGE = {(a, u): _get_image_statement(a, u) for a in (False, True) for u in (False, True)}


def can_modify(image: dict[str, Any], ctx: RequestContext) -> bool:
    """Writers may change their own project's images; admin may change any."""
    if ctx.is_admin:
        return True
    return ctx.can_write and image["owner"] == ctx.project_id


# -- create, change, delete -------------------------------------------------------------


class ImageValues(TypedDict, total=False):
    """The columns a client sets (validated by the API), at creation and through PATCH."""

    name: str | None
    visibility: str
    protected: bool
    os_hidden: bool
    disk_format: str | None
    container_format: str | None
    min_disk: int
    min_ram: int
    owner: str | None
    tags: list[str]
    properties: dict[str, str]


async def _record(conn: Connection, image_id: str) -> dict[str, Any]:
    return row_to_dict((await conn.execute(sa.select(t.images).where(t.images.c.id == image_id))).one())


async def create_image(conn: Connection, image_id: str, values: ImageValues) -> dict[str, Any]:
    """A new ``queued`` image (no data yet); Conflict if the id is taken."""
    if await conn.scalar(sa.select(t.images.c.id).where(t.images.c.id == image_id)):
        raise Conflict(f"Image with identifier {image_id} already exists!")
    now = utcnow()
    await conn.execute(t.images.insert().values(id=image_id, status=QUEUED, created_at=now, updated_at=now, **values))
    return await _record(conn, image_id)


async def update_image(conn: Connection, image_id: str, values: ImageValues) -> dict[str, Any]:
    """Write ``values``; returns the columns written (``updated_at`` too), for the caller's copy."""
    written: dict[str, Any] = {**values, "updated_at": utcnow()}
    await conn.execute(t.images.update().where(t.images.c.id == image_id).values(**written))
    return written


async def set_status(
    conn: Connection, image_id: str, status: str, *, expected: str | None = None, data: StoredData | None = None
) -> bool:
    """Move the image to ``status`` (with its uploaded ``data``); False if it was not ``expected``.

    The condition makes a transition atomic: of two uploads racing for one ``queued``
    image only one moves it on, and an upload that ends after the image was deleted or
    reset changes nothing.
    """
    query = t.images.update().where(t.images.c.id == image_id)
    if expected is not None:
        query = query.where(t.images.c.status == expected)
    values: dict[str, Any] = {"status": status, "updated_at": utcnow()}
    if data is not None:
        values.update(
            size=data.size,
            virtual_size=data.virtual_size,
            checksum=data.checksum,
            os_hash_algo=data.os_hash_algo,
            os_hash_value=data.os_hash_value,
            path=str(data.path),
        )
    result = await conn.execute(query.values(**values))
    return result.rowcount > 0


async def delete_image(conn: Connection, image_id: str) -> None:
    """The record and its members (ON DELETE CASCADE); the caller removes the data after the commit."""
    await conn.execute(t.images.delete().where(t.images.c.id == image_id))


async def instance_images(
    conn: Connection, instance_uuid: str, owner: str | None, image_type: str, backup_type: str | None = None
) -> list[dict[str, Any]]:
    """The images of ``image_type`` made of one instance (its backups of ``backup_type``), newest
    first: what a backup's rotation counts (issue 11). Filtered on the properties in Python,
    among the owner's images, so SQLite and PostgreSQL need no JSON operators."""
    query = sa.select(t.images).where(t.images.c.owner == owner).order_by(t.images.c.created_at.desc())
    found: list[dict[str, Any]] = []
    for row in await conn.execute(query):
        props = row.properties or {}
        if props.get("instance_uuid") != instance_uuid or props.get("image_type") != image_type:
            continue
        if backup_type is not None and props.get("backup_type") != backup_type:
            continue
        found.append(row_to_dict(row))
    return found


# -- listing ----------------------------------------------------------------------------

_SORT_COLUMNS: dict[str, Any] = {
    "name": sa.func.coalesce(t.images.c.name, ""),
    "status": t.images.c.status,
    "container_format": sa.func.coalesce(t.images.c.container_format, ""),
    "disk_format": sa.func.coalesce(t.images.c.disk_format, ""),
    "size": sa.func.coalesce(t.images.c.size, -1),
    "virtual_size": sa.func.coalesce(t.images.c.virtual_size, -1),
    "id": t.images.c.id,
    "created_at": t.images.c.created_at,
    "updated_at": t.images.c.updated_at,
    "min_disk": t.images.c.min_disk,
    "min_ram": t.images.c.min_ram,
    "visibility": t.images.c.visibility,
    "owner": sa.func.coalesce(t.images.c.owner, ""),
}
#: Keys a listing may be sorted on (NULLs sort as empty strings, sizes as -1).
SORT_KEYS = frozenset(_SORT_COLUMNS)
#: Attributes filtered by value (``name=x`` or ``name=in:x,y``).
IN_FIELDS = ("id", "name", "status", "disk_format", "container_format", "owner", "checksum", "os_hash_value")
_TIME_OPS = {"gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__", "eq": "__eq__", "neq": "__ne__"}
#: Operators of the ``created_at``/``updated_at`` filters (``gte:2024-01-01T00:00:00Z``).
TIME_OPS = frozenset(_TIME_OPS)


@dataclass
class ImageFilters:
    """A listing's filters, parsed and validated by the API (None: not filtered).

    ``visibility`` is None, ``all`` or one of Glance's four; ``member_status`` is
    ``accepted``, ``pending``, ``rejected`` or ``all``; ``times`` maps ``created_at`` /
    ``updated_at`` to an (operator, time) pair.
    """

    visibility: str | None = None
    member_status: str = "accepted"
    values_in: dict[str, list[str]] = field(default_factory=dict)
    size_min: int | None = None
    size_max: int | None = None
    protected: bool | None = None
    os_hidden: bool = False
    times: dict[str, tuple[str, datetime]] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    properties: dict[str, str] = field(default_factory=dict)


def listed_clause(ctx: RequestContext, visibility: str | None, member_status: str) -> Any:
    """Which images a listing shows; stricter than :func:`visible_clause` (Glance's rules).

    Shared images of other projects are listed only once the member ``accepted`` them
    (``member_status`` changes that); community images only when asked for.
    """
    c = t.images.c
    status = None if member_status == "all" else member_status
    mine = c.owner == ctx.project_id
    member = sa.and_(c.visibility == "shared", is_member_of(ctx.project_id, status))
    if visibility is None:
        if ctx.is_admin:
            return sa.true()
        return sa.or_(mine, c.visibility == "public", member)
    if visibility == "all":
        if ctx.is_admin:
            return sa.true()
        return sa.or_(mine, c.visibility.in_(("public", "community")), member)
    cond = c.visibility == visibility
    if ctx.is_admin or visibility in ("public", "community"):
        return cond
    if visibility == "private":
        return sa.and_(cond, mine)
    return sa.and_(cond, sa.or_(mine, is_member_of(ctx.project_id, status)))


def _conditions(ctx: RequestContext, filters: ImageFilters) -> list[Any]:
    c = t.images.c
    conds: list[Any] = [listed_clause(ctx, filters.visibility, filters.member_status)]
    for name, values in filters.values_in.items():
        conds.append(c[name].in_(values))
    if filters.size_min is not None:
        conds.append(c.size >= filters.size_min)
    if filters.size_max is not None:
        conds.append(c.size <= filters.size_max)
    if filters.protected is not None:
        conds.append(c.protected == filters.protected)
    conds.append(c.os_hidden == filters.os_hidden)
    for name, (op, when) in filters.times.items():
        conds.append(getattr(c[name], _TIME_OPS[op])(when))
    return conds


async def _after_marker(conn: Connection, ctx: RequestContext, marker: str, sort: list[tuple[str, str]]) -> Any:
    """Keyset paging: the rows strictly after the marker image in the sort order."""
    exprs = [_SORT_COLUMNS[k] for k, _ in sort]
    row = (await conn.execute(sa.select(*exprs).where(t.images.c.id == marker, visible_clause(ctx)))).first()
    if row is None:
        raise Invalid(f"Invalid marker. Image {marker} could not be found.")
    ors = []
    for i, (_key, direction) in enumerate(sort):
        equal = [exprs[j] == row[j] for j in range(i)]
        after = exprs[i] > row[i] if direction == "asc" else exprs[i] < row[i]
        ors.append(sa.and_(*equal, after))
    return sa.or_(*ors)


def _matches(image: dict[str, Any], filters: ImageFilters) -> bool:
    if any(tag not in image["tags"] for tag in filters.tags):
        return False
    return all(image["properties"].get(k) == v for k, v in filters.properties.items())


async def list_images(
    conn: Connection,
    ctx: RequestContext,
    filters: ImageFilters,
    *,
    sort: list[tuple[str, str]],
    limit: int,
    marker: str | None = None,
) -> list[dict[str, Any]]:
    """Up to ``limit + 1`` images in ``sort`` order after ``marker``: one more than asked
    tells the caller there is a next page. Invalid if the marker is not a visible image.

    ``sort`` is (key, ``asc``/``desc``) pairs ending with ``id`` (a total order).
    Tags and properties live in JSON columns, whose SQL differs between SQLite and
    PostgreSQL; filtering on them in Python keeps one query for both.
    """
    conds = _conditions(ctx, filters)
    if marker is not None:
        conds.append(await _after_marker(conn, ctx, marker, sort))
    stmt = sa.select(t.images).where(*conds)
    stmt = stmt.order_by(*[_SORT_COLUMNS[k].asc() if d == "asc" else _SORT_COLUMNS[k].desc() for k, d in sort])
    if not filters.tags and not filters.properties:
        stmt = stmt.limit(limit + 1)
    found: list[dict[str, Any]] = []
    for row in (await conn.execute(stmt)).all():
        image = row_to_dict(row)
        if _matches(image, filters):
            found.append(image)
            if len(found) > limit:
                break
    return found


# -- members ----------------------------------------------------------------------------


def _member(image_id: str, member_id: str) -> sa.ColumnElement[bool]:
    return sa.and_(t.image_members.c.image_id == image_id, t.image_members.c.member_id == member_id)


async def get_member(conn: Connection, image_id: str, member_id: str) -> sa.Row[Any] | None:
    return (await conn.execute(sa.select(t.image_members).where(_member(image_id, member_id)))).first()


async def list_members(conn: Connection, image_id: str, *, member_id: str | None = None) -> list[sa.Row[Any]]:
    """The image's members, oldest first (only ``member_id``, if given: what a member may see)."""
    query = sa.select(t.image_members).where(t.image_members.c.image_id == image_id)
    if member_id is not None:
        query = query.where(t.image_members.c.member_id == member_id)
    return list((await conn.execute(query.order_by(t.image_members.c.created_at))).all())


async def add_member(conn: Connection, image_id: str, member_id: str) -> sa.Row[Any]:
    """Share the image with ``member_id``: ``pending`` until that project accepts it."""
    now = utcnow()
    await conn.execute(
        t.image_members.insert().values(
            image_id=image_id, member_id=member_id, status="pending", created_at=now, updated_at=now
        )
    )
    return (await conn.execute(sa.select(t.image_members).where(_member(image_id, member_id)))).one()


async def set_member_status(conn: Connection, image_id: str, member_id: str, status: str) -> sa.Row[Any]:
    await conn.execute(
        t.image_members.update().where(_member(image_id, member_id)).values(status=status, updated_at=utcnow())
    )
    return (await conn.execute(sa.select(t.image_members).where(_member(image_id, member_id)))).one()


async def remove_member(conn: Connection, image_id: str, member_id: str) -> bool:
    """False if ``member_id`` was not a member."""
    result = await conn.execute(t.image_members.delete().where(_member(image_id, member_id)))
    return result.rowcount > 0
