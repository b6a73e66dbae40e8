"""Image records: who may see which image, and the lookups the API and compute share.

Glance's visibility rules, in one place so the image API and the compute side can never
disagree about whether a project may use an image:

* ``public`` and ``community`` images are visible to everyone;
* ``private`` images only to their owner;
* ``shared`` images to their owner and to the projects that are members of the image
  (any member status lets you *use* an image; only ``accepted`` ones are *listed*);
* admin sees everything.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from novalite.context import RequestContext
from novalite.db import Connection
from novalite.db import schema as t

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
    query = sa.select(t.images).where(t.images.c.id == image_id, visible_clause(ctx))
    if for_update:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    return row_to_dict(row) if row is not None else None


def can_modify(image: dict[str, Any], ctx: RequestContext) -> bool:
    """Writers may change their own project's images; admin may change any."""
    if ctx.is_admin:
        return True
    return ctx.can_write and image["owner"] == ctx.project_id
