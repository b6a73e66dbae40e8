"""The network service's records: networks, subnets, ports, security groups (Neutron v2.0 subset).

Every function takes the caller's :class:`~novalite.context.RequestContext`: a project sees
its own resources (and shared networks), an admin sees all. What a project may not see is
"not found", never "forbidden", so ids of other projects' resources reveal nothing.

Errors are :class:`NetworkError` subclasses of the domain errors, carrying Neutron's
exception name (``type``) so the API answers with Neutron's error body.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
import re
import uuid as uuidlib
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from novalite import errors
from novalite.config import Settings
from novalite.context import RequestContext
from novalite.db import Connection
from novalite.db import schema as t
from novalite.store import ipam
from novalite.timeutil import utcnow

# -- errors -------------------------------------------------------------------------------


class NetworkError(errors.NovaliteError):
    """A refusal in Neutron's terms: ``type`` is Neutron's exception name."""

    type = "NeutronError"

    def __init__(self, message: str, type_: str | None = None) -> None:
        super().__init__(message)
        if type_:
            self.type = type_


class BadInput(NetworkError, errors.Invalid):
    type = "HTTPBadRequest"


class NotVisible(NetworkError, errors.NotFound):
    type = "HTTPNotFound"


class InConflict(NetworkError, errors.Conflict):
    type = "Conflict"


class NotAllowed(NetworkError, errors.Forbidden):
    type = "PolicyNotAuthorized"


def invalid(field: str, reason: str) -> BadInput:
    """Neutron's 400 for one attribute: ``Invalid input for <field>. Reason: <reason>.``"""
    return BadInput(f"Invalid input for {field}. Reason: {reason}.")


def invalid_op(reason: str) -> BadInput:
    return BadInput(f"Invalid input for operation: {reason}.", "InvalidInput")


def not_found(kind: str, ident: str) -> NotVisible:
    """``Network <id> could not be found.`` (type ``NetworkNotFound``)."""
    label = {"SecurityGroup": "Security group", "SecurityGroupRule": "Security group rule"}.get(kind, kind)
    return NotVisible(f"{label} {ident} could not be found.", f"{kind}NotFound")


def policy(action: str) -> NotAllowed:
    return NotAllowed(f"(rule:{action}) is disallowed by policy")


# -- common -------------------------------------------------------------------------------

NETWORK_TYPES = ("flat", "vxlan", "local")
MAX_VNI = 2**24 - 1
OWNER_COMPUTE = "compute:nova"
_MAC = re.compile(r"^([0-9a-f]{2}:){5}[0-9a-f]{2}$")


def new_id() -> str:
    return str(uuidlib.uuid4())


def random_mac() -> str:
    """A locally administered unicast MAC in the fa:16:3e prefix Neutron uses."""
    return "fa:16:3e:" + ":".join(f"{random.randint(0, 255):02x}" for _ in range(3))


def _visible_project(ctx: RequestContext, column: Any) -> Any:
    return sa.true() if ctx.is_admin else column == ctx.project_id


#: What the caller sees of a project-owned table (compute's server_ports uses it too).
visible_project = _visible_project


def _stamp_update(values: dict[str, Any], table: Any) -> dict[str, Any]:
    return {**values, "updated_at": utcnow(), "revision_number": table.c.revision_number + 1}


def check_name(field: str, value: Any, limit: int = 255) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid(field, f"'{value}' is not a valid string")
    if len(value) > limit:
        raise invalid(field, f"'{value[:40]}...' exceeds maximum length of {limit}")
    return value


