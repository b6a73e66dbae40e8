"""Server actions that copy or renew a server (issue 11): createImage, createBackup,
rebuild, shelve / shelveOffload / unshelve.

Registered on the same ``POST /servers/{id}/action`` endpoint as the power actions
(:func:`novalite.api.compute.server_actions.register`).

createImage / createBackup (Nova's ``compute_api.snapshot`` / ``backup``): the image is
created here, ``queued``, owned by the server's project, with the server's image properties
and ``image_type``, ``instance_uuid``, ``base_image_ref``, ``user_id`` (and ``backup_type``);
the server's task state and the agent's cast commit with it. The agent uploads the data with
an upload ticket for that one image (:mod:`novalite.agent.snapshots`). As Nova, neither
action checks the server's lock (a lock guards against changes, and a snapshot changes
nothing); both need the server ACTIVE, SHUTOFF, PAUSED or SUSPENDED with no task under way.

rebuild: a new root disk from a new image on the same host (ACTIVE, SHUTOFF or ERROR, not
locked), answered with the server as Nova shows it.
"""

from __future__ import annotations

import secrets
import uuid as uuidlib
from typing import Any

from aiohttp import web

from novalite import states
from novalite.api.compute import server_actions
from novalite.api.compute.common import compute_base, require_admin, require_member
from novalite.api.compute.microversions import Microversion, microversion
from novalite.api.compute.servers import _check_image_fits, _decode_user_data, sanitize_hostname, show_body
from novalite.api.errors import BadRequest, Conflict, Forbidden
from novalite.api.http import context, json_response, runtime
from novalite.api.validation import metadata_schema, name_schema, validate
from novalite.context import RequestContext
from novalite.errors import NotFound, QuotaExceeded
from novalite.relay import cast_after_commit
from novalite.store import Connection, actions, hosts, keypairs
from novalite.store import images as image_records
from novalite.store import servers as records
from novalite.timeutil import utcnow

routes = web.RouteTableDef()

#: Image properties a snapshot does not inherit from the server's image (Nova's
#: NON_INHERITABLE_IMAGE_PROPERTIES, and what a snapshot sets itself).
NON_INHERITABLE = frozenset(
    {
        "cinder_encryption_key_id",
        "cinder_encryption_key_deletion_policy",
        "img_signature",
        "img_signature_hash_method",
        "img_signature_key_type",
        "img_signature_certificate_uuid",
        "image_type",
        "instance_uuid",
        "backup_type",
        "base_image_ref",
        "user_id",
        "instance_owner",
    }
)
#: vm_states a server may be snapshotted or backed up in (Nova's check_instance_state).
SNAPSHOT_VM_STATES = (states.ACTIVE, states.STOPPED, states.PAUSED, states.SUSPENDED)
REBUILD_VM_STATES = (states.ACTIVE, states.STOPPED, states.ERROR)

CREATE_IMAGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "createImage": {
            "type": "object",
            "properties": {"name": name_schema(), "metadata": metadata_schema},
            "required": ["name"],
            "additionalProperties": False,
        }
    },
    "required": ["createImage"],
    "additionalProperties": False,
}
CREATE_BACKUP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "createBackup": {
            "type": "object",
            "properties": {
                "name": name_schema(),
                "backup_type": {"type": "string"},
                "rotation": {"type": ["integer", "string"], "pattern": "^[0-9]+$", "minimum": 0},
                "metadata": metadata_schema,
            },
            "required": ["name", "backup_type", "rotation"],
            "additionalProperties": False,
        }
    },
    "required": ["createBackup"],
    "additionalProperties": False,
}


def _conflict(action: str, server_id: str, attr: str, state: Any) -> Conflict:
    return Conflict(f"Cannot '{action}' instance {server_id} while it is in {attr} {state}")


def check_state(
    row: Any, action: str, vm_states: tuple[str, ...], task_states: tuple[str | None, ...] = (None,)
) -> None:
    """Nova's ``check_instance_state``: the vm_state first, then the task state (409 otherwise)."""
    vm_state = states.shown_vm_state(row.vm_state, row.deleted, row.deleted_at)
    if vm_state not in vm_states:
        raise _conflict(action, row.uuid, "vm_state", vm_state)
    if row.task_state not in task_states:
        raise _conflict(action, row.uuid, "task_state", row.task_state)


