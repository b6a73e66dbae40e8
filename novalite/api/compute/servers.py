"""Servers: create, list, show, update, delete.

Create writes the instance rows (BUILD/scheduling) and casts ``build_instances`` to
the conductor; it never waits for a host. Delete of a scheduled server casts to the
host's agent; a server with no host, or whose host is down, is deleted here at once
(Nova's "local delete"), so a dead agent never leaves an undeletable server.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import uuid as uuidlib
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from novalite import states
from novalite.api.compute.common import (
    MAX_LIMIT,
    compute_base,
    next_link,
    page_params,
    require_admin,
    require_member,
)
from novalite.api.compute.microversions import microversion
from novalite.api.compute.views import ViewFlags, detail_views, load_extras, server_view
from novalite.api.errors import BadRequest, Conflict, Forbidden, NotFound
from novalite.api.http import context, json_response, read_json, runtime
from novalite.api.validation import metadata_schema, name_schema, to_bool, validate
from novalite.context import RequestContext
from novalite.db import schema as t
from novalite.errors import NoMoreAddresses, QuotaExceeded
from novalite.log import get_logger
from novalite.servicegroup import is_up
from novalite.store import actions
from novalite.store import servers as records
from novalite.store.images import get_image
from novalite.store.network import allocate_port
from novalite.store.quotas import check_quota
from novalite.timeutil import parse_iso, utcnow

log = get_logger("novalite.api.servers")
routes = web.RouteTableDef()

GiB = 1024**3

CREATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "server": {
            "type": "object",
            "properties": {
                "name": name_schema(),
                "imageRef": {"type": "string"},
                "flavorRef": {"type": ["string", "integer"], "minLength": 1},
                "adminPass": {"type": "string"},
                "metadata": metadata_schema,
                "networks": {
                    "oneOf": [
                        {"type": "string", "enum": ["none", "auto"]},
                        {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "uuid": {"type": "string"},
                                    "port": {"type": ["string", "null"]},
                                    "fixed_ip": {"type": "string"},
                                    "tag": {"type": "string"},
                                },
                                "additionalProperties": False,
                            },
                        },
                    ]
                },
                "block_device_mapping_v2": {"type": "array", "items": {"type": "object"}},
                "key_name": {"type": "string", "minLength": 1, "maxLength": 255},
                "user_data": {"type": "string", "maxLength": 65535},
                "availability_zone": {"type": "string", "minLength": 1, "maxLength": 255},
                "config_drive": {"type": ["boolean", "string"]},
                "min_count": {"type": ["integer", "string"], "pattern": "^[0-9]+$", "minimum": 1},
                "max_count": {"type": ["integer", "string"], "pattern": "^[0-9]+$", "minimum": 1},
                "return_reservation_id": {"type": ["boolean", "string"]},
                "description": {"type": ["string", "null"], "maxLength": 255},
                "tags": {"type": "array", "items": {"type": "string", "maxLength": 60}, "maxItems": 50},
                "hostname": {"type": "string", "minLength": 1, "maxLength": 255},
                "accessIPv4": {"type": "string", "format": "ipv4"},
                "accessIPv6": {"type": "string", "format": "ipv6"},
                "security_groups": {"type": "array", "items": {"type": "object"}},
                "OS-DCF:diskConfig": {"type": "string", "enum": ["AUTO", "MANUAL"]},
                "trusted_image_certificates": {"type": ["array", "null"]},
                "host": {"type": "string"},
                "hypervisor_hostname": {"type": "string"},
            },
            "required": ["name", "flavorRef"],
            "additionalProperties": False,
        },
        "os:scheduler_hints": {"type": "object"},
        "OS-SCH-HNT:scheduler_hints": {"type": "object"},
    },
    "required": ["server"],
    "additionalProperties": False,
}

UPDATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "server": {
            "type": "object",
            "properties": {
                "name": name_schema(),
                "description": {"type": ["string", "null"], "maxLength": 255},
                "accessIPv4": {"type": "string"},
                "accessIPv6": {"type": "string"},
                "OS-DCF:diskConfig": {"type": "string", "enum": ["AUTO", "MANUAL"]},
                "hostname": {"type": "string", "minLength": 1, "maxLength": 255},
            },
            "additionalProperties": False,
        }
    },
    "required": ["server"],
    "additionalProperties": False,
}


def sanitize_hostname(name: str) -> str:
    """Nova's rule: a DNS label from the display name (lowercase, dashes, at most 63 chars)."""
    host = re.sub(r"[ _.]", "-", name.lower())
    host = re.sub(r"[^a-z0-9-]", "", host).strip("-")
    return host[:63] or "server"


