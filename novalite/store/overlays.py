"""Who is on which VXLAN overlay: the facts the conductor hands each host as its peers.

A host joins a ``vxlan`` network's overlay when a server with a port on that network is
placed on it, and leaves it with its last such server. Its tunnel endpoint is the
``host_ip`` its agent reports with its compute node.
"""

from __future__ import annotations

import sqlalchemy as sa

from novalite.db import Connection
from novalite.db import schema as t


async def vxlan_members(conn: Connection) -> dict[str, tuple[int, set[str]]]:
    """``{network id: (VNI, {host, ...})}`` of every VXLAN network with a server's port on a host."""
    p, i, n = t.ports.c, t.instances.c, t.networks.c
    query = (
        sa.select(n.id, n.provider_segmentation_id, i.host)
        .select_from(
            t.ports.join(t.instances, p.instance_uuid == i.uuid).join(t.networks, p.network_id == n.id)
        )
        .where(n.provider_network_type == "vxlan", i.deleted.is_(False), i.host.is_not(None))
        .distinct()
    )
    out: dict[str, tuple[int, set[str]]] = {}
    for network_id, vni, host in await conn.execute(query):
        if vni is None:
            continue
        out.setdefault(network_id, (int(vni), set()))[1].add(host)
    return out


async def tunnel_endpoints(conn: Connection) -> dict[str, str]:
    """``{host: host_ip}`` of the compute nodes that reported one."""
    c = t.compute_nodes.c
    rows = await conn.execute(sa.select(c.host, c.host_ip).where(c.host_ip.is_not(None)))
    return {host: ip for host, ip in rows}
