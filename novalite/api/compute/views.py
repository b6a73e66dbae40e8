"""The server view: Nova's representation of an instance, field by field per microversion.

Built from one instances row plus the :class:`~novalite.store.server_lists.Extras` the
store loads in bulk for a page (metadata, ports, faults, host status). Rendering is pure:
handlers load, then render.
"""

from __future__ import annotations

import functools
import hashlib
from collections import OrderedDict
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from novalite import states
from novalite.api.compute.common import compute_base
from novalite.api.compute.microversions import Microversion
from novalite.context import RequestContext
from novalite.store.server_lists import Extras
from novalite.store.server_ports import security_groups_view
from novalite.store.servers import instance_name
from novalite.timeutil import iso

#: Statuses whose ``progress`` Nova shows.
PROGRESS_STATUSES = {"ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING"}
FAULT_STATUSES = {"ERROR", "DELETED"}


def host_id(project_id: str, host: str | None) -> str:
    """Nova's ``hostId``: a per-project hash of the host, so users see co-location, not names."""
    if not host:
        return ""
    return _host_id(project_id, host)


@functools.lru_cache(maxsize=4096)
def _host_id(project_id: str, host: str) -> str:
    # A listing asks for the same few (project, host) pairs once per server.
    return hashlib.sha224((project_id + host).encode()).hexdigest()


def addresses(ports: list[Any]) -> dict[str, list[dict[str, Any]]]:
    result: dict[str, list[dict[str, Any]]] = {}
    for p in ports:
        if not p.ip:
            continue
        result.setdefault(p.network, []).append(
            {
                "version": 6 if ":" in p.ip else 4,
                "addr": p.ip,
                "OS-EXT-IPS:type": "fixed",
                "OS-EXT-IPS-MAC:mac_addr": p.mac,
            }
        )
    return result


def fault_view(fault: Any, ctx: RequestContext) -> dict[str, Any]:
    view = {"code": fault.code, "created": iso(fault.created_at), "message": fault.message}
    if ctx.is_admin or fault.code != 500:
        view["details"] = fault.details or ""
    return view


@dataclass(frozen=True)
class ViewFlags:
    """Which optional fields a view carries: decided once per request, not once per server."""

    admin: bool
    show: bool
    embedded_flavor: bool
    image_properties: bool
    srv_attr_extended: bool
    hostname_for_all: bool
    locked: bool
    host_status: bool
    description: bool
    tags: bool
    trusted_certs: bool
    server_groups: bool
    locked_reason: bool
    pinned_az: bool
    scheduler_hints: bool

    @classmethod
    def of(cls, mv: Microversion, ctx: RequestContext, show: bool) -> ViewFlags:
        return cls(
            admin=ctx.is_admin,
            show=show,
            embedded_flavor=mv.at_least("2.47"),
            image_properties=mv.at_least("2.98"),
            srv_attr_extended=mv.at_least("2.3"),
            hostname_for_all=mv.at_least("2.90"),
            locked=mv.at_least("2.9"),
            host_status=mv.at_least("2.16") and ctx.is_admin,
            description=mv.at_least("2.19"),
            tags=mv.at_least("2.26"),
            trusted_certs=mv.at_least("2.63"),
            server_groups=mv.at_least("2.71") and show,
            locked_reason=mv.at_least("2.73"),
            pinned_az=mv.at_least("2.96"),
            scheduler_hints=mv.at_least("2.100"),
        )


