"""Stopping on a signal, bounded in time whatever the process is doing.

``loop.add_signal_handler`` only runs once the event loop gets control back, so a handler
that hogs the loop (a CPU-bound request, a stuck driver call) would make SIGTERM wait for
it, and a graceful stop waits for in-flight requests and services. So the handler here is
a plain :func:`signal.signal` handler (Python runs it between two bytecodes of the main
thread, even while the loop is busy): it asks the loop to stop and arms a watchdog thread
that ends the process after ``grace`` seconds if the graceful stop has not finished. A
second signal ends it at once. Work cut short this way is what a crash would cut short,
and recovery after a crash is the conductor's job at the next start.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading
from types import FrameType

#: Exit status when the watchdog or a second signal ends the process (128 + SIGTERM, as a shell reports it).
FORCED_EXIT_STATUS = 128 + signal.SIGTERM


class ShutdownSignals:
    """Turn SIGINT/SIGTERM into ``stopping``, and into an exit if the stop takes too long."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.stopping = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._watchdog: threading.Timer | None = None
        self._previous: dict[int, object] = {}

    def install(self) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def uninstall(self) -> None:
        """Put the previous handlers back and disarm the watchdog (the stop finished in time)."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
        if self._watchdog is not None:
            self._watchdog.cancel()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if self._watchdog is not None:  # a second signal: the user means it
            _force_exit(f"second {signal.Signals(signum).name}: exiting now")
        self._watchdog = threading.Timer(
            self.grace, _force_exit, args=(f"graceful stop took over {self.grace:g}s: exiting",)
        )
        self._watchdog.daemon = True
        self._watchdog.start()
        self._loop.call_soon_threadsafe(self.stopping.set)


def _force_exit(reason: str) -> None:
    print(f"novalite: {reason}", file=sys.stderr, flush=True)
    os._exit(FORCED_EXIT_STATUS)
