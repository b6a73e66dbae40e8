"""IP address management: pools, and atomic allocation of fixed IPs in the database.

Atomic as claims are: an address is taken by inserting its ``port_ips`` row, whose
UNIQUE (subnet_id, ip_address) lets exactly one of any number of concurrent inserts
win (in any process, on SQLite or PostgreSQL). A loser's insert fails inside a
savepoint and it tries the next free address; when none is left the subnet is full.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from novalite.db import Connection
from novalite.db import schema as t

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def default_gateway(net: IPNetwork) -> str | None:
    """The first address after the network's (Neutron's default gateway), None for a /32 or /128."""
    if net.num_addresses < 2:
        return None
    return str(net.network_address + 1)


def first_host(net: IPNetwork) -> int:
    """The lowest address a port may have (IPv6: not the subnet-router anycast address)."""
    return int(net.network_address) + (1 if net.num_addresses > 1 else 0)


def last_host(net: IPNetwork) -> int:
    """The highest address a port may have (IPv4: not the broadcast address)."""
    top = int(net.broadcast_address)
    return top - 1 if net.version == 4 and net.num_addresses > 2 else top


def default_pools(net: IPNetwork, gateway: str | None) -> list[dict[str, str]]:
    """Every host address but the gateway, as Neutron computes the default allocation pools."""
    lo, hi = first_host(net), last_host(net)
    ranges = [(lo, hi)]
    if gateway is not None:
        gw = int(ipaddress.ip_address(gateway))
        ranges = [(a, b) for a, b in ((lo, gw - 1), (gw + 1, hi)) if a <= b] if lo <= gw <= hi else ranges
    make = ipaddress.ip_address
    return [{"start": str(make(a)), "end": str(make(b))} for a, b in ranges if a <= b]


def pool_ranges(pools: list[dict[str, str]]) -> list[tuple[int, int]]:
    return [(int(ipaddress.ip_address(p["start"])), int(ipaddress.ip_address(p["end"]))) for p in pools]


def in_pools(pools: list[dict[str, str]], address: str) -> bool:
    value = int(ipaddress.ip_address(address))
    return any(a <= value <= b for a, b in pool_ranges(pools))


async def used_addresses(conn: Connection, subnet_id: str) -> set[str]:
    rows = await conn.execute(sa.select(t.port_ips.c.ip_address).where(t.port_ips.c.subnet_id == subnet_id))
    return {r[0] for r in rows}


#: How many of the lowest free addresses an allocator picks its first tries from at random.
SPREAD = 16


def _free(subnet: Any, used: set[str], version: int) -> Iterator[str]:
    make = ipaddress.IPv4Address if version == 4 else ipaddress.IPv6Address
    for lo, hi in sorted(pool_ranges(subnet.allocation_pools or [])):
        for value in range(lo, hi + 1):
            ip = str(make(value))
            if ip not in used:
                yield ip


def candidates(subnet: Any, used: set[str], version: int) -> Iterator[str]:
    """Free addresses of the subnet's pools, lowest first, the first :data:`SPREAD` in random order.

    As Neutron's IPAM: servers get low, predictable addresses, and concurrent allocators
    mostly try different ones first instead of all queueing behind one insert.
    """
    free = _free(subnet, used, version)
    first = list(itertools.islice(free, SPREAD))
    random.shuffle(first)
    yield from first
    yield from free


async def try_take(conn: Connection, port_id: str, subnet_id: str, address: str) -> bool:
    """Insert the address's row in a savepoint: True if it is now this port's, False if taken."""
    try:
        async with conn.begin_nested():
            await conn.execute(t.port_ips.insert().values(port_id=port_id, subnet_id=subnet_id, ip_address=address))
    except IntegrityError:
        return False
    return True


async def allocate_any(conn: Connection, port_id: str, subnet: Any) -> str | None:
    """A free address of ``subnet`` for the port, or None when its pools are full."""
    used = await used_addresses(conn, subnet.id)
    for address in candidates(subnet, used, subnet.ip_version):
        if await try_take(conn, port_id, subnet.id, address):
            return address
    return None


async def release_port(conn: Connection, port_id: str) -> None:
    await conn.execute(t.port_ips.delete().where(t.port_ips.c.port_id == port_id))
