"""The RabbitMQ transport: the bus across processes and hosts, on aio-pika.

Layout in the broker (one vhost per cloud)::

    exchange "novalite" (direct, durable)
        └── queue <topic> (durable), routing key <topic>     competing consumers share it
    exchange "novalite.fanout.<topic>" (fanout, durable)
        └── one exclusive auto-delete queue per listener      every listener gets a copy
    queue "novalite.reply.<uuid>" (exclusive, auto-delete)     this transport's call replies

Why it is built this way:

* ``connect_robust``: after a broker restart or a forced close the connection, its
  channels, exchanges, queues, bindings and consumers are re-declared by aio-pika, so
  services keep consuming without novalite code noticing. Publishing while the
  connection is down waits for it (up to ``publish_timeout``, or the call's timeout).
* The sender declares a topic's queue too, so a cast sent before any consumer exists
  waits in the durable queue; it is published ``mandatory`` with publisher confirms,
  so an unroutable or refused message raises :class:`TransportError` instead of
  vanishing. Casts are persistent.
* Calls are not persistent and expire with the caller's timeout: nobody acts on a
  request whose caller has given up. Replies go to a named exclusive reply queue that
  aio-pika re-declares on reconnect (a plain queue rather than ``amq.rabbitmq.reply-to``
  because that pseudo-queue must be consumed on the publishing channel and cannot be
  re-declared like a queue, which makes its robust restore fragile).
* Consumers have a bounded prefetch and ack only after the handler finished, so a
  consumer that dies mid-message leaves it to be redelivered to another. A handler that
  raises is logged and acked (never requeued forever); the :class:`~novalite.bus.Bus`
  already turns endpoint errors into error replies, so this is a last resort.
* Every message carries ``user_id``, the login it was published with: RabbitMQ refuses a
  message whose ``user_id`` is not the connection's login, so the consumer's handler
  gets a sender the broker vouches for (:mod:`novalite.bus.identity`).
* A per-host agent's connection (login ``novalite-agent-<host>``) is *restricted*: it
  declares only its own queues and looks the shared exchange up passively, so its
  broker user needs no right to create or delete anything shared (docs/security-model.md).
* Handlers run in tasks owned by the transport, not by the AMQP channel, so a
  reconnect does not cancel work half done. The price is at-least-once delivery: a
  message whose ack is lost with the old connection is redelivered and may run twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
import aiormq
from aio_pika.abc import (
    AbstractExchange,
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
)
from yarl import URL

from novalite.bus.errors import TransportError
from novalite.bus.identity import ANONYMOUS, agent_host
from novalite.bus.transport import Handler, Transport
from novalite.log import get_logger
from novalite.tasks import cancel_and_wait

log = get_logger(__name__)

EXCHANGE = "novalite"
FANOUT_PREFIX = "novalite.fanout."
#: Unacked messages one listener holds at once; ``?prefetch_count=N`` in the URL overrides it.
PREFETCH = 64

#: Reply header: "ok" (body is the reply), "none" (handler returned None), "error" (it raised).
_STATUS = "x-novalite-status"

#: Failures that mean "the connection is down or being restored": wait and publish again.
_RETRY = (aiormq.exceptions.AMQPConnectionError, aiormq.exceptions.ChannelInvalidStateError, ConnectionError)


def _amqp_url(url: str) -> tuple[URL, int | None]:
    """``rabbit://`` → ``amqp://``; pull out our own ``prefetch_count`` query parameter."""
    parsed = URL(url)
    if parsed.scheme == "rabbit":
        parsed = parsed.with_scheme("amqp")
    prefetch = parsed.query.get("prefetch_count")
    if prefetch is not None:
        parsed = parsed.without_query_params("prefetch_count")
    return parsed, int(prefetch) if prefetch is not None else None