async def get_instance_row(conn: Any, ctx: RequestContext, server_id: str, *, allow_deleted: bool = False) -> Any:
    """The instance, if the caller may see it; 404 (never 403) otherwise, so ids don't leak."""
    query = sa.select(t.instances).where(t.instances.c.uuid == server_id)
    if not allow_deleted:
        query = query.where(t.instances.c.deleted.is_(False))
    row = (await conn.execute(query)).first()
    if row is None or (not ctx.is_admin and row.project_id != ctx.project_id):
        raise NotFound(f"Instance {server_id} could not be found.")
    return row


# -- create -------------------------------------------------------------------------------------


async def _resolve_flavor(conn: Any, ctx: RequestContext, flavor_ref: Any) -> Any:
    ref = str(flavor_ref).rstrip("/").rsplit("/", 1)[-1]
    row = (await conn.execute(sa.select(t.flavors).where(t.flavors.c.flavorid == ref))).first()
    if row is not None and not row.is_public and not ctx.is_admin:
        access = await conn.scalar(
            sa.select(sa.func.count()).where(
                t.flavor_projects.c.flavor_id == row.id, t.flavor_projects.c.project_id == ctx.project_id
            )
        )
        if not access:
            row = None
    if row is None or row.disabled:
        raise BadRequest(f"Flavor {ref} could not be found.")
    return row


async def _resolve_image(conn: Any, ctx: RequestContext, image_ref: str) -> dict[str, Any]:
    ref = image_ref.rstrip("/").rsplit("/", 1)[-1]
    try:
        uuidlib.UUID(ref)
    except ValueError:
        raise BadRequest(f"Invalid imageRef provided: {image_ref!r} is not an image id.") from None
    image = await get_image(conn, ref, ctx)
    if image is None:
        raise BadRequest(f"Image {ref} could not be found.")
    if image["status"] != "active":
        raise BadRequest(f"Image {ref} is not active.")
    return image


def _image_ref_from_bdm(bdms: list[dict[str, Any]]) -> str | None:
    """The image of an image→local root disk mapping (what the CLI sends for --image)."""
    for bdm in bdms:
        source = bdm.get("source_type")
        dest = bdm.get("destination_type", "local")
        if dest == "volume":
            raise BadRequest("Block Device Mapping is Invalid: volumes are not supported by novalite (no Cinder).")
        if source == "image" and str(bdm.get("boot_index", "")) in ("0", "") and bdm.get("uuid"):
            return str(bdm["uuid"])
        if source not in ("image", "blank"):
            raise BadRequest(f"Block Device Mapping is Invalid: source_type {source!r} is not supported.")
    return None


def _decode_user_data(value: str | None) -> str | None:
    if value is None:
        return None
    try:
        base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("User data needs to be valid base 64.") from None
    return value


