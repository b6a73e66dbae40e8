"""Servers: create, list, show, update, delete.

Create writes the instance rows (BUILD/scheduling) and casts ``build_instances`` to
the conductor; it never waits for a host. Delete of a scheduled server casts to the
host's agent; a server with no host, or whose host is down, is deleted here at once
(Nova's "local delete"), so a dead agent never leaves an undeletable server.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import secrets
import uuid as uuidlib
from datetime import datetime
from typing import Any

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
from novalite.api.compute.views import ViewFlags, cached_detail_views, detail_views, server_view
from novalite.api.errors import BadRequest, Conflict, Forbidden
from novalite.api.http import context, json_response, read_json, runtime
from novalite.api.validation import metadata_schema, name_schema, to_bool, validate
from novalite.context import RequestContext
from novalite.errors import NotFound, QuotaExceeded
from novalite.log import get_logger
from novalite.relay import cast_after_commit
from novalite.store import Connection, actions, flavors, hosts, keypairs, migrations, server_ports
from novalite.store import servers as records
from novalite.store.images import get_image
from novalite.store.server_lists import SORT_KEYS, ServerFilters, list_servers, load_extras
from novalite.store.shelved import shelve_image_to_delete
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
                "networks": {},  # checked per microversion: networks_schema()
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
                "security_groups": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {"name": name_schema()},
                        "additionalProperties": False,
                    },
                },
                "OS-DCF:diskConfig": {"type": "string", "enum": ["AUTO", "MANUAL"]},
                "trusted_image_certificates": {"type": ["array", "null"]},
                "host": {"type": "string", "minLength": 1, "maxLength": 255},
                "hypervisor_hostname": {"type": "string", "minLength": 1, "maxLength": 255},
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
                "accessIPv4": {"type": "string", "format": "ipv4"},
                "accessIPv6": {"type": "string", "format": "ipv6"},
                "OS-DCF:diskConfig": {"type": "string", "enum": ["AUTO", "MANUAL"]},
                "hostname": {"type": "string", "minLength": 1, "maxLength": 255},
            },
            "additionalProperties": False,
        }
    },
    "required": ["server"],
    "additionalProperties": False,
}


def canonical_ip(value: str | None) -> str | None:
    """An address in its shortest form (an IPv6 address written out in full is 45
    characters; stored, it is at most 39), or None for none."""
    if not value:
        return None
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        return value  # the schema's format check has the last word


def sanitize_hostname(name: str) -> str:
    """Nova's rule: a DNS label from the display name (lowercase, dashes, at most 63 chars)."""
    host = re.sub(r"[ _.]", "-", name.lower())
    host = re.sub(r"[^a-z0-9-]", "", host).strip("-")
    return host[:63] or "server"


# -- create -------------------------------------------------------------------------------------

_FIXED_IP = {"type": "string", "oneOf": [{"format": "ipv4"}, {"format": "ipv6"}]}
_TAG = {"type": "string", "pattern": "^[^,/]*$", "minLength": 1, "maxLength": 60}


def _networks_schema(list_only: bool, tag: bool, uuid_format: bool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "fixed_ip": _FIXED_IP,
        "port": {"type": ["string", "null"], "format": "uuid"},
        "uuid": {"type": "string", "format": "uuid"} if uuid_format else {"type": "string"},
    }
    if tag:
        item["tag"] = _TAG
    array = {"type": "array", "items": {"type": "object", "properties": item, "additionalProperties": False}}
    networks: dict[str, Any] = (
        array if list_only else {"oneOf": [array, {"type": "string", "enum": ["none", "auto"]}]}
    )
    return {"type": "object", "properties": {"networks": networks}}


#: Nova's ``networks`` by microversion: a list before 2.37 (tags in 2.32-2.36), then a list
#: or "auto"/"none" with network uuids checked (tags again from 2.42).
_NETWORKS_SCHEMAS = {
    "2.1": _networks_schema(True, False, False),
    "2.32": _networks_schema(True, True, False),
    "2.37": _networks_schema(False, False, True),
    "2.42": _networks_schema(False, True, True),
}


def networks_schema(mv: Any) -> dict[str, Any]:
    for version in ("2.42", "2.37", "2.32"):
        if mv.at_least(version):
            return _NETWORKS_SCHEMAS[version]
    return _NETWORKS_SCHEMAS["2.1"]