def server_view(
    request: web.Request,
    row: Any,
    extras: Extras | None,
    mv: Microversion,
    ctx: RequestContext,
    *,
    detail: bool = True,
    show: bool = False,
    flags: ViewFlags | None = None,
) -> dict[str, Any]:
    """One server as ``GET /servers/{id}`` (show), ``/servers/detail`` or ``/servers`` shows it.

    Listings pass ``flags`` (from :meth:`ViewFlags.of`) so the microversion is consulted
    once per request.
    """
    base = compute_base(request)
    links = [
        {"rel": "self", "href": f"{base}/v2.1/servers/{row.uuid}"},
        {"rel": "bookmark", "href": f"{base}/servers/{row.uuid}"},
    ]
    if not detail:
        return {"id": row.uuid, "name": row.display_name, "links": links}
    assert extras is not None
    f = flags or ViewFlags.of(mv, ctx, show)
    # A soft-deleted server shows SOFT_DELETED even if its power-off failed (see states.is_soft_deleted).
    vm_state = states.shown_vm_state(row.vm_state, row.deleted, row.deleted_at)
    status = states.status(vm_state, row.task_state)
    flavor = row.flavor or {}
    if f.embedded_flavor:
        flavor_body: dict[str, Any] = {
            "vcpus": flavor.get("vcpus", row.vcpus),
            "ram": flavor.get("memory_mb", row.memory_mb),
            "disk": flavor.get("root_gb", row.root_gb),
            "ephemeral": flavor.get("ephemeral_gb", row.ephemeral_gb),
            "swap": flavor.get("swap", 0),
            "original_name": flavor.get("name", ""),
            "extra_specs": dict(flavor.get("extra_specs") or {}),
        }
    else:
        fid = flavor.get("flavorid", "")
        flavor_body = {"id": fid, "links": [{"rel": "bookmark", "href": f"{base}/flavors/{fid}"}]}
    image_meta = row.image_meta or {}
    image: Any = ""
    if row.image_ref:
        image = {"id": row.image_ref, "links": [{"rel": "bookmark", "href": f"{base}/images/{row.image_ref}"}]}
        if f.image_properties:
            image["properties"] = dict(image_meta.get("properties") or {})
    view: dict[str, Any] = {
        "id": row.uuid,
        "name": row.display_name,
        "status": status,
        "tenant_id": row.project_id,
        "user_id": row.user_id,
        "metadata": dict(extras.metadata.get(row.uuid, {})),
        "hostId": host_id(row.project_id, row.host),
        "image": image,
        "flavor": flavor_body,
        "created": iso(row.created_at),
        "updated": iso(row.updated_at),
        # Nova hides a server's addresses while it builds.
        "addresses": {} if row.vm_state == states.BUILDING else addresses(extras.ports.get(row.uuid, [])),
        "accessIPv4": row.access_ip_v4 or "",
        "accessIPv6": row.access_ip_v6 or "",
        "links": links,
        "OS-DCF:diskConfig": "MANUAL",
    }
    if status in PROGRESS_STATUSES:
        view["progress"] = row.progress or 0
    view["OS-EXT-AZ:availability_zone"] = row.availability_zone or ""
    view["config_drive"] = "True" if row.config_drive else ""
    view["key_name"] = row.key_name
    view["OS-SRV-USG:launched_at"] = _usg(row.launched_at)
    view["OS-SRV-USG:terminated_at"] = _usg(row.terminated_at)
    groups = security_groups_view(extras.ports.get(row.uuid, []), extras.group_names)
    if groups:  # Nova: from the ports' groups, and no key for a server without any
        view["security_groups"] = groups
    if f.admin:
        view["OS-EXT-SRV-ATTR:host"] = row.host
        view["OS-EXT-SRV-ATTR:instance_name"] = instance_name(row.id)
        view["OS-EXT-SRV-ATTR:hypervisor_hostname"] = row.node
        if f.srv_attr_extended:
            props = image_meta.get("properties") or {}
            view["OS-EXT-SRV-ATTR:reservation_id"] = row.reservation_id
            view["OS-EXT-SRV-ATTR:launch_index"] = row.launch_index
            view["OS-EXT-SRV-ATTR:hostname"] = row.hostname
            view["OS-EXT-SRV-ATTR:kernel_id"] = props.get("kernel_id", "")
            view["OS-EXT-SRV-ATTR:ramdisk_id"] = props.get("ramdisk_id", "")
            view["OS-EXT-SRV-ATTR:root_device_name"] = "/dev/vda"
            view["OS-EXT-SRV-ATTR:user_data"] = row.user_data
    elif f.hostname_for_all:
        view["OS-EXT-SRV-ATTR:hostname"] = row.hostname
    view["OS-EXT-STS:task_state"] = row.task_state
    view["OS-EXT-STS:vm_state"] = vm_state
    view["OS-EXT-STS:power_state"] = row.power_state
    view["os-extended-volumes:volumes_attached"] = []
    if status in FAULT_STATUSES and row.uuid in extras.faults:
        view["fault"] = fault_view(extras.faults[row.uuid], ctx)
    if f.locked:
        view["locked"] = bool(row.locked)
    if f.host_status:
        view["host_status"] = _host_status(row, extras)
    if f.description:
        view["description"] = row.display_description
    if f.tags:
        view["tags"] = list(row.tags or [])
    if f.trusted_certs:
        view["trusted_image_certificates"] = None
    if f.server_groups:
        view["server_groups"] = []
    if f.locked_reason:
        view["locked_reason"] = row.locked_reason
    if f.pinned_az:
        view["pinned_availability_zone"] = row.requested_az
    if f.scheduler_hints:
        hints = row.scheduler_hints
        view["scheduler_hints"] = {k: v for k, v in hints.items() if k != "force_host"} if hints else {}
    return view


