"""Helpers shared by the Keystone handlers: the caller's token, policy, validation, links.

Policy follows Keystone's defaults for project-scoped tokens: the ``admin`` role may do
everything; anyone else may only read themselves, their token's project, the default
domain, and validate or revoke their own tokens.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import sqlalchemy as sa
from aiohttp import web
from jsonschema import Draft4Validator

from novalite.api.errors import BadRequest, Forbidden, NotFound
from novalite.api.http import read_json, runtime
from novalite.store.tokens import TokenInfo


def token_info(request: web.Request) -> TokenInfo:
    """The caller's validated token (set by the identity auth middleware)."""
    return request["token"]


def is_admin(request: web.Request) -> bool:
    return "admin" in token_info(request).role_names


def enforce(request: web.Request, action: str, allowed: bool = False) -> None:
    """403 in Keystone's words unless the caller is admin or ``allowed`` by the rule."""
    if not (allowed or is_admin(request)):
        raise Forbidden(f"You are not authorized to perform the requested action: identity:{action}.")


def v3_base(request: web.Request) -> str:
    return f"{runtime(request).settings.public_base}/identity/v3"


def self_link(request: web.Request, collection: str, ident: str) -> dict[str, str]:
    return {"self": f"{v3_base(request)}/{collection}/{ident}"}


def collection_links(request: web.Request) -> dict[str, Any]:
    """Keystone lists are not paged: one page, no next."""
    return {"self": f"{v3_base(request)}{request.path_qs.split('/v3', 1)[1]}", "previous": None, "next": None}


def not_found(kind: str, ident: str) -> NotFound:
    return NotFound(f"Could not find {kind}: {ident}.")


def query_bool(value: str | None) -> bool | None:
    """Keystone's query booleans: ``0``/``false``/``no`` (any case) are false, anything else true."""
    if value is None:
        return None
    return value.strip().lower() not in ("0", "false", "no", "off", "f", "n")


# -- request validation -------------------------------------------------------------------

_validators: dict[int, Draft4Validator] = {}
_SECRET_FIELDS = {"password", "original_password"}


def validate(body: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """Return ``body`` if it matches ``schema``; else 400 naming the field (Keystone's style)."""
    validator = _validators.get(id(schema))
    if validator is None:
        validator = _validators[id(schema)] = Draft4Validator(schema)
    error = jsonschema.exceptions.best_match(validator.iter_errors(body))
    if error is None:
        return body
    path = [str(p) for p in error.path]
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else ""
        path = [*path, missing] if missing else path
    field = "/".join(path)
    message = error.message
    if path and path[-1] in _SECRET_FIELDS and error.validator != "required":
        message = f"the value does not match the schema ({error.validator})"  # never echo a password
    if not field:
        raise BadRequest(message)
    raise BadRequest(f"Invalid input for field '{field}': {message}")


async def read_resource(request: web.Request, key: str, schema: dict[str, Any]) -> dict[str, Any]:
    """The ``{"<key>": {...}}`` body's inner object, validated."""
    body = await read_json(request)
    if not isinstance(body, dict) or not isinstance(body.get(key), dict):
        raise BadRequest(
            f"Expecting to find {key} in request body. The server could not comply with the request "
            "since it is either malformed or otherwise incorrect. The client is assumed to be in error."
        )
    return validate(body[key], schema)


# Keystone's parameter types -------------------------------------------------------------

def name_schema(max_length: int) -> dict[str, Any]:
    return {"type": "string", "minLength": 1, "maxLength": max_length, "pattern": r"\S"}


id_string = {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[a-zA-Z0-9-_]+$"}
nullable_id = {"anyOf": [id_string, {"type": "null"}]}
description = {"type": ["string", "null"]}
boolean = {"type": "boolean"}


def list_query(request: web.Request, table: sa.Table) -> sa.Select:
    """Projects and users are listed alike: by name, filtered on name, domain_id and enabled."""
    query = sa.select(table).order_by(table.c.name)
    for key in ("name", "domain_id"):
        if key in request.query:
            query = query.where(table.c[key] == request.query[key])
    enabled = query_bool(request.query.get("enabled"))
    if enabled is not None:
        query = query.where(table.c.enabled == enabled)
    return query
