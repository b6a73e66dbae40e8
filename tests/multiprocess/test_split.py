"""One controller, three ``novalite agent`` processes: spread, a dead agent, its return.

What is truthful after an agent comes back without the guests it had (the fake driver
keeps its guests in the process's memory, so a killed agent loses them, like a
hypervisor host that rebooted without autostart): the servers are not deleted (a row
is never silently dropped, a guest never silently destroyed), their power state is
reported as NOSTATE (0) and, being ACTIVE with no running guest, they become SHUTOFF —
the same thing the power-state sync does to a guest that stopped by itself.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time

import pytest

from tests.multiprocess.conftest import (
    MV,
    SERVICE_DOWN_TIME,
    Deployment,
    create_server,
    hypervisors,
    make_image,
    servers,
    services,
    unlimited_quota,
    wait_for,
    wait_hosts_up,
    wait_settled,
)

pytestmark = [pytest.mark.rabbit, pytest.mark.postgres]

HOSTS = ("hv1", "hv2", "hv3")


async def test_controller_and_three_agents(deployment: Deployment) -> None:
    dep = deployment
    # hv1 starts before any conductor exists: it must wait and register once one answers.
    agents = {"hv1": dep.start_agent("hv1")}
    await asyncio.sleep(1.0)
    assert agents["hv1"].alive, agents["hv1"].tail()
    ctl = await dep.start_controller()
    agents.update({h: dep.start_agent(h) for h in HOSTS[1:]})
    api = dep.api(ctl)

    async def all_hypervisors_up() -> bool:
        hv = await hypervisors(api)
        return all(h in hv and hv[h]["state"] == "up" for h in HOSTS)

    await wait_for(all_hypervisors_up, 45, "hv1..hv3 up in the hypervisor list", dep=dep)
    await wait_hosts_up(api, set(HOSTS))

    image = await make_image(api)
    await unlimited_quota(api)
    results = await asyncio.gather(*(create_server(api, image, f"vm{i}") for i in range(30)))
    assert all(status == 202 for status, _ in results), results
    ids = {body["server"]["id"] for _, body in results}
    settled = await wait_settled(api, ids, timeout=60)
    assert {s["status"] for s in settled.values()} == {"ACTIVE"}, collections.Counter(
        s["status"] for s in settled.values()
    )
    per_host = collections.Counter(s["OS-EXT-SRV-ATTR:host"] for s in settled.values())
    assert set(per_host) == set(HOSTS) and all(n > 0 for n in per_host.values()), per_host

    # -- hv3 dies (SIGKILL: no goodbye) --------------------------------------------------
    victim = "hv3"
    on_victim = sorted(i for i, s in settled.items() if s["OS-EXT-SRV-ATTR:host"] == victim)
    others = sorted(ids - set(on_victim))
    agents[victim].kill()
    killed_at = time.monotonic()
    await wait_hosts_up(api, {victim}, timeout=SERVICE_DOWN_TIME + 5, up=False)
    assert time.monotonic() - killed_at <= SERVICE_DOWN_TIME + 3.0
    svc = await services(api)
    assert svc["hv1"]["state"] == "up" and svc["hv2"]["state"] == "up"

    # Actions on its servers answer 409 at once rather than hang; reads still work.
    started = time.monotonic()
    r = await api.post(f"/compute/v2.1/servers/{on_victim[0]}/action", json={"os-stop": None}, microversion=MV)
    assert r.status == 409, r
    assert "down" in r.body["conflictingRequest"]["message"]
    assert time.monotonic() - started < 5
    r = await api.get(f"/compute/v2.1/servers/{on_victim[0]}", microversion=MV)
    assert r.status == 200 and r.body["server"]["status"] == "ACTIVE", r
    # The other hosts' servers still obey.
    r = await api.post(f"/compute/v2.1/servers/{others[0]}/action", json={"os-stop": None}, microversion=MV)
    assert r.status == 202, r

    # -- hv3 comes back without its guests ----------------------------------------------------
    agents[victim] = dep.respawn(agents[victim])
    await wait_hosts_up(api, {victim}, timeout=30)

    async def reconciled() -> bool:
        every = await servers(api)
        return (
            all(every[i]["status"] == "SHUTOFF" and every[i]["OS-EXT-STS:power_state"] == 0 for i in on_victim)
            and every[others[0]]["status"] == "SHUTOFF"
        )

    await wait_for(reconciled, 20, f"{victim}'s lost guests reported NOSTATE/SHUTOFF", dep=dep)
    every = await servers(api)
    assert all(i in every for i in on_victim), "reconciliation must not delete servers"
    assert all(every[i]["status"] == "ACTIVE" for i in others[1:]), "other hosts' servers are untouched"
    log = agents[victim].log.read_text()
    assert log.count("compute.guest_missing") >= len(on_victim), "each lost guest is logged"

    # The reconciled host serves again: start one of its servers (a fresh guest boots).
    r = await api.post(f"/compute/v2.1/servers/{on_victim[0]}/action", json={"os-start": None}, microversion=MV)
    assert r.status == 202, r
    await wait_settled(api, {on_victim[0]}, timeout=15)

    # Clean shutdown of an agent (SIGTERM) is also seen as down, and deletes still work.
    assert agents["hv2"].stop(signal.SIGTERM) == 0
    await wait_hosts_up(api, {"hv2"}, timeout=SERVICE_DOWN_TIME + 5, up=False)
    on_hv2 = next(i for i, s in settled.items() if s["OS-EXT-SRV-ATTR:host"] == "hv2")
    r = await api.delete(f"/compute/v2.1/servers/{on_hv2}")
    assert r.status == 204, r  # a local delete: the host is down
    r = await api.get(f"/compute/v2.1/servers/{on_hv2}")
    assert r.status == 404, r
