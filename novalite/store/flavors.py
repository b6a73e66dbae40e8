"""Flavors: the defaults a fresh cloud starts with, lookups with Nova's visibility rules,
changes, extra specs and the access lists of private flavors.

A private flavor is visible only to admins and to projects on its access list. Errors
carry Nova's exact messages, since clients show them as they are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import sqlalchemy as sa

from novalite.context import RequestContext
from novalite.db import Connection
from novalite.db import schema as t
from novalite.errors import Conflict, NotFound
from novalite.store.paging import page_after
from novalite.timeutil import utcnow

DEFAULT_FLAVORS = [
    # flavorid, name, vcpus, memory_mb, root_gb
    ("1", "m1.tiny", 1, 512, 1),
    ("2", "m1.small", 1, 2048, 20),
    ("3", "m1.medium", 2, 4096, 40),
    ("4", "m1.large", 4, 8192, 80),
    ("5", "m1.xlarge", 8, 16384, 160),
]


async def ensure_default_flavors(conn: Connection) -> None:
    """Create the default flavors once: only in a database that never had any flavor."""
    if await conn.scalar(sa.select(sa.func.count()).select_from(t.flavors)):
        return
    now = utcnow()
    await conn.execute(
        t.flavors.insert(),
        [
            dict(
                flavorid=fid,
                name=name,
                vcpus=vcpus,
                memory_mb=ram,
                root_gb=disk,
                ephemeral_gb=0,
                swap=0,
                rxtx_factor=1.0,
                is_public=True,
                disabled=False,
                extra_specs={},
                created_at=now,
            )
            for fid, name, vcpus, ram, disk in DEFAULT_FLAVORS
        ],
    )


# -- lookups --------------------------------------------------------------------------------------

#: Nova's sort keys for flavor lists and the column each sorts by.
_SORT_COLUMNS: dict[str, sa.Column[Any]] = {
    "created_at": t.flavors.c.created_at,
    "description": t.flavors.c.description,
    "disabled": t.flavors.c.disabled,
    "ephemeral_gb": t.flavors.c.ephemeral_gb,
    "flavorid": t.flavors.c.flavorid,
    "id": t.flavors.c.id,
    "is_public": t.flavors.c.is_public,
    "memory_mb": t.flavors.c.memory_mb,
    "name": t.flavors.c.name,
    "root_gb": t.flavors.c.root_gb,
    "rxtx_factor": t.flavors.c.rxtx_factor,
    "swap": t.flavors.c.swap,
    "updated_at": t.flavors.c.created_at,  # flavors are immutable but for the description
    "vcpu_weight": t.flavors.c.id,
    "vcpus": t.flavors.c.vcpus,
}
SORT_KEYS: tuple[str, ...] = tuple(sorted(_SORT_COLUMNS))


@dataclass(frozen=True)
class FlavorFilters:
    """What a flavor list is narrowed to; ``is_public`` (admins only) is None for all flavors."""

    is_public: bool | None = True
    min_ram: int | None = None
    min_disk: int | None = None


@dataclass(frozen=True)
class NewFlavor:
    """The columns of a flavor being created (``flavorid`` already chosen by the caller)."""

    flavorid: str
    name: str
    memory_mb: int
    vcpus: int
    root_gb: int
    ephemeral_gb: int = 0
    swap: int = 0
    rxtx_factor: float = 1.0
    is_public: bool = True
    description: str | None = None


def _shared_with(project_id: str | None) -> sa.ColumnElement[bool]:
    """Public flavors, and private ones on the project's access list."""
    shared = sa.select(t.flavor_projects.c.flavor_id).where(t.flavor_projects.c.project_id == project_id)
    return sa.or_(t.flavors.c.is_public == sa.true(), t.flavors.c.id.in_(shared))


def _visible(ctx: RequestContext) -> sa.ColumnElement[bool]:
    """Rows the caller may see: all for admins, else public or on the access list."""
    return sa.true() if ctx.is_admin else _shared_with(ctx.project_id)


# Built once (every create reads its flavor): for admins, and for a project (bound).
_GET_FLAVOR = sa.select(t.flavors).where(t.flavors.c.flavorid == sa.bindparam("flavorid"))
_PROJECT: Any = sa.bindparam("project_id")
_GET_SHARED_FLAVOR = _GET_FLAVOR.where(_shared_with(_PROJECT))


async def get_flavor(conn: Connection, ctx: RequestContext, flavorid: str) -> sa.Row[Any]:
    """The flavor with this flavorid; NotFound (Nova's words) when missing or not visible to the caller."""
    if ctx.is_admin:
        row = (await conn.execute(_GET_FLAVOR, {"flavorid": flavorid})).first()
    else:
        row = (await conn.execute(_GET_SHARED_FLAVOR, {"flavorid": flavorid, "project_id": ctx.project_id})).first()
    if row is None:
        raise NotFound(f"Flavor {flavorid} could not be found.")
    return row


