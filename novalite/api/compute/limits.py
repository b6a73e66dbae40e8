"""``GET /limits``: the project's absolute limits and usage (rate limits are gone: ``[]``).

The field set follows Nova: 2.36 drops the network proxies (floating IPs, security
groups), 2.39 drops ``maxImageMeta``, 2.57 drops the file-injection limits.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from novalite.api.compute.common import require_admin
from novalite.api.compute.microversions import microversion
from novalite.api.http import context, json_response, runtime
from novalite.store.quotas import limits_for, usage_for

routes = web.RouteTableDef()

LIMIT_NAMES = {
    "ram": ["maxTotalRAMSize"],
    "instances": ["maxTotalInstances"],
    "cores": ["maxTotalCores"],
    "key_pairs": ["maxTotalKeypairs"],
    "floating_ips": ["maxTotalFloatingIps"],
    "metadata_items": ["maxServerMeta", "maxImageMeta"],
    "injected_files": ["maxPersonality"],
    "injected_file_content_bytes": ["maxPersonalitySize"],
    "security_groups": ["maxSecurityGroups"],
    "security_group_rules": ["maxSecurityGroupRules"],
    "server_groups": ["maxServerGroups"],
    "server_group_members": ["maxServerGroupMembers"],
}
USED_NAMES = {
    "totalRAMUsed": "ram",
    "totalCoresUsed": "cores",
    "totalInstancesUsed": "instances",
    "totalFloatingIpsUsed": "floating_ips",
    "totalSecurityGroupsUsed": "security_groups",
    "totalServerGroupsUsed": "server_groups",
}
FILTERED_2_36 = ("floating_ips", "security_groups", "security_group_rules")
FILTERED_2_57 = (*FILTERED_2_36, "injected_files", "injected_file_content_bytes")


def absolute_limits(mv: Any, limits: dict[str, int], usage: dict[str, int]) -> dict[str, int]:
    filtered: tuple[str, ...] = ()
    if mv.at_least("2.57"):
        filtered = FILTERED_2_57
    elif mv.at_least("2.36"):
        filtered = FILTERED_2_36
    out: dict[str, int] = {}
    for resource, names in LIMIT_NAMES.items():
        if resource in filtered:
            continue
        for name in names:
            if name == "maxImageMeta" and mv.at_least("2.39"):
                continue
            out[name] = limits[resource]
    for name, resource in USED_NAMES.items():
        if resource not in filtered:
            out[name] = usage.get(resource, 0)
    return out


@routes.get("/v2.1/limits")
async def show_limits(request: web.Request) -> web.Response:
    ctx = context(request)
    project_id = ctx.project_id or ""
    if "tenant_id" in request.query:
        project_id = request.query["tenant_id"]
        if project_id != ctx.project_id:
            require_admin(ctx, "os_compute_api:limits:other_project")
    rt = runtime(request)
    async with rt.db.connect() as conn:
        limits = await limits_for(conn, rt.settings, project_id)
        usage = await usage_for(conn, project_id)
    return json_response({"limits": {"rate": [], "absolute": absolute_limits(microversion(request), limits, usage)}})
