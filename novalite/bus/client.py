"""The Bus: cast, call, fan-out and serve, on top of any :class:`Transport`.

An envelope is ``{"id": str, "version": "2.0", "method": str, "args": {...},
"context": {...}}`` (calls add ``"reply": true``) and a reply is ``{"result": ...}`` or
``{"error": {"type": str, "message": str, "data": {...}}}``, all plain JSON. The context
carries the request id; a served method runs with it bound to every log line.

Delivery is at least once (a broker redelivers what a dead consumer held; a publish
whose confirm was lost is published again; the outbox relay may send a row twice after
a crash). Every envelope has an ``id``, so :meth:`Bus.serve` drops a one-way message it
has just handled; consumers are idempotent for the rest (a redelivery after a restart).

Versions (``version``, ``major.minor``): a consumer accepts its own major version and
the one before it (a rolling upgrade: new controllers with old agents, or the other way
round), and answers a newer major with :class:`UnsupportedVersion`. An envelope without
a version is 1.0 (novalite before envelopes were versioned). A newer minor adds only
optional arguments, so an older consumer of the same major ignores nothing it needs.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import orjson

from novalite.bus.errors import (
    CallTimeout,
    NotJSONError,
    RemoteError,
    TransportError,
    UnknownMethod,
    UnsupportedVersion,
)
from novalite.bus.transport import Transport
from novalite.context import RequestContext
from novalite.log import bind_request_id, get_logger
from novalite.metrics import BusMetrics

log = get_logger(__name__)

DEFAULT_CALL_TIMEOUT = 60.0
#: The envelope version this code writes.
VERSION = "2.0"
#: Major versions this code reads: its own and the one before (see the module docstring).
ACCEPTED_MAJORS = (1, 2)
#: How many recent one-way message ids a served topic remembers, to drop duplicates.
SEEN_IDS = 4096


def _is_plain(value: Any) -> bool:
    """The fast check behind :func:`check_plain_json`: exact types, no path strings built.

    True only for what the full check accepts too; False sends the value to the full
    check, which names the culprit (or accepts a ``str`` or ``int`` subclass)."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:
        return True
    if kind is dict:
        for key, item in value.items():
            if type(key) is not str or not _is_plain(item):
                return False
        return True
    if kind is list:
        for item in value:
            if not _is_plain(item):
                return False
        return True
    if kind is float:
        return value == value and value not in _INFINITIES
    return False


_INFINITIES = (float("inf"), float("-inf"))


