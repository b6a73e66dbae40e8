"""Instances: their rows, the payload an agent gets, faults, and the end of a delete."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from novalite import states
from novalite.db import Connection
from novalite.db import schema as t
from novalite.store import placement
from novalite.timeutil import utcnow


def instance_name(instance_id: int) -> str:
    """The guest's name on the hypervisor, as Nova's default template: instance-0000002a."""
    return f"instance-{instance_id:08x}"


# -- instances ------------------------------------------------------------------------------


async def instance_payload(conn: Connection, instance_uuid: str) -> dict[str, Any] | None:
    """Everything an agent needs about one instance, as plain JSON (the driver's Instance)."""
    row = (await conn.execute(sa.select(t.instances).where(t.instances.c.uuid == instance_uuid))).first()
    if row is None:
        return None
    return await payload_from_row(conn, row)


async def payload_from_row(conn: Connection, row: Any) -> dict[str, Any]:
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


async def finalize_delete(conn: Connection, instance_uuid: str) -> None:
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
