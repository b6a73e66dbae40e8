"""Listing servers: filters, sort order and marker paging, and the data their views need in bulk.

The filters are Nova's ``GET /servers`` query parameters as plain values; what SQL cannot
express (a regex name, the flavor inside the embedded flavor, an IP regex) is filtered on
the rows fetched. The views' extras (metadata, ports, faults, host status) are loaded for a
whole page at once, so listing 1,000 servers costs a handful of queries, not thousands.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from novalite import states
from novalite.db import Connection
from novalite.db import schema as t
from novalite.errors import Invalid
from novalite.servicegroup import is_up
from novalite.store import hosts, server_ports
from novalite.store.servers import shown_faults

#: Sort keys ``GET /servers`` accepts, and their columns.
_SORT_COLUMNS = {
    "created_at": t.instances.c.created_at,
    "updated_at": t.instances.c.updated_at,
    "display_name": t.instances.c.display_name,
    "uuid": t.instances.c.uuid,
    "vm_state": t.instances.c.vm_state,
    "host": t.instances.c.host,
    "launched_at": t.instances.c.launched_at,
}
SORT_KEYS = frozenset(_SORT_COLUMNS)

#: A name made of these only is matched as a substring in SQL; anything else is a regex.
_PLAIN_NAME = re.compile(r"[\w .-]*")


@dataclass(frozen=True)
class ServerFilters:
    """What a listing keeps. None means "do not filter on this"."""

    project_id: str | None = None  # the project listed (None: instances of no project) ...
    all_projects: bool = False  # ... unless every project's are
    deleted: bool | None = False
    changes_since: datetime | None = None
    changes_before: datetime | None = None
    vm_state: str | None = None
    task_state: str | tuple[str, ...] | None = None  # a tuple: any of them (status REBUILD)
    name: str | None = None  # a regex, as in Nova
    image_ref: str | None = None
    flavorid: str | None = None
    reservation_id: str | None = None
    key_name: str | None = None
    availability_zone: str | None = None
    user_id: str | None = None
    host: str | None = None
    node: str | None = None
    ip: str | None = None  # a regex matched against the start of each fixed IP


@dataclass(frozen=True)
class ServerPage:
    rows: list[sa.Row[Any]]
    has_more: bool


def _filtered(filters: ServerFilters) -> sa.Select[Any]:
    c = t.instances.c
    query = sa.select(t.instances)
    if not filters.all_projects:
        query = query.where(c.project_id == filters.project_id)
    if filters.changes_since:
        query = query.where(c.updated_at >= filters.changes_since)
    if filters.changes_before:
        query = query.where(c.updated_at <= filters.changes_before)
    if filters.deleted is not None:
        query = query.where(c.deleted.is_(filters.deleted))
    if filters.vm_state:
        query = query.where(c.vm_state == filters.vm_state)
    if isinstance(filters.task_state, tuple):
        query = query.where(c.task_state.in_(filters.task_state))
    elif filters.task_state:
        query = query.where(c.task_state == filters.task_state)
    if filters.name is not None:
        if _PLAIN_NAME.fullmatch(filters.name):
            query = query.where(c.display_name.like(f"%{filters.name}%"))
        else:
            query = query.where(c.display_name.is_not(None))
    for value, column in (
        (filters.image_ref, c.image_ref),
        (filters.reservation_id, c.reservation_id),
        (filters.key_name, c.key_name),
        (filters.availability_zone, c.availability_zone),
        (filters.user_id, c.user_id),
        (filters.host, c.host),
        (filters.node, c.node),
    ):
        if value is not None:
            query = query.where(column == value)
    if filters.flavorid is not None:
        query = query.where(c.memory_mb.is_not(None))
    return query


async def list_servers(
    conn: Connection,
    filters: ServerFilters,
    *,
    sort: Sequence[tuple[str, str]] = (("created_at", "desc"),),
    limit: int,
    marker: str | None = None,
) -> ServerPage:
    """One page of instances: at most ``limit`` after ``marker``, in ``sort`` order (newest first).

    ``sort`` holds (key in :data:`SORT_KEYS`, "asc" | "desc") pairs. Invalid if the marker
    is unknown or not in the listed project(s) or a name/ip regex does not compile.
    """
    c = t.instances.c
    order = [_SORT_COLUMNS[key].desc() if direction == "desc" else _SORT_COLUMNS[key].asc() for key, direction in sort]
    query = _filtered(filters).order_by(*order, c.id.desc())
    if marker:
        marker_query = sa.select(c.id, c.created_at).where(c.uuid == marker)
        if not filters.all_projects:
            # The marker is looked up with the listing's visibility: another project's server
            # must answer exactly like an unknown uuid, or the 400/200 difference reveals it.
            marker_query = marker_query.where(c.project_id == filters.project_id)
        marker_row = (await conn.execute(marker_query)).first()
        if marker_row is None:
            raise Invalid(f"marker [{marker}] not found")
        if [key for key, _ in sort] == ["created_at"] and sort[0][1] == "desc":
            # The default order pages in SQL; any other order finds the marker among all rows.
            query = query.where(
                sa.or_(
                    c.created_at < marker_row.created_at,
                    sa.and_(c.created_at == marker_row.created_at, c.id < marker_row.id),
                )
            )
            marker = None
    rows = list((await conn.execute(query if marker else query.limit(limit + 1 if limit else 1))).fetchall())
    if marker:
        ids = [r.uuid for r in rows]
        rows = rows[ids.index(marker) + 1 :] if marker in ids else []
    if filters.flavorid is not None:
        rows = [r for r in rows if (r.flavor or {}).get("flavorid") == filters.flavorid]
    if filters.name is not None and not _PLAIN_NAME.fullmatch(filters.name):
        try:
            regex = re.compile(filters.name)
        except re.error:
            raise Invalid(f"Invalid regular expression for name: {filters.name}") from None
        rows = [r for r in rows if r.display_name and regex.search(r.display_name)]
    if filters.ip is not None:
        rows = await _with_ip(conn, rows, filters.ip)
    has_more = bool(limit and len(rows) > limit)
    return ServerPage(rows[:limit] if limit else [], has_more)


async def _with_ip(conn: Connection, rows: list[sa.Row[Any]], pattern: str) -> list[sa.Row[Any]]:
    try:
        regex = re.compile(pattern)
    except re.error:
        raise Invalid(f"Invalid regular expression for ip: {pattern}") from None
    uuids = [r.uuid for r in rows]
    matched = {
        p.instance_uuid
        for p in await conn.execute(
            sa.select(t.ports.c.instance_uuid, t.ports.c.ip).where(t.ports.c.instance_uuid.in_(uuids))
        )
        if p.ip and regex.match(p.ip)
    }
    return [r for r in rows if r.uuid in matched]


# -- what the views show besides the row -------------------------------------------------------


@dataclass
class Extras:
    """Per-instance data loaded in bulk for a page of servers."""

    metadata: dict[str, dict[str, str]] = field(default_factory=lambda: defaultdict(dict))
    ports: dict[str, list[Any]] = field(default_factory=lambda: defaultdict(list))
    faults: dict[str, Any] = field(default_factory=dict)
    host_up: dict[str, tuple[bool, bool]] = field(default_factory=dict)  # host -> (up, disabled)
    group_names: dict[str, str] = field(default_factory=dict)  # the ports' security groups: id -> name


async def load_extras(
    conn: Connection,
    rows: Sequence[Any],
    *,
    contents: bool = True,
    faults: bool = True,
    host_status: bool = False,
    down_time: float = 60,
) -> Extras:
    """Metadata and ports (``contents``), faults and host status for ``rows``, in bulk."""
    extras = Extras()
    uuids = [r.uuid for r in rows] if contents else []
    for chunk_start in range(0, len(uuids), 500):
        chunk = uuids[chunk_start : chunk_start + 500]
        for m in await conn.execute(
            sa.select(t.instance_metadata).where(t.instance_metadata.c.instance_uuid.in_(chunk))
        ):
            extras.metadata[m.instance_uuid][m.key] = m.value
        for p in await conn.execute(
            sa.select(t.ports)
            .where(t.ports.c.instance_uuid.in_(chunk))
            .order_by(t.ports.c.device_index, t.ports.c.created_at, t.ports.c.id)
        ):
            extras.ports[p.instance_uuid].append(p)
    if contents:
        wanted = {g for ports in extras.ports.values() for p in ports for g in (p.security_groups or [])}
        extras.group_names = await server_ports.group_names(conn, wanted)
    if faults:
        extras.faults = await shown_faults(conn, [r.uuid for r in rows if r.vm_state in (states.ERROR, states.DELETED)])
    if host_status:
        page_hosts = {r.host for r in rows if r.host}
        if page_hosts:
            for s in await hosts.list_services(conn, binary=hosts.COMPUTE_BINARY):
                if s.host in page_hosts:
                    extras.host_up[s.host] = (is_up(s, down_time), bool(s.disabled))
    return extras
