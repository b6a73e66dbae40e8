"""The service catalog: identity, compute and image, derived from the settings.

novalite serves all three APIs itself, so the catalog is not stored: it is computed
from ``public_base`` and ``region``. Ids are UUID5s of stable names, so they are the
same in every process and across restarts (clients may cache them).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from novalite.config import Settings

_NAMESPACE = uuid.UUID("5b3f3c1e-7d0c-4a51-9d1f-6e0c8a7d2f10")

INTERFACES = ("public", "internal", "admin")


@dataclass(frozen=True)
class Service:
    id: str
    type: str
    name: str
    description: str
    path: str  # appended to public_base


@dataclass(frozen=True)
class Endpoint:
    id: str
    service_id: str
    interface: str
    region: str
    url: str


def _stable_id(name: str) -> str:
    return uuid.uuid5(_NAMESPACE, name).hex


SERVICES: tuple[Service, ...] = tuple(
    Service(_stable_id(f"service:{type_}"), type_, name, description, path)
    for type_, name, description, path in (
        ("identity", "keystone", "Identity (Keystone v3)", "/identity"),
        ("compute", "nova", "Compute (Nova v2.1)", "/compute/v2.1"),
        ("image", "glance", "Image (Glance v2)", "/image"),
        ("network", "neutron", "Network (Neutron v2.0)", "/network"),
    )
)


def services() -> list[Service]:
    return list(SERVICES)


def endpoints(settings: Settings) -> list[Endpoint]:
    """Every endpoint: one per service and interface, all on the one public URL."""
    base = settings.public_base
    return [
        Endpoint(
            id=_stable_id(f"endpoint:{svc.type}:{interface}"),
            service_id=svc.id,
            interface=interface,
            region=settings.region,
            url=f"{base}{svc.path}",
        )
        for svc in SERVICES
        for interface in INTERFACES
    ]


def token_catalog(settings: Settings) -> list[dict[str, Any]]:
    """The ``catalog`` of a scoped token, in Keystone's format."""
    by_service: dict[str, list[Endpoint]] = {}
    for ep in endpoints(settings):
        by_service.setdefault(ep.service_id, []).append(ep)
    return [
        {
            "id": svc.id,
            "type": svc.type,
            "name": svc.name,
            "endpoints": [
                {"id": ep.id, "interface": ep.interface, "region": ep.region, "region_id": ep.region, "url": ep.url}
                for ep in by_service.get(svc.id, [])
            ],
        }
        for svc in SERVICES
    ]