@routes.post("/v2.1/servers")
async def create(request: web.Request) -> web.Response:
    ctx = context(request)
    require_member(ctx, "os_compute_api:servers:create")
    mv = microversion(request)
    rt = runtime(request)
    settings = rt.settings
    body = validate(await read_json(request), CREATE_SCHEMA)
    server = body["server"]
    hints = body.get("os:scheduler_hints") or body.get("OS-SCH-HNT:scheduler_hints") or {}

    networks = server.get("networks")
    if mv.at_least("2.37") and networks is None:
        raise BadRequest(
            f"Invalid input for field/attribute server. Value: {server}. 'networks' is a required property"
        )
    if isinstance(networks, list) and networks:
        raise BadRequest("Only networks 'auto' or 'none' are supported: novalite has one built-in network.")
    want_port = networks == "auto" or (networks is None and mv.below("2.37"))
    if not mv.at_least("2.19") and "description" in server:
        raise BadRequest(
            "Invalid input for field/attribute server. Additional properties are not allowed "
            "('description' was unexpected)"
        )
    min_count = int(server.get("min_count", 1))
    max_count = int(server.get("max_count", min_count))
    if min_count > max_count:
        raise BadRequest("min_count must be <= max_count")

    image_ref = server.get("imageRef") or _image_ref_from_bdm(server.get("block_device_mapping_v2") or [])
    if not image_ref:
        raise BadRequest("Missing imageRef attribute: novalite boots servers from images only.")
    user_data = _decode_user_data(server.get("user_data"))
    az = server.get("availability_zone")
    force_host = None
    if az and ":" in az:
        az, _, force_host = az.partition(":")
        if force_host:
            require_admin(ctx, "os_compute_api:servers:create:forced_host")
        az = az or None

    async with rt.db.begin() as conn:
        flavor = await _resolve_flavor(conn, ctx, server["flavorRef"])
        image = await _resolve_image(conn, ctx, image_ref)
        _check_image_fits(flavor, image)
        key_data = None
        if server.get("key_name"):
            key_data = await conn.scalar(
                sa.select(t.keypairs.c.public_key).where(
                    t.keypairs.c.user_id == ctx.user_id, t.keypairs.c.name == server["key_name"]
                )
            )
            if key_data is None:
                raise BadRequest(f"Invalid key_name provided: {server['key_name']}.")
        if az and not await _az_exists(conn, az, settings.availability_zone):
            raise BadRequest(f"The requested availability zone is not available: {az}")
        meta = server.get("metadata") or {}
        if len(meta) > settings.quota_metadata_items:
            raise Forbidden(
                f"Quota exceeded for metadata_items: Requested {len(meta)}, "
                f"but already used 0 of {settings.quota_metadata_items} metadata_items"
            )
        count = await _check_quota(conn, settings, ctx.project_id or "", flavor, min_count, max_count)
        reservation_id = "r-" + secrets.token_hex(4)
        flavor_json = {
            "flavorid": flavor.flavorid,
            "name": flavor.name,
            "vcpus": flavor.vcpus,
            "memory_mb": flavor.memory_mb,
            "root_gb": flavor.root_gb,
            "ephemeral_gb": flavor.ephemeral_gb,
            "swap": flavor.swap,
            "extra_specs": dict(flavor.extra_specs or {}),
        }
        image_meta = {
            "disk_format": image.get("disk_format"),
            "container_format": image.get("container_format"),
            "min_disk": image.get("min_disk", 0),
            "min_ram": image.get("min_ram", 0),
            "properties": image.get("properties", {}),
        }
        now = utcnow()
        uuids = []
        base_hostname = sanitize_hostname(server.get("hostname") or server["name"])
        for index in range(count):
            uuid = str(uuidlib.uuid4())
            uuids.append(uuid)
            hostname = base_hostname if count == 1 else f"{base_hostname}-{index + 1}"
            await conn.execute(
                t.instances.insert().values(
                    uuid=uuid,
                    display_name=server["name"] if count == 1 else f"{server['name']}-{index + 1}",
                    display_description=server.get("description"),
                    hostname=hostname,
                    project_id=ctx.project_id,
                    user_id=ctx.user_id,
                    image_ref=image["id"],
                    flavor=flavor_json,
                    vcpus=flavor.vcpus,
                    memory_mb=flavor.memory_mb,
                    root_gb=flavor.root_gb,
                    ephemeral_gb=flavor.ephemeral_gb,
                    vm_state=states.BUILDING,
                    task_state=states.SCHEDULING,
                    power_state=0,
                    requested_az=az,
                    availability_zone=az,
                    key_name=server.get("key_name"),
                    key_data=key_data,
                    user_data=user_data,
                    config_drive=to_bool(server.get("config_drive", False)),
                    reservation_id=reservation_id,
                    launch_index=index,
                    access_ip_v4=server.get("accessIPv4"),
                    access_ip_v6=server.get("accessIPv6"),
                    tags=list(server.get("tags") or []),
                    scheduler_hints=dict(hints, **({"force_host": force_host} if force_host else {})),
                    image_meta=image_meta,
                    created_at=now,
                    updated_at=now,
                )
            )
            if meta:
                await conn.execute(
                    t.instance_metadata.insert(),
                    [{"instance_uuid": uuid, "key": k, "value": v} for k, v in meta.items()],
                )
            if want_port:
                try:
                    await allocate_port(conn, settings, uuid)
                except NoMoreAddresses as exc:
                    raise Conflict(str(exc)) from None
            await actions.start_action(conn, uuid, "create", ctx.request_id, ctx.user_id, ctx.project_id)

    spec = {
        "project_id": ctx.project_id,
        "flavor": flavor_json,
        "image": {"id": image["id"], **image_meta},
        "availability_zone": az,
        "force_host": force_host,
    }
    await rt.bus.cast(ctx, "conductor", "build_instances", instance_uuids=uuids, request_spec=spec)
    log.info("servers.create", count=count, instances=uuids)

    if to_bool(server.get("return_reservation_id", False)):
        return json_response({"reservation_id": reservation_id}, 202)
    uuid = uuids[0]
    base = compute_base(request)
    result: dict[str, Any] = {
        "id": uuid,
        "links": [
            {"rel": "self", "href": f"{base}/v2.1/servers/{uuid}"},
            {"rel": "bookmark", "href": f"{base}/servers/{uuid}"},
        ],
        "OS-DCF:diskConfig": server.get("OS-DCF:diskConfig", "MANUAL"),
        "security_groups": [{"name": "default"}],
        "adminPass": server.get("adminPass") or secrets.token_urlsafe(9),
    }
    return json_response({"server": result}, 202, headers={"Location": f"{base}/v2.1/servers/{uuid}"})


