"""What the services of one process share.

:class:`Runtime` is what every process has: the settings and the bus. The compute agent
gets only that. :class:`ControllerRuntime` adds the database, for the API, conductor,
scheduler and console proxy. ``Database`` is imported for the type checker only, so
importing this module (as the agent does) loads nothing of the database layer; the
import contracts in ``pyproject.toml`` leave type-checking imports out for that reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from novalite.bus import Bus
from novalite.config import Settings
from novalite.metrics import Metrics

if TYPE_CHECKING:
    from novalite.db import Database


@dataclass
class Runtime:
    settings: Settings
    bus: Bus
    #: Handles of the services started in this process, by class name (for tests and shutdown).
    services: dict[str, list[Any]] = field(default_factory=dict)
    #: The console proxy's public URL once a proxy runs in this process (it knows its real
    #: port when ``console_listen`` says port 0); None: derived from the settings.
    console_url: str | None = None
    #: This process's Prometheus instruments (its own registry: see novalite.metrics).
    metrics: Metrics = field(default_factory=Metrics)


@dataclass
class ControllerRuntime(Runtime):
    """A controller process's runtime: the database is always there."""

    db: Database = field(kw_only=True)
    #: Values read once from the database and kept for the process's life (shared keys).
    cache: dict[str, Any] = field(default_factory=dict, kw_only=True)