async def check_host_up(conn: Connection, request: web.Request, row: Any, action: str) -> None:
    """409 rather than a cast to a host that would never answer."""
    rt = runtime(request)
    if not row.host or not await records.compute_host_is_up(conn, row.host, rt.settings.service_down_time):
        raise Conflict(
            f"Cannot '{action}' instance {row.uuid}: its compute host {row.host or '(none)'} is down or unreachable."
        )


def snapshot_properties(
    ctx: RequestContext, row: Any, image_type: str, extra: dict[str, str]
) -> tuple[str, dict[str, str]]:
    """The visibility and properties of a new snapshot of ``row`` (Nova's
    ``initialize_instance_snapshot_metadata``): the server's image properties less the
    non-inheritable ones, then the snapshot's own, then the user's ``extra``."""
    inherited = dict(((row.image_meta or {}).get("properties")) or {})
    props = {k: str(v) for k, v in inherited.items() if k not in NON_INHERITABLE}
    props.update(
        instance_uuid=row.uuid,
        user_id=str(ctx.user_id),
        image_type=image_type,
        base_image_ref=row.image_ref or "",
    )
    visibility = "private"
    if ctx.project_id != row.project_id:
        # Nova: an admin's snapshot of another project's server is shared with its owner.
        visibility = "shared"
        props["instance_owner"] = row.project_id
    props.update(extra)
    return visibility, props


async def start_snapshot(
    request: web.Request,
    *,
    action: str,
    name: str,
    metadata: dict[str, str],
    backup_type: str | None = None,
    rotation: int | None = None,
) -> str:
    """Create the snapshot's image and hand the snapshot to the server's host; its image id."""
    ctx = context(request)
    rt = runtime(request)
    server_id = request.match_info["server_id"]
    image_type = "snapshot" if backup_type is None else "backup"
    extra = dict(metadata)
    if backup_type is not None:
        extra["backup_type"] = backup_type
    image_id = str(uuidlib.uuid4())
    async with rt.db.begin() as conn:
        row = await records.visible_instance(conn, ctx, server_id, lock=True)
        check_state(row, action, SNAPSHOT_VM_STATES)
        await check_host_up(conn, request, row, action)
        visibility, props = snapshot_properties(ctx, row, image_type, extra)
        image_meta = row.image_meta or {}
        await image_records.create_image(
            conn,
            image_id,
            image_records.ImageValues(
                name=name,
                visibility=visibility,
                disk_format=image_meta.get("disk_format") or "raw",
                container_format=image_meta.get("container_format") or "bare",
                min_disk=max(int(image_meta.get("min_disk") or 0), int(row.root_gb or 0)),
                min_ram=int(image_meta.get("min_ram") or 0),
                owner=row.project_id,
                tags=[],
                properties=props,
            ),
        )
        if visibility == "shared":
            await image_records.add_member(conn, image_id, row.project_id)
            await image_records.set_member_status(conn, image_id, row.project_id, "accepted")
        task_state = states.IMAGE_SNAPSHOT_PENDING if backup_type is None else states.IMAGE_BACKUP
        changed = await records.update_instance(
            conn, server_id, expect={"vm_state": row.vm_state, "task_state": None}, task_state=task_state
        )
        if not changed:
            raise _conflict(action, server_id, "task_state", "(changed concurrently)")
        await actions.start_action(conn, server_id, action, ctx.request_id, ctx.user_id, ctx.project_id)
        payload = await records.payload_from_row(conn, row)
        payload["task_state"] = task_state
        args: dict[str, Any] = {"instance": payload, "image_id": image_id}
        if backup_type is not None:
            args.update(backup_type=backup_type, rotation=rotation)
        await cast_after_commit(conn, ctx, f"compute.{row.host}", "snapshot_instance", **args)
    return image_id


def check_metadata_quota(request: web.Request, metadata: dict[str, str]) -> None:
    """Before 2.39 Nova counts the image metadata against ``metadata_items`` (403)."""
    if microversion(request).below("2.39") and len(metadata) > runtime(request).settings.quota_metadata_items:
        raise Forbidden("Image metadata limit exceeded")


