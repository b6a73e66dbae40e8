"""``/v3/auth/*``: issue (password or token method), validate, revoke; the caller's catalog and projects.

Every authentication failure is the same 401 with Keystone's generic message, so the
API does not tell an attacker whether the user, the password or the project was wrong.
The exception is Keystone's own: a locked-out user is told so ("The account is locked
for user: <id>."), without the password being checked.

Password logins are the one unauthenticated request that costs real CPU (an Argon2
check), so they pass a per-process :class:`~novalite.identity.throttle.HashGate`: a
bounded number of checks at once, a short queue served user by user, and 429 with
``Retry-After`` for the rest, answered at once without hashing.
"""

from __future__ import annotations

import weakref
from datetime import datetime
from typing import Any

from aiohttp import web

from novalite.api.errors import ApiError, BadRequest, Forbidden, NotFound, Unauthorized
from novalite.api.http import json_response, read_json, runtime
from novalite.api.identity.common import collection_links, enforce, token_info, validate
from novalite.api.identity.projects import project_view
from novalite.identity.catalog import token_catalog
from novalite.identity.passwords import burn_verify, verify_password
from novalite.identity.throttle import Busy, HashGate, locked_out
from novalite.store import identity as store
from novalite.store.tokens import TokenInfo, issue_token, project_roles, revoke_token, validate_token
from novalite.timeutil import utcnow

routes = web.RouteTableDef()

AUTH_FAILED = "The request you have made requires authentication."

#: One gate per identity application, i.e. per API server (its CPU and threads are what it protects).
_gates: weakref.WeakKeyDictionary[web.Application, HashGate] = weakref.WeakKeyDictionary()


def account_locked(user_id: str) -> Unauthorized:
    """Keystone's ``AccountLocked``: a 401 that says why, so the user knows to wait rather than retype."""
    return Unauthorized(f"The account is locked for user: {user_id}.")


def too_many_logins(retry_after: int) -> ApiError:
    """429 in Keystone's error format, with ``Retry-After`` (whole seconds) for the client."""
    return ApiError(
        f"Too many logins are waiting for a password check; retry after {retry_after} seconds.",
        429,
        headers={"Retry-After": str(retry_after)},
    )


def hash_gate(request: web.Request) -> HashGate:
    """This API server's gate, sized from the settings on first use."""
    gate = _gates.get(request.app)
    if gate is None:
        settings = runtime(request).settings
        gate = _gates[request.app] = HashGate(
            settings.password_check_concurrency,
            settings.password_check_queue,
            settings.password_check_queue_per_user,
        )
    return gate


_domain_ref = {
    "type": "object",
    "properties": {"id": {"type": "string"}, "name": {"type": "string"}},
}
AUTH_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["identity"],
    "properties": {
        "identity": {
            "type": "object",
            "required": ["methods"],
            "properties": {
                "methods": {"type": "array", "items": {"type": "string"}, "minItems": 1},
                "password": {
                    "type": "object",
                    "required": ["user"],
                    "properties": {
                        "user": {
                            "type": "object",
                            "required": ["password"],
                            "properties": {
                                "id": {"type": "string"},
                                "name": {"type": "string"},
                                "password": {"type": "string"},
                                "domain": _domain_ref,
                            },
                        }
                    },
                },
                "token": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
            },
        },
        # Keystone also accepts the string "unscoped": no scope, not even the default project.
        "scope": {
            "anyOf": [
                {"type": "string", "enum": ["unscoped"]},
                {
                    "type": "object",
                    "properties": {
                        "project": {
                            "type": "object",
                            "properties": {"id": {"type": "string"}, "name": {"type": "string"}, "domain": _domain_ref},
                        }
                    },
                },
            ]
        },
    },
}


def fmt_time(dt: datetime) -> str:
    """Keystone's token timestamps: microseconds and a ``Z``."""
    return dt.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def token_body(
    request: web.Request, info: TokenInfo, *, methods: list[str], audit_ids: list[str], catalog: bool
) -> dict[str, Any]:
    domain = dict(store.DEFAULT_DOMAIN)
    body: dict[str, Any] = {
        "methods": methods,
        "user": {"id": info.user_id, "name": info.user_name, "domain": domain, "password_expires_at": None},
        "audit_ids": audit_ids,
        "expires_at": fmt_time(info.expires_at),
        "issued_at": fmt_time(info.issued_at),
    }
    if info.project_id:
        body["project"] = {"id": info.project_id, "name": info.project_name, "domain": dict(domain)}
        body["is_domain"] = False
        body["roles"] = [{"id": r["id"], "name": r["name"]} for r in info.roles]
        if catalog:
            body["catalog"] = token_catalog(runtime(request).settings)
    return {"token": body}


