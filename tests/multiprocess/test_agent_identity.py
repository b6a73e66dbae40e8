"""An agent speaks only for its own host, with an identity the broker vouches for.

Each agent connects to RabbitMQ as its own user (``novalite-agent-<host>``) with the
narrow permissions docs/security-model.md gives. The test then plays a compute host that
was broken into: with hv-1's credentials it tries to speak for hv-2, command hv-2's
agent, place servers, forge its identity and read or delete queues it does not own.
Every attempt is refused, and nothing the API shows changes.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import pytest

from novalite.bus import Bus, RemoteError
from novalite.bus.identity import agent_user
from novalite.bus.rabbit import RabbitTransport
from novalite.context import RequestContext
from tests.conftest import RABBIT_HOST, rabbitmqctl
from tests.multiprocess.conftest import MV, Deployment, make_image, servers, wait_for, wait_hosts_up, wait_settled

pytestmark = [pytest.mark.rabbit, pytest.mark.postgres]

HOSTS = ("hv-1", "hv-2")


def agent_permissions(host: str) -> tuple[str, str, str]:
    """configure, write, read: its own queue and reply queues; publish to the shared exchange."""
    h = re.escape(host)
    return (
        rf"^(compute\.{h}|novalite\.reply\..*)$",
        rf"^(novalite|compute\.{h}|novalite\.reply\..*|amq\.default)$",
        rf"^(novalite|compute\.{h}|novalite\.reply\..*)$",
    )


@pytest.fixture
def agent_urls(deployment: Deployment) -> Any:
    urls: dict[str, str] = {}
    for host in HOSTS:
        user, password = agent_user(host), secrets.token_hex(12)
        rabbitmqctl("add_user", user, password)
        rabbitmqctl("set_permissions", "-p", deployment.vhost, user, *agent_permissions(host))
        urls[host] = f"rabbit://{user}:{password}@{RABBIT_HOST}/{deployment.vhost}"
    yield urls
    for host in HOSTS:
        try:
            rabbitmqctl("delete_user", agent_user(host))
        except subprocess.CalledProcessError:
            pass


@pytest.fixture
async def hostile(agent_urls: dict[str, str]) -> AsyncIterator[Bus]:
    """A bus on hv-1's stolen credentials (started once the cloud is up)."""
    bus = Bus(RabbitTransport(agent_urls["hv-1"], reconnect_interval=0.5))
    yield bus
    await bus.close()


async def ignore(message: Any) -> None:
    """A consumer that would read another host's commands (it never gets the chance)."""


async def refused(call: Any) -> str:
    with pytest.raises(RemoteError) as info:
        await call
    assert info.value.exc_type == "NotAuthorized", info.value
    return info.value.message


async def test_a_broken_into_host_speaks_only_for_itself(
    deployment: Deployment, agent_urls: dict[str, str], hostile: Bus
) -> None:
    dep = deployment
    ctl = await dep.start_controller()
    agents = {h: dep.start_agent(h, NOVALITE_TRANSPORT_URL=agent_urls[h]) for h in HOSTS}
    api = dep.api(ctl)
    await wait_hosts_up(api, set(HOSTS), timeout=45)
    image = await make_image(api)
    ids: dict[str, str] = {}
    for host in HOSTS:
        body = {"server": {"name": f"on-{host}", "imageRef": image, "flavorRef": "1", "networks": "none", "host": host}}
        r = await api.post("/compute/v2.1/servers", json=body, microversion="2.74")
        assert r.status == 202, r
        ids[host] = r.body["server"]["id"]
    settled = await wait_settled(api, set(ids.values()), timeout=30)
    assert {s["status"] for s in settled.values()} == {"ACTIVE"}
    victim = ids["hv-2"]

    await hostile.start()
    ctx = RequestContext.admin()
    t = 10.0
    # Speaking for another host: refused, and nothing of hv-2 is read.
    await refused(hostile.call(ctx, "conductor", "instances_on_host", host="hv-2", timeout=t))
    await refused(
        hostile.call(ctx, "conductor", "report_service", host="hv-2", binary="nova-compute",
                     availability_zone=None, timeout=t)
    )
    await refused(
        hostile.call(ctx, "conductor", "instance_update", instance_uuid=victim,
                     values={"vm_state": "error", "task_state": None}, timeout=t)
    )
    # Naming its own host for hv-2's instance is not refused, but changes nothing (checked below).
    await hostile.call(ctx, "conductor", "instance_destroyed", instance_uuid=victim, host="hv-1", timeout=t)
    await refused(hostile.call(ctx, "conductor", "instance_destroyed", instance_uuid=victim, host="hv-2", timeout=t))
    await refused(
        hostile.call(ctx, "conductor", "build_failed", instance_uuid=victim, host="hv-2", message="x", timeout=t)
    )
    await refused(hostile.call(ctx, "conductor", "image_tickets", instance_uuid=victim, host="hv-2", timeout=t))
    # Commands are for controllers: placing servers, starting builds.
    await refused(hostile.call(ctx, "scheduler", "select_destinations", spec={"instance_uuid": victim}, timeout=t))
    await refused(
        hostile.call(ctx, "conductor", "build_instances", instance_uuids=[victim], request_spec={}, timeout=t)
    )
    # Commanding hv-2's agent: the broker delivers it (one exchange), hv-2's agent refuses it.
    await hostile.cast(ctx, "compute.hv-2", "terminate_instance", instance={"uuid": victim, "name": "x"})
    await wait_for(
        lambda: asyncio.sleep(0, result="bus.sender_refused" in agents["hv-2"].log.read_text()),
        10,
        "hv-2's agent to refuse the command",
        dep=dep,
    )
    # Its own host it may speak for.
    own = await hostile.call(ctx, "conductor", "instances_on_host", host="hv-1", timeout=t)
    assert [i["uuid"] for i in own] == [ids["hv-1"]]

    # The broker itself: no forged sender, no reading or deleting another host's queue.
    conn = await aio_pika.connect(agent_urls["hv-1"].replace("rabbit://", "amqp://"))
    try:
        channel = await conn.channel(publisher_confirms=True)
        exchange = await channel.get_exchange("novalite", ensure=False)
        with pytest.raises(Exception, match=r"PRECONDITION_FAILED|user_id"):
            await exchange.publish(aio_pika.Message(b"{}", user_id="guest"), routing_key="compute.hv-2")
        channel = await conn.channel()
        with pytest.raises(Exception, match="ACCESS_REFUSED"):
            queue = await channel.declare_queue("compute.hv-2", passive=True)
            await queue.consume(ignore)
        channel = await conn.channel()
        with pytest.raises(Exception, match="ACCESS_REFUSED"):
            await channel.queue_delete("conductor")
    finally:
        await conn.close()

    # What the API shows did not change: both servers ACTIVE on their hosts, hv-2 still up.
    await asyncio.sleep(1.0)
    every = await servers(api)
    assert {h: (every[i]["status"], every[i]["OS-EXT-SRV-ATTR:host"]) for h, i in ids.items()} == {
        "hv-1": ("ACTIVE", "hv-1"),
        "hv-2": ("ACTIVE", "hv-2"),
    }
    r = await api.get(f"/compute/v2.1/servers/{victim}", microversion=MV)
    assert "fault" not in r.body["server"]
    await wait_hosts_up(api, set(HOSTS), timeout=10)
