"""The bus tests use the session-wide RabbitMQ vhost fixtures of ``tests/conftest.py``.

Each run gets its own vhost (``novalite-test-<random>``), so concurrent runs on one
broker never see each other's queues, and deleting the vhost cleans up everything.
Tests marked ``rabbit`` fail (never skip) when ``rabbitmqctl`` or the broker is missing.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from novalite.bus import Bus
from novalite.bus.memory import MemoryTransport
from novalite.bus.rabbit import RabbitTransport
from tests.conftest import RABBIT_HOST, rabbitmqctl

__all__ = ["RABBIT_HOST", "NewBus", "rabbitmqctl"]

#: Makes a started Bus (see the ``new_bus`` fixture).
NewBus = Callable[[], Awaitable[Bus]]


@pytest.fixture
def topic() -> str:
    return f"t-{uuid.uuid4().hex[:8]}"


@pytest.fixture(params=["memory", pytest.param("rabbit", marks=pytest.mark.rabbit)])
async def new_bus(request: pytest.FixtureRequest) -> AsyncIterator[NewBus]:
    """Make started Buses: on one shared MemoryTransport, or each on its own RabbitTransport
    (as separate services would have): the Bus contract tests run on both."""
    buses: list[Bus] = []
    memory = MemoryTransport()
    url = request.getfixturevalue("rabbit_url") if request.param == "rabbit" else None

    async def make() -> Bus:
        transport = RabbitTransport(url, reconnect_interval=0.5) if url else memory
        bus = Bus(transport)
        await bus.start()
        buses.append(bus)
        return bus

    yield make
    for bus in buses:
        await bus.close()