async def _create_image(request: web.Request, body: Any) -> web.Response:
    ctx = context(request)
    require_member(ctx, "os_compute_api:servers:create_image")
    args = validate({"createImage": body}, CREATE_IMAGE_SCHEMA)["createImage"]
    metadata = dict(args.get("metadata") or {})
    check_metadata_quota(request, metadata)
    image_id = await start_snapshot(request, action="createImage", name=args["name"], metadata=metadata)
    if microversion(request).at_least("2.45"):
        return json_response({"image_id": image_id}, 202)
    # Nova's glance.generate_image_url: the image service's endpoint, then images/<id>.
    location = f"{runtime(request).settings.public_base}/image/images/{image_id}"
    return web.Response(status=202, headers={"Location": location})


async def _create_backup(request: web.Request, body: Any) -> web.Response:
    ctx = context(request)
    require_member(ctx, "os_compute_api:os-create-backup")
    args = validate({"createBackup": body}, CREATE_BACKUP_SCHEMA)["createBackup"]
    rotation = int(args["rotation"])
    metadata = dict(args.get("metadata") or {})
    check_metadata_quota(request, metadata)
    image_id = await start_snapshot(
        request,
        action="createBackup",
        name=args["name"],
        metadata=metadata,
        backup_type=args["backup_type"],
        rotation=rotation,
    )
    if microversion(request).at_least("2.45"):
        return json_response({"image_id": image_id}, 202)
    headers = {}
    if rotation > 0:
        # Nova: url_join(application_url, 'images', id), and no Location when rotation is 0.
        headers["Location"] = f"{compute_base(request)}/v2.1/images/{image_id}"
    return web.Response(status=202, headers=headers)


# -- rebuild ------------------------------------------------------------------------------------

#: Fields of ``rebuild`` and the microversion that brings each (absent: every version).
REBUILD_FIELDS_SINCE = {
    "description": "2.19",
    "key_name": "2.54",
    "user_data": "2.57",
    "trusted_image_certificates": "2.63",
    "hostname": "2.90",
}


def _rebuild_schema(mv: Microversion) -> dict[str, Any]:
    props: dict[str, Any] = {
        "imageRef": {"type": "string", "minLength": 1},
        "name": name_schema(),
        "adminPass": {"type": "string"},
        "metadata": metadata_schema,
        "preserve_ephemeral": {"type": "boolean"},
        "accessIPv4": {"type": "string"},
        "accessIPv6": {"type": "string"},
        "OS-DCF:diskConfig": {"type": "string", "enum": ["AUTO", "MANUAL"]},
        "description": {"type": ["string", "null"], "maxLength": 255},
        "key_name": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
        "user_data": {"type": ["string", "null"], "maxLength": 65535},
        "trusted_image_certificates": {"type": ["array", "null"]},
        "hostname": {"type": "string", "minLength": 1, "maxLength": 255},
    }
    if mv.below("2.57"):
        props["personality"] = {"type": "array"}
    for name, since in REBUILD_FIELDS_SINCE.items():
        if mv.below(since):
            props.pop(name)
    return {
        "type": "object",
        "properties": {
            "rebuild": {
                "type": "object",
                "properties": props,
                "required": ["imageRef"],
                "additionalProperties": False,
            }
        },
        "required": ["rebuild"],
        "additionalProperties": False,
    }


_REBUILD_SCHEMAS: dict[tuple[bool, ...], dict[str, Any]] = {}


def rebuild_schema(mv: Microversion) -> dict[str, Any]:
    """One compiled schema per set of fields (the validator cache keys on the schema object)."""
    key = (mv.below("2.57"), *(mv.below(v) for v in REBUILD_FIELDS_SINCE.values()))
    schema = _REBUILD_SCHEMAS.get(key)
    if schema is None:
        schema = _REBUILD_SCHEMAS[key] = _rebuild_schema(mv)
    return schema


#: What Nova's rebuild answer leaves out before 2.75 (it shows everything from then on).
REBUILD_HIDDEN_BEFORE_275 = (
    "OS-EXT-AZ:availability_zone",
    "config_drive",
    "OS-SRV-USG:launched_at",
    "OS-SRV-USG:terminated_at",
    "security_groups",
    "OS-EXT-STS:task_state",
    "OS-EXT-STS:vm_state",
    "OS-EXT-STS:power_state",
    "os-extended-volumes:volumes_attached",
    "host_status",
)