class RabbitTransport(Transport):
    """A :class:`Transport` on RabbitMQ. ``url``: ``rabbit://user:pass@host:5672/vhost``."""

    durable = True

    def __init__(
        self,
        url: str,
        *,
        prefetch: int | None = None,
        reconnect_interval: float = 2.0,
        connect_timeout: float = 10.0,
        publish_timeout: float = 30.0,
    ) -> None:
        self._url, url_prefetch = _amqp_url(url)
        #: The login every message is stamped with (``user_id``); AMQP's default is guest.
        self.identity = self._url.user or "guest"
        #: An agent's connection declares nothing shared (see the module docstring).
        self.restricted = agent_host(self.identity) is not None
        self._prefetch = prefetch or url_prefetch or PREFETCH
        self._reconnect_interval = reconnect_interval
        self._connect_timeout = connect_timeout
        self._publish_timeout = publish_timeout
        self._connection: AbstractRobustConnection | None = None
        self._pub: AbstractRobustChannel | None = None  # publishing, confirms on
        self._sub: AbstractRobustChannel | None = None  # consuming, with the prefetch
        self._exchanges: dict[str, AbstractExchange] = {}  # declared on the publishing channel
        self._topics: set[str] = set()  # topic queues declared by the sender
        self._reply_queue = f"novalite.reply.{uuid.uuid4().hex}"
        self._pending: dict[str, asyncio.Future[bytes | None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._start_lock = asyncio.Lock()
        self._closed = False
        #: How often the connection was re-established (for logs, metrics and tests).
        self.reconnects = 0

    @property
    def where(self) -> str:
        """The broker address without credentials, for messages."""
        return f"{self._url.host}:{self._url.port}/{self._url.path.lstrip('/') or '/'}"

    async def start(self) -> None:
        """Connect, open the channels and start consuming replies. Idempotent."""
        async with self._start_lock:
            if self._closed:
                raise TransportError("transport is closed")
            if self._connection is not None:
                return
            query = {"reconnect_interval": str(self._reconnect_interval)}
            url = self._url.update_query({k: v for k, v in query.items() if k not in self._url.query})
            try:
                connection = await aio_pika.connect_robust(url, timeout=self._connect_timeout)
            except Exception as exc:  # refused, DNS, auth, vhost missing, timeout ...
                raise TransportError(f"cannot connect to RabbitMQ at {self.where}: {exc!r}") from exc
            try:
                connection.reconnect_callbacks.add(self._on_reconnect)
                self._pub = await connection.channel(publisher_confirms=True, on_return_raises=True)
                self._sub = await connection.channel()
                await self._sub.set_qos(prefetch_count=self._prefetch)
                await self._exchange(EXCHANGE, aio_pika.ExchangeType.DIRECT)
                await self._sub_exchange(EXCHANGE, aio_pika.ExchangeType.DIRECT)
                replies = await self._sub.declare_queue(self._reply_queue, exclusive=True, auto_delete=True)
                await replies.consume(self._on_reply, no_ack=True)
            except Exception as exc:
                self._exchanges.clear()
                with contextlib.suppress(Exception):
                    await connection.close()
                raise TransportError(f"cannot set up the bus on RabbitMQ at {self.where}: {exc!r}") from exc
            self._connection = connection

    def _on_reconnect(self, *_: Any) -> None:
        self.reconnects += 1
        log.warning("bus.rabbit.reconnected", broker=self.where, reconnects=self.reconnects)

    async def _exchange(self, name: str, kind: aio_pika.ExchangeType) -> AbstractExchange:
        exchange = self._exchanges.get(name)
        if exchange is None:
            assert self._pub is not None
            exchange = self._exchanges[name] = await self._pub.declare_exchange(
                name, kind, durable=True, passive=self.restricted
            )
        return exchange

    async def _sub_exchange(self, name: str, kind: aio_pika.ExchangeType) -> AbstractExchange:
        assert self._sub is not None
        return await self._sub.declare_exchange(name, kind, durable=True, passive=self.restricted)

    async def _topic_exchange(self, topic: str) -> AbstractExchange:
        """The direct exchange, after making sure ``topic``'s durable queue exists and is bound."""
        exchange = await self._exchange(EXCHANGE, aio_pika.ExchangeType.DIRECT)
        if topic not in self._topics and not self.restricted:  # an agent's sends need the queue to exist
            assert self._pub is not None
            queue = await self._pub.declare_queue(topic, durable=True)
            await queue.bind(exchange, topic)
            self._topics.add(topic)
        return exchange

    async def send(
        self, topic: str, body: bytes, *, fanout: bool = False, reply_timeout: float | None = None
    ) -> bytes | None:
        if self._closed:
            raise TransportError("transport is closed")
        await self.start()
        if fanout:
            # Not persistent (the listeners' queues are not durable either) and not
            # mandatory: a fan-out nobody listens to is not an error, as in-process.
            fan = FANOUT_PREFIX + topic
            message = aio_pika.Message(
                body, delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT, user_id=self.identity
            )
            await self._cast(topic, lambda: self._exchange(fan, aio_pika.ExchangeType.FANOUT), "", message)
            return None
        if reply_timeout is None:
            message = aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT, user_id=self.identity)
            await self._cast(topic, lambda: self._topic_exchange(topic), topic, message, mandatory=True)
            return None
        correlation_id = uuid.uuid4().hex
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self._pending[correlation_id] = future
        message = aio_pika.Message(
            body,
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            correlation_id=correlation_id,
            reply_to=self._reply_queue,
            expiration=reply_timeout,
            user_id=self.identity,
        )
        try:
            async with asyncio.timeout(reply_timeout):  # publishing counts against the call's time
                await self._publish(topic, lambda: self._topic_exchange(topic), topic, message)
                return await future
        except TimeoutError:
            raise TimeoutError(f"no reply on {topic} within {reply_timeout:g}s") from None
        finally:
            self._pending.pop(correlation_id, None)  # a late reply finds nobody and is dropped

    async def _cast(
        self,
        topic: str,
        exchange: Callable[[], Awaitable[AbstractExchange]],
        routing_key: str,
        message: aio_pika.Message,
        *,
        mandatory: bool = False,
    ) -> None:
        """Publish a message nobody waits a reply for, within ``publish_timeout``."""
        try:
            async with asyncio.timeout(self._publish_timeout):
                await self._publish(topic, exchange, routing_key, message, mandatory=mandatory)
        except TimeoutError:
            raise TransportError(
                f"could not publish to {topic!r} on RabbitMQ at {self.where} "
                f"within {self._publish_timeout:g}s"
            ) from None

    async def _publish(
        self,
        topic: str,
        exchange: Callable[[], Awaitable[AbstractExchange]],
        routing_key: str,
        message: aio_pika.Message,
        *,
        mandatory: bool = True,
    ) -> None:
        """Publish and wait for the broker's confirm, retrying while the connection is restored.

        A confirm lost with the connection means "unknown", not "refused", so retrying can
        duplicate a message; the bus is at-least-once anyway.
        """
        while True:
            try:
                await (await exchange()).publish(message, routing_key, mandatory=mandatory)
                return
            except aiormq.exceptions.PublishError as exc:
                raise TransportError(f"RabbitMQ could not route a message to {topic!r}") from exc
            except aiormq.exceptions.DeliveryError as exc:
                raise TransportError(f"RabbitMQ refused a message to {topic!r}") from exc
            except _RETRY as exc:
                if self._closed:
                    raise TransportError("transport is closed") from exc
                log.info("bus.rabbit.publish_retry", topic=topic, error=repr(exc))
                await asyncio.sleep(0.2)
                if self._pub is not None:
                    await self._pub.ready()
            except aiormq.exceptions.AMQPError as exc:
                raise TransportError(f"cannot publish to {topic!r}: {exc!r}") from exc

    async def listen(self, topic: str, handler: Handler, *, fanout: bool = False) -> None:
        await self.start()
        assert self._sub is not None
        try:
            if fanout:
                exchange = await self._sub_exchange(FANOUT_PREFIX + topic, aio_pika.ExchangeType.FANOUT)
                queue = await self._sub.declare_queue(exclusive=True, auto_delete=True)
                await queue.bind(exchange)
            else:
                exchange = await self._sub_exchange(EXCHANGE, aio_pika.ExchangeType.DIRECT)
                queue = await self._sub.declare_queue(topic, durable=True)
                await queue.bind(exchange, topic)

            async def on_message(message: AbstractIncomingMessage) -> None:
                # Return at once: the prefetch bounds the work in flight, and the task is
                # ours so that a reconnect (which cancels the channel's tasks) does not
                # cancel the handler.
                self._spawn(self._handle(topic, handler, message))

            await queue.consume(on_message)
        except aiormq.exceptions.AMQPError as exc:
            raise TransportError(f"cannot listen on {topic!r}: {exc!r}") from exc

    def _spawn(self, coro: Awaitable[None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(self, topic: str, handler: Handler, message: AbstractIncomingMessage) -> None:
        status = "ok"
        try:
            reply = await handler(message.body, message.user_id or ANONYMOUS)
            if reply is None:
                reply, status = b"", "none"
        except Exception as exc:
            log.exception("bus.rabbit.handler_crashed", topic=topic)
            reply, status = f"handler on {topic!r} crashed: {exc!r}".encode(), "error"
        if message.reply_to:
            await self._reply(message, reply, status)
        try:
            await message.ack()
        except Exception as exc:  # the channel went away: the broker redelivers the message
            log.warning("bus.rabbit.ack_failed", topic=topic, error=repr(exc))

    async def _reply(self, request: AbstractIncomingMessage, body: bytes, status: str) -> None:
        assert self._pub is not None and request.reply_to is not None
        reply = aio_pika.Message(
            body,
            headers={_STATUS: status},
            correlation_id=request.correlation_id,
            delivery_mode=aio_pika.DeliveryMode.NOT_PERSISTENT,
            user_id=self.identity,
        )
        try:
            # Not mandatory: a caller that is gone has given up on the reply.
            await self._pub.default_exchange.publish(reply, request.reply_to, mandatory=False)
        except Exception as exc:
            log.warning("bus.rabbit.reply_failed", reply_to=request.reply_to, error=repr(exc))

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        future = self._pending.get(message.correlation_id or "")
        if future is None or future.done():
            log.debug("bus.rabbit.late_reply", correlation_id=message.correlation_id)
            return
        status = (message.headers or {}).get(_STATUS, "ok")
        if status == "error":
            future.set_exception(TransportError(message.body.decode(errors="replace")))
        else:
            future.set_result(None if status == "none" else message.body)

    async def close(self) -> None:
        """Cancel running handlers (their messages go back to the queue) and disconnect."""
        self._closed = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(TransportError("transport closed while waiting for a reply"))
        await cancel_and_wait(list(self._tasks))
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
