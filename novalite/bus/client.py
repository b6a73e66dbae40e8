"""The Bus: cast, call, fan-out and serve, on top of any :class:`Transport`.

An envelope is ``{"method": str, "args": {...}, "context": {...}}`` and a reply is
``{"result": ...}`` or ``{"error": {"type": str, "message": str, "data": {...}}}``, all
plain JSON. The context carries the request id; a served method runs with it bound
to every log line.
"""

from __future__ import annotations

import json
import time
from typing import Any

from novalite.bus.errors import CallTimeout, NotJSONError, RemoteError, TransportError, UnknownMethod
from novalite.bus.transport import Transport
from novalite.context import RequestContext
from novalite.log import bind_request_id, get_logger

log = get_logger(__name__)

DEFAULT_CALL_TIMEOUT = 60.0


def check_plain_json(value: Any, path: str = "$") -> None:
    """Raise :class:`NotJSONError` naming the first value that is not plain JSON.

    ``json.dumps`` alone would quietly turn tuples into lists and integer keys into
    strings; over RabbitMQ the receiver would then see something else than in-process.
    """
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


def encode(message: dict[str, Any]) -> bytes:
    check_plain_json(message)
    return json.dumps(message, separators=(",", ":")).encode()


class Bus:
    """Services talk through this; it knows nothing of which transport carries the bytes."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport

    async def start(self) -> None:
        await self.transport.start()

    async def close(self) -> None:
        await self.transport.close()

    @staticmethod
    def _envelope(ctx: RequestContext, method: str, args: dict[str, Any]) -> bytes:
        return encode({"method": method, "args": args, "context": ctx.to_dict()})

    async def cast(self, ctx: RequestContext, topic: str, method: str, **args: Any) -> None:
        """Send a one-way message to one consumer of ``topic``."""
        await self.transport.send(topic, self._envelope(ctx, method, args))

    async def fanout(self, ctx: RequestContext, topic: str, method: str, **args: Any) -> None:
        """Send a one-way message to every consumer of ``topic``'s fan-out."""
        await self.transport.send(topic, self._envelope(ctx, method, args), fanout=True)

    async def call(
        self, ctx: RequestContext, topic: str, method: str, *, timeout: float = DEFAULT_CALL_TIMEOUT, **args: Any
    ) -> Any:
        """Send a request to one consumer of ``topic`` and return its result.

        Raises :class:`CallTimeout` if no reply arrives within ``timeout`` seconds and
        :class:`RemoteError` if the handler raised.
        """
        body = self._envelope(ctx, method, args)
        try:
            raw = await self.transport.send(topic, body, reply_timeout=timeout)
        except TimeoutError as exc:
            if isinstance(exc, CallTimeout):
                raise
            raise CallTimeout(topic, method, timeout) from None
        if raw is None:
            raise TransportError(f"empty reply from {topic!r} to {method!r}")
        reply = json.loads(raw)
        if "error" in reply:
            err = reply["error"]
            cls = UnknownMethod if err.get("type") == "UnknownMethod" else RemoteError
            raise cls(err.get("type", "Exception"), err.get("message", ""), err.get("data"))
        return reply.get("result")

    async def serve(self, topic: str, endpoint: object, *, fanout: bool = False) -> None:
        """Dispatch messages on ``topic`` to ``endpoint``'s public coroutine methods.

        Each method is called as ``await endpoint.method(ctx, **args)``.
        """

        async def handle(body: bytes) -> bytes | None:
            message = json.loads(body)
            ctx = RequestContext.from_dict(message.get("context") or {})
            method = message.get("method", "")
            with bind_request_id(ctx.request_id):
                func = getattr(endpoint, method, None) if not method.startswith("_") else None
                if func is None:
                    return encode({"error": {"type": "UnknownMethod", "message": f"{topic} has no method {method}"}})
                started = time.perf_counter()
                try:
                    result = await func(ctx, **message.get("args", {}))
                except Exception as exc:
                    log.warning("bus.handler_error", topic=topic, method=method, error=repr(exc))
                    data = getattr(exc, "bus_data", None)
                    data = data() if callable(data) else None
                    return encode({"error": {"type": type(exc).__name__, "message": str(exc), "data": data}})
                log.debug(
                    "bus.handled", topic=topic, method=method, ms=round((time.perf_counter() - started) * 1000, 2)
                )
                return encode({"result": result})

        await self.transport.listen(topic, handle, fanout=fanout)