def rebuild_view(view: dict[str, Any], mv: Microversion) -> dict[str, Any]:
    """The server as Nova's rebuild answers it, from the show view."""
    if mv.below("2.75"):
        for key in REBUILD_HIDDEN_BEFORE_275:
            view.pop(key, None)
        for key in [k for k in view if k.startswith("OS-EXT-SRV-ATTR:")]:
            view.pop(key)
    if mv.below("2.54"):
        view.pop("key_name", None)
    return view


async def _rebuild(request: web.Request, body: Any) -> web.Response:
    ctx = context(request)
    require_member(ctx, "os_compute_api:servers:rebuild")
    mv = microversion(request)
    rt = runtime(request)
    server_id = request.match_info["server_id"]
    args = validate({"rebuild": body}, rebuild_schema(mv))["rebuild"]
    if args.get("trusted_image_certificates"):
        raise BadRequest("Image certificate validation is not supported: novalite verifies no image signatures.")
    user_data = _decode_user_data(args["user_data"]) if args.get("user_data") is not None else None
    password = args.get("adminPass") or secrets.token_urlsafe(9)
    image_id = str(args["imageRef"]).rstrip("/").rsplit("/", 1)[-1]
    async with rt.db.begin() as conn:
        row = await records.visible_instance(conn, ctx, server_id, lock=True)
        if row.locked and not ctx.is_admin:
            raise Conflict(f"Instance {server_id} is locked")
        check_state(row, "rebuild", REBUILD_VM_STATES)
        await check_host_up(conn, request, row, "rebuild")
        values = await _rebuild_values(conn, ctx, row, args, image_id, user_data)
        if "metadata" in args:
            try:
                await records.set_metadata(
                    conn, server_id, args["metadata"], replace=True, max_items=rt.settings.quota_metadata_items
                )
            except QuotaExceeded as exc:
                raise Forbidden(str(exc)) from None
        changed = await records.update_instance(
            conn,
            server_id,
            expect={"vm_state": row.vm_state, "task_state": None},
            task_state=states.REBUILDING,
            **values,
        )
        if not changed:
            raise _conflict("rebuild", server_id, "task_state", "(changed concurrently)")
        await actions.start_action(conn, server_id, "rebuild", ctx.request_id, ctx.user_id, ctx.project_id)
        payload = await records.instance_payload(conn, server_id)
        await cast_after_commit(
            conn,
            ctx,
            f"compute.{row.host}",
            "rebuild_instance",
            instance=payload,
            preserve_ephemeral=bool(args.get("preserve_ephemeral", False)),
        )
    view = rebuild_view((await show_body(request, server_id))["server"], mv)
    view["adminPass"] = password
    if mv.at_least("2.57"):
        async with rt.db.connect() as conn:
            fresh = await records.get_instance(conn, server_id)
        view["user_data"] = fresh.user_data if fresh is not None else None
    base = compute_base(request)
    return json_response({"server": view}, 202, headers={"Location": f"{base}/v2.1/servers/{server_id}"})


async def _rebuild_values(
    conn: Connection, ctx: RequestContext, row: Any, args: dict[str, Any], image_id: str, user_data: str | None
) -> dict[str, Any]:
    """The instance columns a rebuild changes: the image (visible, active, fitting the
    flavor; 400 otherwise, as Nova), and what the request renames or replaces."""
    try:
        uuidlib.UUID(image_id)
        image = await image_records.get_image(conn, image_id, ctx)
    except ValueError:
        image = None
    if image is None:
        raise BadRequest("Cannot find image for rebuild")
    if image["status"] != image_records.ACTIVE:
        raise BadRequest(f"Image {image_id} is not active.")
    _check_image_fits(_FlavorOf(row), image)
    values: dict[str, Any] = {
        "image_ref": image_id,
        "image_meta": {
            "disk_format": image.get("disk_format"),
            "container_format": image.get("container_format"),
            "min_disk": image.get("min_disk", 0),
            "min_ram": image.get("min_ram", 0),
            "properties": image.get("properties", {}),
        },
    }
    if "name" in args:
        values["display_name"] = args["name"]
    if "description" in args:
        values["display_description"] = args["description"]
    if "accessIPv4" in args:
        values["access_ip_v4"] = args["accessIPv4"] or None
    if "accessIPv6" in args:
        values["access_ip_v6"] = args["accessIPv6"] or None
    if "hostname" in args:
        values["hostname"] = sanitize_hostname(args["hostname"])
    if "user_data" in args:
        values["user_data"] = user_data
    if "key_name" in args:
        if args["key_name"] is None:
            values.update(key_name=None, key_data=None)
        else:
            try:
                key = await keypairs.get_keypair(conn, ctx.user_id or "", args["key_name"])
            except NotFound:
                raise BadRequest("Invalid key_name provided.") from None
            values.update(key_name=args["key_name"], key_data=key.public_key)
    return values


