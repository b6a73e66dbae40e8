"""Helpers for functional and API tests: images and people in the database, waiting for server states."""

from __future__ import annotations

import asyncio
import os
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from novalite.context import RequestContext
from novalite.db import schema as t
from novalite.store.tokens import issue_token, project_roles
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


@dataclass
class Who:
    token: str
    project_id: str
    user_id: str
    roles: list[str]

    def ctx(self) -> RequestContext:
        return RequestContext(user_id=self.user_id, project_id=self.project_id, roles=self.roles)


async def make_person(cloud: Any, user: str, project: str, role: str) -> Who:
    """A user with ``role`` on ``project`` (both created if missing) and a token for it."""
    async with cloud.rt.db.begin() as conn:
        pid = await conn.scalar(sa.select(t.projects.c.id).where(t.projects.c.name == project))
        if pid is None:
            pid = os.urandom(16).hex()
            await conn.execute(t.projects.insert().values(id=pid, name=project, created_at=utcnow()))
        uid = await conn.scalar(sa.select(t.users.c.id).where(t.users.c.name == user))
        if uid is None:
            uid = os.urandom(16).hex()
            await conn.execute(t.users.insert().values(id=uid, name=user, default_project_id=pid, created_at=utcnow()))
        rid = await conn.scalar(sa.select(t.roles.c.id).where(t.roles.c.name == role))
        exists = await conn.scalar(
            sa.select(sa.func.count())
            .select_from(t.role_assignments)
            .where(
                t.role_assignments.c.user_id == uid,
                t.role_assignments.c.project_id == pid,
                t.role_assignments.c.role_id == rid,
            )
        )
        if not exists:
            await conn.execute(t.role_assignments.insert().values(user_id=uid, project_id=pid, role_id=rid))
        roles = await project_roles(conn, uid, pid)
        token, *_ = await issue_token(conn, uid, pid, roles, 3600)
    return Who(token, pid, uid, [r["name"] for r in roles])
