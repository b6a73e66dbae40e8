"""Image data: upload (``PUT /file``), download (``GET /file``) and the import API.

``openstack image create --file`` uploads with ``PUT /v2/images/{id}/file``; with
``--import`` it stages (``PUT /stage``) then imports (``POST /import``, ``glance-direct``).
Both stream the body straight to disk: no database connection is held while bytes
arrive (SQLite has only one), and the status flip ``queued -> saving`` is a conditional
UPDATE, so two concurrent uploads to one image cannot both win.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from novalite.api.errors import (
    ApiError,
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    OverLimit,
    UnsupportedMediaType,
)
from novalite.api.http import context, json_response, read_json, runtime
from novalite.api.image.common import image_id_of, load_image, require_modify
from novalite.identity.tickets import UPLOAD_TICKET_KEY
from novalite.images.files import StoredData, UploadTooLarge, delete_data, image_path, write_image
from novalite.log import get_logger
from novalite.store import images as records
from novalite.store.images import ACTIVE, DEACTIVATED, QUEUED, SAVING, UPLOADING

log = get_logger("novalite.api.image")
routes = web.RouteTableDef()

#: Import methods we implement (advertised in ``OpenStack-image-import-methods``).
IMPORT_METHODS = ("glance-direct",)
READ_CHUNK = 256 * 1024


class Gone(ApiError):
    status = 410


async def transition(
    request: web.Request, image_id: str, expected: str, status: str, data: StoredData | None = None
) -> bool:
    """Move the image from ``expected`` to ``status`` (own transaction); False if it was no longer ``expected``."""
    async with runtime(request).db.begin() as conn:
        return await records.set_status(conn, image_id, status, expected=expected, data=data)


def too_large(cap: int) -> OverLimit:
    """Glance's 413 for data over ``image_size_cap``."""
    return OverLimit(f"The incoming image is too large: the image data exceeds the image size cap of {cap} bytes.")


async def receive_data(request: web.Request, during: str, after: str) -> None:
    """Stream the body into the image's file: ``queued -> during -> after``.

    On any failure (client gone, size mismatch, over ``image_size_cap``: 413) the image goes
    back to ``queued`` and no data is left behind, so the client can simply retry.
    """
    ctype = request.headers.get("Content-Type", "application/octet-stream")
    if ctype.split(";")[0].strip() != "application/octet-stream":
        raise UnsupportedMediaType(f"Unsupported Content-Type {ctype!r}: use application/octet-stream.")
    ctx = context(request)
    image_id = image_id_of(request)
    rt = runtime(request)
    announced = request.headers.get("X-OpenStack-Image-Size")
    async with rt.db.begin() as conn:
        image = await load_image(conn, image_id, ctx, for_update=True)
        if request.get(UPLOAD_TICKET_KEY) is not None:
            # A compute host's upload ticket (issue 11): this one image, of the ticket's project.
            if request[UPLOAD_TICKET_KEY] != image_id or image["owner"] != ctx.project_id:
                raise Forbidden("You are not authorized to complete this action.")
        else:
            require_modify(image, ctx)
        if image["status"] != QUEUED:
            raise Conflict(f"Image status transition from {image['status']} to {during} is not allowed")
        if not image["disk_format"] or not image["container_format"]:
            raise BadRequest("Properties disk_format, container_format must be set prior to saving data.")
        announced_size = int(announced) if announced and announced.isdigit() else None
        cap = rt.settings.image_size_cap
        # Refused before the status moves and before a byte is read: the image stays queued.
        if max(request.content_length or 0, announced_size or 0) > cap:
            raise too_large(cap)
        await records.set_status(conn, image_id, during)
    try:
        stored = await write_image(
            rt.settings,
            image_id,
            request.content.iter_chunked(READ_CHUNK),
            image["disk_format"],
            max_size=announced_size,
        )
        if announced_size is not None and stored.size != announced_size:
            delete_data(rt.settings, image_id)
            raise BadRequest(f"The image data is {stored.size} bytes, X-OpenStack-Image-Size announced {announced}.")
    except BaseException as exc:
        await asyncio.shield(transition(request, image_id, during, QUEUED))
        log.warning("image.upload_failed", image_id=image_id, error=repr(exc))
        if isinstance(exc, UploadTooLarge):
            if exc.capped:
                raise too_large(cap) from None
            raise BadRequest(f"The image data exceeds the announced X-OpenStack-Image-Size {announced}.") from None
        raise
    done = await transition(request, image_id, during, after, stored)
    if not done:
        # Deleted (or reset) while we were receiving: do not leave an orphan file.
        delete_data(rt.settings, image_id)
        raise Gone(
            f"Image {image_id} could not be found after upload. The image may have been deleted during the upload."
        )
    log.info("image.data_received", image_id=image_id, size=stored.size, status=after)


@routes.put("/v2/images/{image_id}/file")
async def upload(request: web.Request) -> web.Response:
    await receive_data(request, SAVING, ACTIVE)
    return web.Response(status=204)


@routes.get("/v2/images/{image_id}/file")
async def download(request: web.Request) -> web.StreamResponse:
    ctx = context(request)
    image_id = image_id_of(request)
    rt = runtime(request)
    async with rt.db.connect() as conn:
        image = await load_image(conn, image_id, ctx)
    if image["status"] == DEACTIVATED and not ctx.is_admin:
        raise Forbidden("The requested image has been deactivated. Image data download is forbidden.")
    if image["status"] not in (ACTIVE, DEACTIVATED):
        return web.Response(status=204)
    path = image_path(rt.settings, image_id)
    if not path.exists():
        raise NotFound(f"Image {image_id} has no data.")
    headers = {"Content-Type": "application/octet-stream"}
    if image["checksum"]:
        headers["Content-MD5"] = image["checksum"]
    return web.FileResponse(path, chunk_size=READ_CHUNK, headers=headers)


# -- interoperable import ---------------------------------------------------------------


@routes.put("/v2/images/{image_id}/stage")
async def stage(request: web.Request) -> web.Response:
    await receive_data(request, UPLOADING, UPLOADING)
    return web.Response(status=204)


@routes.post("/v2/images/{image_id}/import")
async def import_image(request: web.Request) -> web.Response:
    """``glance-direct``: activate the staged data (already hashed while it was staged)."""
    body = await read_json(request)
    method = body.get("method") if isinstance(body, dict) else None
    name = method.get("name") if isinstance(method, dict) else None
    if name not in IMPORT_METHODS:
        raise BadRequest(f"Import method {name!r} is not supported; supported: {', '.join(IMPORT_METHODS)}.")
    ctx = context(request)
    image_id = image_id_of(request)
    async with runtime(request).db.begin() as conn:
        image = await load_image(conn, image_id, ctx, for_update=True)
        require_modify(image, ctx)
        if image["status"] != UPLOADING:
            raise Conflict("Image needs to be staged before 'glance-direct' method can be used")
        # The data was hashed and stored while staging, so the ``importing`` phase has
        # nothing left to do: the image goes straight to active.
        await records.set_status(conn, image_id, ACTIVE)
    return web.Response(status=202)


@routes.get("/v2/info/import")
async def import_info(_request: web.Request) -> web.Response:
    return json_response(
        {
            "import-methods": {
                "description": "Import methods available.",
                "type": "array",
                "value": list(IMPORT_METHODS),
            }
        }
    )