class _FlavorOf:
    """The flavor fields ``_check_image_fits`` reads, from the instance's flavor snapshot."""

    def __init__(self, row: Any) -> None:
        flavor = row.flavor or {}
        self.root_gb = int(flavor.get("root_gb", row.root_gb) or 0)
        self.memory_mb = int(flavor.get("memory_mb", row.memory_mb) or 0)
        self.flavorid = flavor.get("flavorid", "")
        self.name = flavor.get("name", "")


# -- shelve ------------------------------------------------------------------------------------

SHELVE_VM_STATES = (states.ACTIVE, states.STOPPED, states.PAUSED, states.SUSPENDED)


async def _locked_row(request: web.Request, conn: Connection) -> Any:
    ctx = context(request)
    server_id = request.match_info["server_id"]
    row = await records.visible_instance(conn, ctx, server_id, lock=True)
    if row.locked and not ctx.is_admin:
        raise Conflict(f"Instance {server_id} is locked")
    return row


async def _shelve(request: web.Request, body: Any) -> web.Response:
    """Snapshot the server into a ``<name>-shelved`` image and power it off (SHELVED); with
    ``shelved_offload_time`` 0 (the default) also offload it at once (SHELVED_OFFLOADED)."""
    ctx = context(request)
    require_member(ctx, "os_compute_api:os-shelve:shelve")
    rt = runtime(request)
    image_id = str(uuidlib.uuid4())
    async with rt.db.begin() as conn:
        row = await _locked_row(request, conn)
        check_state(row, "shelve", SHELVE_VM_STATES)
        await check_host_up(conn, request, row, "shelve")
        visibility, props = snapshot_properties(ctx, row, "snapshot", {})
        image_meta = row.image_meta or {}
        await image_records.create_image(
            conn,
            image_id,
            image_records.ImageValues(
                name=f"{row.display_name}-shelved",
                visibility=visibility,
                disk_format=image_meta.get("disk_format") or "raw",
                container_format=image_meta.get("container_format") or "bare",
                min_disk=max(int(image_meta.get("min_disk") or 0), int(row.root_gb or 0)),
                min_ram=int(image_meta.get("min_ram") or 0),
                owner=row.project_id,
                tags=[],
                properties=props,
            ),
        )
        sysmeta = dict(row.system_metadata or {})
        sysmeta.update(shelved_image_id=image_id, shelved_at=utcnow().isoformat(), shelved_host=row.host)
        changed = await records.update_instance(
            conn,
            row.uuid,
            expect={"vm_state": row.vm_state, "task_state": None},
            task_state=states.SHELVING,
            system_metadata=sysmeta,
        )
        if not changed:
            raise _conflict("shelve", row.uuid, "task_state", "(changed concurrently)")
        await actions.start_action(conn, row.uuid, "shelve", ctx.request_id, ctx.user_id, ctx.project_id)
        payload = await records.payload_from_row(conn, row)
        offload = rt.settings.shelved_offload_time == 0
        await cast_after_commit(
            conn, ctx, f"compute.{row.host}", "shelve_instance", instance=payload, image_id=image_id, offload=offload
        )
    return web.Response(status=202)


