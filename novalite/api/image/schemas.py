"""``GET /v2/schemas/...``: JSON schemas of the documents, for clients that validate with them.

Only the attributes we implement are described; custom properties are strings, as
in Glance (``additionalProperties: {"type": "string"}``).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.http import json_response
from novalite.api.image.common import CONTAINER_FORMATS, DISK_FORMATS, MAX_OWNER_LEN, READ_ONLY, VISIBILITIES

routes = web.RouteTableDef()

STATUSES = ["queued", "saving", "active", "killed", "deleted", "uploading", "importing", "deactivated"]


def image_schema() -> dict[str, Any]:
    nullable_str = {"type": ["null", "string"]}
    props: dict[str, Any] = {
        "id": {
            "type": "string",
            "pattern": "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$",
        },
        "name": {"type": ["null", "string"], "maxLength": 255},
        "status": {"type": "string", "enum": STATUSES},
        "visibility": {"type": "string", "enum": list(VISIBILITIES)},
        "protected": {"type": "boolean"},
        "os_hidden": {"type": "boolean"},
        "checksum": {**nullable_str, "maxLength": 32},
        "os_hash_algo": {**nullable_str, "maxLength": 64},
        "os_hash_value": {**nullable_str, "maxLength": 128},
        "owner": {**nullable_str, "maxLength": MAX_OWNER_LEN},
        "size": {"type": ["null", "integer"]},
        "virtual_size": {"type": ["null", "integer"]},
        "container_format": {"type": ["null", "string"], "enum": [None, *CONTAINER_FORMATS]},
        "disk_format": {"type": ["null", "string"], "enum": [None, *DISK_FORMATS]},
        "created_at": {"type": "string"},
        "updated_at": {"type": "string"},
        "tags": {"type": "array", "items": {"type": "string", "maxLength": 255}},
        "min_ram": {"type": "integer"},
        "min_disk": {"type": "integer"},
        "self": {"type": "string"},
        "file": {"type": "string"},
        "schema": {"type": "string"},
    }
    for name in READ_ONLY & props.keys():
        props[name]["readOnly"] = True
    return {
        "name": "image",
        "properties": props,
        "additionalProperties": {"type": "string"},
        "links": [
            {"rel": "self", "href": "{self}"},
            {"rel": "enclosure", "href": "{file}"},
            {"rel": "describedby", "href": "{schema}"},
        ],
    }


@routes.get("/v2/schemas/image")
async def image(_request: web.Request) -> web.Response:
    return json_response(image_schema())


@routes.get("/v2/schemas/images")
async def images(_request: web.Request) -> web.Response:
    return json_response(
        {
            "name": "images",
            "properties": {
                "images": {"type": "array", "items": image_schema()},
                "schema": {"type": "string"},
                "first": {"type": "string"},
                "next": {"type": "string"},
            },
            "links": [
                {"rel": "first", "href": "{first}"},
                {"rel": "next", "href": "{next}"},
                {"rel": "describedby", "href": "{schema}"},
            ],
        }
    )


def member_schema() -> dict[str, Any]:
    return {
        "name": "member",
        "properties": {
            "image_id": {"type": "string"},
            "member_id": {"type": "string"},
            "status": {"type": "string", "enum": ["pending", "accepted", "rejected"]},
            "created_at": {"type": "string"},
            "updated_at": {"type": "string"},
            "schema": {"type": "string", "readOnly": True},
        },
    }


@routes.get("/v2/schemas/member")
async def member(_request: web.Request) -> web.Response:
    return json_response(member_schema())


@routes.get("/v2/schemas/members")
async def members(_request: web.Request) -> web.Response:
    return json_response(
        {
            "name": "members",
            "properties": {"members": {"type": "array", "items": member_schema()}, "schema": {"type": "string"}},
            "links": [{"rel": "schema", "href": "{schema}"}],
        }
    )
