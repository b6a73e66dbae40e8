"""Helpers for functional tests: images in the database, waiting for server states."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from novalite.db import schema as t
from novalite.timeutil import utcnow


async def make_image(cloud: Any, *, size: int = 1024, min_disk: int = 0, min_ram: int = 0, **props: Any) -> str:
    """An active public image row (tests of the image API itself upload real data)."""
    image_id = str(uuid.uuid4())
    async with cloud.rt.db.begin() as conn:
        await conn.execute(
            t.images.insert().values(
                id=image_id,
                name=f"img-{image_id[:8]}",
                owner=None,
                visibility="public",
                status="active",
                disk_format="qcow2",
                container_format="bare",
                size=size,
                min_disk=min_disk,
                min_ram=min_ram,
                properties=props,
                tags=[],
                created_at=utcnow(),
                updated_at=utcnow(),
            )
        )
    return image_id


async def create_server(
    cloud: Any,
    image: str,
    name: str = "vm",
    flavor: str = "1",
    mv: str = "2.100",
    token: str | None = "admin",
    **extra: Any,
) -> Any:
    body = {"server": {"name": name, "imageRef": image, "flavorRef": flavor, "networks": "none", **extra}}
    return await cloud.post("/compute/v2.1/servers", json=body, microversion=mv, token=token)


async def wait_status(
    cloud: Any, server_id: str, status: str | set[str], timeout: float = 10.0, token: str | None = "admin"
) -> dict[str, Any]:
    wanted = {status} if isinstance(status, str) else status
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await cloud.get(f"/compute/v2.1/servers/{server_id}", microversion="2.100", token=token)
        assert r.status == 200, r
        server = r.body["server"]
        if server["status"] in wanted and not server["OS-EXT-STS:task_state"]:
            return server
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"server {server_id} stayed {server['status']}/{server['OS-EXT-STS:task_state']}")
        await asyncio.sleep(0.02)


async def wait_gone(cloud: Any, server_id: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        r = await cloud.get(f"/compute/v2.1/servers/{server_id}")
        if r.status == 404:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"server {server_id} not deleted: {r}")
        await asyncio.sleep(0.02)


async def unlimited_quota(cloud: Any, project_name: str = "admin") -> None:
    """Lift the project's instance/core/RAM quota (tests about capacity, not quota)."""
    import sqlalchemy as sa

    async with cloud.rt.db.begin() as conn:
        project = await conn.scalar(sa.select(t.projects.c.id).where(t.projects.c.name == project_name))
        await conn.execute(t.quotas.delete().where(t.quotas.c.project_id == project))
        await conn.execute(
            t.quotas.insert(),
            [{"project_id": project, "resource": name, "hard_limit": -1} for name in ("instances", "cores", "ram")],
        )