def check_plain_json(value: Any, path: str = "$") -> None:
    """Raise :class:`NotJSONError` naming the first value that is not plain JSON.

    ``json.dumps`` alone would quietly turn tuples into lists and integer keys into
    strings; over RabbitMQ the receiver would then see something else than in-process.
    Every message goes through this: the common case takes :func:`_is_plain`'s fast path.
    """
    if path == "$" and _is_plain(value):
        return
    if value is None or isinstance(value, (str, bool, int)):
        return
    if isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise NotJSONError(f"{path} is {value!r}, which JSON cannot carry")
        return
    if isinstance(value, list):
        for i, item in enumerate(value):
            check_plain_json(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise NotJSONError(f"{path} has a non-string key {key!r}")
            check_plain_json(item, f"{path}.{key}")
        return
    raise NotJSONError(f"{path} is a {type(value).__name__}, not plain JSON")


_METHOD_KEY = b'"method":"'


def _method_of(body: bytes) -> str:
    """The method an encoded envelope calls, for the metrics, without decoding it all
    (:func:`encode` writes no spaces and method names need no escapes)."""
    start = body.find(_METHOD_KEY)
    if start < 0:
        return str(json.loads(body).get("method", ""))
    start += len(_METHOD_KEY)
    return body[start : body.find(b'"', start)].decode()


def encode(message: dict[str, Any]) -> bytes:
    check_plain_json(message)
    try:
        return orjson.dumps(message)  # checked above: the same JSON as json.dumps, faster
    except orjson.JSONEncodeError:  # an integer beyond 64 bits: the standard library takes it
        return json.dumps(message, separators=(",", ":")).encode()


class Bus:
    """Services talk through this; it knows nothing of which transport carries the bytes."""

    def __init__(self, transport: Transport, metrics: BusMetrics | None = None) -> None:
        self.transport = transport
        #: Counts what this bus sends and serves (registered nowhere when not given).
        self.metrics = metrics or BusMetrics(None)

    async def start(self) -> None:
        await self.transport.start()

    async def close(self) -> None:
        await self.transport.close()

    @property
    def durable(self) -> bool:
        """Whether a message the transport accepted survives this process (see Transport)."""
        return self.transport.durable

    @staticmethod
    def envelope(ctx: RequestContext, method: str, args: dict[str, Any], *, reply: bool = False) -> bytes:
        """The encoded message for ``method(ctx, **args)``; what the outbox stores, too."""
        message: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "version": VERSION,
            "method": method,
            "args": args,
            "context": ctx.to_dict(),
        }
        if reply:
            message["reply"] = True
        return encode(message)

    async def send_encoded(self, topic: str, body: bytes) -> None:
        """Send an envelope made earlier by :meth:`envelope` (the outbox relay's way out)."""
        await self.transport.send(topic, body)
        self.metrics.message_sent(topic, _method_of(body))

    async def cast(self, ctx: RequestContext, topic: str, method: str, **args: Any) -> None:
        """Send a one-way message to one consumer of ``topic``."""
        await self.transport.send(topic, self.envelope(ctx, method, args))
        self.metrics.message_sent(topic, method)

    async def fanout(self, ctx: RequestContext, topic: str, method: str, **args: Any) -> None:
        """Send a one-way message to every consumer of ``topic``'s fan-out."""
        await self.transport.send(topic, self.envelope(ctx, method, args), fanout=True)
        self.metrics.message_sent(topic, method)

    async def call(
        self, ctx: RequestContext, topic: str, method: str, *, timeout: float = DEFAULT_CALL_TIMEOUT, **args: Any
    ) -> Any:
        """Send a request to one consumer of ``topic`` and return its result.

        Raises :class:`CallTimeout` if no reply arrives within ``timeout`` seconds and
        :class:`RemoteError` if the handler raised.
        """
        body = self.envelope(ctx, method, args, reply=True)
        self.metrics.call_started(topic, method)
        try:
            raw = await self.transport.send(topic, body, reply_timeout=timeout)
        except TimeoutError as exc:
            if isinstance(exc, CallTimeout):
                raise
            raise CallTimeout(topic, method, timeout) from None
        finally:
            self.metrics.call_finished(topic, method)
        if raw is None:
            raise TransportError(f"empty reply from {topic!r} to {method!r}")
        reply = json.loads(raw)
        if "error" in reply:
            err = reply["error"]
            cls = {"UnknownMethod": UnknownMethod, "UnsupportedVersion": UnsupportedVersion}.get(
                err.get("type", ""), RemoteError
            )
            raise cls(err.get("type", "Exception"), err.get("message", ""), err.get("data"))
        return reply.get("result")

    async def serve(
        self,
        topic: str,
        endpoint: object,
        *,
        fanout: bool = False,
        accept: Callable[[str | None], bool] | None = None,
    ) -> None:
        """Dispatch messages on ``topic`` to ``endpoint``'s public coroutine methods.

        Each method is called as ``await endpoint.method(ctx, **args)``, with ``ctx.sender``
        the identity the transport vouches for. A one-way message whose id was handled
        here already is dropped (acknowledged); one that is being handled here right now is
        held until that handling ends, then dropped. With ``accept``, a message whose
        sender it refuses is answered :class:`NotAuthorized` (or dropped, if one-way)
        before any of the endpoint runs.
        """
        seen: OrderedDict[str, None] = OrderedDict()  # one-way messages handled here lately
        inflight: dict[str, asyncio.Future[None]] = {}  # ... and those being handled now

        async def handle(body: bytes, sender: str | None) -> bytes | None:
            message = json.loads(body)
            ctx = RequestContext.from_dict(message.get("context") or {})
            ctx.sender = sender
            method = message.get("method", "")
            with bind_request_id(ctx.request_id):
                version = str(message.get("version") or "1.0")
                if not _accepted(version):
                    log.error("bus.unsupported_version", topic=topic, method=method, version=version)
                    return encode(
                        {
                            "error": {
                                "type": "UnsupportedVersion",
                                "message": f"{topic} reads message versions {ACCEPTED_MAJORS[0]}.x to "
                                f"{ACCEPTED_MAJORS[-1]}.x, not {version}",
                            }
                        }
                    )
                if accept is not None and not accept(sender):
                    log.warning("bus.sender_refused", topic=topic, method=method, sender=sender)
                    return encode(
                        {"error": {"type": "NotAuthorized", "message": f"{sender} may not send to {topic}"}}
                    )
                message_id = message.get("id") if not message.get("reply") else None
                if message_id:
                    running = inflight.get(message_id)
                    if running is not None:
                        # The same message, handled here right now (redelivered after the
                        # connection dropped, before the first copy could be acknowledged):
                        # keep this copy unacknowledged until the first is done, so that if
                        # this process dies meanwhile the broker still has it.
                        await asyncio.shield(running)
                    if message_id in seen:
                        log.info("bus.duplicate_dropped", topic=topic, method=method, message_id=message_id)
                        return None
                    inflight[message_id] = asyncio.get_running_loop().create_future()
                ok = False
                try:
                    reply, ok = await dispatch(ctx, method, message)
                    return reply
                finally:
                    if message_id:
                        done = inflight.pop(message_id, None)
                        if done is not None and not done.done():
                            done.set_result(None)
                        if ok:  # a copy of a message whose handling failed gets another try
                            seen[message_id] = None
                            if len(seen) > SEEN_IDS:
                                seen.popitem(last=False)

        async def dispatch(ctx: RequestContext, method: str, message: dict[str, Any]) -> tuple[bytes, bool]:
            """Run the endpoint's method; the reply, and whether it succeeded."""
            with bind_request_id(ctx.request_id):
                func = getattr(endpoint, method, None) if not method.startswith("_") else None
                if func is None:
                    unknown = {"type": "UnknownMethod", "message": f"{topic} has no method {method}"}
                    return encode({"error": unknown}), True
                started = time.perf_counter()
                try:
                    result = await func(ctx, **message.get("args", {}))
                except Exception as exc:
                    self.metrics.message_handled(topic, method, time.perf_counter() - started, failed=True)
                    log.warning("bus.handler_error", topic=topic, method=method, error=repr(exc))
                    data = getattr(exc, "bus_data", None)
                    data = data() if callable(data) else None
                    return encode({"error": {"type": type(exc).__name__, "message": str(exc), "data": data}}), False
                elapsed = time.perf_counter() - started
                self.metrics.message_handled(topic, method, elapsed)
                log.debug("bus.handled", topic=topic, method=method, ms=round(elapsed * 1000, 2))
                return encode({"result": result}), True

        await self.transport.listen(topic, handle, fanout=fanout)


def _accepted(version: str) -> bool:
    try:
        major = int(version.split(".", 1)[0])
    except ValueError:
        return False
    return major in ACCEPTED_MAJORS