def _check_image_fits(flavor: Any, image: dict[str, Any]) -> None:
    """Nova's checks: the flavor's disk and RAM must hold the image (size and minimums)."""
    flavor_bytes = flavor.root_gb * GiB
    if flavor.root_gb:
        size = int(image.get("size") or 0)
        if size > flavor_bytes:
            raise BadRequest(
                f"Flavor's disk is too small for requested image. Flavor disk is {flavor_bytes} bytes, "
                f"image is {size} bytes."
            )
        min_disk = int(image.get("min_disk") or 0)
        if min_disk > flavor.root_gb:
            raise BadRequest(
                "Flavor's disk is smaller than the minimum size specified in image metadata. Flavor disk is "
                f"{flavor_bytes} bytes, minimum size is {min_disk * GiB} bytes."
            )
    if int(image.get("min_ram") or 0) > flavor.memory_mb:
        raise BadRequest("Flavor's memory is too small for requested image.")


async def _az_exists(conn: Any, az: str, default_az: str) -> bool:
    zones = {
        r[0] or default_az
        for r in await conn.execute(
            sa.select(t.services.c.availability_zone).where(t.services.c.binary == "nova-compute")
        )
    }
    return az in zones


async def _check_quota(conn: Any, settings: Any, project_id: str, flavor: Any, min_count: int, max_count: int) -> int:
    """How many of min..max instances the project's quota allows; 403 if not even min_count."""
    allowed = max_count
    while True:
        try:
            await check_quota(
                conn,
                settings,
                project_id,
                instances=allowed,
                cores=flavor.vcpus * allowed,
                ram=flavor.memory_mb * allowed,
            )
            return allowed
        except QuotaExceeded as exc:
            if allowed <= min_count:
                raise Forbidden(str(exc)) from None
            allowed -= 1


