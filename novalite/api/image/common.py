"""What the image handlers share: the image document, attribute validation, lookups.

The attribute classes and error messages follow Glance's, because clients and scripts
match on them: read-only attributes (``status``, ``size``...) are refused with 403,
schema violations with 400 naming the attribute.
"""

from __future__ import annotations

import uuid
from typing import Any

from aiohttp import web

from novalite.api.errors import BadRequest, Forbidden, NotFound
from novalite.context import RequestContext
from novalite.store import Connection
from novalite.store.images import can_modify, get_image
from novalite.timeutil import iso

DISK_FORMATS = ("ami", "ari", "aki", "vhd", "vhdx", "vmdk", "raw", "qcow2", "vdi", "iso", "ploop")
CONTAINER_FORMATS = ("ami", "ari", "aki", "bare", "ovf", "ova", "docker", "compressed")
VISIBILITIES = ("public", "private", "shared", "community")

#: Set by the service only.
READ_ONLY = frozenset(
    {
        "created_at",
        "updated_at",
        "status",
        "checksum",
        "os_hash_algo",
        "os_hash_value",
        "size",
        "virtual_size",
        "direct_url",
        "self",
        "file",
        "schema",
    }
)
#: Never settable through this API.
RESERVED = frozenset({"location", "locations", "deleted", "deleted_at", "stores"})
#: Columns a client may set (``id`` only at creation, ``owner`` only as admin).
WRITABLE_CORE = frozenset(
    {
        "id",
        "name",
        "visibility",
        "protected",
        "os_hidden",
        "disk_format",
        "container_format",
        "min_disk",
        "min_ram",
        "owner",
        "tags",
    }
)
CORE = READ_ONLY | WRITABLE_CORE
MAX_TAG_LEN = 255
#: The owner is a project id: at most the owner column's 64 characters (Glance allows 255; a
#: longer value than the column cannot be stored).
MAX_OWNER_LEN = 64
MAX_PROPERTY_VALUE = 65535


def image_view(image: dict[str, Any]) -> dict[str, Any]:
    """The Glance v2 image document: core attributes, then custom properties at top level."""
    image_id = image["id"]
    doc: dict[str, Any] = {
        "id": image_id,
        "name": image["name"],
        "status": image["status"],
        "visibility": image["visibility"],
        "protected": bool(image["protected"]),
        "os_hidden": bool(image["os_hidden"]),
        "checksum": image["checksum"],
        "os_hash_algo": image["os_hash_algo"],
        "os_hash_value": image["os_hash_value"],
        "size": image["size"],
        "virtual_size": image["virtual_size"],
        "disk_format": image["disk_format"],
        "container_format": image["container_format"],
        "min_disk": image["min_disk"],
        "min_ram": image["min_ram"],
        "owner": image["owner"],
        "created_at": iso(image["created_at"]),
        "updated_at": iso(image["updated_at"]),
        "tags": list(image["tags"]),
        "self": f"/v2/images/{image_id}",
        "file": f"/v2/images/{image_id}/file",
        "schema": "/v2/schemas/image",
    }
    for key, value in image["properties"].items():
        doc.setdefault(key, value)
    return doc


def check_settable(name: str) -> None:
    """403 for attributes no client may set, with Glance's wording."""
    if name in READ_ONLY:
        raise Forbidden(f"Attribute '{name}' is read-only.")
    if name in RESERVED or name.startswith("os_glance"):
        raise Forbidden(f"Attribute '{name}' is reserved.")


def schema_error(name: str, detail: str) -> BadRequest:
    return BadRequest(f"Provided object does not match schema 'image': {detail} (attribute '{name}').")


def validate_core(name: str, value: Any) -> Any:
    """The validated (and normalized) value of a writable core attribute, or a 400."""
    if name == "id":
        try:
            return str(uuid.UUID(str(value)))
        except ValueError:
            raise schema_error(name, f"{value!r} is not a valid UUID") from None
    if name == "name":
        if value is not None and not isinstance(value, str):
            raise schema_error(name, f"{value!r} is not of type 'null', 'string'")
        if value is not None and len(value) > 255:
            raise schema_error(name, "the name is longer than 255 characters")
        return value
    if name in ("disk_format", "container_format", "visibility"):
        allowed = {"disk_format": DISK_FORMATS, "container_format": CONTAINER_FORMATS}.get(name, VISIBILITIES)
        if value is None and name != "visibility":
            return None
        if value not in allowed:
            raise schema_error(name, f"{value!r} is not one of {list(allowed)}")
        return value
    if name in ("protected", "os_hidden"):
        if not isinstance(value, bool):
            raise schema_error(name, f"{value!r} is not of type 'boolean'")
        return value
    if name in ("min_disk", "min_ram"):
        if isinstance(value, bool) or not isinstance(value, int):
            raise schema_error(name, f"{value!r} is not of type 'integer'")
        if value < 0 or value > 2**31 - 1:
            raise schema_error(name, f"{value!r} is out of range (0 to 2147483647)")
        return value
    if name == "owner":
        if value is not None and (not isinstance(value, str) or len(value) > MAX_OWNER_LEN):
            raise schema_error(name, f"{value!r} is not a string of at most {MAX_OWNER_LEN} characters")
        return value
    if name == "tags":
        if not isinstance(value, list):
            raise schema_error(name, f"{value!r} is not of type 'array'")
        tags: list[str] = []
        for tag in value:
            validate_tag(tag)
            if tag not in tags:
                tags.append(tag)
        return tags
    raise AssertionError(name)


def validate_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not tag or len(tag) > MAX_TAG_LEN:
        raise schema_error("tags", f"{tag!r} is not a string of 1 to {MAX_TAG_LEN} characters")
    return tag


def validate_property(name: str, value: Any) -> str:
    """Custom properties are strings (Glance's schema: ``additionalProperties: string``)."""
    if not name or len(name) > 255:
        raise schema_error(name, "property names are 1 to 255 characters")
    if not isinstance(value, str):
        raise schema_error(name, f"{value!r} is not of type 'string'")
    if len(value) > MAX_PROPERTY_VALUE:
        raise schema_error(name, f"the value is longer than {MAX_PROPERTY_VALUE} characters")
    return value


def check_visibility_allowed(visibility: str, ctx: RequestContext) -> None:
    """Only admin may publish an image to every project (Glance's ``publicize_image``)."""
    if visibility == "public" and not ctx.is_admin:
        raise Forbidden("You are not authorized to complete publicize_image action.")


async def load_image(
    conn: Connection, image_id: str, ctx: RequestContext, *, for_update: bool = False
) -> dict[str, Any]:
    """The image visible to ``ctx``, or 404 (the same for invisible and missing ones).

    ``conn`` is the open connection of the handler's transaction (``rt.db.begin()``).
    """
    image = await get_image(conn, image_id, ctx, for_update=for_update)
    if image is None:
        raise NotFound(f"No image found with ID {image_id}")
    return image


def require_modify(image: dict[str, Any], ctx: RequestContext) -> None:
    """403 unless ``ctx`` may change ``image`` (it is known to be visible)."""
    if not can_modify(image, ctx):
        raise Forbidden("You are not authorized to complete this action.")


def require_writer(ctx: RequestContext) -> None:
    if not (ctx.is_admin or ctx.can_write):
        raise Forbidden("You are not authorized to complete this action.")


def image_id_of(request: web.Request) -> str:
    return request.match_info["image_id"]
