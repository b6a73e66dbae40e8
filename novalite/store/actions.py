"""Instance actions and their events (``openstack server event list``), keyed by request id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from novalite.db import Connection
from novalite.db import schema as t
from novalite.store.paging import page_after
from novalite.timeutil import utcnow

# Statements of the write path, built once: they run several times per server built, and
# building a statement costs more than SQLite takes to execute it (docs/benchmarks.md).
_ACTIONS = t.instance_actions
_INSERT_ACTION = _ACTIONS.insert()
_INSERT_EVENT = t.instance_action_events.insert()


def _touch_statement(failed: bool, finish: bool) -> Any:
    """Touch the action of (instance, request id), noting a failure or its end, and return
    its id and start: an event costs two statements (this and its insert), not four."""
    values: dict[str, Any] = {"updated_at": sa.bindparam("now")}
    if failed:
        values["message"] = "Error"
    if finish:
        values["finish_time"] = sa.bindparam("now")
    return (
        _ACTIONS.update()
        .where(_ACTIONS.c.instance_uuid == sa.bindparam("uuid_"), _ACTIONS.c.request_id == sa.bindparam("rid"))
        .values(values)
        .returning(_ACTIONS.c.id, _ACTIONS.c.start_time)
    )


_TOUCH_ACTION = {(f, e): _touch_statement(f, e) for f in (False, True) for e in (False, True)}
_FINISH_ACTION = (
    _ACTIONS.update()
    .where(_ACTIONS.c.instance_uuid == sa.bindparam("uuid_"), _ACTIONS.c.request_id == sa.bindparam("rid"))
    .values(finish_time=sa.bindparam("now"), updated_at=sa.bindparam("now"))
)


async def start_action(
    conn: Connection, instance_uuid: str, action: str, request_id: str, user_id: str | None, project_id: str | None
) -> None:
    now = utcnow()
    await conn.execute(
        _INSERT_ACTION,
        {
            "instance_uuid": instance_uuid,
            "request_id": request_id,
            "action": action,
            "user_id": user_id,
            "project_id": project_id,
            "start_time": now,
            "updated_at": now,
        },
    )


async def record_event(
    conn: Connection,
    instance_uuid: str,
    request_id: str,
    event: str,
    *,
    start_time: Any = None,
    finish_time: Any = None,
    result: str | None = None,
    traceback: str | None = None,
    host: str | None = None,
    details: str | None = None,
    finish: bool = False,
) -> datetime | None:
    """Add an event to the action of ``request_id`` (and note a failure on the action; with
    ``finish`` the action ends too). Returns the action's start time, None if there is no
    such action (then nothing is recorded)."""
    now = utcnow()
    statement = _TOUCH_ACTION[(result == "Error", finish)]
    action = (await conn.execute(statement, {"uuid_": instance_uuid, "rid": request_id, "now": now})).first()
    if action is None:
        return None
    await conn.execute(
        _INSERT_EVENT,
        {
            "action_id": action.id,
            "event": event,
            "start_time": start_time or now,
            "finish_time": finish_time,
            "result": result,
            "traceback": traceback,
            "host": host,
            "details": details,
        },
    )
    started: datetime | None = action.start_time
    return started


async def finish_action(conn: Connection, instance_uuid: str, request_id: str) -> None:
    await conn.execute(_FINISH_ACTION, {"uuid_": instance_uuid, "rid": request_id, "now": utcnow()})


# -- reading (``os-instance-actions``) ------------------------------------------------------


async def list_actions(
    conn: Connection,
    instance_uuid: str,
    *,
    changes_since: datetime | None = None,
    changes_before: datetime | None = None,
    limit: int | None = None,
    marker: str | None = None,
) -> list[sa.Row[Any]]:
    """The instance's actions, newest first: at most ``limit`` after the one of request id ``marker``.

    Invalid if the marker names no action of the instance (in the time window).
    """
    c = t.instance_actions.c
    query = sa.select(t.instance_actions).where(c.instance_uuid == instance_uuid)
    if changes_since:
        query = query.where(c.updated_at >= changes_since)
    if changes_before:
        query = query.where(c.updated_at <= changes_before)
    rows = list(await conn.execute(query.order_by(c.start_time.desc(), c.id.desc())))
    return page_after(rows, lambda r: r.request_id, marker, limit, f"Marker {marker} could not be found.")


async def get_action(conn: Connection, instance_uuid: str, request_id: str) -> sa.Row[Any] | None:
    c = t.instance_actions.c
    query = sa.select(t.instance_actions).where(c.instance_uuid == instance_uuid, c.request_id == request_id)
    return (await conn.execute(query)).first()


async def action_events(conn: Connection, action_id: int) -> list[sa.Row[Any]]:
    """The action's events, newest first."""
    c = t.instance_action_events.c
    query = sa.select(t.instance_action_events).where(c.action_id == action_id)
    return list(await conn.execute(query.order_by(c.start_time.desc(), c.id.desc())))