async def _password_user(request: web.Request, ref: dict[str, Any]) -> Any:
    """The user row the password block names, if the password is right and the user enabled."""
    user_ref = ref["user"]
    rt = runtime(request)
    async with rt.db.connect() as conn:
        if user_ref.get("id"):
            user = await store.get_user(conn, user_ref["id"])
        elif user_ref.get("name"):
            if "domain" not in user_ref:
                raise BadRequest(
                    "Expecting to find domain in user. The server could not comply with the request "
                    "since it is either malformed or otherwise incorrect. The client is assumed to be "
                    "in error."
                )
            domain_id = store.resolve_domain(user_ref["domain"])
            user = await store.find_user(conn, user_ref["name"], domain_id) if domain_id else None
        else:
            raise BadRequest("Invalid input for field 'identity/password/user': either 'id' or 'name' is required")
    return await _check_password(request, user, user_ref)


async def _check_password(request: web.Request, user: Any, user_ref: dict[str, Any]) -> Any:
    """Check ``user``'s password (None: an unknown user) through the gate, counting failures.

    Keystone's order: a locked-out user is refused before the password is looked at,
    a wrong password counts one failure, a disabled user is refused after it, and a
    success clears the count.
    """
    rt = runtime(request)
    attempts, duration = rt.settings.lockout_failure_attempts, rt.settings.lockout_duration

    def is_locked(count: int, at: datetime | None) -> bool:
        return locked_out(count, at, attempts=attempts, duration=duration, now=utcnow())

    # A locked-out user is answered at once: checking the lock costs no hash.
    if user is not None and is_locked(user.failed_auth_count, user.failed_auth_at):
        raise account_locked(user.id)
    # Unknown names wait under a key of their own: a flood of made-up names is bounded too.
    key = user.id if user is not None else f"?{user_ref.get('id')}|{user_ref.get('domain')!r}|{user_ref.get('name')}"
    failures: int = user.failed_auth_count if user is not None else 0
    try:
        async with hash_gate(request).slot(key):
            # Verify with the connection released: argon2 takes tens of milliseconds.
            if user is None:
                await burn_verify(user_ref["password"])
                raise Unauthorized(AUTH_FAILED)
            if attempts:
                # Failures recorded while this login waited (here or in another process)
                # may have locked the user meanwhile: then no hash is spent on it.
                async with rt.db.connect() as conn:
                    failures, last = await store.failed_auth(conn, user.id)
                if is_locked(failures, last):
                    raise account_locked(user.id)
            good = await verify_password(user.password_hash, user_ref["password"])
            if not good and attempts:
                # Counted before the slot passes on, so the next waiter's check above sees it.
                async with rt.db.begin() as conn:
                    await store.record_failed_auth(conn, user.id, attempts=attempts, duration=duration)
    except Busy as busy:
        raise too_many_logins(busy.retry_after) from None
    if not good:
        raise Unauthorized(AUTH_FAILED)
    if not user.enabled:
        raise Unauthorized(AUTH_FAILED)
    if failures:
        async with rt.db.begin() as conn:
            await store.reset_failed_auth(conn, user.id)
    return user


async def _scope(request: web.Request, user: Any, scope: Any) -> tuple[Any, list[dict[str, str]]]:
    """(project row or None, roles) for the requested scope; 401 if the user may not have it.

    With no scope at all, Keystone scopes to the user's default project when the user
    still holds a role there, and otherwise issues an unscoped token.
    """
    async with runtime(request).db.connect() as conn:
        if scope is None or scope == "unscoped":
            if scope is None and user.default_project_id:
                project = await store.get_project(conn, user.default_project_id)
                if project is not None and project.enabled:
                    roles = await project_roles(conn, user.id, project.id)
                    if roles:
                        return project, roles
            return None, []
        ref = scope.get("project")
        if not isinstance(ref, dict):
            raise Unauthorized("Only project scope is supported by this cloud.")
        if ref.get("id"):
            project = await store.get_project(conn, ref["id"])
        elif ref.get("name"):
            domain_id = store.resolve_domain(ref.get("domain"))
            project = await store.find_project(conn, ref["name"], domain_id) if domain_id else None
        else:
            raise BadRequest("Invalid input for field 'scope/project': either 'id' or 'name' is required")
        if project is None or not project.enabled:
            raise Unauthorized(AUTH_FAILED)
        roles = await project_roles(conn, user.id, project.id)
        if not roles:
            raise Unauthorized(AUTH_FAILED)
        return project, roles


