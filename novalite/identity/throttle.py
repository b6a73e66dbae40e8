"""Bounded password checking for logins, and the account lockout rule.

A password check is deliberately expensive (Argon2: tens of milliseconds of CPU and
64 MiB). Unbounded, 200 concurrent wrong-password logins queue 200 hashes on the thread
pool and every legitimate login waits behind them. :class:`HashGate` runs at most
``concurrency`` checks at once, lets a few more wait, and refuses the rest at once
(:class:`Busy`, answered 429 with ``Retry-After``) without hashing. Waiters are grouped
by user and served in turn, so a flood against one account (or one made-up name) holds
at most ``per_key`` places in the queue and other users' logins are next in line.

:func:`locked_out` is Keystone's ``[security_compliance]`` lockout rule over the
``failed_auth_count`` / ``failed_auth_at`` columns the store keeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from datetime import datetime, timedelta


class Busy(Exception):
    """Too many logins already wait for a password check; retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"retry after {retry_after} s")
        self.retry_after = retry_after


class HashGate:
    """At most ``concurrency`` holders at once, at most ``queue`` waiters (``per_key`` per key).

    One gate per API process: the bound is on this process's CPU and threads. A slot
    freed goes straight to the next waiter (round-robin over keys, FIFO within a key),
    so a new arrival never overtakes the queue.
    """

    def __init__(self, concurrency: int, queue: int, per_key: int) -> None:
        self.concurrency = max(1, concurrency)
        self.queue = max(0, queue)
        self.per_key = max(0, min(per_key, queue))
        self.running = 0
        self.waiting = 0
        self._waiters: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()
        #: Moving average of how long a slot is held (seconds), for ``Retry-After``.
        self._hold = 0.1

    def retry_after(self) -> int:
        """Whole seconds until the queue as it stands now has drained (at least 1)."""
        rounds = (self.waiting + self.concurrency) / self.concurrency
        return max(1, math.ceil(rounds * self._hold))

    @contextlib.asynccontextmanager
    async def slot(self, key: str) -> AsyncIterator[None]:
        """Hold one slot for the block; :class:`Busy` at once if the queue (or the key's share) is full."""
        if self.running < self.concurrency and not self.waiting:
            self.running += 1
        else:
            await self._wait(key)
        started = time.monotonic()
        try:
            yield
        finally:
            self._hold = 0.8 * self._hold + 0.2 * (time.monotonic() - started)
            self._release()

    async def _wait(self, key: str) -> None:
        queued = self._waiters.get(key)
        if self.waiting >= self.queue or (queued is not None and len(queued) >= self.per_key) or not self.per_key:
            raise Busy(self.retry_after())
        if queued is None:
            queued = self._waiters[key] = deque()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queued.append(future)
        self.waiting += 1
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self._release()  # the slot was handed over just as the client went away: pass it on
            else:
                self._forget(key, future)
            raise

    def _forget(self, key: str, future: asyncio.Future[None]) -> None:
        queued = self._waiters.get(key)
        if queued is not None and future in queued:
            queued.remove(future)
            self.waiting -= 1
            if not queued:
                del self._waiters[key]

    def _release(self) -> None:
        """Hand the slot to the first waiter of the next key in turn, or free it."""
        while self._waiters:
            key, queued = next(iter(self._waiters.items()))
            future = queued.popleft()
            self.waiting -= 1
            if queued:
                self._waiters.move_to_end(key)  # this key had its turn
            else:
                del self._waiters[key]
            if not future.done():
                future.set_result(None)  # ``running`` is unchanged: the slot changes hands
                return
        self.running -= 1


def locked_out(failed_count: int, failed_at: datetime | None, *, attempts: int, duration: float, now: datetime) -> bool:
    """Whether a user with these failures is locked out now (Keystone's ``_is_account_locked``).

    Locked once ``attempts`` consecutive failures are recorded (0: lockout disabled),
    for ``duration`` seconds after the last one (0: until an admin unlocks the user).
    """
    if not attempts or failed_count < attempts:
        return False
    if not duration:
        return True
    return failed_at is not None and failed_at + timedelta(seconds=duration) > now
