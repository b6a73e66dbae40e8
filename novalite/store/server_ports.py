"""A server's ports: what Nova asks of the network service for its servers (issue 12).

The compute API resolves a create's ``networks`` (``[{"uuid"}, {"port"}, {"fixed_ip"},
{"tag"}]``, ``"auto"``, ``"none"``) and ``security_groups`` into a :class:`NetworkPlan`
with Nova's checks and answers (:func:`plan_networks`), then :func:`attach_planned` gives
each new instance its ports in the same transaction as the instance: a port the user
passed in is bound (``device_id``, ``device_owner`` ``compute:<az>``) and kept, unbound,
when the server is deleted (``preserve_on_delete``); a port made for the server is deleted
with it (:func:`release_ports`). ``os-interface`` attaches and detaches ports the same way
(:func:`attach_interface`, :func:`detach_interface`), and ``addSecurityGroup`` /
``removeSecurityGroup`` change every port of a server (:func:`add_security_group`).

:func:`payload_ports` is what an agent gets for each port (``drivers.base.Port``): the
network's type, segment, physical network and MTU, port security, the security-group rules
already resolved to addresses (remote groups expanded to their member ports' IPs), allowed
address pairs and the device tag.

Errors carry Nova's texts. They are :class:`~novalite.errors.Invalid` (400, as a create
answers them) unless Nova answers them otherwise everywhere; ``os-interface`` maps the
not-found ones to 404 itself.
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from novalite import errors
from novalite.context import RequestContext
from novalite.db import Connection
from novalite.db import schema as t
from novalite.store import networks
from novalite.timeutil import utcnow

# -- Nova's errors --------------------------------------------------------------------------


class NetworkNotFound(errors.Invalid):
    """``Network <id> could not be found.`` (400 in a create, 404 in an attach)."""

    def __init__(self, network_id: str) -> None:
        super().__init__(f"Network {network_id} could not be found.")


class PortNotFound(errors.Invalid):
    """``Port id <id> could not be found.`` (400 in a create, 404 in an attach)."""

    def __init__(self, port_id: str, message: str | None = None) -> None:
        super().__init__(message or f"Port id {port_id} could not be found.")


class PortInUse(errors.Conflict):
    def __init__(self, port_id: str) -> None:
        super().__init__(f"Port {port_id} is still in use.")


class FixedIpAlreadyInUse(errors.Invalid):
    """400 in a create, 409 in an attach (Nova's)."""

    def __init__(self, address: str, instance_uuid: str | None) -> None:
        if instance_uuid is None:  # taken by no server's port (the gateway), or lost a race
            super().__init__(f"Fixed IP {address} is already in use.")
        else:
            super().__init__(f"Fixed IP address {address} is already in use on instance {instance_uuid}.")


class NetworkAmbiguous(errors.Conflict):
    def __init__(self) -> None:
        super().__init__("Multiple possible networks found, use a Network ID to be more specific.")


class NoMoreFixedIps(errors.NoMoreAddresses):
    def __init__(self, network_id: str) -> None:
        super().__init__(f"No fixed IP addresses available for network: {network_id}")


class PortLimitExceeded(errors.Forbidden):
    def __init__(self) -> None:
        super().__init__("Maximum number of ports exceeded")


class SecurityGroupNotFound(errors.NotFound):
    """Nova's SecurityGroupNotFound: 400 in a create, 404 in the security-group actions."""


class NoUniqueMatch(errors.Conflict):
    pass


CANNOT_APPLY = "Network requires port_security_enabled and subnet associated in order to apply security groups."


# -- what a create asks for -----------------------------------------------------------------


@dataclass(frozen=True)
class NicRequest:
    """One entry of a create's ``networks`` list."""

    network_id: str | None = None
    port_id: str | None = None
    fixed_ip: str | None = None
    tag: str | None = None


@dataclass
class PlannedNic:
    network: Any  # the networks row
    port: Any | None = None  # the user's port (a ports row), or None: one is made
    fixed_ip: str | None = None
    tag: str | None = None


@dataclass
class NetworkPlan:
    """The resolved ``networks`` of a create: the NICs in order, and the security groups of
    the ports made for the server (None: the project's ``default``)."""

    nics: list[PlannedNic] = field(default_factory=list)
    security_groups: list[str] | None = None


def owner_for(availability_zone: str | None) -> str:
    """A server's ports' ``device_owner``: ``compute:<az>``, as Nova sets it."""
    return f"compute:{availability_zone or 'nova'}"


async def available_networks(conn: Connection, project_id: str, *, auto: bool) -> list[Any]:
    """The networks a create without a network id may use (Nova's ``_get_available_networks``):
    the project's own unshared networks (up, for ``auto``), then the shared ones."""
    n = t.networks
    own = sa.and_(n.c.project_id == project_id, n.c.shared.is_(False))
    if auto:
        own = sa.and_(own, n.c.admin_state_up.is_(True))
    query = sa.select(n).where(sa.or_(own, n.c.shared.is_(True))).order_by(n.c.shared, n.c.created_at, n.c.id)
    return list(await conn.execute(query))


async def plan_networks(
    conn: Connection,
    ctx: RequestContext,
    project_id: str,
    requested: str | list[NicRequest] | None,
    security_groups: list[str] | None,
) -> NetworkPlan:
    """Resolve a create's ``networks`` (already parsed: a list, ``"auto"``, ``"none"`` or
    None when absent) and ``security_groups`` names/ids, with Nova's checks.

    No network named (absent before 2.37, or an empty list): the one network the project
    can use, none if there is none, 409 if there are several; ``"auto"``: the same, but
    400 when there is none (novalite has no auto-allocated topology)."""
    plan = NetworkPlan(security_groups=await resolve_security_groups(conn, project_id, security_groups))
    if requested == "none":
        return plan
    if requested is None or requested == "auto" or requested == []:
        nets = await available_networks(conn, project_id, auto=requested == "auto")
        if len(nets) > 1:
            raise NetworkAmbiguous()
        if not nets:
            if requested == "auto":
                raise errors.Invalid(f"Unable to automatically allocate a network for project {project_id}")
            return plan
        plan.nics.append(PlannedNic(nets[0]))
    else:
        assert isinstance(requested, list)
        for req in requested:
            if req.port_id:
                port = await _visible_port(conn, ctx, req.port_id)
                if port.device_id:
                    raise PortInUse(req.port_id)
                if not port.ip:
                    raise errors.Invalid(f"Port {req.port_id} requires a FixedIP in order to be used.")
                network = (await conn.execute(sa.select(t.networks).where(t.networks.c.id == port.network_id))).one()
                plan.nics.append(PlannedNic(network, port=port, tag=req.tag))
                continue
            assert req.network_id is not None
            network = await _visible_network(conn, ctx, req.network_id)
            if not await networks.network_subnets(conn, network.id):
                raise errors.Invalid(f"Network {network.id} requires a subnet in order to boot instances on.")
            if req.fixed_ip:
                await _check_fixed_ip_free(conn, network.id, req.fixed_ip)
            plan.nics.append(PlannedNic(network, fixed_ip=req.fixed_ip, tag=req.tag))
    if plan.security_groups and any(nic.port is None and not nic.network.port_security_enabled for nic in plan.nics):
        raise errors.Invalid(CANNOT_APPLY)
    return plan


async def _visible_network(conn: Connection, ctx: RequestContext, network_id: str) -> Any:
    try:
        return await networks.get_network(conn, ctx, network_id)
    except networks.NotVisible:
        raise NetworkNotFound(network_id) from None


async def _visible_port(conn: Connection, ctx: RequestContext, port_id: str) -> Any:
    try:
        return await networks.get_port(conn, ctx, port_id)
    except networks.NotVisible:
        raise PortNotFound(port_id) from None


async def _check_fixed_ip_free(conn: Connection, network_id: str, address: str) -> None:
    ips, p, s = t.port_ips, t.ports, t.subnets
    holder = (
        await conn.execute(
            sa.select(p.c.device_id)
            .select_from(ips.join(p, p.c.id == ips.c.port_id).join(s, s.c.id == ips.c.subnet_id))
            .where(s.c.network_id == network_id, ips.c.ip_address == str(ipaddress.ip_address(address)))
        )
    ).first()
    if holder is not None:
        raise FixedIpAlreadyInUse(address, holder.device_id)


async def resolve_security_groups(conn: Connection, project_id: str, wanted: list[str] | None) -> list[str] | None:
    """Security-group names or ids of the project as ids (Nova's ``_get_security_group_ids``);
    None for none asked or only ``default`` (the port gets the project's default group)."""
    names = list(dict.fromkeys(wanted or []))
    if not names or names == ["default"]:
        return None
    await networks.default_security_group(conn, project_id)
    g = t.security_groups
    rows = list(await conn.execute(sa.select(g.c.id, g.c.name).where(g.c.project_id == project_id)))
    by_id = {r.id for r in rows}
    by_name: dict[str, list[str]] = defaultdict(list)
    for r in rows:
        by_name[r.name].append(r.id)
    found = []
    for name in names:
        if name in by_id:
            found.append(name)
        elif name in by_name:
            if len(by_name[name]) > 1:
                raise NoUniqueMatch(f"Multiple security groups found matching '{name}'. Use an ID to be more specific.")
            found.append(by_name[name][0])
        else:
            raise errors.Invalid(f"Security group {name} not found.")
    return list(dict.fromkeys(found))


# -- giving a server its ports --------------------------------------------------------------


async def attach_planned(
    conn: Connection, plan: NetworkPlan, instance_uuid: str, project_id: str, availability_zone: str | None
) -> list[str]:
    """Give a new instance the planned NICs (in the create's transaction); their port ids."""
    port_ids = []
    for index, nic in enumerate(plan.nics):
        if nic.port is not None:
            await bind_port(conn, nic.port, instance_uuid, project_id, availability_zone, index, nic.tag)
            port_ids.append(nic.port.id)
        else:
            port_ids.append(
                await create_server_port(
                    conn,
                    nic.network,
                    instance_uuid,
                    project_id,
                    availability_zone,
                    index=index,
                    tag=nic.tag,
                    fixed_ip=nic.fixed_ip,
                    security_groups=plan.security_groups,
                )
            )
    return port_ids


async def bind_port(
    conn: Connection,
    port: Any,
    instance_uuid: str,
    project_id: str,
    availability_zone: str | None,
    index: int,
    tag: str | None,
) -> None:
    """Bind the user's port to the instance (kept when the server is deleted). The UPDATE
    expects the port unbound: of two servers created with one port, one gets it, the other
    is refused (409 PortInUse)."""
    if port.project_id != project_id:
        raise errors.Invalid(f"Port {port.id} not usable for instance {instance_uuid}.")
    p = t.ports
    result = await conn.execute(
        p.update()
        .where(p.c.id == port.id, p.c.device_id == "", p.c.instance_uuid.is_(None))
        .values(
            instance_uuid=instance_uuid,
            device_id=instance_uuid,
            device_owner=owner_for(availability_zone),
            status="ACTIVE",
            device_tag=tag,
            device_index=index,
            preserve_on_delete=True,
            updated_at=utcnow(),
            revision_number=p.c.revision_number + 1,
        )
    )
    if not result.rowcount:
        raise PortInUse(port.id)


async def create_server_port(
    conn: Connection,
    network: Any,
    instance_uuid: str,
    project_id: str,
    availability_zone: str | None,
    *,
    index: int,
    tag: str | None = None,
    fixed_ip: str | None = None,
    security_groups: list[str] | None = None,
) -> str:
    """A port made for the server on ``network`` (deleted with it), owned by its project."""
    ctx = RequestContext(project_id=project_id, roles=["admin"])
    body: dict[str, Any] = {
        "network_id": network.id,
        "project_id": project_id,
        "device_id": instance_uuid,
        "device_owner": owner_for(availability_zone),
    }
    if fixed_ip:
        body["fixed_ips"] = [{"ip_address": fixed_ip}]
    if security_groups:
        body["security_groups"] = security_groups
    try:
        port_id = await networks.create_port(conn, ctx, body, quota=None, instance_uuid=instance_uuid)
    except networks.NetworkError as exc:
        if exc.type == "IpAddressGenerationFailure":
            raise NoMoreFixedIps(network.id) from None
        if exc.type == "IpAddressAlreadyAllocated":
            raise FixedIpAlreadyInUse(str(fixed_ip), None) from None
        if exc.type in ("InvalidIpForNetwork", "InvalidIpForSubnet"):
            raise errors.Invalid(
                f"Invalid input received: Fixed IP {fixed_ip} is not a valid ip address for network {network.id}."
            ) from None
        if exc.type == "OverQuota":
            raise PortLimitExceeded() from None
        raise
    p = t.ports
    await conn.execute(
        p.update().where(p.c.id == port_id).values(device_tag=tag, device_index=index, preserve_on_delete=False)
    )
    return port_id


async def unbind_or_delete(conn: Connection, port: Any) -> None:
    """Take a port off its server: the user's is kept, unbound; one made for the server goes."""
    p = t.ports
    if port.preserve_on_delete:
        await conn.execute(
            p.update()
            .where(p.c.id == port.id)
            .values(
                instance_uuid=None,
                device_id="",
                device_owner="",
                binding_host_id="",
                status="DOWN",
                device_tag=None,
                device_index=0,
                preserve_on_delete=False,
                updated_at=utcnow(),
                revision_number=p.c.revision_number + 1,
            )
        )
    else:
        await conn.execute(p.delete().where(p.c.id == port.id))  # port_ips go with it (FK cascade)


async def release_ports(conn: Connection, instance_uuid: str) -> set[str]:
    """A deleted server's ports: those made for it deleted, those the user passed in unbound;
    the security groups they were in (their members changed)."""
    groups: set[str] = set()
    for port in list(await conn.execute(sa.select(t.ports).where(t.ports.c.instance_uuid == instance_uuid))):
        groups.update(port.security_groups or [])
        await unbind_or_delete(conn, port)
    return groups


#: Built once: it runs for every payload an agent gets (several per server built).
_SERVER_PORTS = (
    sa.select(t.ports)
    .where(t.ports.c.instance_uuid == sa.bindparam("uuid_"))
    .order_by(t.ports.c.device_index, t.ports.c.created_at, t.ports.c.id)
)


async def server_ports(conn: Connection, instance_uuid: str) -> list[Any]:
    """The server's ports in NIC order."""
    return list(await conn.execute(_SERVER_PORTS, {"uuid_": instance_uuid}))


# -- os-interface -----------------------------------------------------------------------------


async def attach_interface(
    conn: Connection,
    ctx: RequestContext,
    row: Any,
    *,
    network_id: str | None,
    port_id: str | None,
    fixed_ip: str | None,
    tag: str | None,
) -> str:
    """Attach a NIC to the server ``row`` (the user's port, or a new port on a network, or on
    the one network the project can use); the port id. Errors as Nova's attach answers them."""
    project_id = str(row.project_id)
    index = 1 + max((p.device_index for p in await server_ports(conn, row.uuid)), default=-1)
    az = row.availability_zone
    try:
        if port_id:
            port = await _visible_port(conn, ctx, port_id)
            if port.device_id:
                raise PortInUse(port_id)
            await bind_port(conn, port, row.uuid, project_id, az, index, tag)
            return port_id
        if network_id:
            network = await _visible_network(conn, ctx, network_id)
        else:
            nets = await available_networks(conn, project_id, auto=False)
            if not nets:
                raise errors.Invalid(
                    f"No specific network was requested and none are available for project '{project_id}'."
                )
            if len(nets) > 1:
                raise errors.Invalid("Multiple possible networks found, use a Network ID to be more specific.")
            network = nets[0]
        if fixed_ip:
            await _check_fixed_ip_free(conn, network.id, fixed_ip)
        return await create_server_port(
            conn, network, row.uuid, project_id, az, index=index, tag=tag, fixed_ip=fixed_ip
        )
    except (NetworkNotFound, PortNotFound) as exc:
        raise errors.NotFound(str(exc)) from None
    except FixedIpAlreadyInUse as exc:
        raise errors.Conflict(str(exc)) from None
    except NoMoreFixedIps as exc:
        raise errors.Invalid(str(exc)) from None


async def interface_of(conn: Connection, instance_uuid: str, port_id: str) -> Any:
    """The server's port ``port_id``; 404 in Nova's words if the server has no such port."""
    p = t.ports
    port = (await conn.execute(sa.select(p).where(p.c.id == port_id, p.c.instance_uuid == instance_uuid))).first()
    if port is None:
        raise errors.NotFound(f"Instance {instance_uuid} does not have a port with id {port_id}")
    return port


async def detach_interface(conn: Connection, instance_uuid: str, port_id: str) -> Any:
    """Take the port off the server (unbound if the user's, else deleted); the port as it was."""
    p = t.ports
    port = (
        await conn.execute(sa.select(p).where(p.c.id == port_id, p.c.instance_uuid == instance_uuid).with_for_update())
    ).first()
    if port is None:
        raise errors.NotFound(f"Port {port_id} is not attached")
    await unbind_or_delete(conn, port)
    return port


# -- security groups of a server --------------------------------------------------------------


async def _group_for_action(conn: Connection, ctx: RequestContext, project_id: str, name: str) -> str:
    """The group named by id (any the caller sees) or by name (of the caller's project), as
    Neutron's find-by-name-or-id answers Nova."""
    g = t.security_groups
    await networks.default_security_group(conn, project_id)
    by_id = await conn.scalar(sa.select(g.c.id).where(g.c.id == name, networks.visible_project(ctx, g.c.project_id)))
    if by_id:
        return str(by_id)
    rows = list(await conn.execute(sa.select(g.c.id).where(g.c.project_id == ctx.project_id, g.c.name == name)))
    if len(rows) > 1:
        raise NoUniqueMatch(f"Multiple security_group matches found for name '{name}', use an ID to be more specific.")
    if not rows:
        raise SecurityGroupNotFound(f"Security group {name} is not found for project {ctx.project_id}")
    return str(rows[0].id)


async def add_security_group(conn: Connection, ctx: RequestContext, row: Any, name: str) -> str:
    """``addSecurityGroup``: the group on every port of the server (Nova's ``add_to_instance``);
    the group's id."""
    group_id = await _group_for_action(conn, ctx, str(row.project_id), name)
    ports = await server_ports(conn, row.uuid)
    if not ports:
        raise SecurityGroupNotFound(f"instance_id {row.uuid} could not be found as device id on any ports")
    for port in ports:
        if not (port.port_security_enabled and port.ip):
            raise errors.Invalid(CANNOT_APPLY)
    for port in ports:
        groups = list(port.security_groups or [])
        if group_id not in groups:
            await _set_groups(conn, port.id, [*groups, group_id])
    await networks.touch_servers(conn, [row.uuid])
    return group_id


async def remove_security_group(conn: Connection, ctx: RequestContext, row: Any, name: str) -> str:
    """``removeSecurityGroup``: off every port of the server that has it; 404 if none has. The
    group's id."""
    group_id = await _group_for_action(conn, ctx, str(row.project_id), name)
    ports = await server_ports(conn, row.uuid)
    if not ports:
        raise SecurityGroupNotFound(f"instance_id {row.uuid} could not be found as device id on any ports")
    found = False
    for port in ports:
        groups = list(port.security_groups or [])
        if group_id in groups:
            groups.remove(group_id)
            await _set_groups(conn, port.id, groups)
            found = True
    if not found:
        raise SecurityGroupNotFound(f"Security group {name} not associated with the instance {row.uuid}")
    await networks.touch_servers(conn, [row.uuid])
    return group_id


async def _set_groups(conn: Connection, port_id: str, groups: list[str]) -> None:
    p = t.ports
    await conn.execute(
        p.update()
        .where(p.c.id == port_id)
        .values(security_groups=groups, updated_at=utcnow(), revision_number=p.c.revision_number + 1)
    )


async def group_names(conn: Connection, group_ids: set[str]) -> dict[str, str]:
    """Names of security groups (their id when unnamed), for the servers' views."""
    if not group_ids:
        return {}
    g = t.security_groups
    rows = await conn.execute(sa.select(g.c.id, g.c.name).where(g.c.id.in_(sorted(group_ids))))
    return {r.id: r.name or r.id for r in rows}


async def server_security_groups(conn: Connection, instance_uuid: str) -> list[dict[str, Any]]:
    """``GET /servers/{id}/os-security-groups``: each port's groups in Nova's format (ingress
    rules only, as Nova converts Neutron's), sorted by project and name."""
    ports = await server_ports(conn, instance_uuid)
    ids = [gid for p in ports for gid in (p.security_groups or [])]
    if not ids:
        return []
    g = t.security_groups
    groups = {r.id: r for r in await conn.execute(sa.select(g).where(g.c.id.in_(sorted(set(ids)))))}
    rules = await networks.rules_of(conn, sorted(groups))
    remote_ids = {r.remote_group_id for rs in rules.values() for r in rs if r.remote_group_id}
    remotes = {r.id: r for r in await conn.execute(sa.select(g).where(g.c.id.in_(sorted(remote_ids))))}
    found = []
    for gid in ids:
        group = groups.get(gid)
        if group is None:
            continue
        view: dict[str, Any] = {
            "id": group.id,
            "description": group.description,
            "name": group.name,
            "tenant_id": group.project_id,
            "rules": [],
        }
        for r in rules.get(gid, []):
            if r.direction != "ingress":
                continue
            lo, hi = r.port_range_min, r.port_range_max
            if r.protocol and lo is None and hi is None:
                lo, hi = (1, 65535) if r.protocol.upper() in ("TCP", "UDP") else (-1, -1)
            rule: dict[str, Any] = {
                "id": r.id,
                "parent_group_id": gid,
                "ip_protocol": r.protocol,
                "from_port": lo,
                "to_port": hi,
                "group": {},
                "ip_range": {},
            }
            if r.remote_group_id:
                remote = remotes.get(r.remote_group_id)
                if remote is None:
                    continue
                rule["group"] = {"name": remote.name, "tenant_id": remote.project_id}
            else:
                rule["ip_range"] = {"cidr": r.remote_ip_prefix or "0.0.0.0/0"}
            view["rules"].append(rule)
        found.append(view)
    return sorted(found, key=lambda v: (v["tenant_id"] or "", v["name"]))


def security_groups_view(ports: list[Any], names: dict[str, str]) -> list[dict[str, str]]:
    """A server's ``security_groups``: each port's groups by name, as Nova lists them."""
    return [{"name": names[gid]} for p in ports for gid in (p.security_groups or []) if gid in names]


# -- keeping running guests' rules current ------------------------------------------------------


async def port_security_updates(
    conn: Connection, *, group_ids: Any = (), port_ids: Any = (), instance_uuids: Any = ()
) -> list[tuple[str, dict[str, Any]]]:
    """The ``update_port_security`` casts a change calls for, as (topic, arguments).

    ``port_ids``: ports whose own security changed (groups, port security, address pairs,
    addresses); ``group_ids``: groups whose rules or members changed. Every bound port of a
    placed server is refreshed whose groups are among these or whose groups' rules name one
    of them as remote group (their members' addresses are in its rules); the arguments are
    the server's payload and the port's, rules resolved again. ``instance_uuids``: servers
    whose ports are all new (created with them)."""
    from novalite.store.servers import payload_from_row  # servers imports this module

    p, r, g, i = t.ports, t.security_group_rules, t.security_groups, t.instances
    changed_ports = set(port_ids)
    groups = set(group_ids)
    if instance_uuids:  # new servers: their ports' groups have new members
        rows = await conn.execute(sa.select(p.c.id).where(p.c.instance_uuid.in_(sorted(set(instance_uuids)))))
        changed_ports.update(row[0] for row in rows)
    if changed_ports:
        for row in await conn.execute(sa.select(p.c.security_groups).where(p.c.id.in_(sorted(changed_ports)))):
            groups.update(row.security_groups or [])
    if not groups and not changed_ports:
        return []
    if groups:
        referencing = await conn.execute(
            sa.select(r.c.security_group_id).where(r.c.remote_group_id.in_(sorted(groups))).distinct()
        )
        groups.update(row[0] for row in referencing)
    projects = {row[0] for row in await conn.execute(sa.select(g.c.project_id).where(g.c.id.in_(sorted(groups))))}
    query = sa.select(p.c.id, p.c.instance_uuid, p.c.security_groups).where(p.c.instance_uuid.is_not(None))
    query = query.where(
        sa.or_(p.c.project_id.in_(sorted(p_ for p_ in projects if p_)), p.c.id.in_(sorted(changed_ports)))
    )
    affected: dict[str, set[str]] = defaultdict(set)
    for row in await conn.execute(query):
        if row.id in changed_ports or groups & set(row.security_groups or []):
            affected[row.instance_uuid].add(row.id)
    if not affected:
        return []
    casts = []
    placed = sa.select(i).where(i.c.uuid.in_(sorted(affected)), i.c.host.is_not(None), i.c.deleted.is_(False))
    for instance in await conn.execute(placed):
        payload = await payload_from_row(conn, instance)
        for port in payload["ports"]:
            if port["id"] in affected[instance.uuid]:
                casts.append((f"compute.{instance.host}", {"instance": payload, "port": port}))
    return casts


# -- what an agent gets -----------------------------------------------------------------------


async def payload_ports(conn: Connection, instance_uuid: str) -> list[dict[str, Any]]:
    """The server's ports as the driver's ``Port`` (plain JSON), in NIC order."""
    ports = await server_ports(conn, instance_uuid)
    if not ports:
        return []
    network_ids = sorted({p.network_id for p in ports if p.network_id})
    nets = {n.id: n for n in await conn.execute(sa.select(t.networks).where(t.networks.c.id.in_(network_ids)))}
    subnets = list(await conn.execute(sa.select(t.subnets).where(t.subnets.c.network_id.in_(network_ids))))
    group_ids = sorted({g for p in ports for g in (p.security_groups or [])})
    rules = await networks.rules_of(conn, group_ids)
    remote_ids = sorted({r.remote_group_id for rs in rules.values() for r in rs if r.remote_group_id})
    members = await _group_member_ips(conn, remote_ids)
    result = []
    for p in ports:
        net = nets.get(p.network_id)
        subnet = _subnet_of(subnets, p.ip)
        result.append(
            {
                "mac": p.mac,
                "ip": p.ip,
                "network": p.network,
                "prefix_len": ipaddress.ip_network(subnet.cidr).prefixlen if subnet is not None else None,
                "gateway": subnet.gateway_ip if subnet is not None else None,
                "id": p.id,
                "network_id": p.network_id,
                "network_type": (net.provider_network_type if net is not None else None) or "local",
                "segmentation_id": net.provider_segmentation_id if net is not None else None,
                "physical_network": net.provider_physical_network if net is not None else None,
                "mtu": net.mtu if net is not None else None,
                "port_security_enabled": bool(p.port_security_enabled),
                "security_rules": _resolved_rules(p, rules, members) if p.port_security_enabled else [],
                "allowed_address_pairs": list(p.allowed_address_pairs or []),
                "tag": p.device_tag,
            }
        )
    return result


def _subnet_of(subnets: list[Any], ip: str | None) -> Any:
    if not ip:
        return None
    address = ipaddress.ip_address(ip)
    return next((s for s in subnets if address in ipaddress.ip_network(s.cidr)), None)


async def _group_member_ips(conn: Connection, group_ids: list[str]) -> dict[str, list[str]]:
    """Each group's member addresses: the fixed IPs and allowed address pairs of the ports in it."""
    found: dict[str, list[str]] = {gid: [] for gid in group_ids}
    if not group_ids:
        return found
    g, p = t.security_groups, t.ports
    projects = [r[0] for r in await conn.execute(sa.select(g.c.project_id).where(g.c.id.in_(group_ids)).distinct())]
    members = list(
        await conn.execute(
            sa.select(p.c.id, p.c.security_groups, p.c.allowed_address_pairs).where(
                p.c.project_id.in_(projects), p.c.security_groups.is_not(None)
            )
        )
    )
    ips = await networks.fixed_ips_of(conn, [m.id for m in members])
    wanted = set(group_ids)
    for m in members:
        for gid in set(m.security_groups or []) & wanted:
            found[gid].extend(i["ip_address"] for i in ips.get(m.id, []))
            found[gid].extend(pair["ip_address"] for pair in (m.allowed_address_pairs or []))
    return {gid: sorted(set(addrs)) for gid, addrs in found.items()}


def _prefix(address: str) -> str:
    return str(ipaddress.ip_network(address, strict=False))


def _resolved_rules(port: Any, rules: dict[str, list[Any]], members: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The port's groups' rules with remote groups expanded to addresses (one rule each)."""
    out: list[dict[str, Any]] = []
    for gid in port.security_groups or []:
        for r in rules.get(gid, []):
            base = {
                "direction": r.direction,
                "ethertype": r.ethertype,
                "protocol": r.protocol,
                "port_range_min": r.port_range_min,
                "port_range_max": r.port_range_max,
            }
            if r.remote_group_id:
                version = 6 if r.ethertype == "IPv6" else 4
                for address in members.get(r.remote_group_id, []):
                    net = _prefix(address)
                    if ipaddress.ip_network(net).version == version:
                        out.append({**base, "remote_ip_prefix": net})
            else:
                out.append({**base, "remote_ip_prefix": r.remote_ip_prefix})
    unique: list[dict[str, Any]] = []
    for rule in out:
        if rule not in unique:
            unique.append(rule)
    return unique
