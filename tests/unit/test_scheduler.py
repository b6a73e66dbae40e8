"""Scheduler filters and weighers (in memory), and placement claims (real SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from types import SimpleNamespace

import pytest
import sqlalchemy as sa

from novalite.config import Settings
from novalite.db import Database
from novalite.db import schema as t
from novalite.db.migrate import upgrade
from novalite.metrics import Metrics
from novalite.scheduler.filters import (
    AvailabilityZoneFilter,
    ComputeFilter,
    ForcedHostFilter,
    ImagePropertiesFilter,
    ResourcesFilter,
)
from novalite.scheduler.hoststate import HostState, RequestSpec, Reservations
from novalite.scheduler.manager import SchedulerManager
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


# -- choosing among the best, consuming before the claim (issue 9, defect 9) ---------------------


def manager(rng_seed: int = 7, **settings: object) -> SchedulerManager:
    """A scheduler over in-memory host states only (no database, no bus)."""
    rt = SimpleNamespace(settings=Settings(**settings), db=None, metrics=Metrics())
    return SchedulerManager(rt, rng=random.Random(rng_seed))  # type: ignore[arg-type]


def three_equal() -> list[HostState]:
    """Three equal empty hosts with room for 32 instances of FLAVOR each."""
    return [host(name, ram=65536, vcpus=16) for name in ("a", "b", "c")]


def with_hosts(sched: SchedulerManager, *hosts: HostState) -> SchedulerManager:
    sched.hosts = {h.uuid: h for h in hosts}
    return sched


def test_equal_hosts_are_chosen_at_random_not_in_row_order():
    sched = with_hosts(manager(), host("a"), host("b"), host("c"))
    picks = Counter(sched.choose(sched._weighed(spec()))[0].host for _ in range(300))
    assert set(picks) == {"a", "b", "c"} and min(picks.values()) > 60, picks
    # Nova's own default (no shuffle, subset 1) keeps the order: always the first row.
    nova = with_hosts(manager(shuffle_best_same_weighed_hosts=False), host("a"), host("b"), host("c"))
    assert {nova.choose(nova._weighed(spec()))[0].host for _ in range(50)} == {"a"}


def test_only_the_tied_best_are_shuffled_and_alternates_follow():
    sched = with_hosts(manager(), host("busy", used_ram=4096), host("a"), host("b"))
    for _ in range(50):
        chosen, rest = sched.choose(sched._weighed(spec()))
        assert chosen.host in {"a", "b"}
        assert rest[-1].host == "busy"  # the worse host is never promoted by the shuffle


def test_host_subset_size_picks_among_the_n_best():
    sched = with_hosts(
        manager(scheduler_host_subset_size=2, shuffle_best_same_weighed_hosts=False),
        host("best"),
        host("second", used_ram=1024),
        host("worst", used_ram=6000),
    )
    picks = Counter(sched.choose(sched._weighed(spec()))[0].host for _ in range(200))
    assert set(picks) == {"best", "second"}, picks


def test_consuming_each_choice_spreads_equal_hosts_round_robin():
    sched = with_hosts(manager(), *three_equal())
    order = []
    for _ in range(30):
        chosen, _ = sched.choose(sched._weighed(spec()))
        chosen.consume(spec().resources)
        order.append(chosen.host)
    assert Counter(order) == {"a": 10, "b": 10, "c": 10}
    assert all(len(set(order[i : i + 3])) == 3 for i in range(0, 30, 3))  # never twice before the others


async def test_concurrent_decisions_see_each_other_before_their_claims_finish(monkeypatch):
    """30 decisions whose claims all yield: each is consumed in the shared view before it awaits."""
    sched = with_hosts(manager(), *three_equal())
    in_flight = Counter[str]()
    seen_in_flight = []

    async def slow_claim(db, consumer, provider, resources, stats=None, build_attempt=None):
        in_flight[provider] += 1
        seen_in_flight.append(sum(in_flight.values()))
        await asyncio.sleep(0.01)
        in_flight[provider] -= 1
        if stats is not None:
            stats.transactions += 1
        return True

    async def no_refresh(force: bool = False) -> None:
        return None

    monkeypatch.setattr(placement, "claim", slow_claim)
    monkeypatch.setattr(sched, "refresh", no_refresh)
    dests = await asyncio.gather(
        *(
            sched.select_destinations(None, {"instance_uuid": str(i), "project_id": "p", "flavor": FLAVOR})
            for i in range(30)
        )
    )
    assert Counter(d["host"] for d in dests) == {"a": 10, "b": 10, "c": 10}
    assert max(seen_in_flight) > 1  # the claims really did overlap
    assert sched.stats.as_dict()["claim_conflicts"] == 0
    assert all(h.usage.used[MEMORY_MB] == 10 * 2048 for h in sched.hosts.values())


async def test_multi_create_form_returns_one_destination_per_uuid(monkeypatch):
    sched = with_hosts(manager(), *three_equal())
    claimed: list[str] = []

    async def claim(db, consumer, provider, resources, stats=None, build_attempt=None):
        await asyncio.sleep(0)
        claimed.append(consumer)
        return True

    monkeypatch.setattr(placement, "claim", claim)
    monkeypatch.setattr(sched, "refresh", lambda force=False: asyncio.sleep(0))
    uuids = [f"u{i}" for i in range(9)]
    dests = await sched.select_destinations(None, {"project_id": "p", "flavor": FLAVOR}, instance_uuids=uuids)
    assert len(dests) == 9 and sorted(claimed) == sorted(uuids)
    assert Counter(d["host"] for d in dests) == {"a": 3, "b": 3, "c": 3}
    assert all(len(d["alternates"]) == 2 for d in dests)


async def test_a_claim_that_finds_the_host_full_decides_again_on_fresh_data(monkeypatch):
    """Another process filled host a: the claim fails once, a is re-read, and b is chosen."""
    sched = with_hosts(manager(), host("a", ram=65536, vcpus=16), host("b", ram=8192))
    full_a = host("a", ram=65536, used_ram=65536, vcpus=16).usage

    async def claim(db, consumer, provider, resources, stats=None, build_attempt=None):
        return provider != "a"

    async def reload_host(provider: str) -> None:
        sched.hosts[provider].usage = full_a

    monkeypatch.setattr(placement, "claim", claim)
    monkeypatch.setattr(sched, "refresh", lambda force=False: asyncio.sleep(0))
    monkeypatch.setattr(sched, "_reload_host", reload_host)
    dest = await sched.select_destinations(None, {"instance_uuid": "x", "project_id": "p", "flavor": FLAVOR})
    assert dest["host"] == "b"
    assert sched.stats.as_dict()["full_on_claim"] == 1 and sched.stats.placements == 1
    assert not sched.reservations.pending


def test_a_refresh_keeps_choices_whose_claims_are_in_flight():
    res = Reservations()
    need = {MEMORY_MB: 1024}
    res.reserve("i1", "a", need)
    epoch = res.snapshot()  # a refresh starts reading...
    res.reserve("i2", "a", need)
    res.commit("i1")  # ...i1 commits while it reads: the rows may or may not show it
    fresh = {"a": host("a")}
    res.overlay_all(fresh, epoch)
    assert fresh["a"].usage.used[MEMORY_MB] == 2048  # never forgotten (at worst counted twice until the next)
    later = res.snapshot()  # a snapshot started after i1's commit surely shows it
    fresh = {"a": host("a", used_ram=1024)}
    res.overlay_all(fresh, later)
    assert fresh["a"].usage.used[MEMORY_MB] == 2048  # i1 from the rows, i2 still in flight
    assert "i1" not in res.committed
    res.cancel("i2")
    assert not res.pending