async def list_flavors(
    conn: Connection,
    ctx: RequestContext,
    *,
    filters: FlavorFilters,
    sort_key: str = "flavorid",
    sort_dir: str = "asc",
    limit: int | None = None,
    marker: str | None = None,
) -> list[sa.Row[Any]]:
    """A page of the flavors the caller sees, sorted (id breaks ties), after the ``marker`` flavorid.

    Non-admins see enabled public flavors and their project's private ones whatever
    ``is_public`` says; for admins ``is_public=True`` still means "public or shared with me",
    as in Nova. An unknown marker is Invalid.
    """
    where: list[sa.ColumnElement[bool]] = []
    if ctx.is_admin:
        if filters.is_public is True:
            where.append(_shared_with(ctx.project_id))
        elif filters.is_public is False:
            where.append(t.flavors.c.is_public == sa.false())
    else:
        where.append(_visible(ctx))
        where.append(t.flavors.c.disabled == sa.false())
    if filters.min_ram is not None:
        where.append(t.flavors.c.memory_mb >= filters.min_ram)
    if filters.min_disk is not None:
        where.append(t.flavors.c.root_gb >= filters.min_disk)
    column = _SORT_COLUMNS[sort_key]
    ascending = sort_dir == "asc"
    order = [column.asc() if ascending else column.desc(), t.flavors.c.id.asc() if ascending else t.flavors.c.id.desc()]
    rows = list(await conn.execute(sa.select(t.flavors).where(*where).order_by(*order)))
    return page_after(rows, lambda r: r.flavorid, marker, limit, f"marker [{marker}] not found")


# -- changes --------------------------------------------------------------------------------------


async def create_flavor(conn: Connection, new: NewFlavor) -> sa.Row[Any]:
    """Insert the flavor and return its row; Conflict (Nova's words) if its name or flavorid is taken."""
    if await conn.scalar(sa.select(t.flavors.c.id).where(t.flavors.c.name == new.name)):
        raise Conflict(f"Flavor with name {new.name} already exists.")
    if await conn.scalar(sa.select(t.flavors.c.id).where(t.flavors.c.flavorid == new.flavorid)):
        raise Conflict(f"Flavor with ID {new.flavorid} already exists.")
    await conn.execute(t.flavors.insert().values(**asdict(new), disabled=False, extra_specs={}, created_at=utcnow()))
    return (await conn.execute(sa.select(t.flavors).where(t.flavors.c.flavorid == new.flavorid))).one()


async def set_description(conn: Connection, flavor_pk: int, description: str | None) -> sa.Row[Any]:
    """Change the one mutable field of a flavor; returns the updated row."""
    await conn.execute(t.flavors.update().where(t.flavors.c.id == flavor_pk).values(description=description))
    return (await conn.execute(sa.select(t.flavors).where(t.flavors.c.id == flavor_pk))).one()


async def delete_flavor(conn: Connection, flavor_pk: int) -> None:
    """Delete the flavor and its access list (instances keep their own copy of the flavor)."""
    await conn.execute(t.flavor_projects.delete().where(t.flavor_projects.c.flavor_id == flavor_pk))
    await conn.execute(t.flavors.delete().where(t.flavors.c.id == flavor_pk))


# -- extra specs ----------------------------------------------------------------------------------


async def merge_extra_specs(conn: Connection, flavor: sa.Row[Any], specs: dict[str, str]) -> None:
    """Add or overwrite these keys in the flavor's extra specs (read in the same transaction)."""
    merged = dict(flavor.extra_specs or {})
    merged.update(specs)
    await conn.execute(t.flavors.update().where(t.flavors.c.id == flavor.id).values(extra_specs=merged))


async def delete_extra_spec(conn: Connection, flavor: sa.Row[Any], key: str) -> None:
    """Remove one extra spec; NotFound (Nova's words) if the flavor has no such key."""
    specs = dict(flavor.extra_specs or {})
    if key not in specs:
        raise NotFound(f"Flavor {flavor.flavorid} has no extra specs with key {key}.")
    del specs[key]
    await conn.execute(t.flavors.update().where(t.flavors.c.id == flavor.id).values(extra_specs=specs))


# -- access lists ---------------------------------------------------------------------------------


async def access_projects(conn: Connection, flavor_pk: int) -> list[str]:
    """The projects a private flavor is shared with, sorted."""
    rows = await conn.execute(
        sa.select(t.flavor_projects.c.project_id)
        .where(t.flavor_projects.c.flavor_id == flavor_pk)
        .order_by(t.flavor_projects.c.project_id)
    )
    return [project_id for (project_id,) in rows]


async def add_access(conn: Connection, flavor: sa.Row[Any], project_id: str) -> None:
    """Share the flavor with a project; Conflict (Nova's words) if it already is."""
    exists = await conn.scalar(
        sa.select(sa.func.count()).where(
            t.flavor_projects.c.flavor_id == flavor.id, t.flavor_projects.c.project_id == project_id
        )
    )
    if exists:
        raise Conflict(
            f"Flavor access already exists for flavor {flavor.flavorid} and project {project_id} combination."
        )
    await conn.execute(t.flavor_projects.insert().values(flavor_id=flavor.id, project_id=project_id))


async def remove_access(conn: Connection, flavor: sa.Row[Any], project_id: str) -> None:
    """Stop sharing the flavor with a project; NotFound (Nova's words) if it was not shared."""
    deleted = await conn.execute(
        t.flavor_projects.delete().where(
            t.flavor_projects.c.flavor_id == flavor.id, t.flavor_projects.c.project_id == project_id
        )
    )
    if not deleted.rowcount:
        raise NotFound(f"Flavor access not found for {flavor.flavorid} / {project_id} combination.")
