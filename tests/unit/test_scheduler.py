"""Scheduler filters and weighers (in memory), and placement claims (real SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa

from novalite.db import Database
from novalite.db import schema as t
from novalite.db.migrate import upgrade
from novalite.scheduler.filters import (
    AvailabilityZoneFilter,
    ComputeFilter,
    ForcedHostFilter,
    ImagePropertiesFilter,
    ResourcesFilter,
)
from novalite.scheduler.hoststate import HostState, RequestSpec
from novalite.scheduler.weights import CPUWeigher, RAMWeigher, normalize, weigh_hosts
from novalite.store import placement
from novalite.store.placement import DISK_GB, MEMORY_MB, VCPU, Inventory, ProviderUsage

FLAVOR = {"vcpus": 2, "memory_mb": 2048, "root_gb": 10, "ephemeral_gb": 0, "swap": 0}


def host(
    name: str,
    ram: int = 8192,
    vcpus: int = 4,
    disk: int = 100,
    used_ram: int = 0,
    *,
    up: bool = True,
    disabled: bool = False,
    az: str = "nova",
    hv: str = "fake",
    arch: str = "x86_64",
) -> HostState:
    usage = ProviderUsage(uuid=name, name=name, generation=0)
    usage.inventories = {
        VCPU: Inventory(total=vcpus, allocation_ratio=4.0),
        MEMORY_MB: Inventory(total=ram),
        DISK_GB: Inventory(total=disk),
    }
    usage.used = {MEMORY_MB: used_ram}
    return HostState(
        uuid=name,
        host=name,
        node=name,
        availability_zone=az,
        hypervisor_type=hv,
        cpu_info={"arch": arch},
        up=up,
        disabled=disabled,
        usage=usage,
    )


def spec(**kw) -> RequestSpec:
    return RequestSpec(instance_uuid="i", project_id="p", flavor=dict(FLAVOR), **kw)


def test_compute_filter_drops_down_and_disabled_hosts():
    f = ComputeFilter()
    assert f.host_passes(host("a"), spec())
    assert not f.host_passes(host("a", up=False), spec())
    assert not f.host_passes(host("a", disabled=True), spec())


def test_resources_filter_applies_allocation_ratios():
    f = ResourcesFilter()
    assert f.host_passes(host("a", ram=2048), spec())
    assert not f.host_passes(host("a", ram=2048, used_ram=1), spec())
    # 2 physical vCPUs * ratio 4.0 = 8 schedulable: with 6 used, a 2-vCPU flavor still fits...
    busy = host("a", vcpus=2)
    busy.usage.used[VCPU] = 6
    assert f.host_passes(busy, spec())
    busy.usage.used[VCPU] = 7
    assert not f.host_passes(busy, spec())
    # ...but no single instance may have more vCPUs than the host has (max_unit, as in Nova).
    assert not f.host_passes(host("a", vcpus=1), spec())
    assert not f.host_passes(host("a", disk=5), spec())


def test_az_forced_host_and_image_filters():
    assert AvailabilityZoneFilter().host_passes(host("a", az="z1"), spec(availability_zone="z1"))
    assert not AvailabilityZoneFilter().host_passes(host("a", az="z2"), spec(availability_zone="z1"))
    assert ForcedHostFilter().host_passes(host("a"), spec(force_host="a"))
    assert not ForcedHostFilter().host_passes(host("b"), spec(force_host="a"))
    img = {"properties": {"hw_architecture": "aarch64"}}
    assert not ImagePropertiesFilter().host_passes(host("a"), spec(image=img))
    assert ImagePropertiesFilter().host_passes(host("a", arch="aarch64"), spec(image=img))
    assert not ImagePropertiesFilter().host_passes(host("a"), spec(image={"properties": {"img_hv_type": "xen"}}))


def test_normalize_and_weighers_spread_by_default():
    assert normalize([1, 3, 5]) == [0.0, 0.5, 1.0]
    assert normalize([2, 2]) == [0.0, 0.0]
    hosts = [host("full", used_ram=6000), host("empty"), host("half", used_ram=4096)]
    ranked = weigh_hosts(hosts, spec(), [RAMWeigher(), CPUWeigher()])
    assert [h.host for h in ranked] == ["empty", "half", "full"]
    stack = RAMWeigher()
    stack.multiplier = -1.0
    assert weigh_hosts(hosts, spec(), [stack])[0].host == "full"


def test_flavor_resources_counts_ephemeral_and_swap():
    res = placement.flavor_resources({"vcpus": 1, "memory_mb": 512, "root_gb": 1, "ephemeral_gb": 2, "swap": 1500})
    assert res == {VCPU: 1, MEMORY_MB: 512, DISK_GB: 5}


@pytest.fixture
async def db(db_url):
    database = Database(db_url, pool_size=20)
    await upgrade(database)
    yield database
    await database.close()


async def test_concurrent_claims_never_overcommit(db):
    """Fifty racing claims for a host with room for exactly seven: seven win."""
    async with db.begin() as conn:
        await placement.ensure_provider(conn, "rp1", "hv1")
        await placement.set_inventories(conn, "rp1", {MEMORY_MB: Inventory(total=7 * 1024), VCPU: Inventory(total=64)})
    want = {MEMORY_MB: 1024, VCPU: 1}
    results = await asyncio.gather(*(placement.claim(db, str(uuid.uuid4()), "rp1", want) for _ in range(50)))
    assert sum(results) == 7
    async with db.connect() as conn:
        used = await conn.scalar(
            sa.select(sa.func.sum(t.allocations.c.used)).where(t.allocations.c.resource_class == MEMORY_MB)
        )
        usage = await placement.provider_usage(conn, "rp1")
    assert used == 7 * 1024
    assert usage.free(MEMORY_MB) == 0
    assert usage.generation >= 8  # one bump for the inventory, one per successful claim


async def test_release_frees_room(db):
    async with db.begin() as conn:
        await placement.ensure_provider(conn, "rp1", "hv1")
        await placement.set_inventories(conn, "rp1", {MEMORY_MB: Inventory(total=1024)})
    assert await placement.claim(db, "a", "rp1", {MEMORY_MB: 1024})
    assert not await placement.claim(db, "b", "rp1", {MEMORY_MB: 1})
    async with db.begin() as conn:
        await placement.release(conn, "a")
    assert await placement.claim(db, "b", "rp1", {MEMORY_MB: 1024})


def test_filter_all_skips_filters_with_nothing_to_check():
    hosts = [host("a", az="z1"), host("b", az="z2"), host("c", ram=1024)]
    assert AvailabilityZoneFilter().filter_all(hosts, spec()) is hosts
    assert [h.host for h in AvailabilityZoneFilter().filter_all(hosts, spec(availability_zone="z2"))] == ["b"]
    assert ForcedHostFilter().filter_all(hosts, spec()) is hosts
    assert [h.host for h in ResourcesFilter().filter_all(hosts, spec())] == ["a", "b"]
    img = spec(image={"properties": {"hw_architecture": "aarch64"}})
    assert ImagePropertiesFilter().filter_all(hosts, img) == []
