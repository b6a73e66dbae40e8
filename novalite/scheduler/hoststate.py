"""What the scheduler knows of a host, and what a request asks for."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from novalite.store import placement
from novalite.store.placement import ProviderUsage


@dataclass
class RequestSpec:
    """One instance to place (plain JSON on the bus: see :meth:`from_dict`)."""

    instance_uuid: str
    project_id: str
    flavor: dict[str, Any]
    image: dict[str, Any] = field(default_factory=dict)
    availability_zone: str | None = None
    force_host: str | None = None
    ignore_hosts: list[str] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RequestSpec:
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def resources(self) -> dict[str, int]:
        return placement.flavor_resources(self.flavor)

    @property
    def image_properties(self) -> dict[str, Any]:
        return self.image.get("properties") or {}


@dataclass
class HostState:
    uuid: str
    host: str
    node: str
    availability_zone: str
    hypervisor_type: str
    cpu_info: dict[str, Any]
    up: bool
    disabled: bool
    usage: ProviderUsage

    def free(self, rc: str) -> int:
        return self.usage.free(rc)

    def consume(self, resources: dict[str, int]) -> None:
        """Account a successful claim in the cached view (the database already has it)."""
        for rc, amount in resources.items():
            self.usage.used[rc] = self.usage.used.get(rc, 0) + amount
        self.usage.generation += 1
