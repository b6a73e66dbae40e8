"""Stopping background tasks reliably.

A single ``task.cancel()`` can be lost: on Python 3.11, ``asyncio.wait_for`` swallows a
cancellation that arrives as its inner future completes (CPython gh-86296), and the
task's loop then goes on forever — so ``await task`` after one cancel could hang a
shutdown. :func:`cancel_and_wait` cancels again until every task has really ended.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_and_wait(tasks: Iterable[asyncio.Task[object]], retry_every: float = 0.5) -> None:
    """Cancel ``tasks`` and wait until all have finished, re-cancelling any that keep running."""
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=retry_every)