def requested_nics(networks: Any, max_count: int) -> str | list[server_ports.NicRequest] | None:
    """A create's ``networks`` as requests, with Nova's checks of the list (``_get_requested_networks``)."""
    if networks is None or isinstance(networks, str):
        return networks
    nics: list[server_ports.NicRequest] = []
    ports: set[str] = set()
    for item in networks:
        port, fixed_ip, tag = item.get("port"), item.get("fixed_ip"), item.get("tag")
        if port:
            if port in ports:
                raise BadRequest(f"Port ID '{port}' was specified twice: you cannot attach a port multiple times.")
            if fixed_ip is not None:
                raise BadRequest(
                    f"Specified Fixed IP '{fixed_ip}' cannot be used with port '{port}': the two cannot be "
                    "specified together."
                )
            ports.add(port)
            nics.append(server_ports.NicRequest(port_id=port, tag=tag))
            continue
        if "uuid" not in item:
            raise BadRequest("Bad network format: missing 'uuid'")
        try:
            uuidlib.UUID(item["uuid"])
        except ValueError:
            raise BadRequest(f"Bad networks format: network uuid is not in proper format ({item['uuid']})") from None
        nics.append(server_ports.NicRequest(network_id=item["uuid"], fixed_ip=fixed_ip, tag=tag))
    if max_count > 1:
        if any(n.port_id for n in nics):
            raise BadRequest(
                "Failed to launch instances: Unable to launch multiple instances with a single configured port "
                "ID. Please launch your instance one by one with different ports."
            )
        if any(n.fixed_ip for n in nics):
            raise BadRequest(
                "Failed to launch instances: max_count cannot be greater than 1 if an fixed_ip is specified."
            )
    return nics


def _image_id(image_ref: str) -> str:
    ref = image_ref.rstrip("/").rsplit("/", 1)[-1]
    try:
        uuidlib.UUID(ref)
    except ValueError:
        raise BadRequest(f"Invalid imageRef provided: {image_ref!r} is not an image id.") from None
    return ref


def _usable_image(ref: str, image: dict[str, Any] | None) -> dict[str, Any]:
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


#: Digits beyond which a count is only "huge": every count is bounded by the quota anyway, and
#: ``int()`` of a very long digit string is slow (and refused past 4300 digits).
MAX_COUNT_DIGITS = 30


def _count(server: dict[str, Any], name: str, default: int) -> int:
    """``min_count``/``max_count`` as an int >= 1 (the schema let through any digit string)."""
    value = server.get(name, default)
    if isinstance(value, str):
        value = int(value) if len(value.lstrip("0")) <= MAX_COUNT_DIGITS else 10**MAX_COUNT_DIGITS
    if value < 1:
        raise BadRequest(
            f"Invalid input for field/attribute {name}. Value: {value}. {value} is less than the minimum of 1"
        )
    return int(value)


