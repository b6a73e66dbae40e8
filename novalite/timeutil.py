"""Time helpers: naive UTC datetimes in the database, OpenStack's ISO formats on the wire."""

from __future__ import annotations

from datetime import UTC, datetime


def utcnow() -> datetime:
    """Now, as a naive UTC datetime (what every table stores)."""
    return datetime.now(UTC).replace(tzinfo=None)


def iso(dt: datetime | None) -> str | None:
    """``2026-11-26T07:40:00Z`` (Nova's and Glance's format), or None."""
    # isoformat is C-fast; strftime costs ~3 µs, which a 1,000-server listing pays 3,000 times.
    return dt.isoformat(timespec="seconds") + "Z" if dt else None


def iso_micro(dt: datetime | None) -> str | None:
    """``2026-11-26T07:40:00.000000`` (the form Nova uses for actions, usage, services)."""
    return dt.isoformat(timespec="microseconds") if dt else None


def parse_iso(value: str) -> datetime:
    """Parse an ISO 8601 timestamp (with or without zone) into naive UTC."""
    dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if dt.tzinfo is not None:
        dt = dt.astimezone(UTC).replace(tzinfo=None)
    return dt