async def _shelve_offload(request: web.Request, body: Any) -> web.Response:
    """Destroy a SHELVED server's guest and free its host's resources (admin, as Nova)."""
    ctx = context(request)
    rt = runtime(request)
    async with rt.db.begin() as conn:
        # The server first, then the policy (Nova's order): another project's server is 404.
        row = await _locked_row(request, conn)
        require_admin(ctx, "os_compute_api:os-shelve:shelve_offload")
        check_state(row, "shelveOffload", (states.SHELVED,))
        await check_host_up(conn, request, row, "shelveOffload")
        changed = await records.update_instance(
            conn,
            row.uuid,
            expect={"vm_state": states.SHELVED, "task_state": None},
            task_state=states.SHELVING_OFFLOADING,
        )
        if not changed:
            raise _conflict("shelveOffload", row.uuid, "task_state", "(changed concurrently)")
        await actions.start_action(conn, row.uuid, "shelveOffload", ctx.request_id, ctx.user_id, ctx.project_id)
        payload = await records.payload_from_row(conn, row)
        await cast_after_commit(conn, ctx, f"compute.{row.host}", "shelve_offload_instance", instance=payload)
    return web.Response(status=202)


UNSHELVE_277_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {"availability_zone": {"type": "string", "minLength": 1, "maxLength": 255}},
    "additionalProperties": False,
}
UNSHELVE_291_SCHEMA: dict[str, Any] = {
    "type": ["object", "null"],
    "properties": {
        "availability_zone": {"type": ["string", "null"], "minLength": 1, "maxLength": 255},
        "host": {"type": "string", "minLength": 1, "maxLength": 255},
    },
    "additionalProperties": False,
}


async def _unshelve(request: web.Request, body: Any) -> web.Response:
    """SHELVED: power the kept guest on. SHELVED_OFFLOADED: schedule it anew (the conductor,
    as a build) and boot it from its shelve image. Either way the image is deleted after."""
    ctx = context(request)
    require_member(ctx, "os_compute_api:os-shelve:unshelve")
    mv = microversion(request)
    rt = runtime(request)
    az: str | None = None
    host: str | None = None
    if mv.below("2.77"):
        if body is not None:
            raise BadRequest(
                f"Invalid input for field/attribute unshelve. Value: {body}. {body!r} is not of type 'null'"
            )
    else:
        schema = UNSHELVE_291_SCHEMA if mv.at_least("2.91") else UNSHELVE_277_SCHEMA
        args = validate({"unshelve": body}, {"type": "object", "properties": {"unshelve": schema}})
        az = (args["unshelve"] or {}).get("availability_zone")
        host = (args["unshelve"] or {}).get("host")
        if host is not None:
            require_admin(ctx, "os_compute_api:os-shelve:unshelve_to_host")
    async with rt.db.begin() as conn:
        row = await _locked_row(request, conn)
        check_state(row, "unshelve", (states.SHELVED, states.SHELVED_OFFLOADED))
        offloaded = row.vm_state == states.SHELVED_OFFLOADED
        if host is not None and not offloaded:
            raise Conflict(
                f"The host parameter may only be given to unshelve a shelved offloaded server: "
                f"{row.uuid} is in vm_state {row.vm_state}."
            )
        if host is not None and host not in {
            s.host for s in await hosts.list_services(conn, binary=hosts.COMPUTE_BINARY)
        }:
            raise BadRequest(f"Compute host {host} could not be found.")
        if az is not None and not offloaded:
            raise Conflict(
                f"The availability_zone parameter may only be given to unshelve a shelved offloaded server: "
                f"{row.uuid} is in vm_state {row.vm_state}."
            )
        if not offloaded:
            await check_host_up(conn, request, row, "unshelve")
        changed = await records.update_instance(
            conn, row.uuid, expect={"vm_state": row.vm_state, "task_state": None}, task_state=states.UNSHELVING
        )
        if not changed:
            raise _conflict("unshelve", row.uuid, "task_state", "(changed concurrently)")
        await actions.start_action(conn, row.uuid, "unshelve", ctx.request_id, ctx.user_id, ctx.project_id)
        if offloaded:
            await cast_after_commit(
                conn, ctx, "conductor", "unshelve_instance", instance_uuid=row.uuid, availability_zone=az, host=host
            )
        else:
            payload = await records.payload_from_row(conn, row)
            await cast_after_commit(conn, ctx, f"compute.{row.host}", "unshelve_instance", instance=payload)
    return web.Response(status=202)


server_actions.register("shelve", _shelve)
server_actions.register("shelveOffload", _shelve_offload)
server_actions.register("unshelve", _unshelve)
server_actions.register("createImage", _create_image)
server_actions.register("createBackup", _create_backup)
server_actions.register("rebuild", _rebuild)
