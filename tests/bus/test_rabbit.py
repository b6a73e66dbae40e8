"""RabbitTransport against a real broker, and the Bus contract on both transports.

The contract tests run once on MemoryTransport and once on RabbitTransport (each Bus
with its own connection, as separate services would have); the rest need the broker.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from novalite.bus import Bus, CallTimeout, RemoteError, TransportError, UnknownMethod, make_transport
from novalite.bus.rabbit import RabbitTransport
from novalite.context import RequestContext
from tests.bus.conftest import NewBus


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


class Endpoint:
    """A served endpoint that records what it got."""

    def __init__(self, name: str = "a") -> None:
        self.name = name
        self.got: list[Any] = []

    async def echo(self, ctx: RequestContext, value: Any) -> dict[str, Any]:
        return {"value": value, "request_id": ctx.request_id, "by": self.name}

    async def record(self, ctx: RequestContext, value: Any) -> None:
        self.got.append(value)

    async def slow(self, ctx: RequestContext, seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "late"

    async def fail(self, ctx: RequestContext) -> None:
        raise ValueError("no such flavor")


@pytest.fixture
def ctx() -> RequestContext:
    return RequestContext.admin()


@pytest.fixture
async def rabbit(rabbit_url: str) -> AsyncIterator[Callable[..., Awaitable[RabbitTransport]]]:
    """Make started RabbitTransports in the test vhost."""
    transports: list[RabbitTransport] = []

    async def make(**kwargs: Any) -> RabbitTransport:
        transport = RabbitTransport(rabbit_url, reconnect_interval=0.5, **kwargs)
        await transport.start()
        transports.append(transport)
        return transport

    yield make
    for transport in transports:
        await transport.close()


# --- The Bus contract, on both transports ------------------------------------------------


async def test_call_returns_result_and_carries_context(
    new_bus: NewBus, topic: str, ctx: RequestContext
) -> None:
    server, client = await new_bus(), await new_bus()
    await server.serve(topic, Endpoint())
    result = await client.call(ctx, topic, "echo", value={"n": [1, 2.5, None, "x"]}, timeout=5)
    assert result == {"value": {"n": [1, 2.5, None, "x"]}, "request_id": ctx.request_id, "by": "a"}


async def test_remote_errors(new_bus: NewBus, topic: str, ctx: RequestContext) -> None:
    server, client = await new_bus(), await new_bus()
    await server.serve(topic, Endpoint())
    with pytest.raises(RemoteError) as err:
        await client.call(ctx, topic, "fail", timeout=5)
    assert (err.value.exc_type, err.value.message) == ("ValueError", "no such flavor")
    with pytest.raises(UnknownMethod):
        await client.call(ctx, topic, "nope", timeout=5)


async def test_casts_are_shared_by_competing_consumers(
    new_bus: NewBus, topic: str, ctx: RequestContext
) -> None:
    one, two = Endpoint("one"), Endpoint("two")
    await (await new_bus()).serve(topic, one)
    await (await new_bus()).serve(topic, two)
    client = await new_bus()
    for i in range(20):
        await client.cast(ctx, topic, "record", value=i)
    await eventually(lambda: len(one.got) + len(two.got) == 20)
    await asyncio.sleep(0.1)  # and nothing is delivered twice
    assert sorted(one.got + two.got) == list(range(20))


async def test_fanout_reaches_every_listener(new_bus: NewBus, topic: str, ctx: RequestContext) -> None:
    one, two = Endpoint("one"), Endpoint("two")
    await (await new_bus()).serve(topic, one, fanout=True)
    await (await new_bus()).serve(topic, two, fanout=True)
    await (await new_bus()).fanout(ctx, topic, "record", value="hello")
    await eventually(lambda: one.got == ["hello"] and two.got == ["hello"])


async def test_fanout_without_listeners_is_fine(new_bus: NewBus, topic: str, ctx: RequestContext) -> None:
    await (await new_bus()).fanout(ctx, topic, "record", value="nobody hears")


async def test_cast_before_any_consumer_is_delivered(
    new_bus: NewBus, topic: str, ctx: RequestContext
) -> None:
    client = await new_bus()
    await client.cast(ctx, topic, "record", value="early")
    endpoint = Endpoint()
    await (await new_bus()).serve(topic, endpoint)
    await eventually(lambda: endpoint.got == ["early"])


async def test_call_without_consumer_times_out(new_bus: NewBus, topic: str, ctx: RequestContext) -> None:
    client = await new_bus()
    started = time.monotonic()
    with pytest.raises(CallTimeout) as err:
        await client.call(ctx, topic, "echo", value=1, timeout=0.3)
    assert 0.25 < time.monotonic() - started < 2
    assert (err.value.topic, err.value.method) == (topic, "echo")


async def test_late_reply_is_discarded(new_bus: NewBus, topic: str, ctx: RequestContext) -> None:
    server, client = await new_bus(), await new_bus()
    await server.serve(topic, Endpoint())
    with pytest.raises(CallTimeout):
        await client.call(ctx, topic, "slow", seconds=0.4, timeout=0.1)
    # The late "late" reply arrives while this call waits; it must not be taken for its reply.
    assert (await client.call(ctx, topic, "echo", value=2, timeout=5))["value"] == 2
    await asyncio.sleep(0.4)
    assert (await client.call(ctx, topic, "echo", value=3, timeout=5))["value"] == 3


# --- RabbitMQ only ----------------------------------------------------------------------------


def test_make_transport_builds_rabbit_from_url() -> None:
    transport = make_transport("rabbit://u:secret@broker.example:5673/cloud?prefetch_count=8")
    assert isinstance(transport, RabbitTransport)
    assert transport.where == "broker.example:5673/cloud"
    assert transport._prefetch == 8
    assert isinstance(make_transport("amqp://u:p@h/"), RabbitTransport)


@pytest.mark.rabbit
async def test_unreachable_broker_raises_transport_error() -> None:
    transport = RabbitTransport("rabbit://guest:guest@127.0.0.1:1/", connect_timeout=3)
    with pytest.raises(TransportError, match=r"cannot connect to RabbitMQ at 127\.0\.0\.1:1"):
        await transport.start()
    with pytest.raises(TransportError):
        await Bus(transport).cast(RequestContext(), "conductor", "ping")


@pytest.mark.rabbit
async def test_closed_transport_refuses_to_send(rabbit: Callable[..., Awaitable[RabbitTransport]]) -> None:
    transport = await rabbit()
    await transport.close()
    with pytest.raises(TransportError, match="closed"):
        await transport.send("conductor", b"{}")


@pytest.mark.rabbit
async def test_stale_call_expires_unprocessed(
    rabbit: Callable[..., Awaitable[RabbitTransport]], topic: str
) -> None:
    client, server = await rabbit(), await rabbit()
    with pytest.raises(TimeoutError):
        await client.send(topic, b"stale", reply_timeout=0.2)
    await asyncio.sleep(0.3)
    got: list[bytes] = []

    async def handler(body: bytes, sender: str | None) -> bytes:
        got.append(body)
        return body

    await server.listen(topic, handler)
    await server.send(topic, b"fresh")
    await eventually(lambda: got == [b"fresh"])


@pytest.mark.rabbit
async def test_handler_crash_is_reported_and_acked(
    rabbit: Callable[..., Awaitable[RabbitTransport]], topic: str
) -> None:
    client, server = await rabbit(), await rabbit()
    calls: list[bytes] = []

    async def handler(body: bytes, sender: str | None) -> bytes:
        calls.append(body)
        raise RuntimeError("boom")

    await server.listen(topic, handler)
    with pytest.raises(TransportError, match="boom"):
        await client.send(topic, b"call", reply_timeout=5)
    await client.send(topic, b"cast")
    await eventually(lambda: len(calls) == 2)
    await asyncio.sleep(0.3)
    assert calls == [b"call", b"cast"]  # acked, not requeued


@pytest.mark.rabbit
async def test_prefetch_bounds_messages_in_flight(
    rabbit: Callable[..., Awaitable[RabbitTransport]], topic: str
) -> None:
    client, server = await rabbit(), await rabbit(prefetch=3)
    release = asyncio.Event()
    running, most, done = 0, 0, 0

    async def handler(body: bytes, sender: str | None) -> None:
        nonlocal running, most, done
        running += 1
        most = max(most, running)
        await release.wait()
        running -= 1
        done += 1

    await server.listen(topic, handler)
    for i in range(10):
        await client.send(topic, str(i).encode())
    await eventually(lambda: running == 3)
    await asyncio.sleep(0.2)
    assert most == 3
    release.set()
    await eventually(lambda: done == 10)


CONSUMER_THAT_DIES = textwrap.dedent(
    """
    import asyncio, os, sys
    from novalite.bus.rabbit import RabbitTransport

    async def main(url, topic):
        async def handler(body, sender):
            sys.stdout.write("GOT " + body.decode() + "\\n")
            sys.stdout.flush()
            os._exit(1)  # dies before the transport acks

        await RabbitTransport(url).listen(topic, handler)
        await asyncio.sleep(20)

    asyncio.run(main(sys.argv[1], sys.argv[2]))
    """
)


@pytest.mark.rabbit
async def test_message_of_a_killed_consumer_is_redelivered(
    rabbit_url: str, new_bus_rabbit: NewBus, topic: str, ctx: RequestContext
) -> None:
    await (await new_bus_rabbit()).cast(ctx, topic, "record", value="survivor")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CONSUMER_THAT_DIES,
        rabbit_url,
        topic,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1, err.decode()
    assert "survivor" in out.decode()
    endpoint = Endpoint()
    await (await new_bus_rabbit()).serve(topic, endpoint)
    await eventually(lambda: endpoint.got == ["survivor"])


@pytest.fixture
async def new_bus_rabbit(rabbit: Callable[..., Awaitable[RabbitTransport]]) -> NewBus:
    async def make() -> Bus:
        return Bus(await rabbit())

    return make


@pytest.mark.rabbit
async def test_traffic_resumes_after_connections_are_closed(
    rabbit_vhost: str, rabbit: Callable[..., Awaitable[RabbitTransport]], topic: str, ctx: RequestContext
) -> None:
    server_transport, client_transport = await rabbit(), await rabbit()
    server, client = Bus(server_transport), Bus(client_transport)
    endpoint, listener = Endpoint(), Endpoint()
    await server.serve(topic, endpoint)
    await server.serve(topic, listener, fanout=True)
    assert (await client.call(ctx, topic, "echo", value=1, timeout=5))["value"] == 1

    # Scoped to the test vhost: without -p rabbitmqctl closes the connections of vhost "/".
    proc = await asyncio.create_subprocess_exec(
        "rabbitmqctl",
        "-q",
        "close_all_connections",
        "-p",
        rabbit_vhost,
        "test",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    await eventually(lambda: server_transport.reconnects >= 1 and client_transport.reconnects >= 1, 15)

    started = time.monotonic()
    while True:  # consumers and the reply queue come back within a few seconds
        try:
            result = await client.call(ctx, topic, "echo", value=2, timeout=1)
            break
        except CallTimeout:
            assert time.monotonic() - started < 10, "calls did not resume"
    assert result["value"] == 2
    await client.cast(ctx, topic, "record", value="after")
    await client.fanout(ctx, topic, "record", value="everyone")
    await eventually(lambda: endpoint.got == ["after"] and listener.got == ["everyone"])
