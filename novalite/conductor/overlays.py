"""The conductor's side of VXLAN overlays: each host learns its peers for each network.

Every ``interval`` seconds the conductor reads who is on which overlay
(:mod:`novalite.store.overlays`) and casts ``set_overlay_peers`` (the whole list, never a
delta) to each host whose peers changed; a host that left a network gets an empty list
once. Everything is sent again every ``resend_every`` seconds, so a lost cast or an agent
that restarted (and forgot) converges without any bookkeeping of acknowledgements: the
message is idempotent and derived from the database, so it does not go through the outbox.
"""

from __future__ import annotations

import asyncio
import time

from novalite.bus import BusError
from novalite.context import RequestContext
from novalite.log import get_logger
from novalite.runtime import ControllerRuntime
from novalite.store import overlays

log = get_logger("novalite.conductor.overlays")

#: (host, network id) -> (VNI, peers) as last sent.
Sent = dict[tuple[str, str], tuple[int, tuple[str, ...]]]


def desired_peers(members: dict[str, tuple[int, set[str]]], endpoints: dict[str, str]) -> Sent:
    """What every member host of every overlay should reach: the other members' endpoints."""
    out: Sent = {}
    for network_id, (vni, hosts) in members.items():
        for host in hosts:
            peers = tuple(sorted({endpoints[h] for h in hosts if h != host and h in endpoints}))
            out[(host, network_id)] = (vni, peers)
    return out


class OverlaySync:
    """Keeps every host's overlay peers what the database says (see the module docstring)."""

    def __init__(self, rt: ControllerRuntime, interval: float, resend_every: float = 60.0) -> None:
        self.rt = rt
        self.interval = interval
        self.resend_every = resend_every
        self.sent: Sent = {}
        self._last_full = 0.0

    async def sync_once(self, ctx: RequestContext | None = None) -> int:
        """Send what changed (everything, when a full resend is due); how many casts went out."""
        ctx = ctx or RequestContext.admin()
        async with self.rt.db.connect() as conn:
            wanted = desired_peers(await overlays.vxlan_members(conn), await overlays.tunnel_endpoints(conn))
        full = time.monotonic() - self._last_full >= self.resend_every
        casts = 0
        for key in sorted(set(wanted) | set(self.sent)):
            host, network_id = key
            want = wanted.get(key)
            if want is None:
                vni, _ = self.sent[key]
                want = (vni, ())  # the host left this overlay: it reaches nobody any more
            if not full and self.sent.get(key) == want:
                continue
            try:
                await self.rt.bus.cast(
                    ctx, f"compute.{host}", "set_overlay_peers", network_id=network_id, vni=want[0], peers=list(want[1])
                )
            except BusError as exc:
                log.warning("conductor.overlay_peers_not_sent", host=host, network=network_id, error=str(exc))
                self.sent.pop(key, None)  # try again next round
                continue
            casts += 1
            if key in wanted:
                self.sent[key] = want
            else:
                self.sent.pop(key, None)
        if full:
            self._last_full = time.monotonic()
        return casts

    async def run(self) -> None:
        while True:
            try:
                await self.sync_once()
            except Exception:
                log.exception("conductor.overlay_sync_failed")
            await asyncio.sleep(self.interval)
