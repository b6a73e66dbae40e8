"""The bus tests use the session-wide RabbitMQ vhost fixtures of ``tests/conftest.py``.

Each run gets its own vhost (``novalite-test-<random>``), so concurrent runs on one
broker never see each other's queues, and deleting the vhost cleans up everything.
Tests marked ``rabbit`` fail (never skip) when ``rabbitmqctl`` or the broker is missing.
"""

from tests.conftest import RABBIT_HOST, rabbitmqctl

__all__ = ["RABBIT_HOST", "rabbitmqctl"]
