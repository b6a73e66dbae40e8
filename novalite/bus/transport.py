"""The transport seam: two methods, bytes in and bytes out.

A transport knows topics and bytes, never novalite's message format. ``send`` delivers a
message to one consumer of a topic (competing consumers share the work) or, with
``fanout``, to every consumer; with ``reply_timeout`` it waits for the consumer's reply.
``listen`` consumes a topic: the handler's return value is the reply when the sender
waits for one.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable

#: A consumer: receives the message body and its sender — the identity the transport
#: vouches for (RabbitMQ: the login that published it), None in-process — and returns
#: the reply body (ignored for casts).
Handler = Callable[[bytes, str | None], Awaitable[bytes | None]]


class Transport(abc.ABC):
    """Moves bytes between services. Subclasses: MemoryTransport, RabbitTransport."""

    #: Whether a one-way message, once ``send`` returned, survives the death of this
    #: process (RabbitMQ: a persistent message in a durable queue). When False, a
    #: service that restarts must re-drive work whose message may have died with it.
    durable: bool = False
    #: The identity this transport's messages carry to their consumers (None: in-process).
    identity: str | None = None

    @abc.abstractmethod
    async def send(
        self, topic: str, body: bytes, *, fanout: bool = False, reply_timeout: float | None = None
    ) -> bytes | None:
        """Deliver ``body`` on ``topic``.

        Without ``reply_timeout`` it returns once the transport has accepted the message
        (for RabbitMQ: the broker confirmed it). With ``reply_timeout`` it waits for the
        reply and returns it, raising ``CallTimeout``-compatible ``TimeoutError`` when
        none comes in time. ``fanout`` messages never have replies.
        """

    @abc.abstractmethod
    async def listen(self, topic: str, handler: Handler, *, fanout: bool = False) -> None:
        """Consume ``topic`` until :meth:`close`. Several listeners on one topic share its
        messages; ``fanout`` listeners each get every fan-out message."""

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Connect (if the transport has anything to connect to)."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Stop consuming and disconnect."""