#: Rendered detail views by (uuid, updated_at, state columns, flags, base URL). Every change
#: to an instance, or to what its view shows (metadata, faults, ports), bumps its
#: ``updated_at``, so an entry is never stale; dashboards polling ``/servers/detail`` then
#: pay for the SQL and the changed servers only. ``host_status`` (the host's liveness, not
#: the instance's) is never cached.
_VIEW_CACHE: OrderedDict[tuple[Any, ...], dict[str, Any]] = OrderedDict()
VIEW_CACHE_SIZE = 20000
#: Each distinct set of view flags seen, numbered (a few dozen combinations exist).
_FLAG_IDS: dict[ViewFlags, int] = {}


@dataclass
class PendingViews:
    """A page of detail views: those found in the cache, and the rows still to render."""

    rows: list[Any]
    keys: list[tuple[Any, ...]]
    cached: dict[tuple[Any, ...], dict[str, Any]]
    flags: ViewFlags  # without host_status: that is never cached
    missing: list[Any]  # the rows whose extras the caller loads before rendering


def cached_detail_views(request: web.Request, rows: list[Any], flags: ViewFlags) -> PendingViews:
    """Look ``rows`` up in the view cache; the caller loads extras for ``.missing`` only."""
    base = compute_base(request)
    cached_flags = replace(flags, host_status=False)
    # The flags as a small number in the key: a key is hashed several times per server, and
    # hashing the 15-field dataclass each time was a tenth of a cold listing.
    flag_id = _FLAG_IDS.setdefault(cached_flags, len(_FLAG_IDS))
    keys = [(r.uuid, r.updated_at, r.vm_state, r.task_state, r.power_state, r.host, flag_id, base) for r in rows]
    cached = {key: _VIEW_CACHE[key] for key in keys if key in _VIEW_CACHE}
    missing = [r for r, key in zip(rows, keys, strict=True) if key not in cached]
    return PendingViews(rows, keys, cached, cached_flags, missing)


def detail_views(
    request: web.Request,
    pending: PendingViews,
    extras: Extras,
    mv: Microversion,
    ctx: RequestContext,
    host_status: Extras | None = None,
) -> list[dict[str, Any]]:
    """``/servers/detail`` bodies, rendering only the servers that changed (``extras`` covers
    ``pending.missing``); with ``host_status`` (loaded for all rows) each view gets its host's."""
    rendered = dict(pending.cached)
    for r, key in zip(pending.rows, pending.keys, strict=True):
        if key not in rendered:
            rendered[key] = _VIEW_CACHE[key] = server_view(request, r, extras, mv, ctx, flags=pending.flags)
    views = [rendered[key] for key in pending.keys]
    for key in pending.keys:
        if key in _VIEW_CACHE:
            _VIEW_CACHE.move_to_end(key)
    while len(_VIEW_CACHE) > VIEW_CACHE_SIZE:
        _VIEW_CACHE.popitem(last=False)
    if host_status is not None:
        views = [dict(v, host_status=_host_status(r, host_status)) for v, r in zip(views, pending.rows, strict=True)]
    return views


def _usg(value: Any) -> str | None:
    """``OS-SRV-USG`` timestamps use Nova's microsecond format without a zone."""
    return value.isoformat(timespec="microseconds") if value else None


def _host_status(row: Any, extras: Extras) -> str:
    if not row.host:
        return ""
    state = extras.host_up.get(row.host)
    if state is None:
        return "UNKNOWN"
    up, disabled = state
    if not up:
        return "DOWN"
    return "MAINTENANCE" if disabled else "UP"