# -- list and show ------------------------------------------------------------------------------

SORT_KEYS = {
    "created_at": t.instances.c.created_at,
    "updated_at": t.instances.c.updated_at,
    "display_name": t.instances.c.display_name,
    "uuid": t.instances.c.uuid,
    "vm_state": t.instances.c.vm_state,
    "host": t.instances.c.host,
    "launched_at": t.instances.c.launched_at,
}
STATUS_FILTERS = {
    "ACTIVE": (states.ACTIVE, None),
    "BUILD": (states.BUILDING, None),
    "SHUTOFF": (states.STOPPED, None),
    "PAUSED": (states.PAUSED, None),
    "SUSPENDED": (states.SUSPENDED, None),
    "ERROR": (states.ERROR, None),
    "DELETED": (states.DELETED, None),
    "REBOOT": (states.ACTIVE, states.REBOOTING),
    "HARD_REBOOT": (None, states.REBOOTING_HARD),
}


def _parse_time(name: str, value: str) -> datetime:
    try:
        return parse_iso(value)
    except ValueError:
        raise BadRequest(
            f"Invalid input for query parameters {name}. Value: {value}. '{value}' is not a 'date-time'"
        ) from None


async def _list(request: web.Request, detail: bool) -> web.Response:
    ctx = context(request)
    mv = microversion(request)
    rt = runtime(request)
    q = request.query
    limit, marker = page_params(request)
    query = sa.select(t.instances)
    all_tenants = "all_tenants" in q and to_bool(q.get("all_tenants") or "true")
    if all_tenants:
        require_admin(ctx, "os_compute_api:servers:index:get_all_tenants")
    project = q.get("project_id") or q.get("tenant_id")
    if project and ctx.is_admin:
        query = query.where(t.instances.c.project_id == project)
    elif not all_tenants or not ctx.is_admin:
        query = query.where(t.instances.c.project_id == ctx.project_id)

    changes_since = _parse_time("changes-since", q["changes-since"]) if "changes-since" in q else None
    changes_before = _parse_time("changes-before", q["changes-before"]) if "changes-before" in q else None
    if changes_since and changes_before and changes_since > changes_before:
        raise BadRequest("The value of changes-since must be less than or equal to changes-before.")
    deleted = to_bool(q["deleted"]) if "deleted" in q and ctx.is_admin else None
    status = q.get("status", "").upper()
    if changes_since:
        query = query.where(t.instances.c.updated_at >= changes_since)
    if changes_before:
        query = query.where(t.instances.c.updated_at <= changes_before)
    if deleted is not None:
        query = query.where(t.instances.c.deleted.is_(deleted))
    elif not (changes_since or changes_before or status == "DELETED"):
        query = query.where(t.instances.c.deleted.is_(False))
    if status:
        if status not in STATUS_FILTERS:
            if mv.at_least("2.38"):
                raise BadRequest(f"Invalid status value: {status.lower()}")
            return json_response({"servers": []})
        vm_state, task_state = STATUS_FILTERS[status]
        if vm_state:
            query = query.where(t.instances.c.vm_state == vm_state)
        if task_state:
            query = query.where(t.instances.c.task_state == task_state)
    if "name" in q:
        pattern = q["name"]
        # Nova treats name as a regex; plain names (the common case) filter in SQL.
        if re.fullmatch(r"[\w .-]*", pattern):
            query = query.where(t.instances.c.display_name.like(f"%{pattern}%"))
        else:
            query = query.where(t.instances.c.display_name.is_not(None))
    for param, column in (
        ("image", t.instances.c.image_ref),
        ("reservation_id", t.instances.c.reservation_id),
        ("key_name", t.instances.c.key_name),
        ("availability_zone", t.instances.c.availability_zone),
        ("user_id", t.instances.c.user_id),
    ):
        if param in q:
            query = query.where(
                column == q[param].rstrip("/").rsplit("/", 1)[-1] if param == "image" else column == q[param]
            )
    for param in ("host", "node"):
        if param in q and ctx.is_admin:
            query = query.where(getattr(t.instances.c, param) == q[param])
    if "flavor" in q:
        flavor_id = q["flavor"].rstrip("/").rsplit("/", 1)[-1]
        query = query.where(t.instances.c.memory_mb.is_not(None))
        flavor_filter = flavor_id
    else:
        flavor_filter = None

    sort_keys = q.getall("sort_key", []) or ["created_at"]
    sort_dirs = q.getall("sort_dir", [])
    order = []
    for i, key in enumerate(sort_keys):
        column = SORT_KEYS.get(key)
        if column is None:
            raise BadRequest(f"Invalid input for query parameters sort_key. Value: {key}.")
        direction = sort_dirs[i] if i < len(sort_dirs) else "desc"
        if direction not in ("asc", "desc"):
            raise BadRequest(f"Invalid input for query parameters sort_dir. Value: {direction}.")
        order.append(column.desc() if direction == "desc" else column.asc())
    order.append(t.instances.c.id.desc())
    query = query.order_by(*order)

    async with rt.db.connect() as conn:
        if marker:
            marker_row = (
                await conn.execute(
                    sa.select(t.instances.c.id, t.instances.c.created_at).where(t.instances.c.uuid == marker)
                )
            ).first()
            if marker_row is None:
                raise BadRequest(f"marker [{marker}] not found")
            if sort_keys == ["created_at"] and (not sort_dirs or sort_dirs[0] == "desc"):
                query = query.where(
                    sa.or_(
                        t.instances.c.created_at < marker_row.created_at,
                        sa.and_(t.instances.c.created_at == marker_row.created_at, t.instances.c.id < marker_row.id),
                    )
                )
                marker = None
        rows = (await conn.execute(query if marker else query.limit(limit + 1 if limit else 1))).fetchall()
        if marker:  # generic marker handling for uncommon sort orders
            ids = [r.uuid for r in rows]
            rows = rows[ids.index(marker) + 1 :] if marker in ids else []
        if flavor_filter is not None:
            rows = [r for r in rows if (r.flavor or {}).get("flavorid") == flavor_filter]
        if "name" in q and not re.fullmatch(r"[\w .-]*", q["name"]):
            try:
                regex = re.compile(q["name"])
            except re.error:
                raise BadRequest(f"Invalid regular expression for name: {q['name']}") from None
            rows = [r for r in rows if r.display_name and regex.search(r.display_name)]
        if "ip" in q:
            rows = await _filter_ip(conn, rows, q["ip"])
        has_more = limit and len(rows) > limit
        rows = rows[:limit] if limit else []
        flags = ViewFlags.of(mv, ctx, show=False)
        if detail:
            views = await detail_views(request, conn, rows, mv, ctx, flags, rt.settings.service_down_time)
        else:
            views = [server_view(request, r, None, mv, ctx, detail=False) for r in rows]
    body: dict[str, Any] = {"servers": views}
    if has_more or (limit and limit < MAX_LIMIT and len(rows) == limit and "limit" in q):
        body["servers_links"] = [next_link(request, "servers/detail" if detail else "servers", rows[-1].uuid, limit)]
    return json_response(body)