def check_bool(field: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid(field, f"'{value}' is not a valid boolean value")


def check_project(ctx: RequestContext, body: dict[str, Any]) -> str:
    """The owner of a new resource: the caller's project; only an admin names another one."""
    asked = body.get("project_id") or body.get("tenant_id")
    if asked and asked != ctx.project_id:
        if not ctx.is_admin:
            raise policy("create:project_id")
        return str(asked)
    return str(ctx.project_id)


# -- networks -----------------------------------------------------------------------------


async def get_network(conn: Connection, ctx: RequestContext, network_id: str, *, lock: bool = False) -> Any:
    """The network if the caller may see it (own, shared or admin), else NetworkNotFound."""
    n = t.networks
    query = sa.select(n).where(n.c.id == network_id)
    if not ctx.is_admin:
        query = query.where(sa.or_(n.c.project_id == ctx.project_id, n.c.shared.is_(True)))
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise not_found("Network", network_id)
    return row


async def list_networks(conn: Connection, ctx: RequestContext) -> list[Any]:
    n = t.networks
    query = sa.select(n).order_by(n.c.created_at, n.c.id)
    if not ctx.is_admin:
        query = query.where(sa.or_(n.c.project_id == ctx.project_id, n.c.shared.is_(True)))
    return list(await conn.execute(query))


async def subnet_ids_by_network(conn: Connection, network_ids: list[str]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {nid: [] for nid in network_ids}
    if network_ids:
        s = t.subnets
        rows = await conn.execute(
            sa.select(s.c.network_id, s.c.id).where(s.c.network_id.in_(network_ids)).order_by(s.c.created_at, s.c.id)
        )
        for r in rows:
            found[r.network_id].append(r.id)
    return found


def _provider(ctx: RequestContext, body: dict[str, Any]) -> dict[str, Any]:
    """The provider attributes asked for (admins only), checked; {} when none were given."""
    keys = ("provider:network_type", "provider:physical_network", "provider:segmentation_id")
    if not any(k in body for k in keys):
        return {}
    if not ctx.is_admin:
        raise policy("create_network:provider:network_type")
    ntype = body.get("provider:network_type")
    physnet = body.get("provider:physical_network")
    seg = body.get("provider:segmentation_id")
    if ntype not in NETWORK_TYPES:
        raise invalid_op(f"network_type value '{ntype}' not supported")
    if ntype == "flat":
        if not physnet or not isinstance(physnet, str):
            raise invalid_op("physical_network required for flat provider network")
        if seg is not None:
            raise invalid_op("segmentation_id specified for flat provider network")
    elif ntype == "vxlan":
        if physnet:
            raise invalid_op("provider:physical_network specified for vxlan network")
        if seg is not None and (isinstance(seg, bool) or not str(seg).isdigit() or not 1 <= int(seg) <= MAX_VNI):
            raise invalid_op(f"segmentation_id out of range (1 through {MAX_VNI})")
    elif physnet or seg is not None:
        raise invalid_op("provider:physical_network and provider:segmentation_id are not allowed for local networks")
    return {
        "provider_network_type": ntype,
        "provider_physical_network": physnet if ntype == "flat" else None,
        "provider_segmentation_id": int(seg) if seg is not None else None,
    }


async def _free_vni(conn: Connection) -> int:
    """The lowest VNI no vxlan network has (a tenant network's default segment)."""
    n = t.networks
    used = {
        r[0]
        for r in await conn.execute(sa.select(n.c.provider_segmentation_id).where(n.c.provider_network_type == "vxlan"))
    }
    vni = 1
    while vni in used:
        vni += 1
    return vni


def _mtu(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 68 <= value <= 9000:
        raise invalid("mtu", f"'{value}' is not in range 68 through 9000")
    return value


async def create_network(conn: Connection, ctx: RequestContext, body: dict[str, Any], quota: int | None) -> str:
    """A new network (a vxlan segment of its own unless an admin gives provider attributes)."""
    project_id = check_project(ctx, body)
    values: dict[str, Any] = {
        "id": new_id(),
        "name": check_name("name", body.get("name")),
        "description": check_name("description", body.get("description")),
        "project_id": project_id,
        "admin_state_up": check_bool("admin_state_up", body.get("admin_state_up", True)),
        "shared": check_bool("shared", body.get("shared", False)),
        "port_security_enabled": check_bool("port_security_enabled", body.get("port_security_enabled", True)),
        "router_external": check_bool("router:external", body.get("router:external", False)),
        "status": "ACTIVE",
        "tags": [],
    }
    if values["shared"] and not ctx.is_admin:
        raise policy("create_network:shared")
    if values["router_external"] and not ctx.is_admin:
        raise policy("create_network:router:external")
    await check_quota(conn, project_id, "network", quota)
    provider = _provider(ctx, body) or {"provider_network_type": "vxlan", "provider_physical_network": None}
    # A VXLAN's packets carry 50 bytes of encapsulation inside the hosts' 1500 (Neutron's default).
    values["mtu"] = _mtu(body.get("mtu", 1450 if provider["provider_network_type"] == "vxlan" else 1500))
    now = utcnow()
    for _attempt in range(20):
        if provider["provider_network_type"] == "vxlan" and provider.get("provider_segmentation_id") is None:
            segment = {**provider, "provider_segmentation_id": await _free_vni(conn)}
            explicit = False
        else:
            segment, explicit = {**{"provider_segmentation_id": None}, **provider}, True
        try:
            async with conn.begin_nested():
                await conn.execute(t.networks.insert().values(**values, **segment, created_at=now, updated_at=now))
            return str(values["id"])
        except IntegrityError:
            if explicit:
                if segment["provider_network_type"] == "flat":
                    raise InConflict(
                        "Unable to create the flat network. Physical network "
                        f"{segment['provider_physical_network']} is in use.",
                        "FlatNetworkInUse",
                    ) from None
                raise InConflict(
                    f"Unable to create the network. The VLAN {segment['provider_segmentation_id']} on physical "
                    "network None is in use.",
                    "TunnelIdInUse",
                ) from None
    raise InConflict(
        "Unable to create the network. No tenant network is available for allocation.", "NoNetworkAvailable"
    )


async def update_network(conn: Connection, ctx: RequestContext, network_id: str, body: dict[str, Any]) -> None:
    row = await get_network(conn, ctx, network_id, lock=True)
    owns(ctx, row.project_id, "update_network", "Network", network_id)
    values: dict[str, Any] = {}
    for field, column, check in (
        ("name", "name", check_name),
        ("description", "description", check_name),
        ("admin_state_up", "admin_state_up", check_bool),
        ("shared", "shared", check_bool),
        ("port_security_enabled", "port_security_enabled", check_bool),
        ("router:external", "router_external", check_bool),
    ):
        if field in body:
            values[column] = check(field, body[field])
    if "mtu" in body:
        values["mtu"] = _mtu(body["mtu"])
    if ("shared" in values or "router_external" in values) and not ctx.is_admin:
        raise policy("update_network:shared")
    if any(k.startswith("provider:") for k in body):
        raise BadInput("Invalid input for operation: Plugin does not support updating provider attributes.")
    unknown = set(body) - {
        "name",
        "description",
        "admin_state_up",
        "shared",
        "port_security_enabled",
        "router:external",
        "mtu",
    }
    if unknown:
        raise BadInput(f"Cannot update read-only attribute {sorted(unknown)[0]}")
    if values:
        await conn.execute(
            t.networks.update().where(t.networks.c.id == network_id).values(**_stamp_update(values, t.networks))
        )
    if "name" in values:  # servers' addresses are grouped by the network's name
        await conn.execute(t.ports.update().where(t.ports.c.network_id == network_id).values(network=values["name"]))
        servers = await conn.execute(
            sa.select(t.ports.c.instance_uuid).where(t.ports.c.network_id == network_id).distinct()
        )
        await touch_servers(conn, [r[0] for r in servers if r[0]])


async def touch_servers(conn: Connection, instance_uuids: list[str]) -> None:
    """Bump the servers' ``updated_at``: their cached views show their ports (addresses, MACs)."""
    if instance_uuids:
        i = t.instances
        await conn.execute(i.update().where(i.c.uuid.in_(instance_uuids)).values(updated_at=utcnow()))


def owns(ctx: RequestContext, project_id: str | None, action: str, kind: str, ident: str) -> None:
    """Writes are the owner's (or an admin's): another project's shared network is read-only to it."""
    if ctx.is_admin or project_id == ctx.project_id:
        return
    raise policy(action)


async def delete_network(conn: Connection, ctx: RequestContext, network_id: str) -> None:
    """Delete a network and its subnets; 409 NetworkInUse while a port is on it."""
    row = await get_network(conn, ctx, network_id, lock=True)
    owns(ctx, row.project_id, "delete_network", "Network", network_id)  # a shared network is read-only
    in_use = await conn.scalar(
        sa.select(sa.func.count()).select_from(t.ports).where(t.ports.c.network_id == network_id)
    )
    if in_use:
        raise InConflict(
            f"Unable to complete operation on network {network_id}. There are one or more ports still in use on "
            "the network.",
            "NetworkInUse",
        )
    await conn.execute(t.subnets.delete().where(t.subnets.c.network_id == network_id))
    await conn.execute(t.networks.delete().where(t.networks.c.id == network_id))


#: Marks the built-in network (the migration writes it too).
BUILTIN_DESCRIPTION = "novalite's built-in network"


async def ensure_default_network(conn: Connection, settings: Settings) -> str:
    """The built-in network (``network_name``, shared, with a subnet of ``network_cidr``): its id.

    Created on first start, as devstack creates ``private``; shared, so that every project's
    ``--network private`` (and ``--nic auto``) works. Owned by the admin project.
    """
    n = t.networks
    found = await conn.scalar(sa.select(n.c.id).where(n.c.name == settings.network_name).order_by(n.c.created_at))
    if found:
        return str(found)
    admin = await conn.scalar(sa.select(t.projects.c.id).where(t.projects.c.name == "admin"))
    ctx = RequestContext(project_id=admin, roles=["admin"])
    # The built-in network under another name (network_name changed, or migration 0005 could
    # not read the setting): renamed, never doubled (two subnets of one range would hand out
    # the same addresses twice on the one guest network).
    builtin = await conn.scalar(
        sa.select(n.c.id).where(n.c.description == BUILTIN_DESCRIPTION, n.c.shared.is_(True)).order_by(n.c.created_at)
    )
    if builtin:
        await update_network(conn, ctx, str(builtin), {"name": settings.network_name})
        return str(builtin)
    network_id = await create_network(
        conn,
        ctx,
        {"name": settings.network_name, "shared": True, "description": BUILTIN_DESCRIPTION},
        quota=-1,
    )
    await create_subnet(
        conn,
        ctx,
        {
            "network_id": network_id,
            "name": f"{settings.network_name}-subnet",
            "cidr": settings.network_cidr,
            "ip_version": ipaddress.ip_network(settings.network_cidr).version,
        },
        quota=-1,
    )
    return network_id


# -- subnets ------------------------------------------------------------------------------


async def get_subnet(conn: Connection, ctx: RequestContext, subnet_id: str, *, lock: bool = False) -> Any:
    """The subnet if the caller may see its network, else SubnetNotFound."""
    s, n = t.subnets, t.networks
    query = sa.select(s).join(n, n.c.id == s.c.network_id).where(s.c.id == subnet_id)
    if not ctx.is_admin:
        query = query.where(
            sa.or_(s.c.project_id == ctx.project_id, n.c.project_id == ctx.project_id, n.c.shared.is_(True))
        )
    if lock:
        query = query.with_for_update(of=s)
    row = (await conn.execute(query)).first()
    if row is None:
        raise not_found("Subnet", subnet_id)
    return row


async def list_subnets(conn: Connection, ctx: RequestContext) -> list[Any]:
    s, n = t.subnets, t.networks
    query = sa.select(s).join(n, n.c.id == s.c.network_id).order_by(s.c.created_at, s.c.id)
    if not ctx.is_admin:
        query = query.where(
            sa.or_(s.c.project_id == ctx.project_id, n.c.project_id == ctx.project_id, n.c.shared.is_(True))
        )
    return list(await conn.execute(query))


async def network_subnets(conn: Connection, network_id: str) -> list[Any]:
    s = t.subnets
    return list(await conn.execute(sa.select(s).where(s.c.network_id == network_id).order_by(s.c.created_at, s.c.id)))


def _ip(field: str, value: Any, version: int | None = None) -> str:
    try:
        addr = ipaddress.ip_address(value) if isinstance(value, str) else None
    except ValueError:
        addr = None
    if addr is None or (version is not None and addr.version != version):
        raise invalid(field, f"'{value}' is not a valid IP address")
    return str(addr)


def _cidr(field: str, value: Any) -> ipam.IPNetwork:
    try:
        if not isinstance(value, str) or "/" not in value:
            raise ValueError
        return ipaddress.ip_network(value, strict=True)
    except ValueError:
        raise invalid(field, f"'{value}' is not a valid IP subnet") from None


def _pools(value: Any, net: ipam.IPNetwork, gateway: str | None) -> list[dict[str, str]]:
    if value is None:
        return ipam.default_pools(net, gateway)
    if not isinstance(value, list):
        raise invalid("allocation_pools", f"'{value}' is not a list")
    pools: list[dict[str, str]] = []
    for pool in value:
        if not isinstance(pool, dict) or set(pool) != {"start", "end"}:
            raise invalid("allocation_pools", f"'{pool}' must hold exactly start and end")
        start, end = (
            _ip("allocation_pools", pool["start"], net.version),
            _ip("allocation_pools", pool["end"], net.version),
        )
        lo, hi = ipaddress.ip_address(start), ipaddress.ip_address(end)
        if (
            int(lo) > int(hi)
            or lo not in net
            or hi not in net
            or int(lo) < ipam.first_host(net)
            or int(hi) > ipam.last_host(net)
        ):
            raise BadInput(
                f"The allocation pool {start}-{end} spans beyond the subnet cidr {net}.", "OutOfBoundsAllocationPool"
            )
        pools.append({"start": start, "end": end})
    ranges = sorted(ipam.pool_ranges(pools))
    for (_a, b), (c, _d) in itertools.pairwise(ranges):
        if c <= b:
            raise BadInput("Found overlapping allocation pools.", "OverlappingAllocationPools")
    if gateway is not None and ipam.in_pools(pools, gateway):
        raise InConflict(
            f"Gateway ip {gateway} conflicts with allocation pool {pools[0]['start']}-{pools[-1]['end']}.",
            "GatewayConflictWithAllocationPools",
        )
    return pools


def _dns(value: Any, version: int) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("dns_nameservers", f"'{value}' is not a list")
    found = [_ip("dns_nameservers", v) for v in value]
    if len(set(found)) != len(found):
        raise invalid("dns_nameservers", f"Duplicate nameserver '{found}'")
    return found


def _routes(value: Any, version: int) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("host_routes", f"'{value}' is not a list")
    routes = []
    for r in value:
        if not isinstance(r, dict) or set(r) != {"destination", "nexthop"}:
            raise invalid("host_routes", f"'{r}' must hold exactly destination and nexthop")
        routes.append(
            {"destination": str(_cidr("host_routes", r["destination"])), "nexthop": _ip("host_routes", r["nexthop"])}
        )
    return routes


def _gateway(value: Any, net: ipam.IPNetwork) -> str | None:
    if value is None:
        return None
    gw = _ip("gateway_ip", value, net.version)
    if (
        ipaddress.ip_address(gw) not in net
        or gw == str(net.network_address)
        or (net.version == 4 and net.num_addresses > 2 and gw == str(net.broadcast_address))
    ):
        raise BadInput(f"Invalid input for operation: Gateway is not valid on subnet {net}.", "InvalidInput")
    return gw


IPV6_MODES = (None, "slaac", "dhcpv6-stateful", "dhcpv6-stateless")


async def create_subnet(conn: Connection, ctx: RequestContext, body: dict[str, Any], quota: int | None) -> str:
    """A new subnet on a network the caller owns (admins: any); IPv4 or IPv6, pools checked."""
    network_id = body.get("network_id")
    if not isinstance(network_id, str) or not network_id:
        raise invalid(
            "network_id", "'None' is not a valid UUID" if network_id is None else f"'{network_id}' is not a valid UUID"
        )
    network = await get_network(conn, ctx, network_id, lock=True)
    owns(ctx, network.project_id, "create_subnet", "Network", network_id)
    if "subnetpool_id" in body and body["subnetpool_id"] is not None:
        raise invalid_op("subnet pools are not supported")
    if "cidr" not in body or body["cidr"] is None:
        raise BadInput("Bad subnets request: a cidr must be specified in the absence of a subnet pool.")
    net = _cidr("cidr", body["cidr"])
    version = body.get("ip_version", 4)
    version = int(version) if isinstance(version, str) and version in ("4", "6") else version
    if version not in (4, 6) or isinstance(version, bool):
        raise invalid("ip_version", f"'{version}' is not in [4, 6]")
    if version != net.version:
        raise invalid_op(f"Cidr {net} does not match ip_version {version}")
    for mode in ("ipv6_ra_mode", "ipv6_address_mode"):
        if body.get(mode) not in IPV6_MODES or (version == 4 and body.get(mode)):
            raise invalid(mode, f"'{body.get(mode)}' is not in {list(IPV6_MODES[1:])}")
    gateway = _gateway(body["gateway_ip"], net) if "gateway_ip" in body else ipam.default_gateway(net)
    pools = _pools(body.get("allocation_pools"), net, gateway)
    for other in await network_subnets(conn, network_id):
        if ipaddress.ip_network(other.cidr).overlaps(net):
            raise invalid_op(
                f"Requested subnet with cidr: {net} for network: {network_id} overlaps with another subnet"
            )
    project_id = check_project(ctx, body)
    await check_quota(conn, project_id, "subnet", quota)
    subnet_id, now = new_id(), utcnow()
    await conn.execute(
        t.subnets.insert().values(
            id=subnet_id,
            network_id=network_id,
            project_id=project_id,
            name=check_name("name", body.get("name")),
            description=check_name("description", body.get("description")),
            ip_version=version,
            cidr=str(net),
            gateway_ip=gateway,
            allocation_pools=pools,
            dns_nameservers=_dns(body.get("dns_nameservers"), version),
            host_routes=_routes(body.get("host_routes"), version),
            enable_dhcp=check_bool("enable_dhcp", body.get("enable_dhcp", True)),
            ipv6_ra_mode=body.get("ipv6_ra_mode"),
            ipv6_address_mode=body.get("ipv6_address_mode"),
            created_at=now,
            updated_at=now,
            tags=[],
        )
    )
    return subnet_id


async def update_subnet(conn: Connection, ctx: RequestContext, subnet_id: str, body: dict[str, Any]) -> None:
    row = await get_subnet(conn, ctx, subnet_id, lock=True)
    owns(ctx, row.project_id, "update_subnet", "Subnet", subnet_id)
    net = ipaddress.ip_network(row.cidr)
    readonly = set(body) - {
        "name",
        "description",
        "gateway_ip",
        "allocation_pools",
        "dns_nameservers",
        "host_routes",
        "enable_dhcp",
    }
    if readonly:
        raise BadInput(f"Cannot update read-only attribute {sorted(readonly)[0]}")
    values: dict[str, Any] = {}
    if "name" in body:
        values["name"] = check_name("name", body["name"])
    if "description" in body:
        values["description"] = check_name("description", body["description"])
    if "enable_dhcp" in body:
        values["enable_dhcp"] = check_bool("enable_dhcp", body["enable_dhcp"])
    if "dns_nameservers" in body:
        values["dns_nameservers"] = _dns(body["dns_nameservers"], row.ip_version)
    if "host_routes" in body:
        values["host_routes"] = _routes(body["host_routes"], row.ip_version)
    gateway = _gateway(body["gateway_ip"], net) if "gateway_ip" in body else row.gateway_ip
    if "gateway_ip" in body:
        values["gateway_ip"] = gateway
    if "allocation_pools" in body or "gateway_ip" in body:
        pools = (
            _pools(body["allocation_pools"], net, gateway)
            if "allocation_pools" in body
            else list(row.allocation_pools or [])
        )
        if "allocation_pools" not in body and gateway is not None and ipam.in_pools(pools, gateway):
            raise InConflict(
                f"Gateway ip {gateway} conflicts with allocation pool.", "GatewayConflictWithAllocationPools"
            )
        values["allocation_pools"] = pools
    if values:
        await conn.execute(
            t.subnets.update().where(t.subnets.c.id == subnet_id).values(**_stamp_update(values, t.subnets))
        )


async def delete_subnet(conn: Connection, ctx: RequestContext, subnet_id: str) -> None:
    row = await get_subnet(conn, ctx, subnet_id, lock=True)
    owns(ctx, row.project_id, "delete_subnet", "Subnet", subnet_id)
    in_use = await conn.scalar(
        sa.select(sa.func.count()).select_from(t.port_ips).where(t.port_ips.c.subnet_id == subnet_id)
    )
    if in_use:
        raise InConflict(
            f"Unable to complete operation on subnet {subnet_id}: One or more ports have an IP allocation from "
            "this subnet.",
            "SubnetInUse",
        )
    await conn.execute(t.subnets.delete().where(t.subnets.c.id == subnet_id))


# -- quotas -------------------------------------------------------------------------------

#: Neutron's default quotas, keyed by Neutron's resource names.
DEFAULT_QUOTAS = {"network": 100, "subnet": 100, "port": 500, "security_group": 10, "security_group_rule": 100}
#: The ``quotas`` table is shared with compute: network rows carry this prefix.
QUOTA_PREFIX = "neutron:"
_COUNTED = {
    "network": t.networks,
    "subnet": t.subnets,
    "port": t.ports,
    "security_group": t.security_groups,
    "security_group_rule": t.security_group_rules,
}


async def project_quotas(conn: Connection, project_id: str) -> dict[str, int]:
    q = t.quotas
    rows = await conn.execute(
        sa.select(q.c.resource, q.c.hard_limit).where(
            q.c.project_id == project_id, q.c.resource.like(QUOTA_PREFIX + "%")
        )
    )
    limits = dict(DEFAULT_QUOTAS)
    for r in rows:
        name = r.resource[len(QUOTA_PREFIX) :]
        if name in limits:
            limits[name] = r.hard_limit
    return limits


async def projects_with_quotas(conn: Connection) -> list[str]:
    q = t.quotas
    rows = await conn.execute(sa.select(q.c.project_id).where(q.c.resource.like(QUOTA_PREFIX + "%")).distinct())
    return sorted(r[0] for r in rows)


async def set_quotas(conn: Connection, project_id: str, limits: dict[str, int]) -> None:
    q = t.quotas
    for name, value in limits.items():
        key = QUOTA_PREFIX + name
        await conn.execute(q.delete().where(q.c.project_id == project_id, q.c.resource == key))
        await conn.execute(q.insert().values(project_id=project_id, resource=key, hard_limit=value))


async def reset_quotas(conn: Connection, project_id: str) -> None:
    q = t.quotas
    await conn.execute(q.delete().where(q.c.project_id == project_id, q.c.resource.like(QUOTA_PREFIX + "%")))


async def usage(conn: Connection, project_id: str, resource: str) -> int:
    table = _COUNTED[resource]
    return int(
        await conn.scalar(sa.select(sa.func.count()).select_from(table).where(table.c.project_id == project_id)) or 0
    )


async def check_quota(conn: Connection, project_id: str, resource: str, limit: int | None = None) -> None:
    """409 OverQuota when the project already has ``limit`` of ``resource`` (-1: unlimited).

    ``limit`` None: the project's own limit. Not under a lock: two concurrent creates may
    both pass at the limit (Neutron's own count-based quotas behave alike).
    """
    if limit is None:
        limit = (await project_quotas(conn, project_id))[resource]
    if limit < 0:
        return
    if await usage(conn, project_id, resource) >= limit:
        raise InConflict(f"Quota exceeded for resources: ['{resource}'].", "OverQuota")


# -- security groups ----------------------------------------------------------------------


def _default_rules(group_id: str, project_id: str | None) -> list[dict[str, Any]]:
    """Neutron's rules of a project's ``default`` group: all egress, ingress from the group."""
    now = utcnow()
    return [
        {
            "id": new_id(),
            "security_group_id": group_id,
            "project_id": project_id,
            "direction": direction,
            "ethertype": ethertype,
            "remote_group_id": group_id if direction == "ingress" else None,
            "created_at": now,
            "updated_at": now,
        }
        for direction in ("egress", "ingress")
        for ethertype in ("IPv4", "IPv6")
    ]


async def default_security_group(conn: Connection, project_id: str) -> str:
    """The project's ``default`` group, created on first use (concurrent first uses agree on one)."""
    d = t.default_security_groups
    found = await conn.scalar(sa.select(d.c.security_group_id).where(d.c.project_id == project_id))
    if found:
        return str(found)
    group_id, now = new_id(), utcnow()
    try:
        async with conn.begin_nested():
            await conn.execute(
                t.security_groups.insert().values(
                    id=group_id,
                    project_id=project_id,
                    name="default",
                    description="Default security group",
                    created_at=now,
                    updated_at=now,
                    tags=[],
                )
            )
            await conn.execute(d.insert().values(project_id=project_id, security_group_id=group_id))
            await conn.execute(t.security_group_rules.insert(), _default_rules(group_id, project_id))
    except IntegrityError:
        found = await conn.scalar(sa.select(d.c.security_group_id).where(d.c.project_id == project_id))
        return str(found)
    return group_id


async def get_security_group(conn: Connection, ctx: RequestContext, group_id: str, *, lock: bool = False) -> Any:
    g = t.security_groups
    query = sa.select(g).where(g.c.id == group_id, _visible_project(ctx, g.c.project_id))
    if lock:
        query = query.with_for_update()
    row = (await conn.execute(query)).first()
    if row is None:
        raise not_found("SecurityGroup", group_id)
    return row


async def list_security_groups(conn: Connection, ctx: RequestContext) -> list[Any]:
    g = t.security_groups
    return list(
        await conn.execute(sa.select(g).where(_visible_project(ctx, g.c.project_id)).order_by(g.c.created_at, g.c.id))
    )


async def rules_of(conn: Connection, group_ids: list[str]) -> dict[str, list[Any]]:
    r = t.security_group_rules
    found: dict[str, list[Any]] = {gid: [] for gid in group_ids}
    if group_ids:
        for row in await conn.execute(
            sa.select(r).where(r.c.security_group_id.in_(group_ids)).order_by(r.c.created_at, r.c.id)
        ):
            found[row.security_group_id].append(row)
    return found


async def default_group_ids(conn: Connection) -> set[str]:
    return {r[0] for r in await conn.execute(sa.select(t.default_security_groups.c.security_group_id))}


async def create_security_group(conn: Connection, ctx: RequestContext, body: dict[str, Any], quota: int | None) -> str:
    project_id = check_project(ctx, body)
    name = check_name("name", body.get("name"))
    if name == "default":
        raise InConflict("Default security group already exists.", "SecurityGroupDefaultAlreadyExists")
    await default_security_group(conn, project_id)
    await check_quota(conn, project_id, "security_group", quota)
    group_id, now = new_id(), utcnow()
    await conn.execute(
        t.security_groups.insert().values(
            id=group_id,
            project_id=project_id,
            name=name,
            description=check_name("description", body.get("description")),
            stateful=check_bool("stateful", body.get("stateful", True)),
            created_at=now,
            updated_at=now,
            tags=[],
        )
    )
    egress = [r for r in _default_rules(group_id, project_id) if r["direction"] == "egress"]
    await conn.execute(t.security_group_rules.insert(), egress)
    return group_id


async def update_security_group(conn: Connection, ctx: RequestContext, group_id: str, body: dict[str, Any]) -> None:
    row = await get_security_group(conn, ctx, group_id, lock=True)
    readonly = set(body) - {"name", "description", "stateful"}
    if readonly:
        raise BadInput(f"Cannot update read-only attribute {sorted(readonly)[0]}")
    values: dict[str, Any] = {}
    if "name" in body:
        values["name"] = check_name("name", body["name"])
        if row.name == "default" and values["name"] != "default" and group_id in await default_group_ids(conn):
            raise InConflict("Updating default security group not allowed.", "SecurityGroupCannotUpdateDefault")
    if "description" in body:
        values["description"] = check_name("description", body["description"])
    if "stateful" in body:
        values["stateful"] = check_bool("stateful", body["stateful"])
    if values:
        await conn.execute(
            t.security_groups.update()
            .where(t.security_groups.c.id == group_id)
            .values(**_stamp_update(values, t.security_groups))
        )
    if "name" in values:  # servers' views list their ports' groups by name
        p = t.ports
        bound = sa.select(p.c.instance_uuid, p.c.security_groups).where(p.c.instance_uuid.is_not(None))
        rows = await conn.execute(bound)
        await touch_servers(conn, sorted({r.instance_uuid for r in rows if group_id in (r.security_groups or [])}))


async def ports_using_group(conn: Connection, group_id: str) -> int:
    p = t.ports
    count = 0
    for row in await conn.execute(sa.select(p.c.security_groups).where(p.c.security_groups.is_not(None))):
        count += group_id in (row[0] or [])
    return count


async def delete_security_group(conn: Connection, ctx: RequestContext, group_id: str) -> None:
    await get_security_group(conn, ctx, group_id, lock=True)
    if group_id in await default_group_ids(conn) and not ctx.is_admin:
        raise InConflict("Insufficient rights for removing default security group.", "SecurityGroupCannotRemoveDefault")
    if await ports_using_group(conn, group_id):
        raise InConflict(f"Security Group {group_id} in use.", "SecurityGroupInUse")
    await conn.execute(t.security_groups.delete().where(t.security_groups.c.id == group_id))


PROTOCOLS = {
    "ah": 51,
    "dccp": 33,
    "egp": 8,
    "esp": 50,
    "gre": 47,
    "icmp": 1,
    "icmpv6": 58,
    "igmp": 2,
    "ipip": 4,
    "ipv6-encap": 41,
    "ipv6-frag": 44,
    "ipv6-icmp": 58,
    "ipv6-nonxt": 59,
    "ipv6-opts": 60,
    "ipv6-route": 43,
    "ospf": 89,
    "pgm": 113,
    "rsvp": 46,
    "sctp": 132,
    "tcp": 6,
    "udp": 17,
    "udplite": 136,
    "vrrp": 112,
}
_PORTS_PROTOCOLS = {"tcp", "udp", "sctp", "udplite", "dccp", "6", "17", "132", "136", "33"}


def _protocol(value: Any) -> str | None:
    if value is None or value in ("any", "ANY"):
        return None
    text = str(value).lower()
    if text in PROTOCOLS or (text.isdigit() and 0 <= int(text) <= 255):
        return text
    raise BadInput(
        f"Security group rule protocol {value} not supported. Only protocol values {sorted(PROTOCOLS)} and "
        "integer representations [0 to 255] are supported.",
        "SecurityGroupRuleInvalidProtocol",
    )


def _port_range(protocol: str | None, lo: Any, hi: Any) -> tuple[int | None, int | None]:
    for field, v in (("port_range_min", lo), ("port_range_max", hi)):
        if v is not None and (isinstance(v, bool) or not str(v).isdigit()):
            raise invalid(field, f"'{v}' is not an integer")
    lo_i = int(lo) if lo is not None else None
    hi_i = int(hi) if hi is not None else None
    if lo_i is None and hi_i is None:
        return None, None
    if protocol is None:
        raise BadInput("Must also specify protocol if port range is given.", "SecurityGroupProtocolRequiredWithPorts")
    if protocol in _PORTS_PROTOCOLS:
        if lo_i is None or hi_i is None or not 1 <= lo_i <= hi_i <= 65535:
            raise BadInput(
                "For TCP/UDP protocols, port_range_min must be <= port_range_max", "SecurityGroupInvalidPortRange"
            )
    elif protocol in ("icmp", "icmpv6", "ipv6-icmp", "1", "58"):
        for field, v in (("type", lo_i), ("code", hi_i)):
            if v is not None and not 0 <= v <= 255:
                raise BadInput(
                    f"Invalid value for ICMP {field} (port_range_min/max) {v}. It must be 0 to 255.",
                    "SecurityGroupInvalidIcmpValue",
                )
    else:
        raise BadInput(
            f"Invalid protocol {protocol} for port range, only supported for TCP, UDP, UDPLITE, SCTP and DCCP.",
            "SecurityGroupInvalidProtocolForPort",
        )
    return lo_i, hi_i


async def create_security_group_rule(
    conn: Connection, ctx: RequestContext, body: dict[str, Any], quota: int | None
) -> str:
    group_id = body.get("security_group_id")
    if not isinstance(group_id, str):
        raise invalid("security_group_id", f"'{group_id}' is not a valid UUID")
    group = await get_security_group(conn, ctx, group_id, lock=True)
    direction = body.get("direction")
    if direction not in ("ingress", "egress"):
        raise invalid("direction", f"'{direction}' is not in ['ingress', 'egress']")
    ethertype = body.get("ethertype", "IPv4")
    if ethertype not in ("IPv4", "IPv6"):
        raise invalid("ethertype", f"'{ethertype}' is not in ['IPv4', 'IPv6']")
    protocol = _protocol(body.get("protocol"))
    lo, hi = _port_range(protocol, body.get("port_range_min"), body.get("port_range_max"))
    prefix, remote = body.get("remote_ip_prefix"), body.get("remote_group_id")
    if prefix is not None and remote is not None:
        raise BadInput(
            "Only remote_ip_prefix or remote_group_id may be provided.", "SecurityGroupRemoteGroupAndRemoteIpPrefix"
        )
    if prefix is not None:
        try:
            net = ipaddress.ip_network(str(prefix), strict=False)
        except ValueError:
            raise invalid("remote_ip_prefix", f"'{prefix}' is not a valid IP subnet") from None
        if f"IPv{net.version}" != ethertype:
            raise BadInput(
                f"Conflicting value ethertype {ethertype} for CIDR {prefix}", "SecurityGroupRuleParameterConflict"
            )
        prefix = str(net)
    if remote is not None:
        await get_security_group(conn, ctx, str(remote))
    project_id = group.project_id
    await check_quota(conn, str(project_id), "security_group_rule", quota)
    r = t.security_group_rules
    same = await conn.scalar(
        sa.select(r.c.id).where(
            r.c.security_group_id == group_id,
            r.c.direction == direction,
            r.c.ethertype == ethertype,
            _eq(r.c.protocol, protocol),
            _eq(r.c.port_range_min, lo),
            _eq(r.c.port_range_max, hi),
            _eq(r.c.remote_ip_prefix, prefix),
            _eq(r.c.remote_group_id, remote),
        )
    )
    if same:
        raise InConflict(f"Security group rule already exists. Rule id is {same}.", "SecurityGroupRuleExists")
    rule_id, now = new_id(), utcnow()
    await conn.execute(
        r.insert().values(
            id=rule_id,
            security_group_id=group_id,
            project_id=project_id,
            direction=direction,
            ethertype=ethertype,
            protocol=protocol,
            port_range_min=lo,
            port_range_max=hi,
            remote_ip_prefix=prefix,
            remote_group_id=remote,
            description=check_name("description", body.get("description")),
            created_at=now,
            updated_at=now,
        )
    )
    await _touch_group(conn, group_id)
    return rule_id


def _eq(column: Any, value: Any) -> Any:
    return column.is_(None) if value is None else column == value


async def _touch_group(conn: Connection, group_id: str) -> None:
    await conn.execute(
        t.security_groups.update()
        .where(t.security_groups.c.id == group_id)
        .values(**_stamp_update({}, t.security_groups))
    )


async def get_security_group_rule(conn: Connection, ctx: RequestContext, rule_id: str) -> Any:
    r = t.security_group_rules
    row = (await conn.execute(sa.select(r).where(r.c.id == rule_id, _visible_project(ctx, r.c.project_id)))).first()
    if row is None:
        raise not_found("SecurityGroupRule", rule_id)
    return row


async def list_security_group_rules(conn: Connection, ctx: RequestContext) -> list[Any]:
    r = t.security_group_rules
    return list(
        await conn.execute(sa.select(r).where(_visible_project(ctx, r.c.project_id)).order_by(r.c.created_at, r.c.id))
    )


async def delete_security_group_rule(conn: Connection, ctx: RequestContext, rule_id: str) -> None:
    row = await get_security_group_rule(conn, ctx, rule_id)
    await conn.execute(t.security_group_rules.delete().where(t.security_group_rules.c.id == rule_id))
    await _touch_group(conn, row.security_group_id)


# -- ports --------------------------------------------------------------------------------


def _ports_with_host() -> sa.Select[Any]:
    """Ports, each with ``instance_host``: the host of the server it is bound to, which is
    its ``binding:host_id`` (read, not copied, so that it follows the server as it is
    placed, moved, evacuated or unshelved, and can never be stale)."""
    p, i = t.ports, t.instances
    return sa.select(p, i.c.host.label("instance_host")).outerjoin(i, p.c.instance_uuid == i.c.uuid)


async def get_port(conn: Connection, ctx: RequestContext, port_id: str, *, lock: bool = False) -> Any:
    p = t.ports
    query = _ports_with_host().where(p.c.id == port_id, _visible_project(ctx, p.c.project_id))
    if lock:
        query = query.with_for_update(of=p)
    row = (await conn.execute(query)).first()
    if row is None:
        raise not_found("Port", port_id)
    return row


async def list_ports(conn: Connection, ctx: RequestContext) -> list[Any]:
    p = t.ports
    return list(
        await conn.execute(
            _ports_with_host()
            .where(_visible_project(ctx, p.c.project_id), p.c.network_id.is_not(None))
            .order_by(p.c.created_at, p.c.id)
        )
    )


async def fixed_ips_of(conn: Connection, port_ids: list[str]) -> dict[str, list[dict[str, str]]]:
    found: dict[str, list[dict[str, str]]] = {pid: [] for pid in port_ids}
    if port_ids:
        ips = t.port_ips
        for r in await conn.execute(sa.select(ips).where(ips.c.port_id.in_(port_ids))):
            found[r.port_id].append({"subnet_id": r.subnet_id, "ip_address": r.ip_address})
    return found


def _mac(value: Any) -> str:
    if not isinstance(value, str) or not _MAC.match(value.lower()) or int(value[:2], 16) & 1:
        raise invalid("mac_address", f"'{value}' is not a valid MAC address")
    return value.lower()


def _pairs(value: Any) -> list[dict[str, str]]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise invalid("allowed_address_pairs", f"'{value}' is not a list")
    pairs = []
    for pair in value:
        if not isinstance(pair, dict) or "ip_address" not in pair or set(pair) - {"ip_address", "mac_address"}:
            raise BadInput(
                "Allowed address pairs must be a list of dictionaries with ip_address (and mac_address).",
                "AllowedAddressPairsMissingIP",
            )
        try:
            ip = str(ipaddress.ip_network(str(pair["ip_address"]), strict=False))
        except ValueError:
            raise invalid("allowed_address_pairs", f"'{pair['ip_address']}' is not a valid IP address") from None
        ip = ip.split("/")[0] if "/" not in str(pair["ip_address"]) else ip
        entry = {"ip_address": ip}
        if pair.get("mac_address") is not None:
            entry["mac_address"] = _mac(pair["mac_address"])
        pairs.append(entry)
    return pairs


async def _groups(conn: Connection, ctx: RequestContext, value: Any, project_id: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise invalid("security_groups", f"'{value}' is not a list of ids")
    port_ctx = ctx if not ctx.is_admin else RequestContext(project_id=project_id, roles=["admin"])
    for gid in value:
        await get_security_group(conn, port_ctx, gid)
    return list(dict.fromkeys(value))


async def _allocate(conn: Connection, port_id: str, network: Any, requested: Any) -> list[dict[str, str]]:
    """Take the port's addresses: the requested ones, else one from the first IPv4 subnet with room
    and one from each IPv6 subnet. 409 when an address is taken or no subnet has one left."""
    subnets = await network_subnets(conn, network.id)
    by_id = {s.id: s for s in subnets}
    taken: list[dict[str, str]] = []
    if requested is None:
        v4 = [s for s in subnets if s.ip_version == 4]
        for s in v4:
            ip = await ipam.allocate_any(conn, port_id, s)
            if ip:
                taken.append({"subnet_id": s.id, "ip_address": ip})
                break
        else:
            if v4:
                raise _exhausted(network.id)
        for s in (s for s in subnets if s.ip_version == 6):
            ip = await ipam.allocate_any(conn, port_id, s)
            if ip is None:
                raise _exhausted(network.id)
            taken.append({"subnet_id": s.id, "ip_address": ip})
        return taken
    if not isinstance(requested, list):
        raise invalid("fixed_ips", f"'{requested}' is not a list")
    for item in requested:
        if not isinstance(item, dict) or not item or set(item) - {"subnet_id", "ip_address"}:
            raise invalid("fixed_ips", f"'{item}' must name subnet_id and/or ip_address")
        subnet = None
        if item.get("subnet_id") is not None:
            subnet = by_id.get(str(item["subnet_id"]))
            if subnet is None:
                raise BadInput(
                    f"Invalid input for operation: Failed to create port on network {network.id}, "
                    f"because fixed_ips included invalid subnet {item['subnet_id']}.",
                    "InvalidInput",
                )
        if item.get("ip_address") is None:
            assert subnet is not None
            ip = await ipam.allocate_any(conn, port_id, subnet)
            if ip is None:
                raise _exhausted(network.id)
            taken.append({"subnet_id": subnet.id, "ip_address": ip})
            continue
        address = _ip("fixed_ips", item["ip_address"])
        if subnet is None:
            subnet = next((s for s in subnets if ipaddress.ip_address(address) in ipaddress.ip_network(s.cidr)), None)
            if subnet is None:
                raise BadInput(
                    f"Invalid input for operation: IP address {address} is not a valid IP for the specified network.",
                    "InvalidIpForNetwork",
                )
        net = ipaddress.ip_network(subnet.cidr)
        if ipaddress.ip_address(address) not in net or not ipam.first_host(net) <= int(
            ipaddress.ip_address(address)
        ) <= ipam.last_host(net):
            raise BadInput(f"IP address {address} is not a valid IP for the specified subnet.", "InvalidIpForSubnet")
        if address == subnet.gateway_ip:
            raise InConflict(
                f"IP address {address} already allocated in subnet {subnet.id}", "IpAddressAlreadyAllocated"
            )
        if not await ipam.try_take(conn, port_id, subnet.id, address):
            raise InConflict(
                f"IP address {address} already allocated in subnet {subnet.id}", "IpAddressAlreadyAllocated"
            )
        taken.append({"subnet_id": subnet.id, "ip_address": address})
    return taken


def _exhausted(network_id: str) -> InConflict:
    return InConflict(f"No more IP addresses available on network {network_id}.", "IpAddressGenerationFailure")


def _first_v4(ips: list[dict[str, str]]) -> str | None:
    return next((i["ip_address"] for i in ips if ":" not in i["ip_address"]), ips[0]["ip_address"] if ips else None)


def _check_shared_port(ctx: RequestContext, network: Any, body: dict[str, Any]) -> None:
    """On another project's (shared) network a project takes what it is given: choosing the
    address or the MAC is the network owner's (Neutron's ``create_port:fixed_ips:ip_address``)."""
    if ctx.is_admin or network.project_id == ctx.project_id:
        return
    fixed = body.get("fixed_ips")
    if isinstance(fixed, list) and any(isinstance(i, dict) and i.get("ip_address") is not None for i in fixed):
        raise policy("create_port:fixed_ips:ip_address")
    if body.get("mac_address") is not None:
        raise policy("create_port:mac_address")


async def create_port(
    conn: Connection, ctx: RequestContext, body: dict[str, Any], quota: int | None, *, instance_uuid: str | None = None
) -> str:
    """A new port on a visible network, its addresses taken atomically (see :mod:`novalite.store.ipam`)."""
    network_id = body.get("network_id")
    if not isinstance(network_id, str) or not network_id:
        raise invalid("network_id", f"'{network_id}' is not a valid UUID")
    network = await get_network(conn, ctx, network_id)
    project_id = check_project(ctx, body)
    _check_shared_port(ctx, network, body)
    if "binding:host_id" in body and not ctx.is_admin:
        raise policy("create_port:binding:host_id")
    await check_quota(conn, project_id, "port", quota)
    port_id = new_id()
    security = check_bool("port_security_enabled", body.get("port_security_enabled", network.port_security_enabled))
    owner = check_name("device_owner", body.get("device_owner"))
    if "security_groups" in body and body["security_groups"] is not None:
        groups = await _groups(conn, ctx, body["security_groups"], project_id)
    elif security and not owner.startswith("network:"):
        groups = [await default_security_group(conn, project_id)]
    else:
        groups = []
    pairs = _pairs(body.get("allowed_address_pairs"))
    if not security and (groups or pairs):
        raise InConflict(
            "Port has security group associated. Cannot disable port security or IP address until "
            "security group is removed",
            "PortSecurityPortHasSecurityGroup",
        )
    mac = _mac(body["mac_address"]) if body.get("mac_address") is not None else None
    now = utcnow()
    values = dict(
        network_id=network_id,
        network=network.name,
        project_id=project_id,
        instance_uuid=instance_uuid,
        name=check_name("name", body.get("name")),
        description=check_name("description", body.get("description")),
        device_id=check_name("device_id", body.get("device_id")),
        device_owner=owner,
        binding_host_id=check_name("binding:host_id", body.get("binding:host_id")),
        admin_state_up=check_bool("admin_state_up", body.get("admin_state_up", True)),
        status="ACTIVE" if instance_uuid else "DOWN",
        port_security_enabled=security,
        security_groups=groups,
        allowed_address_pairs=pairs,
        tags=[],
        created_at=now,
        updated_at=now,
    )
    for _attempt in range(10):
        try:
            async with conn.begin_nested():
                await conn.execute(t.ports.insert().values(id=port_id, mac=mac or random_mac(), **values))
            break
        except IntegrityError:
            if mac:
                raise InConflict(
                    f"Unable to complete operation for network {network_id}. The mac address {mac} is in use.",
                    "MacAddressInUse",
                ) from None
    else:
        raise InConflict("Unable to generate unique mac.", "MacAddressGenerationFailure")
    ips = await _allocate(conn, port_id, network, body.get("fixed_ips"))
    await conn.execute(t.ports.update().where(t.ports.c.id == port_id).values(ip=_first_v4(ips)))
    return port_id


async def update_port(conn: Connection, ctx: RequestContext, port_id: str, body: dict[str, Any]) -> None:
    row = await get_port(conn, ctx, port_id, lock=True)
    allowed = {
        "name",
        "description",
        "admin_state_up",
        "device_id",
        "device_owner",
        "fixed_ips",
        "security_groups",
        "port_security_enabled",
        "allowed_address_pairs",
        "binding:host_id",
        "mac_address",
    }
    readonly = set(body) - allowed
    if readonly:
        raise BadInput(f"Cannot update read-only attribute {sorted(readonly)[0]}")
    if ("binding:host_id" in body or "mac_address" in body) and not ctx.is_admin:
        raise policy("update_port:binding:host_id" if "binding:host_id" in body else "update_port:mac_address")
    values: dict[str, Any] = {}
    for field in ("name", "description", "device_id", "device_owner"):
        if field in body:
            values[field] = check_name(field, body[field])
    if "binding:host_id" in body:
        values["binding_host_id"] = check_name("binding:host_id", body["binding:host_id"])
    if "admin_state_up" in body:
        values["admin_state_up"] = check_bool("admin_state_up", body["admin_state_up"])
    if "mac_address" in body:
        values["mac"] = _mac(body["mac_address"])
    security = check_bool("port_security_enabled", body.get("port_security_enabled", row.port_security_enabled))
    values["port_security_enabled"] = security
    groups = (
        await _groups(conn, ctx, body["security_groups"] or [], row.project_id)
        if ("security_groups" in body)
        else list(row.security_groups or [])
    )
    pairs = (
        _pairs(body["allowed_address_pairs"])
        if "allowed_address_pairs" in body
        else list(row.allowed_address_pairs or [])
    )
    if not security and (groups or pairs):
        raise InConflict(
            "Port has security group associated. Cannot disable port security or IP address until "
            "security group is removed",
            "PortSecurityPortHasSecurityGroup",
        )
    values["security_groups"], values["allowed_address_pairs"] = groups, pairs
    if "fixed_ips" in body:
        network = (await conn.execute(sa.select(t.networks).where(t.networks.c.id == row.network_id))).one()
        _check_shared_port(ctx, network, {"fixed_ips": body["fixed_ips"]})
        if not isinstance(body["fixed_ips"], list):
            raise invalid("fixed_ips", f"'{body['fixed_ips']}' is not a list")
        await ipam.release_port(conn, port_id)  # the addresses kept are taken again just below
        ips = await _allocate(conn, port_id, network, body["fixed_ips"])
        values["ip"] = _first_v4(ips)
    try:
        async with conn.begin_nested():
            await conn.execute(t.ports.update().where(t.ports.c.id == port_id).values(**_stamp_update(values, t.ports)))
    except IntegrityError:
        raise InConflict(
            f"Unable to complete operation for network {row.network_id}. The mac address "
            f"{values.get('mac')} is in use.",
            "MacAddressInUse",
        ) from None
    if row.instance_uuid and ({"fixed_ips", "mac_address", "security_groups"} & set(body)):
        await touch_servers(conn, [row.instance_uuid])


async def delete_port(conn: Connection, ctx: RequestContext, port_id: str) -> None:
    row = await get_port(conn, ctx, port_id, lock=True)
    await conn.execute(t.ports.delete().where(t.ports.c.id == port_id))  # port_ips go with it (FK cascade)
    await touch_servers(conn, [row.instance_uuid] if row.instance_uuid else [])


# -- tags ---------------------------------------------------------------------------------

TAGGABLE = {"networks": t.networks, "subnets": t.subnets, "ports": t.ports, "security-groups": t.security_groups}


async def get_tagged(conn: Connection, ctx: RequestContext, resource: str, ident: str, *, lock: bool = False) -> Any:
    getter = {"networks": get_network, "subnets": get_subnet, "ports": get_port, "security-groups": get_security_group}[
        resource
    ]
    return await getter(conn, ctx, ident, lock=lock)


def check_tag(tag: Any) -> str:
    if not isinstance(tag, str) or not tag or len(tag) > 255 or "," in tag or "/" in tag:
        raise invalid("tags", f"'{tag}' is not a valid tag")
    return tag


async def set_tags(conn: Connection, ctx: RequestContext, resource: str, ident: str, tags: list[str]) -> list[str]:
    row = await get_tagged(conn, ctx, resource, ident, lock=True)
    if resource == "networks":
        owns(ctx, row.project_id, "update_network:tags", "Network", ident)
    clean = list(dict.fromkeys(check_tag(tag) for tag in tags))
    if len(clean) > 50:
        raise BadInput("Number of tags exceeds the limit of 50.", "TagsLimitExceeded")
    table = TAGGABLE[resource]
    await conn.execute(table.update().where(table.c.id == ident).values(**_stamp_update({"tags": clean}, table)))
    return clean
