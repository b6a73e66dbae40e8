"""Envelopes: ids that make duplicates harmless, versions that allow a rolling upgrade,
and no user token on the wire. Each runs on MemoryTransport and on the real RabbitMQ."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import pytest

from novalite.bus import Bus, RemoteError, UnsupportedVersion
from novalite.bus.client import encode
from novalite.bus.identity import is_controller
from novalite.bus.memory import MemoryTransport
from novalite.context import RequestContext
from tests.bus.conftest import NewBus


class Counter:
    def __init__(self) -> None:
        self.got: list[Any] = []

    async def record(self, ctx: RequestContext, value: Any, extra: Any = None) -> None:
        self.got.append(value)

    async def echo(self, ctx: RequestContext, value: Any) -> Any:
        return value


async def settle(check: Callable[[], bool], within: float = 5.0) -> None:
    for _ in range(int(within / 0.02)):
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not met in time")


def raw(method: str, args: dict[str, Any], **extra: Any) -> bytes:
    return encode({"method": method, "args": args, "context": RequestContext.admin().to_dict(), **extra})


async def test_a_message_sent_twice_is_handled_once(new_bus: NewBus, topic: str) -> None:
    """What a publish retry, a relay restart or a redelivery to a live consumer produces."""
    server, client = await new_bus(), await new_bus()
    endpoint = Counter()
    await server.serve(topic, endpoint)
    body = Bus.envelope(RequestContext.admin(), "record", {"value": 1})
    other = Bus.envelope(RequestContext.admin(), "record", {"value": 2})
    for message in (body, body, other, body):
        await client.send_encoded(topic, message)
    await settle(lambda: len(endpoint.got) >= 2)
    await asyncio.sleep(0.3)
    assert sorted(endpoint.got) == [1, 2]


async def test_calls_with_equal_arguments_are_all_answered(new_bus: NewBus, topic: str) -> None:
    server, client = await new_bus(), await new_bus()
    await server.serve(topic, Counter())
    ctx = RequestContext.admin()
    answers = await asyncio.gather(*(client.call(ctx, topic, "echo", value=7, timeout=10) for _ in range(5)))
    assert answers == [7] * 5


async def test_a_version_1_message_is_still_understood(new_bus: NewBus, topic: str) -> None:
    """A 1.x sender (before ids and versions) during a rolling upgrade."""
    server, client = await new_bus(), await new_bus()
    endpoint = Counter()
    await server.serve(topic, endpoint)
    await client.transport.send(topic, raw("record", {"value": "from 1.0"}))
    await client.transport.send(topic, raw("record", {"value": "from 1.4"}, version="1.4"))
    await settle(lambda: len(endpoint.got) == 2)
    assert sorted(endpoint.got) == ["from 1.0", "from 1.4"]


async def test_a_newer_minor_with_an_unknown_optional_argument_is_understood(new_bus: NewBus, topic: str) -> None:
    server, client = await new_bus(), await new_bus()
    endpoint = Counter()
    await server.serve(topic, endpoint)
    await client.transport.send(topic, raw("record", {"value": 1, "extra": "2.1 field"}, id="x1", version="2.1"))
    await settle(lambda: endpoint.got == [1])


async def test_a_newer_major_is_refused_not_guessed_at(
    new_bus: NewBus, topic: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, client = await new_bus(), await new_bus()
    endpoint = Counter()
    await server.serve(topic, endpoint)
    monkeypatch.setattr("novalite.bus.client.VERSION", "3.0")  # the sender is a future release
    with pytest.raises(UnsupportedVersion, match=r"3\.0"):
        await client.call(RequestContext.admin(), topic, "echo", value=1, timeout=10)
    await client.cast(RequestContext.admin(), topic, "record", value=1)
    await asyncio.sleep(0.3)
    assert endpoint.got == []


def test_the_user_token_never_goes_on_the_wire() -> None:
    ctx = RequestContext(user_id="u1", project_id="p1", roles=["member"], auth_token="gAAAA-secret-token")
    body = Bus.envelope(ctx, "build_instances", {"instance_uuids": ["i1"]})
    assert b"gAAAA-secret-token" not in body
    message = json.loads(body)
    assert message["context"]["user_id"] == "u1" and "auth_token" not in message["context"]
    assert message["version"] == "2.0" and len(message["id"]) == 32


class Who:
    async def who(self, ctx: RequestContext) -> Any:
        return ctx.sender


async def test_the_sender_is_the_transports_word_not_the_messages() -> None:
    """A message cannot name its own sender; a served topic can refuse agent identities."""
    memory = MemoryTransport()
    server = Bus(memory)
    agent = Bus(memory.peer("novalite-agent-hv1"))
    await server.start()
    await server.serve("who", Who())
    await server.serve("commands", Who(), accept=is_controller)
    ctx = RequestContext.admin()
    assert await agent.call(ctx, "who", "who", timeout=5) == "novalite-agent-hv1"
    # Claiming another sender inside the message changes nothing.
    forged = encode({"method": "who", "args": {}, "context": {**ctx.to_dict(), "sender": None}, "reply": True})
    reply = await agent.transport.send("who", forged, reply_timeout=5)
    assert json.loads(reply or b"{}")["result"] == "novalite-agent-hv1"
    with pytest.raises(RemoteError) as info:
        await agent.call(ctx, "commands", "who", timeout=5)
    assert info.value.exc_type == "NotAuthorized"
    assert await server.call(ctx, "commands", "who", timeout=5) is None  # in-process: no sender, trusted
    await server.close()


class Flaky:
    """Fails its first call, blocks each call until released."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def work(self, ctx: RequestContext, fail_first: bool = False) -> None:
        self.calls += 1
        await self.release.wait()
        if fail_first and self.calls == 1:
            raise RuntimeError("the conductor did not answer")


async def test_a_copy_waits_for_the_first_and_a_failed_message_gets_another_try(new_bus: NewBus, topic: str) -> None:
    """A copy redelivered while the first is still being handled (the connection dropped before
    its ack) is held, not dropped-and-acknowledged at once; a copy of one that failed runs."""
    server, client = await new_bus(), await new_bus()
    endpoint = Flaky()
    await server.serve(topic, endpoint)
    body = Bus.envelope(RequestContext.admin(), "work", {"fail_first": True})
    await client.send_encoded(topic, body)
    await settle(lambda: endpoint.calls == 1)
    await client.send_encoded(topic, body)  # the copy, while the first blocks
    await asyncio.sleep(0.3)
    assert endpoint.calls == 1  # not run beside the first
    endpoint.release.set()  # the first fails ...
    await settle(lambda: endpoint.calls == 2)  # ... so the held copy runs
    await client.send_encoded(topic, body)  # and once it succeeded, a further copy is dropped
    await asyncio.sleep(0.3)
    assert endpoint.calls == 2