async def _filter_ip(conn: Any, rows: list[Any], pattern: str) -> list[Any]:
    try:
        regex = re.compile(pattern)
    except re.error:
        raise BadRequest(f"Invalid regular expression for ip: {pattern}") from None
    uuids = [r.uuid for r in rows]
    matched = {
        p.instance_uuid
        for p in await conn.execute(
            sa.select(t.ports.c.instance_uuid, t.ports.c.ip).where(t.ports.c.instance_uuid.in_(uuids))
        )
        if p.ip and regex.match(p.ip)
    }
    return [r for r in rows if r.uuid in matched]


@routes.get("/v2.1/servers")
async def index(request: web.Request) -> web.Response:
    return await _list(request, detail=False)


@routes.get("/v2.1/servers/detail")
async def detail(request: web.Request) -> web.Response:
    return await _list(request, detail=True)


async def show_body(request: web.Request, server_id: str) -> dict[str, Any]:
    ctx = context(request)
    rt = runtime(request)
    mv = microversion(request)
    async with rt.db.connect() as conn:
        row = await get_instance_row(conn, ctx, server_id)
        extras = await load_extras(
            conn, [row], host_status=ctx.is_admin and mv.at_least("2.16"), down_time=rt.settings.service_down_time
        )
    return {"server": server_view(request, row, extras, mv, ctx, show=True)}


