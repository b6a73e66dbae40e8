"""Key pairs: per-user SSH (and x509) public keys, imported or generated.

Nova's rules: ``type`` from 2.2 (and 201/204 instead of 200/202), admins may act for
another user with ``user_id`` from 2.10, paging from 2.35, generation only below
2.92 (``public_key`` is required from then). The fingerprint is the MD5 of the
decoded key blob in colon hex (SHA-1 of the DER certificate for x509).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import timedelta
from typing import Any

from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from novalite.api.compute.common import next_link, page_params
from novalite.api.compute.microversions import Microversion, microversion
from novalite.api.errors import BadRequest, Forbidden
from novalite.api.http import context, json_response, read_json, runtime
from novalite.api.validation import name_schema, validate
from novalite.store import keypairs as store
from novalite.store.keypairs import NewKeypair
from novalite.store.quotas import limits_for, lock_project_usage
from novalite.timeutil import iso_micro, utcnow

routes = web.RouteTableDef()
KEYPAIRS = "/v2.1/os-keypairs"


def _build_schema(with_type: bool, with_user: bool, v2_92: bool) -> dict[str, Any]:
    pattern = r"^[_\-\@\. a-zA-Z0-9]+$" if v2_92 else r"^[_\- a-zA-Z0-9]+$"
    props: dict[str, Any] = {
        "name": {"allOf": [name_schema(), {"type": "string", "pattern": pattern, "minLength": 1, "maxLength": 255}]},
        "public_key": {"type": "string"},
    }
    if with_type:
        props["type"] = {"type": "string", "enum": ["ssh", "x509"]}
    if with_user:
        # At most the users.id column (a Keystone user id): a longer one cannot be stored.
        props["user_id"] = {"type": "string", "maxLength": 64}
    return {
        "type": "object",
        "properties": {
            "keypair": {
                "type": "object",
                "properties": props,
                "required": ["name", "public_key"] if v2_92 else ["name"],
                "additionalProperties": False,
            }
        },
        "required": ["keypair"],
        "additionalProperties": False,
    }


#: The create body's schema per microversion range, built once: the validator cache keys
#: schemas by identity, so a schema built per request would add a validator per request.
CREATE_V21 = _build_schema(with_type=False, with_user=False, v2_92=False)
CREATE_V22 = _build_schema(with_type=True, with_user=False, v2_92=False)
CREATE_V210 = _build_schema(with_type=True, with_user=True, v2_92=False)
CREATE_V292 = _build_schema(with_type=True, with_user=True, v2_92=True)


def create_schema(mv: Microversion) -> dict[str, Any]:
    """The create body's schema at this microversion (one of the constants above)."""
    if mv.at_least("2.92"):
        return CREATE_V292
    if mv.at_least("2.10"):
        return CREATE_V210
    if mv.at_least("2.2"):
        return CREATE_V22
    return CREATE_V21


# -- crypto ---------------------------------------------------------------------------------------


def _colon_hex(digest: str) -> str:
    return ":".join(a + b for a, b in zip(digest[::2], digest[1::2], strict=True))


def ssh_fingerprint(public_key: str) -> str:
    """Nova's fingerprint: MD5 of the base64-decoded key blob; 400 if the key does not parse."""
    try:
        serialization.load_ssh_public_key(public_key.encode("utf-8"))
        blob = base64.b64decode(public_key.split(" ")[1])
    except Exception:
        raise BadRequest("Keypair data is invalid: failed to generate fingerprint") from None
    return _colon_hex(hashlib.md5(blob, usedforsecurity=False).hexdigest())


def x509_fingerprint(pem: str) -> str:
    try:
        cert = x509.load_pem_x509_certificate(pem.encode("utf-8"))
    except (ValueError, TypeError) as exc:
        raise BadRequest(
            f"Keypair data is invalid: failed to generate X509 fingerprint. Error message: {exc}"
        ) from None
    return _colon_hex(cert.fingerprint(hashes.SHA1()).hex())


def generate_ssh() -> tuple[str, str]:
    """A new RSA-2048 key: (private key PEM, OpenSSH public key), as Nova generates."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, f"{public.decode()} Generated-by-Nova"


def generate_x509(user_id: str) -> tuple[str, str]:
    """A self-signed client certificate for WinRM (Nova's x509 key pair): (private PEM, cert PEM)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, user_id or "novalite")])
    now = utcnow()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=3650))
        .sign(key, hashes.SHA256())
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return private, cert.public_bytes(serialization.Encoding.PEM).decode()


# -- helpers --------------------------------------------------------------------------------------


