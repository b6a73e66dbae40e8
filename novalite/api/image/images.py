"""Image records: create, list, show, update (JSON patch), delete, tags and (de)activation."""

from __future__ import annotations

import urllib.parse
import uuid
from datetime import datetime
from typing import Any, cast

from aiohttp import web

from novalite.api.errors import BadRequest, Conflict, Forbidden, NotFound, UnsupportedMediaType
from novalite.api.http import context, json_response, loads, read_body, read_json, runtime
from novalite.api.image.common import (
    CORE,
    READ_ONLY,
    check_settable,
    check_visibility_allowed,
    image_id_of,
    image_view,
    load_image,
    require_modify,
    require_writer,
    validate_core,
    validate_property,
    validate_tag,
)
from novalite.api.image.data import IMPORT_METHODS
from novalite.context import RequestContext
from novalite.images.files import delete_data
from novalite.log import get_logger
from novalite.store import images as records
from novalite.store.images import ACTIVE, DEACTIVATED, IN_FIELDS, QUEUED, SORT_KEYS, TIME_OPS, ImageFilters
from novalite.timeutil import parse_iso

log = get_logger("novalite.api.image")
routes = web.RouteTableDef()

DEFAULT_LIMIT = 25
MAX_LIMIT = 1000
PATCH_TYPES = ("application/openstack-images-v2.1-json-patch", "application/openstack-images-v2.0-json-patch")
#: Query parameters with a meaning of their own; any other one filters on a custom property.
LIST_PARAMS = frozenset(
    {
        "limit",
        "marker",
        "sort_key",
        "sort_dir",
        "sort",
        "name",
        "id",
        "status",
        "visibility",
        "owner",
        "disk_format",
        "container_format",
        "tag",
        "member_status",
        "size_min",
        "size_max",
        "protected",
        "os_hidden",
        "created_at",
        "updated_at",
        "checksum",
        "os_hash_value",
    }
)


def image_response(image: dict[str, Any], status: int = 200) -> web.Response:
    return json_response(image_view(image), status)


# -- create -----------------------------------------------------------------------------


