"""Fixed-IP networking: one port per server on the configured network, MAC and IP assigned here.

All allocation happens in this module so it can grow into a Neutron-compatible
network API later. The unique constraints on ``ports`` (MAC, and IP per network) make
racing allocations fail instead of sharing an address; the caller retries.
"""

from __future__ import annotations

import ipaddress
import random
import uuid as uuidlib

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from novalite.config import Settings
from novalite.db import Connection
from novalite.db import schema as t
from novalite.errors import NoMoreAddresses
from novalite.timeutil import utcnow


def gateway(settings: Settings) -> str:
    net = ipaddress.ip_network(settings.network_cidr)
    return str(next(net.hosts()))


def random_mac() -> str:
    """A locally administered unicast MAC in QEMU's conventional fa:16:3e prefix (as Neutron uses)."""
    return f"fa:16:3e:{random.randint(0, 255):02x}:{random.randint(0, 255):02x}:{random.randint(0, 255):02x}"


async def allocate_port(conn: Connection, settings: Settings, instance_uuid: str) -> dict[str, str]:
    """Give the instance a port with a free IP of the network (the gateway, .1, is skipped)."""
    net = ipaddress.ip_network(settings.network_cidr)
    used = {r[0] for r in await conn.execute(sa.select(t.ports.c.ip).where(t.ports.c.network == settings.network_name))}
    hosts = net.hosts()
    next(hosts)  # the gateway
    for addr in hosts:
        ip = str(addr)
        if ip in used:
            continue
        port = {"id": str(uuidlib.uuid4()), "network": settings.network_name, "mac": random_mac(), "ip": ip}
        try:
            async with conn.begin_nested():
                await conn.execute(t.ports.insert().values(instance_uuid=instance_uuid, created_at=utcnow(), **port))
        except IntegrityError:
            continue
        return port
    raise NoMoreAddresses(f"no free address left on network {settings.network_name} ({settings.network_cidr})")