def _target_user(request: web.Request, action: str, user_id: str | None) -> str:
    """The user acted on: the caller, or (admins, 2.10+) the one named by ``user_id``."""
    ctx = context(request)
    if not user_id or user_id == ctx.user_id:
        return ctx.user_id or ""
    if not ctx.is_admin:
        raise Forbidden(f"Policy doesn't allow os_compute_api:os-keypairs:{action} to be performed.")
    return user_id


def _query_user(request: web.Request) -> str | None:
    if microversion(request).at_least("2.10"):
        return request.query.get("user_id")
    return None


def _view(row: Any, keys: tuple[str, ...]) -> dict[str, Any]:
    full = {
        "name": row.name,
        "public_key": row.public_key,
        "fingerprint": row.fingerprint,
        "user_id": row.user_id,
        "type": row.type,
        "created_at": iso_micro(row.created_at),
        "deleted": False,
        "deleted_at": None,
        "updated_at": None,
        "id": row.id,
    }
    return {k: full[k] for k in keys}


INDEX_KEYS = ("name", "public_key", "fingerprint")
SHOW_KEYS = (*INDEX_KEYS, "user_id", "created_at", "deleted", "deleted_at", "id", "updated_at")


# -- handlers -------------------------------------------------------------------------------------


@routes.get(KEYPAIRS)
async def list_keypairs(request: web.Request) -> web.Response:
    mv = microversion(request)
    user_id = _target_user(request, "index", _query_user(request))
    limit: int | None = None
    marker: str | None = None
    if mv.at_least("2.35"):
        limit, marker = page_params(request)
    async with runtime(request).db.connect() as conn:
        rows = await store.list_keypairs(conn, user_id, limit=limit, marker=marker)
    keys = (*INDEX_KEYS, "type") if mv.at_least("2.2") else INDEX_KEYS
    body: dict[str, Any] = {"keypairs": [{"keypair": _view(r, keys)} for r in rows]}
    if limit and len(rows) == limit:
        body["keypairs_links"] = [next_link(request, "os-keypairs", rows[-1].name, limit)]
    return json_response(body)


@routes.get(KEYPAIRS + "/{name}")
async def show_keypair(request: web.Request) -> web.Response:
    user_id = _target_user(request, "show", _query_user(request))
    async with runtime(request).db.connect() as conn:
        row = await store.get_keypair(conn, user_id, request.match_info["name"])
    keys = (*SHOW_KEYS, "type") if microversion(request).at_least("2.2") else SHOW_KEYS
    return json_response({"keypair": _view(row, keys)})


@routes.delete(KEYPAIRS + "/{name}")
async def delete_keypair(request: web.Request) -> web.Response:
    user_id = _target_user(request, "delete", _query_user(request))
    async with runtime(request).db.begin() as conn:
        row = await store.get_keypair(conn, user_id, request.match_info["name"])
        await store.delete_keypair(conn, row.id)
    return web.Response(status=204 if microversion(request).at_least("2.2") else 202)


@routes.post(KEYPAIRS)
async def create_keypair(request: web.Request) -> web.Response:
    mv = microversion(request)
    ctx = context(request)
    params = validate(await read_json(request), create_schema(mv))["keypair"]
    user_id = _target_user(request, "create", params.get("user_id") if mv.at_least("2.10") else None)
    name = params["name"]
    key_type = params.get("type", "ssh")
    private_key = None
    if "public_key" in params:
        public_key = params["public_key"]
        fingerprint = x509_fingerprint(public_key) if key_type == "x509" else ssh_fingerprint(public_key)
    else:
        if key_type == "x509":
            private_key, public_key = generate_x509(user_id)
            fingerprint = x509_fingerprint(public_key)
        else:
            private_key, public_key = generate_ssh()
            fingerprint = ssh_fingerprint(public_key)
    rt = runtime(request)
    async with rt.db.begin() as conn:
        # The check and the insert are one step per user (any number of API processes).
        await lock_project_usage(conn, f"key_pairs:{user_id}")
        allowed = (await limits_for(conn, rt.settings, ctx.project_id or ""))["key_pairs"]
        used = await store.count_keypairs(conn, user_id)
        if allowed >= 0 and used + 1 > allowed:
            raise Forbidden("Quota exceeded, too many key pairs.")
        await store.create_keypair(
            conn,
            NewKeypair(user_id=user_id, name=name, public_key=public_key, fingerprint=fingerprint, type=key_type),
        )
    body: dict[str, Any] = {"name": name, "public_key": public_key, "fingerprint": fingerprint, "user_id": user_id}
    if mv.at_least("2.2"):
        body["type"] = key_type
    if private_key is not None:
        body["private_key"] = private_key
    return json_response({"keypair": body}, status=201 if mv.at_least("2.2") else 200)
