"""Hypervisor drivers for novalite (import name ``novalite_drivers``, folder ``drivers/``).

A driver knows only its hypervisor: it never imports novalite's API, database or
bus (an import contract in CI says so). Drivers are found by name through the
``novalite.drivers`` entry-point group (see ``novalite.agent.drivers``), so a separate
package can add one by declaring an entry point.
"""

from novalite_drivers.base import ComputeDriver

__all__ = ["ComputeDriver"]
