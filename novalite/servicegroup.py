"""Is a service up? Nova's rule: it reported within ``service_down_time`` and is not forced down."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from novalite.timeutil import utcnow


def is_up(service: Any, down_time: float, now: datetime | None = None) -> bool:
    """``service`` is a services row (or mapping) with ``last_seen_up`` and ``forced_down``."""
    get = service.get if isinstance(service, dict) else lambda k: getattr(service, k)
    if get("forced_down"):
        return False
    last = get("last_seen_up")
    if last is None:
        return False
    return bool((now or utcnow()) - last <= timedelta(seconds=down_time))
