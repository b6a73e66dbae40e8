"""Database records of the compute world, shared by the API and the conductor.

Services and compute nodes, instance payloads for agents, instance faults, actions
and their events. Only controller-side code imports this module (it needs the DB).
"""

from __future__ import annotations

import uuid as uuidlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from novalite import states
from novalite.db import schema as t
from novalite.store import placement
from novalite.timeutil import utcnow

NODE_NAMESPACE = uuidlib.UUID("5b1c8a86-7a4c-4b8e-a2a4-6e6f76616c69")


def instance_name(instance_id: int) -> str:
    """The guest's name on the hypervisor, as Nova's default template: instance-0000002a."""
    return f"instance-{instance_id:08x}"


def node_uuid(hypervisor_hostname: str) -> str:
    """A compute node's uuid, stable across restarts without any state on the host."""
    return str(uuidlib.uuid5(NODE_NAMESPACE, hypervisor_hostname))


# -- services -------------------------------------------------------------------------------


async def upsert_service(
    conn: AsyncConnection, host: str, binary: str, topic: str | None, availability_zone: str | None
) -> Any:
    """Create the service row if new and mark it seen now; returns the row."""
    now = utcnow()
    row = (
        await conn.execute(sa.select(t.services).where(t.services.c.host == host, t.services.c.binary == binary))
    ).first()
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
    return (
        await conn.execute(sa.select(t.services).where(t.services.c.host == host, t.services.c.binary == binary))
    ).first()


# -- instances ------------------------------------------------------------------------------


async def instance_payload(conn: AsyncConnection, instance_uuid: str) -> dict[str, Any] | None:
    """Everything an agent needs about one instance, as plain JSON (the driver's Instance)."""
    row = (await conn.execute(sa.select(t.instances).where(t.instances.c.uuid == instance_uuid))).first()
    if row is None:
        return None
    return await payload_from_row(conn, row)


async def payload_from_row(conn: AsyncConnection, row: Any) -> dict[str, Any]:
    meta = {
        r.key: r.value
        for r in await conn.execute(
            sa.select(t.instance_metadata).where(t.instance_metadata.c.instance_uuid == row.uuid)
        )
    }
    ports = [
        {"mac": p.mac, "ip": p.ip, "network": p.network}
        for p in await conn.execute(sa.select(t.ports).where(t.ports.c.instance_uuid == row.uuid))
    ]
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
    }


async def add_fault(
    conn: AsyncConnection, instance_uuid: str, message: str, code: int = 500, details: str = "", host: str | None = None
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


# -- actions and events ---------------------------------------------------------------------


async def start_action(
    conn: AsyncConnection, instance_uuid: str, action: str, request_id: str, user_id: str | None, project_id: str | None
) -> None:
    now = utcnow()
    await conn.execute(
        t.instance_actions.insert().values(
            instance_uuid=instance_uuid,
            request_id=request_id,
            action=action,
            user_id=user_id,
            project_id=project_id,
            start_time=now,
            updated_at=now,
        )
    )


async def record_event(
    conn: AsyncConnection,
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
) -> None:
    """Add an event to the action of ``request_id`` (and note a failure on the action)."""
    action = (
        await conn.execute(
            sa.select(t.instance_actions.c.id).where(
                t.instance_actions.c.instance_uuid == instance_uuid, t.instance_actions.c.request_id == request_id
            )
        )
    ).first()
    if action is None:
        return
    now = utcnow()
    await conn.execute(
        t.instance_action_events.insert().values(
            action_id=action.id,
            event=event,
            start_time=start_time or now,
            finish_time=finish_time,
            result=result,
            traceback=traceback,
            host=host,
            details=details,
        )
    )
    values: dict[str, Any] = {"updated_at": now}
    if result == "Error":
        values["message"] = "Error"
    await conn.execute(t.instance_actions.update().where(t.instance_actions.c.id == action.id).values(**values))


async def finish_action(conn: AsyncConnection, instance_uuid: str, request_id: str) -> None:
    now = utcnow()
    await conn.execute(
        t.instance_actions.update()
        .where(t.instance_actions.c.instance_uuid == instance_uuid, t.instance_actions.c.request_id == request_id)
        .values(finish_time=now, updated_at=now)
    )


async def finalize_delete(conn: Any, instance_uuid: str) -> None:
    """Mark an instance deleted and free what it held (allocations, ports, console tokens)."""
    now = utcnow()
    await placement.release(conn, instance_uuid)
    await conn.execute(t.ports.delete().where(t.ports.c.instance_uuid == instance_uuid))
    await conn.execute(t.console_auth_tokens.delete().where(t.console_auth_tokens.c.instance_uuid == instance_uuid))
    await conn.execute(
        t.instances.update()
        .where(t.instances.c.uuid == instance_uuid)
        .values(
            vm_state=states.DELETED,
            task_state=None,
            power_state=0,
            deleted=True,
            deleted_at=now,
            terminated_at=now,
            updated_at=now,
        )
    )
