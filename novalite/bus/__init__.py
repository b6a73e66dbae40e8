"""The bus: how novalite's services talk, in one process or across hosts.

Two layers, one seam:

* :class:`~novalite.bus.transport.Transport` moves opaque bytes. It has two methods,
  ``send`` (to one consumer of a topic, or to all with ``fanout``; optionally waiting
  for a reply) and ``listen`` (consume a topic). Implementations:
  :class:`~novalite.bus.memory.MemoryTransport` (in-process queues, the default and the
  test transport) and :class:`~novalite.bus.rabbit.RabbitTransport` (RabbitMQ through
  aio-pika). :func:`make_transport` picks one from a URL (``memory://``,
  ``rabbit://user:pass@host:5672/vhost``).
* :class:`~novalite.bus.client.Bus` is what services use: ``cast``, ``call`` (with a
  timeout), ``fanout`` and ``serve``. It turns method calls into plain-JSON envelopes
  carrying the request context (and so the request id), checks that every payload is
  plain JSON before it leaves, and turns a handler's exception into a
  :class:`RemoteError` at the caller.

Nothing above the transport knows which transport runs.

Exceptions, all raised at the caller::

    BusError                  base of everything below
    ├── TransportError        the transport cannot deliver (broker unreachable, closed)
    ├── NotJSONError          a message or reply is not plain JSON (dict/list/str/int/float/bool/None)
    ├── NotAuthorized         the sender's identity may not send this (raised by endpoints, see bus.identity)
    ├── CallTimeout           no reply to a call within its timeout
    └── RemoteError           the remote handler raised; ``exc_type`` and ``message`` say what
        ├── UnknownMethod     the remote endpoint has no such method
        └── UnsupportedVersion  the remote endpoint cannot read this envelope version

Delivery is at least once; envelopes carry an id and a version (``novalite.bus.client``).
"""

import importlib

from novalite.bus.client import Bus
from novalite.bus.errors import (
    BusError,
    CallTimeout,
    NotAuthorized,
    NotJSONError,
    RemoteError,
    TransportError,
    UnknownMethod,
    UnsupportedVersion,
)
from novalite.bus.memory import MemoryTransport
from novalite.bus.transport import Transport

#: The RabbitMQ transport is loaded only when a URL asks for it: aio-pika adds ~14 MB to
#: a process, and the all-in-one ``novalite serve`` on ``memory://`` never uses it.
RABBIT_SCHEMES = ("rabbit://", "amqp://", "amqps://")


def make_transport(url: str | None) -> Transport:
    """Build the transport named by ``url``: ``memory://`` (default) or ``rabbit://...``."""
    if not url or url.startswith("memory:"):
        return MemoryTransport()
    if url.startswith(RABBIT_SCHEMES):
        transport: Transport = importlib.import_module("novalite.bus.rabbit").RabbitTransport(url)
        return transport
    raise ValueError(f"unknown transport URL scheme in {url!r} (expected memory:// or rabbit://)")


__all__ = [
    "Bus",
    "BusError",
    "CallTimeout",
    "NotAuthorized",
    "NotJSONError",
    "RemoteError",
    "Transport",
    "TransportError",
    "UnknownMethod",
    "UnsupportedVersion",
    "make_transport",
]
