"""What every service in a process shares: the settings, the bus and (controller side) the database."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from novalite.bus import Bus
from novalite.config import Settings


@dataclass
class Runtime:
    settings: Settings
    bus: Bus
    #: None in a compute-agent-only process: the agent has no database access at all.
    db: Any = None
    #: Handles of the services started in this process, by role (for tests and shutdown).
    services: dict[str, Any] = field(default_factory=dict)