async def _requested_destination(conn: Connection, host: str | None, node: str | None) -> str:
    """The ``force_host`` an admin's ``host``/``hypervisor_hostname`` (2.74) pins the build to;
    400 if no compute node matches, as Nova's ComputeHostNotFound."""
    nodes = [h.node for h in await hosts.list_hypervisors(conn)]
    matches = [n for n in nodes if (host is None or n.host == host) and (node is None or n.hypervisor_hostname == node)]
    if not matches:
        raise BadRequest(f"Compute host {host or node} could not be found.")
    return node or str(host)


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
    if "networks" in server:
        validate({"networks": networks}, networks_schema(mv))
    if not mv.at_least("2.19") and "description" in server:
        raise BadRequest(
            "Invalid input for field/attribute server. Additional properties are not allowed "
            "('description' was unexpected)"
        )
    for field_name in ("host", "hypervisor_hostname"):
        if field_name in server and mv.below("2.74"):
            raise BadRequest(
                "Invalid input for field/attribute server. Additional properties are not allowed "
                f"('{field_name}' was unexpected)"
            )
    min_count = _count(server, "min_count", 1)
    max_count = _count(server, "max_count", min_count)
    if min_count > max_count:
        raise BadRequest("min_count must be <= max_count")
    requested_networks = requested_nics(networks, max_count)
    group_names = (
        [g["name"] for g in server["security_groups"] if g.get("name")] if "security_groups" in server else None
    )

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
    requested_host, requested_node = server.get("host"), server.get("hypervisor_hostname")
    if requested_host or requested_node:
        require_admin(ctx, "compute:servers:create:requested_destination")

    meta = server.get("metadata") or {}
    async with rt.db.begin() as conn:
        flavor_id = str(server["flavorRef"]).rstrip("/").rsplit("/", 1)[-1]
        try:
            flavor = await flavors.get_flavor(conn, ctx, flavor_id)
        except NotFound:
            flavor = None
        if flavor is None or flavor.disabled:
            raise BadRequest(f"Flavor {flavor_id} could not be found.")
        image_id = _image_id(image_ref)
        image = _usable_image(image_id, await get_image(conn, image_id, ctx))
        _check_image_fits(flavor, image)
        key_data = None
        if server.get("key_name"):
            try:
                key_data = (await keypairs.get_keypair(conn, ctx.user_id or "", server["key_name"])).public_key
            except NotFound:
                raise BadRequest(f"Invalid key_name provided: {server['key_name']}.") from None
        if (requested_host or requested_node) and not force_host:
            force_host = await _requested_destination(conn, requested_host, requested_node)
        if az and az not in {
            s.availability_zone or settings.availability_zone
            for s in await hosts.list_services(conn, binary=hosts.COMPUTE_BINARY)
        }:
            raise BadRequest(f"The requested availability zone is not available: {az}")
        if len(meta) > settings.quota_metadata_items:
            raise Forbidden(
                f"Quota exceeded for metadata_items: Requested {len(meta)}, "
                f"but already used 0 of {settings.quota_metadata_items} metadata_items"
            )
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
        try:
            count = await records.instances_allowed(
                conn, settings, ctx.project_id or "", flavor_json, min_count, max_count
            )
        except QuotaExceeded as exc:
            raise Forbidden(str(exc)) from None
        network_plan = await server_ports.plan_networks(
            conn, ctx, ctx.project_id or "", requested_networks, group_names
        )
        reservation_id = "r-" + secrets.token_hex(4)
        image_meta = {
            "disk_format": image.get("disk_format"),
            "container_format": image.get("container_format"),
            "min_disk": image.get("min_disk", 0),
            "min_ram": image.get("min_ram", 0),
            "properties": image.get("properties", {}),
        }
        uuids = await records.create_instances(
            conn,
            settings,
            records.NewInstances(
                count=count,
                name=server["name"],
                hostname=sanitize_hostname(server.get("hostname") or server["name"]),
                project_id=ctx.project_id,
                user_id=ctx.user_id,
                request_id=ctx.request_id,
                flavor=flavor_json,
                image_ref=image["id"],
                image_meta=image_meta,
                reservation_id=reservation_id,
                description=server.get("description"),
                availability_zone=az,
                key_name=server.get("key_name"),
                key_data=key_data,
                user_data=user_data,
                config_drive=to_bool(server.get("config_drive", False)),
                access_ip_v4=canonical_ip(server.get("accessIPv4")),
                access_ip_v6=canonical_ip(server.get("accessIPv6")),
                tags=list(server.get("tags") or []),
                scheduler_hints=dict(hints, **({"force_host": force_host} if force_host else {})),
                metadata=meta,
                network_plan=network_plan,
            ),
        )
        spec = {
            "project_id": ctx.project_id,
            "flavor": flavor_json,
            "image": {"id": image["id"], **image_meta},
            "availability_zone": az,
            "force_host": force_host,
        }
        if network_plan.nics:  # the ports' groups have new members: other guests' rules follow
            for topic, args in await server_ports.port_security_updates(conn, instance_uuids=uuids):
                await cast_after_commit(conn, ctx, topic, "update_port_security", **args)
        # In the same transaction: accepted servers are built even if this process dies
        # right after the commit (the outbox relay sends the message).
        await cast_after_commit(conn, ctx, "conductor", "build_instances", instance_uuids=uuids, request_spec=spec)
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
        "security_groups": server.get("security_groups", [{"name": "default"}]),
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


# -- list and show ------------------------------------------------------------------------------

STATUS_FILTERS: dict[str, tuple[str | None, str | tuple[str, ...] | None]] = {
    "ACTIVE": (states.ACTIVE, None),
    "BUILD": (states.BUILDING, None),
    "SHUTOFF": (states.STOPPED, None),
    "PAUSED": (states.PAUSED, None),
    "SUSPENDED": (states.SUSPENDED, None),
    "ERROR": (states.ERROR, None),
    "DELETED": (states.DELETED, None),
    "SOFT_DELETED": (states.SOFT_DELETED, None),
    "REBOOT": (states.ACTIVE, states.REBOOTING),
    "HARD_REBOOT": (None, states.REBOOTING_HARD),
    # issue 11, as Nova's task_and_vm_state_from_status: REBUILD is a task of any vm_state.
    "REBUILD": (None, (states.REBUILDING, states.REBUILD_SPAWNING)),
    "SHELVED": (states.SHELVED, None),
    "SHELVED_OFFLOADED": (states.SHELVED_OFFLOADED, None),
}


def _parse_time(name: str, value: str) -> datetime:
    try:
        return parse_iso(value)
    except ValueError:
        raise BadRequest(
            f"Invalid input for query parameters {name}. Value: {value}. '{value}' is not a 'date-time'"
        ) from None


