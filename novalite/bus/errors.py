"""The bus's exception tree (drawn in ``novalite/bus/__init__.py``)."""

from __future__ import annotations

from typing import Any


class BusError(Exception):
    """Base of every bus error."""


class TransportError(BusError):
    """The transport could not deliver a message (broker unreachable, connection closed)."""


class NotJSONError(BusError, TypeError):
    """A payload holds something that is not plain JSON; it was not sent."""


class NotAuthorized(BusError):
    """The sender's identity may not send this message (raised by a served endpoint and
    seen by the caller as a :class:`RemoteError` with ``exc_type`` "NotAuthorized")."""


class CallTimeout(BusError, TimeoutError):
    """A call got no reply within its timeout."""

    def __init__(self, topic: str, method: str, timeout: float) -> None:
        super().__init__(f"no reply from {topic!r} to {method!r} within {timeout:g}s")
        self.topic = topic
        self.method = method
        self.timeout = timeout


class RemoteError(BusError):
    """The remote handler raised. ``exc_type`` is its class name, ``data`` its details."""

    def __init__(self, exc_type: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(f"{exc_type}: {message}")
        self.exc_type = exc_type
        self.message = message
        self.data = data or {}


class UnknownMethod(RemoteError):
    """The endpoint serving the topic has no such method."""


class UnsupportedVersion(RemoteError):
    """The remote endpoint cannot read this message's envelope version (see novalite.bus.client)."""