@routes.get("/v2.1/servers/{server_id}")
async def show(request: web.Request) -> web.Response:
    return json_response(await show_body(request, request.match_info["server_id"]))


@routes.put("/v2.1/servers/{server_id}")
async def update(request: web.Request) -> web.Response:
    ctx = context(request)
    require_member(ctx, "os_compute_api:servers:update")
    mv = microversion(request)
    server_id = request.match_info["server_id"]
    body = validate(await read_json(request), UPDATE_SCHEMA)["server"]
    if "description" in body and mv.below("2.19"):
        raise BadRequest(
            "Invalid input for field/attribute server. Additional properties are not allowed "
            "('description' was unexpected)"
        )
    if "hostname" in body and mv.below("2.90"):
        raise BadRequest(
            "Invalid input for field/attribute server. Additional properties are not allowed "
            "('hostname' was unexpected)"
        )
    values: dict[str, Any] = {}
    if "name" in body:
        values["display_name"] = body["name"]
    if "description" in body:
        values["display_description"] = body["description"]
    if "accessIPv4" in body:
        values["access_ip_v4"] = body["accessIPv4"] or None
    if "accessIPv6" in body:
        values["access_ip_v6"] = body["accessIPv6"] or None
    if "hostname" in body:
        values["hostname"] = sanitize_hostname(body["hostname"])
    rt = runtime(request)
    async with rt.db.begin() as conn:
        await get_instance_row(conn, ctx, server_id)
        if values:
            values["updated_at"] = utcnow()
            await conn.execute(t.instances.update().where(t.instances.c.uuid == server_id).values(**values))
    return json_response(await show_body(request, server_id))


# -- delete -------------------------------------------------------------------------------------


async def host_is_up(conn: Any, host: str, down_time: float) -> bool:
    row = (
        await conn.execute(
            sa.select(t.services).where(t.services.c.host == host, t.services.c.binary == "nova-compute")
        )
    ).first()
    return row is not None and is_up(row, down_time)


@routes.delete("/v2.1/servers/{server_id}")
async def delete(request: web.Request) -> web.Response:
    ctx = context(request)
    require_member(ctx, "os_compute_api:servers:delete")
    rt = runtime(request)
    server_id = request.match_info["server_id"]
    async with rt.db.begin() as conn:
        row = await get_instance_row(conn, ctx, server_id)
        if row.locked and not ctx.is_admin:
            raise Conflict(f"Instance {server_id} is locked")
        await actions.start_action(conn, server_id, "delete", ctx.request_id, ctx.user_id, ctx.project_id)
        local = row.host is None or not await host_is_up(conn, row.host, rt.settings.service_down_time)
        if local:
            if row.host:
                log.warning(
                    "servers.local_delete",
                    instance=server_id,
                    host=row.host,
                    reason="compute host is down; its guest will be reported as unknown when it returns",
                )
            await records.finalize_delete(conn, server_id)
            await actions.finish_action(conn, server_id, ctx.request_id)
            return web.Response(status=204)
        await conn.execute(
            t.instances.update()
            .where(t.instances.c.uuid == server_id)
            .values(task_state=states.DELETING, updated_at=utcnow())
        )
        payload = await records.payload_from_row(conn, row)
    await rt.bus.cast(ctx, f"compute.{row.host}", "terminate_instance", instance=payload)
    return web.Response(status=204)