def _sort_order(request: web.Request) -> list[tuple[str, str]]:
    """(key, direction) pairs from ``sort_key``/``sort_dir`` (newest first by default); 400 if unknown."""
    sort_keys = request.query.getall("sort_key", []) or ["created_at"]
    sort_dirs = request.query.getall("sort_dir", [])
    order = []
    for i, key in enumerate(sort_keys):
        if key not in SORT_KEYS:
            raise BadRequest(f"Invalid input for query parameters sort_key. Value: {key}.")
        direction = sort_dirs[i] if i < len(sort_dirs) else "desc"
        if direction not in ("asc", "desc"):
            raise BadRequest(f"Invalid input for query parameters sort_dir. Value: {direction}.")
        order.append((key, direction))
    return order


async def _list(request: web.Request, detail: bool) -> web.Response:
    ctx = context(request)
    mv = microversion(request)
    rt = runtime(request)
    q = request.query
    limit, marker = page_params(request)
    all_tenants = "all_tenants" in q and to_bool(q.get("all_tenants") or "true")
    if all_tenants:
        require_admin(ctx, "os_compute_api:servers:index:get_all_tenants")
    project = q.get("project_id") or q.get("tenant_id")
    project_id, all_projects = ctx.project_id, False
    if project and ctx.is_admin:
        project_id = project
    elif all_tenants and ctx.is_admin:
        all_projects = True

    changes_since = _parse_time("changes-since", q["changes-since"]) if "changes-since" in q else None
    changes_before = _parse_time("changes-before", q["changes-before"]) if "changes-before" in q else None
    if changes_since and changes_before and changes_since > changes_before:
        raise BadRequest("The value of changes-since must be less than or equal to changes-before.")
    deleted = to_bool(q["deleted"]) if "deleted" in q and ctx.is_admin else None
    status = q.get("status", "").upper()
    if deleted is None and not (changes_since or changes_before or status == "DELETED"):
        deleted = False
    vm_state = task_state = None
    if status:
        if status not in STATUS_FILTERS:
            if mv.at_least("2.38"):
                raise BadRequest(f"Invalid status value: {status.lower()}")
            return json_response({"servers": []})
        vm_state, task_state = STATUS_FILTERS[status]
    filters = ServerFilters(
        project_id=project_id,
        all_projects=all_projects,
        deleted=deleted,
        changes_since=changes_since,
        changes_before=changes_before,
        vm_state=vm_state,
        task_state=task_state,
        name=q.get("name"),
        image_ref=q["image"].rstrip("/").rsplit("/", 1)[-1] if "image" in q else None,
        flavorid=q["flavor"].rstrip("/").rsplit("/", 1)[-1] if "flavor" in q else None,
        reservation_id=q.get("reservation_id"),
        key_name=q.get("key_name"),
        availability_zone=q.get("availability_zone"),
        user_id=q.get("user_id"),
        host=q.get("host") if ctx.is_admin else None,
        node=q.get("node") if ctx.is_admin else None,
        ip=q.get("ip"),
    )
    sort = _sort_order(request)
    flags = ViewFlags.of(mv, ctx, show=False)
    async with rt.db.connect() as conn:
        page = await list_servers(conn, filters, sort=sort, limit=limit, marker=marker)
        rows = page.rows
        if detail:
            pending = cached_detail_views(request, rows, flags)
            extras = await load_extras(conn, pending.missing, host_status=False)
            host_status = (
                await load_extras(
                    conn, rows, contents=False, faults=False, host_status=True, down_time=rt.settings.service_down_time
                )
                if flags.host_status
                else None
            )
    if detail:
        views = detail_views(request, pending, extras, mv, ctx, host_status)
    else:
        views = [server_view(request, r, None, mv, ctx, detail=False) for r in rows]
    body: dict[str, Any] = {"servers": views}
    if page.has_more or (limit and limit < MAX_LIMIT and len(rows) == limit and "limit" in q):
        body["servers_links"] = [next_link(request, "servers/detail" if detail else "servers", rows[-1].uuid, limit)]
    return json_response(body)


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
        row = await records.visible_instance(conn, ctx, server_id)
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
        values["access_ip_v4"] = canonical_ip(body["accessIPv4"])
    if "accessIPv6" in body:
        values["access_ip_v6"] = canonical_ip(body["accessIPv6"])
    if "hostname" in body:
        values["hostname"] = sanitize_hostname(body["hostname"])
    rt = runtime(request)
    async with rt.db.begin() as conn:
        await records.visible_instance(conn, ctx, server_id, lock=True)
        if values:
            await records.update_instance(conn, server_id, **values)
    return json_response(await show_body(request, server_id))