@routes.post("/v3/auth/tokens")
async def issue(request: web.Request) -> web.Response:
    raw = await read_json(request)
    if not isinstance(raw, dict) or not isinstance(raw.get("auth"), dict):
        raise BadRequest(
            "Expecting to find auth in request body. The server could not comply with the request since it is "
            "either malformed or otherwise incorrect. The client is assumed to be in error."
        )
    body = validate(raw["auth"], AUTH_SCHEMA)
    identity = body["identity"]
    methods = identity["methods"]
    rt = runtime(request)
    cap: datetime | None = None
    if "password" in methods and "password" in identity:
        user = await _password_user(request, identity["password"])
        used = ["password"]
    elif "token" in methods and "token" in identity:
        async with rt.db.connect() as conn:
            original = await validate_token(conn, identity["token"]["id"])
            user = await store.get_user(conn, original.user_id) if original else None
        if original is None or user is None:
            raise Unauthorized(AUTH_FAILED)
        cap = original.expires_at  # a re-scoped token never outlives the one it came from
        used = ["token", "password"]
    else:
        raise Unauthorized("Attempted to authenticate with an unsupported method.")
    project, roles = await _scope(request, user, body.get("scope"))
    async with rt.db.begin() as conn:
        token, issued, expires, audit_id = await issue_token(
            conn, user.id, project.id if project else None, roles, rt.settings.token_ttl, expires_at=cap
        )
    info = TokenInfo(
        user_id=user.id,
        user_name=user.name,
        project_id=project.id if project else None,
        project_name=project.name if project else None,
        roles=roles,
        issued_at=issued,
        expires_at=expires,
        audit_id=audit_id,
    )
    doc = token_body(request, info, methods=used, audit_ids=[audit_id], catalog="nocatalog" not in request.query)
    return json_response(doc, status=201, headers={"X-Subject-Token": token})


async def _subject(request: web.Request, action: str) -> tuple[str, TokenInfo]:
    """The ``X-Subject-Token`` and its identity; the caller must own it or be admin."""
    subject = request.headers.get("X-Subject-Token")
    if not subject:
        raise BadRequest("Expecting to find X-Subject-Token in the request headers.")
    async with runtime(request).db.connect() as conn:
        info = await validate_token(conn, subject)
    caller = token_info(request)
    if info is None:
        # Only an admin learns whether somebody else's token exists.
        enforce(request, action, allowed=subject == request.headers.get("X-Auth-Token"))
        raise NotFound("Could not find token.")
    enforce(request, action, allowed=info.user_id == caller.user_id)
    return subject, info


@routes.get("/v3/auth/tokens")
async def validate_subject(request: web.Request) -> web.Response:
    subject, info = await _subject(request, "validate_token")
    doc = token_body(
        request, info, methods=["password"], audit_ids=[info.audit_id], catalog="nocatalog" not in request.query
    )
    return json_response(doc, headers={"X-Subject-Token": subject})


@routes.delete("/v3/auth/tokens")
async def revoke(request: web.Request) -> web.Response:
    subject, _info = await _subject(request, "revoke_token")
    async with runtime(request).db.begin() as conn:
        await revoke_token(conn, subject)
    return web.Response(status=204)


@routes.get("/v3/auth/catalog")
async def auth_catalog(request: web.Request) -> web.Response:
    if not token_info(request).project_id:
        raise Forbidden("A project-scoped token is required to produce a service catalog.")
    return json_response({"catalog": token_catalog(runtime(request).settings), "links": collection_links(request)})


@routes.get("/v3/auth/projects")
async def auth_projects(request: web.Request) -> web.Response:
    """The projects the caller may scope to (what ``openstack project list --my-projects`` shows)."""
    async with runtime(request).db.connect() as conn:
        rows = await store.user_projects(conn, token_info(request).user_id)
    projects = [project_view(request, p) for p in rows if p.enabled]
    return json_response({"projects": projects, "links": collection_links(request)})


@routes.get("/v3/auth/domains")
async def auth_domains(request: web.Request) -> web.Response:
    """Domains the caller holds a domain role on: none, there are no domain roles here."""
    return json_response({"domains": [], "links": collection_links(request)})


@routes.get("/v3/auth/system")
async def auth_system(request: web.Request) -> web.Response:
    return json_response({"system": [], "links": collection_links(request)})
