"""Finding hypervisor drivers: by name, through the ``novalite.drivers`` entry-point group.

Discovery is novalite's business, not the drivers': a driver package only declares an
entry point (``fake = "novalite_drivers.fake:FakeDriver"``), so a third-party package
adds a driver without touching novalite, and ``drivers/`` imports nothing of novalite.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from novalite_drivers.base import ComputeDriver

GROUP = "novalite.drivers"


def available_drivers() -> list[str]:
    """Names of the drivers installed in this environment."""
    return sorted(ep.name for ep in entry_points(group=GROUP))


def driver_class(name: str) -> type[ComputeDriver]:
    """The driver class registered under ``name``; LookupError names the installed ones."""
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == name]
    if not matches:
        raise LookupError(f"unknown hypervisor driver {name!r}; installed: {', '.join(available_drivers())}")
    cls = matches[0].load()
    if not (isinstance(cls, type) and issubclass(cls, ComputeDriver)):
        raise LookupError(f"the entry point {name!r} of {GROUP} is not a ComputeDriver: {cls!r}")
    return cls


def load_driver(name: str, host: str, options: dict[str, Any] | None = None) -> ComputeDriver:
    """Instantiate the driver registered under ``name`` for compute host ``host``."""
    return driver_class(name)(host, options)
