"""Helpers shared by the Keystone handlers: the caller's token, policy, validation, links, and
the list/show/create/update/delete shape of projects, users and roles (:class:`Resource`).

Policy follows Keystone's defaults for project-scoped tokens: the ``admin`` role may do
everything; anyone else may only read themselves, their token's project, the default
domain, and validate or revoke their own tokens.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import jsonschema
from aiohttp import web

from novalite.api.errors import BadRequest, Forbidden, NotFound
from novalite.api.http import json_response, read_json, runtime
from novalite.api.validation import bool_word, compiled_validator
from novalite.store import Connection
from novalite.store.identity import DEFAULT_DOMAIN_ID, NameFilters
from novalite.store.tokens import TokenInfo


def token_info(request: web.Request) -> TokenInfo:
    """The caller's validated token (set by the identity auth middleware)."""
    info: TokenInfo = request["token"]
    return info


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
    return bool_word(value) is not False


# -- request validation -------------------------------------------------------------------

_SECRET_FIELDS = {"password", "original_password"}


def validate(body: Any, schema: dict[str, Any]) -> dict[str, Any]:
    """Return ``body`` if it matches ``schema``; else 400 naming the field (Keystone's style)."""
    error = jsonschema.exceptions.best_match(compiled_validator(schema, formats=False).iter_errors(body))
    if error is None:
        valid: dict[str, Any] = body
        return valid
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


# -- the collections' shared shape ----------------------------------------------------------


def keystone_filters(query: Mapping[str, str]) -> NameFilters:
    """Projects and users are filtered alike: exact ``name`` and ``domain_id``, ``enabled``."""
    return NameFilters(
        name=query.get("name"), domain_id=query.get("domain_id"), enabled=query_bool(query.get("enabled"))
    )


def domain_of(ref: dict[str, Any]) -> str:
    """The domain a new project or user goes to: the default one, named or not; else 404."""
    domain_id = ref.get("domain_id") or DEFAULT_DOMAIN_ID
    if domain_id != DEFAULT_DOMAIN_ID:
        raise not_found("domain", domain_id)
    return domain_id


def _owns_none(_token: TokenInfo, _ident: str) -> bool:
    return False


def _no_check(_row: Any, _ref: dict[str, Any]) -> None:
    return None


def _may_delete(_row: Any) -> None:
    return None


@dataclass(frozen=True)
class Resource:
    """The list, show, create, update and delete routes of one Keystone collection.

    Projects, users and roles share their HTTP shape: policy ``identity:<action>_<kind>``,
    the ``{"<kind>": {...}}`` body checked by a schema, ``Could not find <kind>: <id>.``,
    201 on create, 204 on delete, list links. What differs is passed in: the store
    functions, the view, and the hooks below. The store functions take the open
    connection (``conn``) first; rows reach the view as they come from the store.
    """

    kind: str
    view: Callable[[web.Request, Any], dict[str, Any]]
    get: Callable[[Any, str], Awaitable[Any]]
    list_rows: Callable[[Any, NameFilters], Awaitable[list[Any]]]
    #: ``(conn, **values)`` with what ``prepare_create`` returned -> the new row.
    create: Callable[..., Awaitable[Any]]
    #: ``(conn, current row, changes)`` with what ``prepare_update`` returned -> the new row.
    update: Callable[[Any, Any, Any], Awaitable[Any]]
    delete: Callable[[Any, str], Awaitable[None]]
    create_schema: dict[str, Any]
    update_schema: dict[str, Any]
    #: Before any transaction (checks that need no row, password hashing): the body -> the store's arguments.
    prepare_create: Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
    prepare_update: Callable[[dict[str, Any]], Awaitable[Any]]
    #: The query string -> the list filters.
    filters: Callable[[Mapping[str, str]], NameFilters] = keystone_filters
    #: Whether a non-admin token may show this one (its own user, its own project).
    owns: Callable[[TokenInfo, str], bool] = _owns_none
    #: Inside the transaction, with the current row: checks that depend on it (before the store's own).
    check_update: Callable[[Any, dict[str, Any]], None] = _no_check
    check_delete: Callable[[Any], None] = _may_delete

    @property
    def collection(self) -> str:
        return f"{self.kind}s"

    def routes(self) -> web.RouteTableDef:
        """A route table with the five routes; the module adds its own to it."""
        routes = web.RouteTableDef()
        one = f"/v3/{self.collection}/{{{self.kind}_id}}"
        routes.get(f"/v3/{self.collection}")(self.list_all)
        routes.get(one)(self.show)
        routes.post(f"/v3/{self.collection}")(self.create_one)
        routes.patch(one)(self.update_one)
        routes.delete(one)(self.delete_one)
        return routes

    def _ident(self, request: web.Request) -> str:
        return request.match_info[f"{self.kind}_id"]

    async def _current(self, conn: Connection, ident: str) -> Any:
        row = await self.get(conn, ident)
        if row is None:
            raise not_found(self.kind, ident)
        return row

    async def list_all(self, request: web.Request) -> web.Response:
        enforce(request, f"list_{self.collection}")
        filters = self.filters(request.query)
        async with runtime(request).db.connect() as conn:
            rows = await self.list_rows(conn, filters)
        return json_response(
            {self.collection: [self.view(request, r) for r in rows], "links": collection_links(request)}
        )

    async def show(self, request: web.Request) -> web.Response:
        ident = self._ident(request)
        enforce(request, f"get_{self.kind}", allowed=self.owns(token_info(request), ident))
        async with runtime(request).db.connect() as conn:
            row = await self._current(conn, ident)
        return json_response({self.kind: self.view(request, row)})

    async def create_one(self, request: web.Request) -> web.Response:
        enforce(request, f"create_{self.kind}")
        values = await self.prepare_create(await read_resource(request, self.kind, self.create_schema))
        async with runtime(request).db.begin() as conn:
            row = await self.create(conn, **values)
        return json_response({self.kind: self.view(request, row)}, status=201)

    async def update_one(self, request: web.Request) -> web.Response:
        enforce(request, f"update_{self.kind}")
        ident = self._ident(request)
        ref = await read_resource(request, self.kind, self.update_schema)
        changes = await self.prepare_update(ref)
        async with runtime(request).db.begin() as conn:
            row = await self._current(conn, ident)
            self.check_update(row, ref)
            row = await self.update(conn, row, changes)
        return json_response({self.kind: self.view(request, row)})

    async def delete_one(self, request: web.Request) -> web.Response:
        enforce(request, f"delete_{self.kind}")
        ident = self._ident(request)
        async with runtime(request).db.begin() as conn:
            self.check_delete(await self._current(conn, ident))
            await self.delete(conn, ident)
        return web.Response(status=204)
