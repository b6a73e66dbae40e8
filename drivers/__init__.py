"""Hypervisor drivers for novalite (import name ``novalite_drivers``, folder ``drivers/``).

A driver knows only its hypervisor: it never imports novalite's API, database or
bus. Drivers are found by name through the ``novalite.drivers`` entry-point group,
so a separate package can add one by declaring an entry point.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from novalite_drivers.base import ComputeDriver


def available_drivers() -> list[str]:
    """Names of the drivers installed in this environment."""
    return sorted(ep.name for ep in entry_points(group="novalite.drivers"))


def load_driver(name: str, host: str, options: dict[str, Any] | None = None) -> ComputeDriver:
    """Instantiate the driver registered under ``name`` for compute host ``host``."""
    matches = [ep for ep in entry_points(group="novalite.drivers") if ep.name == name]
    if not matches:
        raise LookupError(f"unknown hypervisor driver {name!r}; installed: {', '.join(available_drivers())}")
    cls = matches[0].load()
    return cls(host, options)