def parse_create(body: Any, ctx: RequestContext) -> dict[str, Any]:
    """The column values of a new image from the request body, validated as Glance does."""
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object (the image's attributes).")
    values: dict[str, Any] = {"properties": {}, "tags": []}
    for name, value in body.items():
        check_settable(name)
        if name in CORE:
            values[name] = validate_core(name, value)
        elif value is not None:
            values["properties"][name] = validate_property(name, value)
    if values.get("visibility") is None:
        values["visibility"] = "shared"
    check_visibility_allowed(values["visibility"], ctx)
    owner = values.get("owner") or ctx.project_id
    if owner != ctx.project_id and not ctx.is_admin:
        raise Forbidden("You are not permitted to create images owned by another project.")
    values["owner"] = owner
    values.setdefault("protected", False)
    values.setdefault("os_hidden", False)
    return values


@routes.post("/v2/images")
async def create_image(request: web.Request) -> web.Response:
    ctx = context(request)
    require_writer(ctx)
    values = parse_create(await read_json(request), ctx)
    image_id = values.pop("id", None) or str(uuid.uuid4())
    async with runtime(request).db.begin() as conn:
        image = await records.create_image(conn, image_id, cast(records.ImageValues, values))
    log.info("image.created", image_id=image_id, owner=image["owner"], name=image["name"])
    response = image_response(image, 201)
    response.headers["Location"] = f"{runtime(request).settings.public_base}/image/v2/images/{image_id}"
    response.headers["OpenStack-image-import-methods"] = ",".join(IMPORT_METHODS)
    return response


# -- list -------------------------------------------------------------------------------


def split_in(value: str) -> list[str]:
    """``in:a,b`` (Glance's list operator) or a plain value."""
    if value.startswith("in:"):
        return [v.strip().strip('"') for v in value[3:].split(",") if v.strip()]
    return [value]


def parse_bool(name: str, value: str) -> bool:
    lowered = value.lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise BadRequest(f"Invalid value {value!r} for the '{name}' filter: expected true or false.")


def parse_int(name: str, value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise BadRequest(f"Invalid value {value!r} for '{name}': expected an integer.") from None


def parse_sort(query: Any) -> list[tuple[str, str]]:
    """``sort=name:asc,status`` or ``sort_key=name&sort_dir=asc`` (possibly repeated)."""
    keys: list[tuple[str, str]] = []
    if "sort" in query:
        if "sort_key" in query or "sort_dir" in query:
            raise BadRequest("The 'sort' parameter cannot be combined with 'sort_key' or 'sort_dir'.")
        for part in query["sort"].split(","):
            key, _, direction = part.strip().partition(":")
            keys.append((key, direction or "desc"))
    else:
        names = query.getall("sort_key", [])
        dirs = query.getall("sort_dir", [])
        if len(dirs) > max(len(names), 1):
            raise BadRequest("There are more 'sort_dir' than 'sort_key' parameters.")
        for i, key in enumerate(names):
            keys.append((key, dirs[i] if i < len(dirs) else (dirs[0] if len(dirs) == 1 else "desc")))
        if not names:
            keys.append(("created_at", dirs[0] if dirs else "desc"))
    for key, direction in keys:
        if key not in SORT_KEYS:
            raise BadRequest(f"Invalid sort key: {key}. It should be one of: {', '.join(sorted(SORT_KEYS))}.")
        if direction not in ("asc", "desc"):
            raise BadRequest(f"Invalid sort direction: {direction}. It should be 'asc' or 'desc'.")
    if "id" not in [k for k, _ in keys]:
        keys.append(("id", keys[-1][1]))
    return keys


def check_visibility_filter(visibility: str | None) -> None:
    if visibility not in (None, "all", "public", "private", "shared", "community"):
        raise BadRequest(f"Invalid visibility value: {visibility}")


def parse_time(name: str, value: str) -> tuple[str, datetime]:
    """``[op:]ISO-8601`` (``gte:2024-01-01T00:00:00Z``): the operator (``eq`` if none) and the time."""
    op, sep, stamp = value.partition(":")
    if not sep or op not in TIME_OPS:
        op, stamp = "eq", value
    try:
        return op, parse_iso(stamp)
    except ValueError:
        raise BadRequest(f"Invalid value {value!r} for '{name}': expected [op:]ISO-8601 time.") from None


def parse_filters(query: Any) -> ImageFilters:
    """The listing's filters, each checked in Glance's order (the first bad one is reported).

    Any parameter without a meaning of its own filters on a custom property.
    """
    member_status = query.get("member_status", "accepted")
    if member_status not in ("accepted", "pending", "rejected", "all"):
        raise BadRequest(f"Invalid member_status value: {member_status}")
    visibility = query.get("visibility")
    check_visibility_filter(visibility)
    filters = ImageFilters(visibility=visibility, member_status=member_status)
    filters.values_in = {name: split_in(query[name]) for name in IN_FIELDS if name in query}
    if "size_min" in query:
        filters.size_min = parse_int("size_min", query["size_min"])
    if "size_max" in query:
        filters.size_max = parse_int("size_max", query["size_max"])
    if "protected" in query:
        filters.protected = parse_bool("protected", query["protected"])
    filters.os_hidden = parse_bool("os_hidden", query.get("os_hidden", "false"))
    filters.times = {name: parse_time(name, query[name]) for name in ("created_at", "updated_at") if name in query}
    filters.tags = query.getall("tag", [])
    filters.properties = {k: v for k, v in query.items() if k not in LIST_PARAMS}
    return filters


@routes.get("/v2/images")
async def list_images(request: web.Request) -> web.Response:
    ctx = context(request)
    query = request.query
    limit = parse_int("limit", query.get("limit", str(DEFAULT_LIMIT)))
    if limit < 0:
        raise BadRequest("limit param must be positive")
    limit = min(limit, MAX_LIMIT)
    keys = parse_sort(query)
    filters = parse_filters(query)
    async with runtime(request).db.connect() as conn:
        found = await records.list_images(conn, ctx, filters, sort=keys, limit=limit, marker=query.get("marker"))
    body: dict[str, Any] = {
        "images": [image_view(i) for i in found[:limit]],
        "first": "/v2/images",
        "schema": "/v2/schemas/images",
    }
    if len(found) > limit and limit > 0:
        params = [(k, v) for k, v in query.items() if k != "marker"]
        if "limit" not in query:
            params.append(("limit", str(limit)))
        params.append(("marker", found[limit - 1]["id"]))
        body["next"] = "/v2/images?" + urllib.parse.urlencode(params)
    return json_response(body)


# -- show, update, delete ---------------------------------------------------------------


@routes.get("/v2/images/{image_id}")
async def show_image(request: web.Request) -> web.Response:
    async with runtime(request).db.connect() as conn:
        image = await load_image(conn, image_id_of(request), context(request))
    return image_response(image)


def parse_pointer(path: Any) -> str:
    """The attribute a JSON-patch path names (``/name``); nested paths are not supported."""
    if not isinstance(path, str) or not path.startswith("/") or path == "/":
        raise BadRequest(f"Invalid JSON pointer for this resource: {path!r}")
    parts = path[1:].split("/")
    if len(parts) != 1:
        raise BadRequest(f"Invalid JSON pointer for this resource: {path!r}")
    return parts[0].replace("~1", "/").replace("~0", "~")


def apply_patch(image: dict[str, Any], changes: Any, ctx: RequestContext) -> records.ImageValues:
    """Apply Glance's JSON-patch dialect to ``image``; returns the changed column values."""
    if not isinstance(changes, list):
        raise BadRequest("The request body must be a JSON array of patch operations.")
    updates: dict[str, Any] = {}
    props = dict(image["properties"])
    for change in changes:
        if not isinstance(change, dict) or change.get("op") not in ("add", "replace", "remove"):
            raise BadRequest(f"Invalid patch operation {change!r}: 'op' must be add, replace or remove.")
        op = change["op"]
        name = parse_pointer(change.get("path"))
        if name == "id":
            raise Forbidden("Attribute 'id' is read-only.")
        check_settable(name)
        if op != "remove" and "value" not in change:
            raise BadRequest(f"Operation '{op}' on '{name}' needs a 'value'.")
        if name in CORE and name not in READ_ONLY:
            if op == "remove":
                raise Forbidden(f"Property {name} may not be removed.")
            value = validate_core(name, change["value"])
            if name == "visibility":
                check_visibility_allowed(value, ctx)
            if name == "owner" and not ctx.is_admin and value != image["owner"]:
                raise Forbidden("Only admin can change the owner of an image.")
            if name in ("disk_format", "container_format") and image["status"] != QUEUED:
                if value != image[name]:
                    raise Forbidden(f"Attribute {name} can be only replaced for a queued image.")
            updates[name] = value
        elif op == "remove":
            if name not in props:
                raise Conflict(f"Property {name} does not exist.")
            del props[name]
        else:
            if op == "replace" and name not in props:
                raise Conflict(f"Property {name} does not exist.")
            props[name] = validate_property(name, change["value"])
    if props != image["properties"]:
        updates["properties"] = props
    return cast(records.ImageValues, updates)


@routes.patch("/v2/images/{image_id}")
async def update_image(request: web.Request) -> web.Response:
    if request.content_type not in PATCH_TYPES:
        raise UnsupportedMediaType(
            f"Unsupported Content-Type {request.content_type!r}: use application/openstack-images-v2.1-json-patch."
        )
    raw = await read_body(request)
    try:
        changes = loads(raw) if raw else None
    except ValueError as exc:
        raise BadRequest(f"Malformed JSON in request body: {exc}") from None
    ctx = context(request)
    image_id = image_id_of(request)
    async with runtime(request).db.begin() as conn:
        image = await load_image(conn, image_id, ctx, for_update=True)
        require_modify(image, ctx)
        updates = apply_patch(image, changes, ctx)
        if updates:
            image.update(await records.update_image(conn, image_id, updates))
    return image_response(image)


@routes.delete("/v2/images/{image_id}")
async def delete_image(request: web.Request) -> web.Response:
    ctx = context(request)
    image_id = image_id_of(request)
    rt = runtime(request)
    async with rt.db.begin() as conn:
        image = await load_image(conn, image_id, ctx, for_update=True)
        require_modify(image, ctx)
        if image["protected"]:
            raise Forbidden(f"Image {image_id} is protected and cannot be deleted.")
        await records.delete_image(conn, image_id)
    # After the commit: a failed transaction must never have removed the data.
    delete_data(rt.settings, image_id)
    log.info("image.deleted", image_id=image_id)
    return web.Response(status=204)


# -- tags -------------------------------------------------------------------------------


async def change_tags(request: web.Request, add: bool) -> web.Response:
    ctx = context(request)
    image_id = image_id_of(request)
    tag = request.match_info["tag"]
    if add:
        validate_tag(tag)
    async with runtime(request).db.begin() as conn:
        image = await load_image(conn, image_id, ctx, for_update=True)
        require_modify(image, ctx)
        tags = list(image["tags"])
        if add and tag not in tags:
            tags.append(tag)
        elif not add:
            if tag not in tags:
                raise NotFound(f"Tag {tag} not found.")
            tags.remove(tag)
        if tags != image["tags"]:
            await records.update_image(conn, image_id, {"tags": tags})
    return web.Response(status=204)


@routes.put("/v2/images/{image_id}/tags/{tag}")
async def add_tag(request: web.Request) -> web.Response:
    return await change_tags(request, add=True)


@routes.delete("/v2/images/{image_id}/tags/{tag}")
async def remove_tag(request: web.Request) -> web.Response:
    return await change_tags(request, add=False)


# -- actions ----------------------------------------------------------------------------


@routes.post("/v2/images/{image_id}/actions/{action}")
async def image_action(request: web.Request) -> web.Response:
    """Deactivate (data download refused to non-admins) and reactivate an image."""
    action = request.match_info["action"]
    if action not in ("deactivate", "reactivate"):
        raise NotFound(f"Unknown image action {action!r}.")
    ctx = context(request)
    image_id = image_id_of(request)
    source, target = (ACTIVE, DEACTIVATED) if action == "deactivate" else (DEACTIVATED, ACTIVE)
    async with runtime(request).db.begin() as conn:
        image = await load_image(conn, image_id, ctx, for_update=True)
        require_modify(image, ctx)
        if image["status"] not in (source, target):
            raise BadRequest(f"Not allowed to {action} image in status '{image['status']}'")
        if image["status"] == source:
            await records.set_status(conn, image_id, target)
    return web.Response(status=204)
