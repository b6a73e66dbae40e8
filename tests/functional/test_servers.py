"""Servers through the HTTP API, the whole control plane in-process (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa

from novalite.db import schema as t
from tests.functional.helpers import create_server, make_image, unlimited_quota, wait_gone, wait_status

SERVER_KEYS_2_100 = {
    "id",
    "name",
    "status",
    "tenant_id",
    "user_id",
    "metadata",
    "hostId",
    "image",
    "flavor",
    "created",
    "updated",
    "addresses",
    "accessIPv4",
    "accessIPv6",
    "links",
    "OS-DCF:diskConfig",
    "progress",
    "OS-EXT-AZ:availability_zone",
    "config_drive",
    "key_name",
    "OS-SRV-USG:launched_at",
    "OS-SRV-USG:terminated_at",
    "security_groups",
    "OS-EXT-SRV-ATTR:host",
    "OS-EXT-SRV-ATTR:instance_name",
    "OS-EXT-SRV-ATTR:hypervisor_hostname",
    "OS-EXT-SRV-ATTR:reservation_id",
    "OS-EXT-SRV-ATTR:launch_index",
    "OS-EXT-SRV-ATTR:hostname",
    "OS-EXT-SRV-ATTR:kernel_id",
    "OS-EXT-SRV-ATTR:ramdisk_id",
    "OS-EXT-SRV-ATTR:root_device_name",
    "OS-EXT-SRV-ATTR:user_data",
    "OS-EXT-STS:task_state",
    "OS-EXT-STS:vm_state",
    "OS-EXT-STS:power_state",
    "os-extended-volumes:volumes_attached",
    "locked",
    "host_status",
    "description",
    "tags",
    "trusted_image_certificates",
    "server_groups",
    "locked_reason",
    "pinned_availability_zone",
    "scheduler_hints",
}


async def test_create_becomes_active_with_full_view(cloud):
    image = await make_image(cloud)
    r = await create_server(cloud, image, name="vm1", metadata={"role": "web"})
    assert r.status == 202, r
    assert r.headers["Location"].endswith(f"/servers/{r.body['server']['id']}")
    assert set(r.body["server"]) == {"id", "links", "OS-DCF:diskConfig", "security_groups", "adminPass"}
    server = await wait_status(cloud, r.body["server"]["id"], "ACTIVE")
    assert set(server) == SERVER_KEYS_2_100 - {"security_groups"}  # no ports, no groups (Nova, issue 12)
    assert server["OS-EXT-STS:power_state"] == 1
    assert server["metadata"] == {"role": "web"}
    assert server["flavor"]["original_name"] == "m1.tiny" and server["flavor"]["ram"] == 512
    assert server["OS-EXT-SRV-ATTR:host"] in ("hv-1", "hv-2")
    assert server["OS-EXT-SRV-ATTR:instance_name"].startswith("instance-")
    assert server["OS-SRV-USG:launched_at"]


async def test_older_microversion_shapes(cloud):
    image = await make_image(cloud)
    r = await create_server(cloud, image, mv="2.1", networks=None)
    assert r.status == 400  # networks: null is not a valid value
    body = {"server": {"name": "old", "imageRef": image, "flavorRef": "1"}}
    r = await cloud.post("/compute/v2.1/servers", json=body)  # 2.1: networks optional
    assert r.status == 202, r
    server = await wait_status(cloud, r.body["server"]["id"], "ACTIVE")
    r = await cloud.get(f"/compute/v2.1/servers/{server['id']}")
    old = r.body["server"]
    assert r.headers["OpenStack-API-Version"] == "compute 2.1"
    assert set(old["flavor"]) == {"id", "links"} and old["flavor"]["id"] == "1"
    for newer in ("locked", "description", "tags", "host_status", "OS-EXT-SRV-ATTR:hostname"):
        assert newer not in old


async def test_networks_required_from_2_37(cloud):
    image = await make_image(cloud)
    body = {"server": {"name": "x", "imageRef": image, "flavorRef": "1"}}
    r = await cloud.post("/compute/v2.1/servers", json=body, microversion="2.37")
    assert r.status == 400 and "networks" in r.body["badRequest"]["message"]


async def test_auto_network_gets_an_address(cloud):
    image = await make_image(cloud)
    r = await create_server(cloud, image, networks="auto")
    server = await wait_status(cloud, r.body["server"]["id"], "ACTIVE")
    ((net, addrs),) = server["addresses"].items()
    assert net == "private"  # the built-in network (issue 12; was "novalite")
    assert addrs[0]["addr"].startswith("10.199.0.") and addrs[0]["OS-EXT-IPS-MAC:mac_addr"].startswith("fa:16:3e")


async def test_power_actions_follow_nova_state_rules(cloud):
    image = await make_image(cloud)
    sid = (await create_server(cloud, image)).body["server"]["id"]
    await wait_status(cloud, sid, "ACTIVE")
    act = f"/compute/v2.1/servers/{sid}/action"

    assert (await cloud.post(act, json={"os-stop": None})).status == 202
    s = await wait_status(cloud, sid, "SHUTOFF")
    assert s["OS-EXT-STS:power_state"] == 4
    r = await cloud.post(act, json={"os-stop": None})
    assert r.status == 409
    assert r.body["conflictingRequest"]["message"] == f"Cannot 'stop' instance {sid} while it is in vm_state stopped"
    assert (await cloud.post(act, json={"pause": None})).status == 409
    assert (await cloud.post(act, json={"os-start": None})).status == 202
    await wait_status(cloud, sid, "ACTIVE")
    assert (await cloud.post(act, json={"reboot": {"type": "HARD"}})).status == 202
    await wait_status(cloud, sid, "ACTIVE")
    assert (await cloud.post(act, json={"reboot": {"type": "bogus"}})).status == 400
    assert (await cloud.post(act, json={"pause": None})).status == 202
    s = await wait_status(cloud, sid, "PAUSED")
    assert s["OS-EXT-STS:power_state"] == 3
    assert (await cloud.post(act, json={"suspend": None})).status == 409
    assert (await cloud.post(act, json={"unpause": None})).status == 202
    await wait_status(cloud, sid, "ACTIVE")
    assert (await cloud.post(act, json={"suspend": None})).status == 202
    await wait_status(cloud, sid, "SUSPENDED")
    assert (await cloud.post(act, json={"resume": None})).status == 202
    await wait_status(cloud, sid, "ACTIVE")
    r = await cloud.post(act, json={"os-getConsoleOutput": {"length": 50}})
    assert r.status == 200 and "booting" in r.body["output"]
    r = await cloud.post(act, json={"os-getConsoleOutput": {"length": 1}})
    assert r.body["output"].count("\n") == 1
    r = await cloud.post(act, json={"explode": None})
    assert r.status == 400

    r = await cloud.get(f"/compute/v2.1/servers/{sid}/os-instance-actions", microversion="2.100")
    if r.status == 200:  # the instance-actions API is its own module
        names = [a["action"] for a in r.body["instanceActions"]]
        assert {"create", "stop", "start", "reboot", "pause", "unpause", "suspend", "resume"} <= set(names)


async def test_delete_removes_server_and_frees_resources(cloud):
    image = await make_image(cloud)
    sid = (await create_server(cloud, image)).body["server"]["id"]
    await wait_status(cloud, sid, "ACTIVE")
    assert (await cloud.delete(f"/compute/v2.1/servers/{sid}")).status == 204
    await wait_gone(cloud, sid)
    async with cloud.rt.db.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(t.allocations)) == 0
    r = await cloud.get("/compute/v2.1/servers/detail")
    assert r.body["servers"] == []
    r = await cloud.get("/compute/v2.1/servers/detail?changes-since=2000-01-01T00:00:00Z", microversion="2.100")
    assert [s["status"] for s in r.body["servers"]] == ["DELETED"]


async def test_no_valid_host_goes_to_error_with_fault(cloud):
    image = await make_image(cloud)
    await unlimited_quota(cloud)
    # m1.xlarge wants 16 GB of RAM; the fake hosts have 32 GB each with ratio 1.0: the fifth cannot fit.
    ids = []
    for i in range(5):
        r = await create_server(cloud, image, name=f"big{i}", flavor="5")
        assert r.status == 202, r
        ids.append(r.body["server"]["id"])
    finals = [await wait_status(cloud, sid, {"ACTIVE", "ERROR"}) for sid in ids]
    errors = [s for s in finals if s["status"] == "ERROR"]
    assert len(errors) == 1
    assert errors[0]["fault"]["message"] == "No valid host was found. There are not enough hosts available."
    assert errors[0]["fault"]["code"] == 500


async def test_list_filters_and_paging(cloud):
    image = await make_image(cloud)
    ids = [(await create_server(cloud, image, name=f"page-{i}")).body["server"]["id"] for i in range(5)]
    for sid in ids:
        await wait_status(cloud, sid, "ACTIVE")
    r = await cloud.get("/compute/v2.1/servers?limit=2")
    assert len(r.body["servers"]) == 2 and "servers_links" in r.body
    seen = [s["id"] for s in r.body["servers"]]
    r = await cloud.get(f"/compute/v2.1/servers?limit=2&marker={seen[-1]}")
    seen += [s["id"] for s in r.body["servers"]]
    r = await cloud.get(f"/compute/v2.1/servers?limit=2&marker={seen[-1]}")
    seen += [s["id"] for s in r.body["servers"]]
    assert sorted(seen) == sorted(ids)
    assert set(r.body["servers"][0]) == {"id", "name", "links"}
    r = await cloud.get("/compute/v2.1/servers/detail?name=page-3")
    assert [s["name"] for s in r.body["servers"]] == ["page-3"]
    r = await cloud.get("/compute/v2.1/servers/detail?status=SHUTOFF")
    assert r.body["servers"] == []
    r = await cloud.get("/compute/v2.1/servers?marker=nope")
    assert r.status == 400


async def test_bad_input_is_rejected_and_changes_nothing(cloud):
    image = await make_image(cloud, min_disk=5)
    small = await make_image(cloud)
    cases = [
        ({"server": {"name": "", "imageRef": small, "flavorRef": "1", "networks": "none"}}, "name"),
        ({"server": {"name": "x" * 256, "imageRef": small, "flavorRef": "1", "networks": "none"}}, "name"),
        ({"server": {"name": "x", "imageRef": small, "flavorRef": "1", "networks": "none", "bogus": 1}}, "bogus"),
        ({"server": {"name": "x", "imageRef": small, "flavorRef": "999", "networks": "none"}}, "Flavor 999"),
        (
            {"server": {"name": "x", "imageRef": small, "flavorRef": "1", "networks": "none", "key_name": "nokey"}},
            "key_name",
        ),
        (
            {
                "server": {
                    "name": "x",
                    "imageRef": "3bd0c7c6-9f5e-4b5f-8f64-0f3c8e6a0d51",
                    "flavorRef": "1",
                    "networks": "none",
                }
            },
            "could not be found",
        ),
        ({"server": {"name": "x", "imageRef": image, "flavorRef": "1", "networks": "none"}}, "minimum size"),
        (
            {"server": {"name": "x", "imageRef": small, "flavorRef": "1", "networks": "none", "min_count": "a"}},
            "min_count",
        ),
        (
            {"server": {"name": "x", "imageRef": small, "flavorRef": "1", "networks": "none", "user_data": "%%%"}},
            "base 64",
        ),
    ]
    for body, needle in cases:
        r = await cloud.post("/compute/v2.1/servers", json=body, microversion="2.100")
        assert r.status == 400, (body, r)
        assert needle in r.body["badRequest"]["message"], (needle, r)
    r = await cloud.request(
        "POST",
        "/compute/v2.1/servers",
        data=b"{not json",
        microversion="2.100",
        headers={"Content-Type": "application/json"},
    )
    assert r.status == 400 and "badRequest" in r.body
    async with cloud.rt.db.connect() as conn:
        assert await conn.scalar(sa.select(sa.func.count()).select_from(t.instances)) == 0


async def test_quota_exceeded_is_forbidden(cloud):
    image = await make_image(cloud)
    r = await create_server(cloud, image, min_count=11, max_count=11)
    assert r.status == 403
    assert "Quota exceeded for instances" in r.body["forbidden"]["message"]
    r = await create_server(cloud, image, min_count=2, max_count=20)
    assert r.status == 202  # max_count is trimmed to what the quota allows
    r = await cloud.get("/compute/v2.1/servers")
    assert len(r.body["servers"]) == 10


async def test_unauthenticated_and_other_projects(cloud):
    r = await cloud.get("/compute/v2.1/servers", token=None)
    assert r.status == 401
    r = await cloud.get("/compute/v2.1/servers", token="garbage")
    assert r.status == 401
    r = await cloud.get("/compute/v2.1/servers/9b3c9c5c-3d0c-4f4e-9a0b-2b0c5f1e8c11")
    assert r.status == 404 and r.body["itemNotFound"]["message"].endswith("could not be found.")


async def test_microversion_negotiation_headers(cloud):
    r = await cloud.get("/compute/v2.1/flavors", microversion="latest")
    assert r.headers["OpenStack-API-Version"] == "compute 2.100"
    assert r.headers["X-OpenStack-Nova-API-Version"] == "2.100"
    assert "OpenStack-API-Version" in r.headers["Vary"]
    r = await cloud.get("/compute/v2.1/flavors", microversion="2.101")
    assert r.status == 406
    r = await cloud.get("/compute/v2.1/flavors", microversion="2.x")
    assert r.status == 400
    r = await cloud.get("/compute/v2.1/flavors", headers={"X-OpenStack-Nova-API-Version": "2.53"})
    assert r.headers["X-OpenStack-Nova-API-Version"] == "2.53"
    assert r.headers["x-openstack-request-id"].startswith("req-")
    r = await cloud.get("/compute/v2.1/", token=None)
    assert r.body["version"]["version"] == "2.100" and r.body["version"]["min_version"] == "2.1"


async def test_concurrent_creates_never_overcommit(cloud):
    """A boot storm against two small hosts: exactly what fits goes ACTIVE, the rest ERROR."""
    image = await make_image(cloud)
    # m1.large: 8 GB; two hosts of 32 GB → exactly 8 fit.
    await unlimited_quota(cloud)
    results = await asyncio.gather(*(create_server(cloud, image, name=f"r{i}", flavor="4") for i in range(20)))
    more: list = []
    ids = [r.body["server"]["id"] for r in [*results, *more] if r.status == 202]
    finals = await asyncio.gather(*(wait_status(cloud, sid, {"ACTIVE", "ERROR"}, timeout=30) for sid in ids))
    active = [s for s in finals if s["status"] == "ACTIVE"]
    assert len(active) == min(8, len(ids))
    async with cloud.rt.db.connect() as conn:
        rows = await conn.execute(
            sa.select(t.allocations.c.provider_uuid, sa.func.sum(t.allocations.c.used))
            .where(t.allocations.c.resource_class == "MEMORY_MB")
            .group_by(t.allocations.c.provider_uuid)
        )
        assert all(total <= 32768 for _, total in rows)


async def test_lock_and_unlock_show_in_the_view(cloud):
    image = await make_image(cloud)
    sid = (await create_server(cloud, image)).body["server"]["id"]
    await wait_status(cloud, sid, "ACTIVE")
    act = f"/compute/v2.1/servers/{sid}/action"
    r = await cloud.post(act, json={"lock": {"locked_reason": "maintenance"}}, microversion="2.72")
    assert r.status == 400 and "locked_reason" in r.body["badRequest"]["message"]
    assert (await cloud.post(act, json={"lock": {"locked_reason": "maintenance"}}, microversion="2.73")).status == 202
    server = (await cloud.get(f"/compute/v2.1/servers/{sid}", microversion="2.73")).body["server"]
    assert server["locked"] is True and server["locked_reason"] == "maintenance"
    assert (await cloud.post(act, json={"unlock": None})).status == 202
    server = (await cloud.get(f"/compute/v2.1/servers/{sid}", microversion="2.73")).body["server"]
    assert server["locked"] is False and server["locked_reason"] is None


async def test_agent_restart_clears_lost_tasks_and_syncs_states(cloud):
    """A stop whose message died with the agent must not leave the server stuck in powering-off."""
    from novalite_drivers.base import Instance

    from novalite.context import RequestContext

    image = await make_image(cloud)
    a = (await create_server(cloud, image, name="a")).body["server"]["id"]
    b = (await create_server(cloud, image, name="b")).body["server"]["id"]
    server_a = await wait_status(cloud, a, "ACTIVE")
    await wait_status(cloud, b, "ACTIVE")
    async with cloud.rt.db.begin() as conn:
        await conn.execute(t.instances.update().where(t.instances.c.uuid == a).values(task_state="powering-off"))
    agents = {agent.host: agent for agent in cloud.rt.services["ComputeAgent"]}
    # Meanwhile guest b was paused on the hypervisor behind novalite's back.
    host_b = (await cloud.get(f"/compute/v2.1/servers/{b}", microversion="2.100")).body["server"]
    agent_b = agents[host_b["OS-EXT-SRV-ATTR:host"]]
    await agent_b.driver.pause(Instance(uuid=b, name=""))
    for agent in agents.values():
        await agent.reconcile(RequestContext.admin())
    r = await cloud.get(f"/compute/v2.1/servers/{a}", microversion="2.100")
    assert r.body["server"]["OS-EXT-STS:task_state"] is None and r.body["server"]["status"] == "ACTIVE"
    assert (await cloud.post(f"/compute/v2.1/servers/{a}/action", json={"os-stop": None})).status == 202
    await wait_status(cloud, a, "SHUTOFF")
    r = await cloud.get(f"/compute/v2.1/servers/{b}", microversion="2.100")
    assert r.body["server"]["status"] == "PAUSED" and r.body["server"]["OS-EXT-STS:power_state"] == 3
    assert server_a["OS-EXT-SRV-ATTR:host"] in agents


async def test_listing_shows_every_change(cloud):
    """Detail views are cached per instance version: each change must show in the next listing."""
    image = await make_image(cloud)
    sid = (await create_server(cloud, image, name="watched")).body["server"]["id"]
    await wait_status(cloud, sid, "ACTIVE")

    async def listed() -> dict:
        r = await cloud.get("/compute/v2.1/servers/detail", microversion="2.100")
        return next(s for s in r.body["servers"] if s["id"] == sid)

    assert (await listed())["metadata"] == {}
    assert (await cloud.put(f"/compute/v2.1/servers/{sid}/metadata/k", json={"meta": {"k": "v"}})).status == 200
    assert (await listed())["metadata"] == {"k": "v"}
    assert (await cloud.put(f"/compute/v2.1/servers/{sid}", json={"server": {"name": "renamed"}})).status == 200
    assert (await listed())["name"] == "renamed"
    await cloud.post(f"/compute/v2.1/servers/{sid}/action", json={"os-stop": None})
    await wait_status(cloud, sid, "SHUTOFF")
    after = await listed()
    assert after["status"] == "SHUTOFF" and after["OS-EXT-STS:power_state"] == 4
    assert after["host_status"] == "UP"
    r = await cloud.get("/compute/v2.1/servers/detail", microversion="2.1")
    old = next(s for s in r.body["servers"] if s["id"] == sid)
    assert "locked" not in old and set(old["flavor"]) == {"id", "links"}
