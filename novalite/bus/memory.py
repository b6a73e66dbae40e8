"""The in-process transport: asyncio queues, one process, and the first-class test transport.

Messages are bytes here too (the :class:`~novalite.bus.client.Bus` serialized them to
JSON), so whatever works in-process works over RabbitMQ. Casts sent before anyone
listens wait in the topic's queue, as they would in a durable broker queue.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

from novalite.bus.errors import TransportError
from novalite.bus.transport import Handler, Transport
from novalite.log import get_logger
from novalite.tasks import cancel_and_wait

log = get_logger(__name__)

#: Messages one listener handles at once (RabbitMQ's prefetch count, in-process).
PREFETCH = 256


Item = tuple[bytes, "asyncio.Future[bytes | None] | None", "str | None"]


class MemoryTransport(Transport):
    """In-process queues. Its messages have no sender (None) unless it was made by
    :meth:`peer` with an identity: the test stand-in for a broker login."""

    def __init__(self, prefetch: int = PREFETCH, identity: str | None = None) -> None:
        self._queues: dict[str, asyncio.Queue[Item]] = {}
        self._fanout: dict[str, list[Handler]] = {}
        self.identity = identity
        self._tasks: set[asyncio.Task[None]] = set()
        self._prefetch = prefetch
        self._closed = False

    def peer(self, identity: str | None) -> MemoryTransport:
        """Another connection to the same queues, whose messages carry ``identity``."""
        other = MemoryTransport(self._prefetch, identity)
        other._queues = self._queues
        other._fanout = self._fanout
        return other

    def _queue(self, topic: str) -> asyncio.Queue[Item]:
        queue = self._queues.get(topic)
        if queue is None:
            queue = self._queues[topic] = asyncio.Queue()
        return queue

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def send(
        self, topic: str, body: bytes, *, fanout: bool = False, reply_timeout: float | None = None
    ) -> bytes | None:
        if self._closed:
            raise TransportError("transport is closed")
        if fanout:
            for handler in list(self._fanout.get(topic, ())):
                self._spawn(self._run(handler, body, None, self.identity))
            return None
        if reply_timeout is None:
            self._queue(topic).put_nowait((body, None, self.identity))
            return None
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._queue(topic).put_nowait((body, future, self.identity))
        try:
            # asyncio.timeout, not wait_for: wait_for can swallow a cancellation (see novalite.tasks).
            async with asyncio.timeout(reply_timeout):
                return await future
        except TimeoutError:
            raise TimeoutError(f"no reply on {topic}") from None

    async def listen(self, topic: str, handler: Handler, *, fanout: bool = False) -> None:
        if fanout:
            self._fanout.setdefault(topic, []).append(handler)
            return
        self._spawn(self._consume(self._queue(topic), handler))

    async def _consume(self, queue: asyncio.Queue, handler: Handler) -> None:  # type: ignore[type-arg]
        slots = asyncio.Semaphore(self._prefetch)
        while True:
            body, future, sender = await queue.get()
            await slots.acquire()
            task = self._spawn(self._run(handler, body, future, sender))
            task.add_done_callback(lambda _t: slots.release())

    async def _run(
        self, handler: Handler, body: bytes, future: asyncio.Future[bytes | None] | None, sender: str | None
    ) -> None:
        try:
            reply = await handler(body, sender)
        except Exception as exc:  # the Bus turns handler errors into replies; this is a last resort
            log.exception("bus handler crashed")
            if future is not None and not future.done():
                future.set_exception(exc)
            return
        if future is not None and not future.done():
            future.set_result(reply)

    async def close(self) -> None:
        self._closed = True
        await cancel_and_wait(list(self._tasks))
