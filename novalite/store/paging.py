"""Marker paging over an ordered result: the page after the row whose key is the marker.

Nova's and Keystone's small collections (key pairs, actions, flavors, usage) are paged in
Python after one ordered query; each API words its bad-marker error its own way, so the
caller passes the message.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from novalite.errors import Invalid

T = TypeVar("T")


def page_after(
    rows: Sequence[T], key: Callable[[T], object], marker: str | None, limit: int | None, unknown: str
) -> list[T]:
    """``rows`` after the one whose ``key`` is ``marker`` (all rows without a marker), at most
    ``limit`` of them; Invalid(``unknown``) when no row has that key."""
    start = 0
    if marker is not None:
        keys = [str(key(r)) for r in rows]
        if marker not in keys:
            raise Invalid(unknown)
        start = keys.index(marker) + 1
    end = None if limit is None else start + limit
    return list(rows[start:end])