# -- delete -------------------------------------------------------------------------------------


@routes.delete("/v2.1/servers/{server_id}")
async def delete(request: web.Request) -> web.Response:
    """Delete a server, or soft-delete it when ``reclaim_instance_interval`` > 0 (Nova's
    deferred delete: powered off, SOFT_DELETED, restorable until the conductor reclaims it).

    As Nova, only a server that was launched on a host that is up is soft-deleted: one that
    never ran, or whose host is down, is deleted for good at once. Deleting a server that is
    already soft-deleted changes nothing while its host is up (``forceDelete`` deletes it now)."""
    ctx = context(request)
    require_member(ctx, "os_compute_api:servers:delete")
    rt = runtime(request)
    server_id = request.match_info["server_id"]
    deferred = rt.settings.reclaim_instance_interval > 0
    async with rt.db.begin() as conn:
        row = await records.visible_instance(conn, ctx, server_id, lock=True)
        if row.locked and not ctx.is_admin:
            raise Conflict(f"Instance {server_id} is locked")
        host_up = row.host is not None and await records.compute_host_is_up(
            conn, row.host, rt.settings.service_down_time
        )
        if deferred and host_up and states.is_soft_deleted(row.deleted, row.deleted_at):
            return web.Response(status=204)
        if deferred and host_up and row.launched_at is not None:
            await soft_delete_instance(conn, ctx, row)
        else:
            await delete_instance(conn, ctx, row, host_up=host_up)
    return web.Response(status=204)


async def soft_delete_instance(conn: Connection, ctx: RequestContext, row: Any) -> None:
    """Mark the instance SOFT_DELETED (``deleted_at`` = now starts the reclaim clock) and cast
    the guest's power-off through the outbox; its claim, port and quota stay."""
    changed = await records.update_instance(
        conn,
        row.uuid,
        expect={"deleted": False, "vm_state": row.vm_state, "task_state": row.task_state},
        vm_state=states.SOFT_DELETED,
        task_state=states.POWERING_OFF,
        deleted_at=utcnow(),
    )
    if not changed:
        raise Conflict(f"Cannot 'delete' instance {row.uuid} while it is in task_state (changed concurrently)")
    await actions.start_action(conn, row.uuid, "delete", ctx.request_id, ctx.user_id, ctx.project_id)
    payload = await records.payload_from_row(conn, row)
    await cast_after_commit(conn, ctx, f"compute.{row.host}", "soft_delete_instance", instance=payload)


async def delete_instance(conn: Connection, ctx: RequestContext, row: Any, *, host_up: bool) -> None:
    """The delete itself (also ``forceDelete``'s): cast ``terminate_instance`` to the host's
    agent, or — no host, or its host down — delete here at once (Nova's local delete)."""
    server_id = row.uuid
    await actions.start_action(conn, server_id, "delete", ctx.request_id, ctx.user_id, ctx.project_id)
    shelve_image = shelve_image_to_delete(row)
    if shelve_image:
        # issue 11: as Nova, the shelve image goes with the server (the conductor deletes it),
        # also with a soft-deleted one (forceDelete), whose vm_state no longer says shelved.
        await cast_after_commit(
            conn, ctx, "conductor", "delete_shelved_image", instance_uuid=server_id, image_id=shelve_image
        )
    if not host_up:
        if row.host:
            log.warning(
                "servers.local_delete",
                instance=server_id,
                host=row.host,
                reason="compute host is down; its guest will be reported as unknown when it returns",
            )
        groups = await records.finalize_delete(conn, server_id)
        await actions.finish_action(conn, server_id, ctx.request_id)
        for topic, args in await server_ports.port_security_updates(conn, group_ids=groups):
            await cast_after_commit(conn, ctx, topic, "update_port_security", **args)
        return
    await records.update_instance(conn, server_id, task_state=states.DELETING)
    payload = await records.payload_from_row(conn, row)
    if row.vm_state == states.RESIZED:
        # As Nova's _confirm_resize_on_deleting: the source still keeps the original guest
        # and its disks for a revert; the delete confirms the move there first.
        mig = await migrations.instance_migration(conn, server_id, "finished")
        if mig is not None:
            await cast_after_commit(
                conn,
                ctx,
                f"compute.{mig.source_compute}",
                "clean_resize_source",
                instance=payload,
                migration=migrations.agent_payload(mig),
            )
    await cast_after_commit(conn, ctx, f"compute.{row.host}", "terminate_instance", instance=payload)
