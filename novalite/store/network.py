"""Fixed-IP networking: one port per server on the configured network, MAC and IP assigned here.

Since issue 12 the ports are the network service's (:mod:`novalite.store.networks`):
addresses are taken atomically in ``port_ips`` (UNIQUE per subnet), MACs are unique.
"""

from __future__ import annotations

import ipaddress
import random

import sqlalchemy as sa

from novalite.config import Settings
from novalite.context import RequestContext
from novalite.db import Connection
from novalite.db import schema as t
from novalite.errors import NoMoreAddresses
from novalite.store import networks


def gateway(settings: Settings) -> str:
    net = ipaddress.ip_network(settings.network_cidr)
    return str(next(net.hosts()))


def random_mac() -> str:
    """A locally administered unicast MAC in QEMU's conventional fa:16:3e prefix (as Neutron uses)."""
    return f"fa:16:3e:{random.randint(0, 255):02x}:{random.randint(0, 255):02x}:{random.randint(0, 255):02x}"


async def allocate_port(conn: Connection, settings: Settings, instance_uuid: str) -> dict[str, str]:
    """Give the instance a port with a free IP of the built-in network (the gateway, .1, is skipped).

    Since issue 12 the port is a network-service port: on the ``network_name`` network (made
    at start), its address taken atomically in ``port_ips``, owned by the server's project,
    ``device_id`` the server and ``device_owner`` ``compute:nova``.
    """
    network_id = await networks.ensure_default_network(conn, settings)
    project_id = await conn.scalar(sa.select(t.instances.c.project_id).where(t.instances.c.uuid == instance_uuid))
    ctx = RequestContext(project_id=project_id, roles=["admin"])
    body = {
        "network_id": network_id,
        "project_id": project_id,
        "device_id": instance_uuid,
        "device_owner": networks.OWNER_COMPUTE,
    }
    try:
        port_id = await networks.create_port(conn, ctx, body, quota=-1, instance_uuid=instance_uuid)
    except networks.InConflict as exc:
        if exc.type == "IpAddressGenerationFailure":
            raise NoMoreAddresses(
                f"no free address left on network {settings.network_name} ({settings.network_cidr})"
            ) from None
        raise
    row = (await conn.execute(sa.select(t.ports).where(t.ports.c.id == port_id))).one()
    return {"id": port_id, "network": row.network, "mac": row.mac, "ip": row.ip}
