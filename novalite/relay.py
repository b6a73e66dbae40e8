"""The outbox relay: sends the messages that committed with their state change.

A state change and the message it causes must commit together, or a crash between the
two loses the message (an accepted server that never builds) or sends one about a
change that never happened. So the API and the conductor do not send such messages
themselves: :func:`cast_after_commit` writes the encoded envelope into the outbox table
in the caller's open transaction, and the relay — one per controller process — sends
it once the transaction has committed, then deletes the row.

* Latency: the commit wakes the relay at once (``Database.on_commit``); the poll every
  ``POLL_INTERVAL`` only picks up rows another process left behind (it died after
  its commit, before its relay sent them).
* Order: rows are sent in the order they were written, one at a time.
* Several relays (several controller processes on PostgreSQL) lock the rows they send
  (``FOR UPDATE SKIP LOCKED``), so they share the outbox without sending a row twice.
* A crash after the send and before the delete sends that row again after the
  restart, with the same envelope id: consumers drop or tolerate it (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from novalite.bus import Bus
from novalite.context import RequestContext
from novalite.log import get_logger
from novalite.runtime import ControllerRuntime
from novalite.store import Connection, outbox
from novalite.tasks import cancel_and_wait

log = get_logger("novalite.relay")

#: Seconds between two looks at the outbox when no commit woke the relay.
POLL_INTERVAL = 1.0
#: Rows read (and, on PostgreSQL, locked) at once.
BATCH = 100
#: The longest wait between two tries while the transport refuses messages.
MAX_BACKOFF = 10.0


async def cast_after_commit(conn: Connection, ctx: RequestContext, topic: str, method: str, **args: Any) -> None:
    """Cast ``method(ctx, **args)`` to ``topic`` once the transaction open on ``conn`` commits.

    The message is sent only if the transaction commits, and then even if this process
    dies right after the commit.
    """
    await outbox.enqueue(conn, topic, Bus.envelope(ctx, method, args).decode())


class OutboxRelay:
    """The service that empties the outbox onto the bus (one per controller process)."""

    def __init__(self, rt: ControllerRuntime, poll_interval: float = POLL_INTERVAL) -> None:
        self.rt = rt
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: Messages sent since start (for tests and the operator's view).
        self.sent = 0

    async def start(self) -> None:
        self.rt.db.on_commit(outbox.SIGNAL, self._wake.set)
        self._wake.set()  # rows left by a process that died after its commit
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait([self._task])

    async def _run(self) -> None:
        delay = self.poll_interval
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            try:
                await self.flush()
                delay = self.poll_interval
            except Exception as exc:
                delay = min(max(delay, 0.5) * 2, MAX_BACKOFF)
                log.warning("relay.send_failed", error=repr(exc), retry_in=delay)

    async def flush(self) -> int:
        """Send every message in the outbox now; return how many were sent."""
        total = 0
        while True:
            sent, more = await self._flush_batch()
            total += sent
            if not more:
                return total

    async def _flush_batch(self) -> tuple[int, bool]:
        db = self.rt.db
        if db.is_sqlite and self.rt.bus.durable:
            # One process owns an SQLite file: nobody else sends these rows. Do not hold
            # the one connection while a broker confirms (everything else waits on it);
            # in-process sends below are a queue put, so there one transaction is cheaper.
            async with db.connect() as conn:
                batch = await outbox.pending(conn, BATCH)
            done, error = await self._send(batch)
            if done:
                async with db.begin() as conn:
                    await outbox.delete(conn, done)
        else:
            async with db.begin() as conn:
                batch = await outbox.pending(conn, BATCH, lock=True)
                done, error = await self._send(batch)
                await outbox.delete(conn, done)
        self.sent += len(done)
        if error is not None:
            raise error
        return len(done), len(batch) == BATCH

    async def _send(self, batch: list[outbox.OutboxMessage]) -> tuple[list[int], Exception | None]:
        done: list[int] = []
        for message in batch:
            try:
                await self.rt.bus.send_encoded(message.topic, message.body.encode())
            except Exception as exc:
                return done, exc
            done.append(message.id)
        return done, None
