"""The flavors a fresh cloud starts with (devstack's m1 family, with the same ids)."""

from __future__ import annotations

import sqlalchemy as sa

from novalite.db import Connection
from novalite.db import schema as t
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
