"""Compute resources over real HTTP (SQLite and PostgreSQL): flavors, key pairs, hypervisors,
services, availability zones, limits, quotas, tenant usage and instance actions.

Each resource's body is checked with exact key sets at old and new microversions, as
Nova documents them; plus filters, paging, policy and error answers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from typing import Any

import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from novalite.api.errors import from_domain
from novalite.db import schema as t
from novalite.store.quotas import QuotaExceeded, check_quota, limits_for, usage_for
from novalite.timeutil import utcnow
from tests.functional.helpers import Who, create_server, make_image, make_person, wait_gone, wait_status

C = "/compute/v2.1"


async def person(cloud: Any, user: str, project: str, role: str) -> Who:
    return await make_person(cloud, user, project, role)


async def admin(cloud: Any) -> Who:
    async with cloud.rt.db.connect() as conn:
        pid = await conn.scalar(sa.select(t.projects.c.id).where(t.projects.c.name == "admin"))
        uid = await conn.scalar(sa.select(t.users.c.id).where(t.users.c.name == "admin"))
    return Who(await cloud.admin_token(), pid, uid, ["admin", "manager", "member", "reader"])


async def wait_computes(cloud: Any, count: int = 2, within: float = 10.0) -> None:
    """Wait until the fake agents have registered their services and compute nodes."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        async with cloud.rt.db.connect() as conn:
            nodes = await conn.scalar(sa.select(sa.func.count()).select_from(t.compute_nodes))
            services = await conn.scalar(
                sa.select(sa.func.count()).where(t.services.c.binary.in_(["nova-compute", "nova-conductor"]))
            )
        if nodes >= count and services >= count + 1:
            return
        assert asyncio.get_running_loop().time() < deadline, "compute hosts did not register"
        await asyncio.sleep(0.05)


def ssh_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " me@host"


def md5_fingerprint(public_key: str) -> str:
    digest = hashlib.md5(base64.b64decode(public_key.split()[1])).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, 32, 2))


def message(resp: Any) -> str:
    (fault,) = resp.body.values()
    return fault["message"]


# -- flavors ----------------------------------------------------------------------------------------

FLAVOR_2_1 = {
    "id", "name", "ram", "disk", "swap", "OS-FLV-EXT-DATA:ephemeral", "OS-FLV-DISABLED:disabled", "vcpus",
    "os-flavor-access:is_public", "rxtx_factor", "links",
}  # fmt: skip
FLAVOR_2_100 = FLAVOR_2_1 | {"description", "extra_specs"}


async def test_flavor_shapes_per_microversion(cloud):
    r = await cloud.get(f"{C}/flavors")
    assert r.status == 200 and set(r.body) == {"flavors"}
    assert [f["id"] for f in r.body["flavors"]] == ["1", "2", "3", "4", "5"]
    assert all(set(f) == {"id", "name", "links"} for f in r.body["flavors"])
    r = await cloud.get(f"{C}/flavors", microversion="2.100")
    assert all(set(f) == {"id", "name", "links", "description"} for f in r.body["flavors"])

    r = await cloud.get(f"{C}/flavors/1")
    flavor = r.body["flavor"]
    assert set(flavor) == FLAVOR_2_1
    assert flavor["swap"] == "" and flavor["ram"] == 512 and flavor["rxtx_factor"] == 1.0
    assert flavor["links"][0] == {"rel": "self", "href": f"{cloud.base}/compute/v2.1/flavors/1"}
    assert set((await cloud.get(f"{C}/flavors/1", microversion="2.55")).body["flavor"]) == FLAVOR_2_1 | {"description"}
    r = await cloud.get(f"{C}/flavors/1", microversion="2.74")
    assert set(r.body["flavor"]) == FLAVOR_2_100 and r.body["flavor"]["swap"] == ""
    r = await cloud.get(f"{C}/flavors/1", microversion="2.100")
    assert set(r.body["flavor"]) == FLAVOR_2_100 and r.body["flavor"]["swap"] == 0
    assert r.body["flavor"]["extra_specs"] == {}

    r = await cloud.get(f"{C}/flavors/detail", microversion="2.100")
    assert all(set(f) == FLAVOR_2_100 for f in r.body["flavors"])
    r = await cloud.get(f"{C}/flavors/nope")
    assert r.status == 404 and r.body == {"itemNotFound": {"code": 404, "message": "Flavor nope could not be found."}}


async def test_flavor_filters_sort_and_paging(cloud):
    r = await cloud.get(f"{C}/flavors/detail?minRam=4096&minDisk=80")
    assert [f["id"] for f in r.body["flavors"]] == ["4", "5"]
    r = await cloud.get(f"{C}/flavors?sort_key=memory_mb&sort_dir=desc")
    assert [f["id"] for f in r.body["flavors"]] == ["5", "4", "3", "2", "1"]
    r = await cloud.get(f"{C}/flavors?limit=2")
    assert [f["id"] for f in r.body["flavors"]] == ["1", "2"]
    (link,) = r.body["flavors_links"]
    assert link["rel"] == "next" and "marker=2" in link["href"] and "limit=2" in link["href"]
    r = await cloud.get(f"{C}/flavors?limit=2&marker=2")
    assert [f["id"] for f in r.body["flavors"]] == ["3", "4"]
    r = await cloud.get(f"{C}/flavors?limit=2&marker=4")
    assert [f["id"] for f in r.body["flavors"]] == ["5"] and "flavors_links" not in r.body
    r = await cloud.get(f"{C}/flavors?marker=zzz")
    assert r.status == 400 and message(r) == "marker [zzz] not found"
    r = await cloud.get(f"{C}/flavors?minRam=abc")
    assert r.status == 400 and message(r) == "Invalid minRam filter [abc]"
    r = await cloud.get(f"{C}/flavors?is_public=maybe")
    assert r.status == 400 and "is_public" in message(r)
    r = await cloud.get(f"{C}/flavors?sort_key=bogus")
    assert r.status == 400 and "sort_key" in message(r)
    assert (await cloud.get(f"{C}/flavors?foo=1", microversion="2.74")).status == 200
    r = await cloud.get(f"{C}/flavors?foo=1", microversion="2.75")
    assert r.status == 400 and "foo" in message(r)


async def test_flavor_create_update_delete(cloud):
    alice = await person(cloud, "alice", "alpha", "member")
    body = {"flavor": {"name": "f.auto", "ram": 256, "vcpus": 1, "disk": 1}}
    r = await cloud.post(f"{C}/flavors", body, token=alice.token)
    assert r.status == 403 and r.body["forbidden"]["message"].startswith("Policy doesn't allow")

    r = await cloud.post(f"{C}/flavors", body)
    assert r.status == 200, r
    flavor = r.body["flavor"]
    assert set(flavor) == FLAVOR_2_1 and len(flavor["id"]) == 36 and flavor["swap"] == ""
    body = {"flavor": {"name": "f.given", "id": 42, "ram": "512", "vcpus": 2, "disk": 0, "swap": 128,
                       "OS-FLV-EXT-DATA:ephemeral": 5, "rxtx_factor": 2.0, "description": "with words"}}  # fmt: skip
    assert (await cloud.post(f"{C}/flavors", body, microversion="2.54")).status == 400  # description needs 2.55
    r = await cloud.post(f"{C}/flavors", body, microversion="2.100")
    assert r.status == 200, r
    flavor = r.body["flavor"]
    assert set(flavor) == FLAVOR_2_100
    assert flavor["id"] == "42" and flavor["ram"] == 512 and flavor["swap"] == 128
    assert flavor["OS-FLV-EXT-DATA:ephemeral"] == 5 and flavor["description"] == "with words"
    assert flavor["extra_specs"] == {} and flavor["rxtx_factor"] == 2.0

    r = await cloud.post(f"{C}/flavors", {"flavor": {**body["flavor"], "id": "43"}}, microversion="2.100")
    assert r.status == 409 and message(r) == "Flavor with name f.given already exists."
    r = await cloud.post(f"{C}/flavors", {"flavor": {**body["flavor"], "name": "other"}}, microversion="2.100")
    assert r.status == 409 and message(r) == "Flavor with ID 42 already exists."
    for bad, field in (
        ({"ram": 0}, "ram"),
        ({"vcpus": "x"}, "vcpus"),
        ({"disk": -1}, "disk"),
        ({"name": " x"}, "name"),
    ):
        r = await cloud.post(f"{C}/flavors", {"flavor": {"name": "b", "ram": 1, "vcpus": 1, "disk": 1, **bad}})
        assert r.status == 400 and field in message(r), (bad, r)
    r = await cloud.post(f"{C}/flavors", {"flavor": {"name": "b", "ram": 1, "vcpus": 1}})
    assert r.status == 400 and "'disk' is a required property" in message(r)

    r = await cloud.put(f"{C}/flavors/42", {"flavor": {"description": "new"}}, microversion="2.55")
    assert r.status == 200 and r.body["flavor"]["description"] == "new"
    assert set(r.body["flavor"]) == FLAVOR_2_1 | {"description"}
    assert (await cloud.put(f"{C}/flavors/42", {"flavor": {"description": "x"}}, microversion="2.54")).status == 404
    r = await cloud.put(f"{C}/flavors/42", {"flavor": {"name": "x"}}, microversion="2.55")
    assert r.status == 400
    r = await cloud.put(f"{C}/flavors/42", {"flavor": {"description": "x"}}, microversion="2.55", token=alice.token)
    assert r.status == 403

    assert (await cloud.delete(f"{C}/flavors/42", token=alice.token)).status == 403
    assert (await cloud.delete(f"{C}/flavors/42")).status == 202
    assert (await cloud.get(f"{C}/flavors/42")).status == 404
    assert (await cloud.delete(f"{C}/flavors/42")).status == 404


async def test_private_flavor_access(cloud):
    alice = await person(cloud, "alice", "alpha", "member")
    bob = await person(cloud, "bob", "beta", "member")
    r = await cloud.post(
        f"{C}/flavors",
        {
            "flavor": {
                "name": "secret",
                "id": "p1",
                "ram": 64,
                "vcpus": 1,
                "disk": 0,
                "os-flavor-access:is_public": False,
            }
        },
    )
    assert r.status == 200 and r.body["flavor"]["os-flavor-access:is_public"] is False
    ids = [f["id"] for f in (await cloud.get(f"{C}/flavors", token=alice.token)).body["flavors"]]
    assert "p1" not in ids
    assert (await cloud.get(f"{C}/flavors/p1", token=alice.token)).status == 404
    admin_ids = [f["id"] for f in (await cloud.get(f"{C}/flavors?is_public=none")).body["flavors"]]
    assert "p1" in admin_ids
    assert [f["id"] for f in (await cloud.get(f"{C}/flavors?is_public=false")).body["flavors"]] == ["p1"]
    assert "p1" not in [f["id"] for f in (await cloud.get(f"{C}/flavors")).body["flavors"]]

    r = await cloud.get(f"{C}/flavors/p1/os-flavor-access")
    assert r.status == 200 and r.body == {"flavor_access": []}
    assert (await cloud.get(f"{C}/flavors/p1/os-flavor-access", token=alice.token)).status == 403
    r = await cloud.get(f"{C}/flavors/1/os-flavor-access")
    assert r.status == 404 and message(r) == "Access list not available for public flavors."

    action = f"{C}/flavors/p1/action"
    r = await cloud.post(action, {"addTenantAccess": {"tenant": alice.project_id}})
    assert r.status == 200 and r.body == {"flavor_access": [{"flavor_id": "p1", "tenant_id": alice.project_id}]}
    r = await cloud.post(action, {"addTenantAccess": {"tenant": alice.project_id}})
    assert r.status == 409
    r = await cloud.post(action, {"addTenantAccess": {"tenant": "no-such-project"}})
    assert r.status == 400 and message(r) == "Project ID no-such-project is not a valid project."
    r = await cloud.post(f"{C}/flavors/1/action", {"addTenantAccess": {"tenant": alice.project_id}}, microversion="2.7")
    assert r.status == 409 and message(r) == "Can not add access to a public flavor."
    assert (await cloud.post(action, {"addTenantAccess": {"tenant": bob.project_id}}, token=alice.token)).status == 403
    assert (await cloud.post(action, {"addTenantAccess": {}})).status == 400
    assert (await cloud.post(action, {"frobnicate": {}})).status == 400

    assert "p1" in [f["id"] for f in (await cloud.get(f"{C}/flavors", token=alice.token)).body["flavors"]]
    assert (await cloud.get(f"{C}/flavors/p1", token=alice.token)).status == 200
    assert (await cloud.get(f"{C}/flavors/p1", token=bob.token)).status == 404

    r = await cloud.post(action, {"removeTenantAccess": {"tenant": alice.project_id}})
    assert r.status == 200 and r.body == {"flavor_access": []}
    r = await cloud.post(action, {"removeTenantAccess": {"tenant": alice.project_id}})
    assert r.status == 404
    assert (await cloud.get(f"{C}/flavors/p1", token=alice.token)).status == 404


async def test_flavor_extra_specs(cloud):
    alice = await person(cloud, "alice", "alpha", "reader")
    specs = f"{C}/flavors/1/os-extra_specs"
    r = await cloud.post(specs, {"extra_specs": {"hw:cpu_policy": "dedicated", "quota:cpu_shares": 1024}})
    assert r.status == 200 and r.body == {"extra_specs": {"hw:cpu_policy": "dedicated", "quota:cpu_shares": 1024}}
    r = await cloud.get(specs, token=alice.token)
    assert r.status == 200 and r.body == {"extra_specs": {"hw:cpu_policy": "dedicated", "quota:cpu_shares": "1024"}}
    r = await cloud.get(f"{specs}/hw:cpu_policy", token=alice.token)
    assert r.status == 200 and r.body == {"hw:cpu_policy": "dedicated"}
    r = await cloud.get(f"{specs}/nope")
    assert r.status == 404 and message(r) == "Flavor 1 has no extra specs with key nope."
    r = await cloud.put(f"{specs}/hw:cpu_policy", {"hw:cpu_policy": "shared"})
    assert r.status == 200 and r.body == {"hw:cpu_policy": "shared"}
    r = await cloud.put(f"{specs}/hw:cpu_policy", {"other": "x"})
    assert r.status == 400 and message(r) == "Request body and URI mismatch"
    assert (await cloud.put(f"{specs}/a", {"a": "1", "b": "2"})).status == 400
    assert (await cloud.post(specs, {"extra_specs": {"bad/key": "x"}})).status == 400
    assert (await cloud.post(specs, {"specs": {}})).status == 400
    assert (await cloud.post(specs, {"extra_specs": {"a": "b"}}, token=alice.token)).status == 403
    assert (await cloud.delete(f"{specs}/hw:cpu_policy", token=alice.token)).status == 403
    r = await cloud.get(f"{C}/flavors/1", microversion="2.61")
    assert r.body["flavor"]["extra_specs"] == {"hw:cpu_policy": "shared", "quota:cpu_shares": "1024"}
    assert (await cloud.delete(f"{specs}/hw:cpu_policy")).status == 200
    assert (await cloud.delete(f"{specs}/hw:cpu_policy")).status == 404
    assert (await cloud.get(f"{C}/flavors/99/os-extra_specs")).status == 404


# -- key pairs --------------------------------------------------------------------------------------

KP_SHOW_2_1 = {
    "name",
    "public_key",
    "fingerprint",
    "user_id",
    "created_at",
    "deleted",
    "deleted_at",
    "id",
    "updated_at",
}


async def test_keypair_import_shapes_and_errors(cloud):
    me = await admin(cloud)
    pub = ssh_key()
    r = await cloud.post(f"{C}/os-keypairs", {"keypair": {"name": "k1", "public_key": pub}})
    assert r.status == 200, r
    assert r.body == {
        "keypair": {"name": "k1", "public_key": pub, "fingerprint": md5_fingerprint(pub), "user_id": me.user_id}
    }
    r = await cloud.post(f"{C}/os-keypairs", {"keypair": {"name": "k2", "public_key": pub}}, microversion="2.100")
    assert r.status == 201 and set(r.body["keypair"]) == {"name", "public_key", "fingerprint", "user_id", "type"}
    assert r.body["keypair"]["type"] == "ssh"

    r = await cloud.post(f"{C}/os-keypairs", {"keypair": {"name": "k1", "public_key": pub}}, microversion="2.100")
    assert r.status == 409 and message(r) == "Key pair 'k1' already exists."
    r = await cloud.post(f"{C}/os-keypairs", {"keypair": {"name": "k3", "public_key": "ssh-rsa garbage"}})
    assert r.status == 400 and message(r) == "Keypair data is invalid: failed to generate fingerprint"
    r = await cloud.post(f"{C}/os-keypairs", {"keypair": {"name": "bad!name", "public_key": pub}})
    assert r.status == 400 and "name" in message(r)
    r = await cloud.post(f"{C}/os-keypairs", {"keypair": {"name": "a@b.c", "public_key": pub}}, microversion="2.92")
    assert r.status == 201  # 2.92 allows @ and .
    r = await cloud.post(f"{C}/os-keypairs", {"keypair": {"name": "k4", "public_key": pub, "type": "ssh"}})
    assert r.status == 400  # type needs 2.2

    r = await cloud.get(f"{C}/os-keypairs")
    assert [k["keypair"]["name"] for k in r.body["keypairs"]] == ["k1", "k2", "a@b.c"]
    assert all(set(k["keypair"]) == {"name", "public_key", "fingerprint"} for k in r.body["keypairs"])
    r = await cloud.get(f"{C}/os-keypairs", microversion="2.100")
    assert all(set(k["keypair"]) == {"name", "public_key", "fingerprint", "type"} for k in r.body["keypairs"])

    r = await cloud.get(f"{C}/os-keypairs/k1")
    assert r.status == 200 and set(r.body["keypair"]) == KP_SHOW_2_1
    assert r.body["keypair"]["deleted"] is False and r.body["keypair"]["updated_at"] is None
    r = await cloud.get(f"{C}/os-keypairs/k1", microversion="2.100")
    assert set(r.body["keypair"]) == KP_SHOW_2_1 | {"type"}
    r = await cloud.get(f"{C}/os-keypairs/nope")
    assert r.status == 404 and message(r) == f"Keypair nope not found for user {me.user_id}"

    assert (await cloud.delete(f"{C}/os-keypairs/k1")).status == 202
    assert (await cloud.delete(f"{C}/os-keypairs/k2", microversion="2.100")).status == 204
    assert (await cloud.delete(f"{C}/os-keypairs/k2", microversion="2.100")).status == 404


async def test_keypair_generate_paging_users_and_quota(cloud):
    me = await admin(cloud)
    alice = await person(cloud, "alice", "alpha", "member")
    r = await cloud.post(f"{C}/os-keypairs", {"keypair": {"name": "gen"}}, microversion="2.91")
    assert r.status == 201
    kp = r.body["keypair"]
    assert set(kp) == {"name", "public_key", "fingerprint", "user_id", "type", "private_key"}
    assert kp["private_key"].startswith("-----BEGIN RSA PRIVATE KEY-----")
    assert kp["public_key"].startswith("ssh-rsa ") and kp["fingerprint"] == md5_fingerprint(kp["public_key"])
    r = await cloud.post(f"{C}/os-keypairs", {"keypair": {"name": "gen2"}}, microversion="2.92")
    assert r.status == 400 and "public_key" in message(r)

    pub = ssh_key()
    for name in ("p1", "p2", "p3"):
        r = await cloud.post(f"{C}/os-keypairs", {"keypair": {"name": name, "public_key": pub}}, microversion="2.100")
        assert r.status == 201
    r = await cloud.get(f"{C}/os-keypairs?limit=2", microversion="2.35")
    assert [k["keypair"]["name"] for k in r.body["keypairs"]] == ["gen", "p1"]
    assert "marker=p1" in r.body["keypairs_links"][0]["href"]
    r = await cloud.get(f"{C}/os-keypairs?limit=2&marker=p1", microversion="2.35")
    assert [k["keypair"]["name"] for k in r.body["keypairs"]] == ["p2", "p3"]
    r = await cloud.get(f"{C}/os-keypairs?limit=2", microversion="2.34")
    assert len(r.body["keypairs"]) == 4 and "keypairs_links" not in r.body  # no paging before 2.35
    r = await cloud.get(f"{C}/os-keypairs?marker=nope", microversion="2.35")
    assert r.status == 400

    # Admins act for other users from 2.10; users only for themselves.
    body = {"keypair": {"name": "for-alice", "public_key": pub, "user_id": alice.user_id}}
    r = await cloud.post(f"{C}/os-keypairs", body, microversion="2.10")
    assert r.status == 201 and r.body["keypair"]["user_id"] == alice.user_id
    r = await cloud.get(f"{C}/os-keypairs", token=alice.token)
    assert [k["keypair"]["name"] for k in r.body["keypairs"]] == ["for-alice"]
    r = await cloud.get(f"{C}/os-keypairs?user_id={alice.user_id}", microversion="2.10")
    assert [k["keypair"]["name"] for k in r.body["keypairs"]] == ["for-alice"]
    r = await cloud.get(f"{C}/os-keypairs?user_id={me.user_id}", microversion="2.10", token=alice.token)
    assert r.status == 403
    r = await cloud.post(f"{C}/os-keypairs", {"keypair": {**body["keypair"], "user_id": me.user_id}},
                         microversion="2.10", token=alice.token)  # fmt: skip
    assert r.status == 403
    assert (await cloud.get(f"{C}/os-keypairs/gen", token=alice.token)).status == 404

    # key_pairs quota: per user, from the project's limit.
    assert (await cloud.put(f"{C}/os-quota-sets/{alice.project_id}", {"quota_set": {"key_pairs": 1}})).status == 200
    r = await cloud.post(f"{C}/os-keypairs", {"keypair": {"name": "second", "public_key": pub}}, token=alice.token)
    assert r.status == 403 and r.body == {"forbidden": {"code": 403, "message": "Quota exceeded, too many key pairs."}}


# -- hypervisors ------------------------------------------------------------------------------------

HV_BASE = {"id", "hypervisor_hostname", "state", "status"}
HV_DETAIL_2_1 = HV_BASE | {
    "hypervisor_type", "hypervisor_version", "host_ip", "service", "vcpus", "memory_mb", "local_gb", "vcpus_used",
    "memory_mb_used", "local_gb_used", "free_ram_mb", "free_disk_gb", "current_workload", "running_vms",
    "disk_available_least", "cpu_info",
}  # fmt: skip
HV_DETAIL_2_88 = HV_BASE | {"hypervisor_type", "hypervisor_version", "host_ip", "service", "uptime"}


async def test_hypervisor_shapes_and_usage(cloud):
    await wait_computes(cloud)
    alice = await person(cloud, "alice", "alpha", "member")
    assert (await cloud.get(f"{C}/os-hypervisors", token=alice.token)).status == 403
    assert (await cloud.get(f"{C}/os-hypervisors/detail", token=alice.token)).status == 403

    r = await cloud.get(f"{C}/os-hypervisors")
    assert r.status == 200 and set(r.body) == {"hypervisors"}
    hvs = r.body["hypervisors"]
    assert sorted(h["hypervisor_hostname"] for h in hvs) == ["hv-1", "hv-2"]
    assert all(set(h) == HV_BASE and isinstance(h["id"], int) for h in hvs)
    assert {(h["state"], h["status"]) for h in hvs} == {("up", "enabled")}

    r = await cloud.get(f"{C}/os-hypervisors/detail")
    hv = r.body["hypervisors"][0]
    assert set(hv) == HV_DETAIL_2_1 and isinstance(hv["cpu_info"], str)
    assert set(hv["service"]) == {"host", "id", "disabled_reason"} and isinstance(hv["service"]["id"], int)
    assert hv["free_ram_mb"] == hv["memory_mb"] - hv["memory_mb_used"]
    r = await cloud.get(f"{C}/os-hypervisors/detail", microversion="2.28")
    assert isinstance(r.body["hypervisors"][0]["cpu_info"], dict)
    r = await cloud.get(f"{C}/os-hypervisors/detail", microversion="2.100")
    hv = r.body["hypervisors"][0]
    assert set(hv) == HV_DETAIL_2_88 and len(hv["id"]) == 36 and len(hv["service"]["id"]) == 36

    # A server's claim shows in *_used below 2.88; the statistics add up the nodes.
    image = await make_image(cloud)
    server = await wait_status(cloud, (await create_server(cloud, image, flavor="2")).body["server"]["id"], "ACTIVE")
    host = server["OS-EXT-SRV-ATTR:host"]
    by_name = {h["hypervisor_hostname"]: h for h in (await cloud.get(f"{C}/os-hypervisors/detail")).body["hypervisors"]}
    assert by_name[host]["vcpus_used"] == 1 and by_name[host]["running_vms"] == 1
    assert by_name[host]["local_gb_used"] >= 20
    r = await cloud.get(f"{C}/os-hypervisors/statistics")
    stats = r.body["hypervisor_statistics"]
    assert set(stats) == {
        "count", "vcpus", "memory_mb", "local_gb", "vcpus_used", "memory_mb_used", "local_gb_used", "free_ram_mb",
        "free_disk_gb", "current_workload", "running_vms", "disk_available_least",
    }  # fmt: skip
    assert stats["count"] == 2 and stats["running_vms"] == 1 and stats["vcpus_used"] == 1
    assert (await cloud.get(f"{C}/os-hypervisors/statistics", microversion="2.88")).status == 404

    # with_servers (2.53) and the servers/search routes before it.
    r = await cloud.get(f"{C}/os-hypervisors?with_servers=true", microversion="2.75")
    servers = {h["hypervisor_hostname"]: h["servers"] for h in r.body["hypervisors"]}
    assert [s["uuid"] for s in servers[host]] == [server["id"]]
    assert [v for k, v in servers.items() if k != host] == [[]]
    r = await cloud.get(f"{C}/os-hypervisors?with_servers=maybe", microversion="2.75")
    assert r.status == 400
    r = await cloud.get(f"{C}/os-hypervisors/{host}/servers")
    assert [s["uuid"] for s in r.body["hypervisors"][0]["servers"]] == [server["id"]]
    r = await cloud.get(f"{C}/os-hypervisors/hv-/search")
    assert len(r.body["hypervisors"]) == 2
    assert (await cloud.get(f"{C}/os-hypervisors/zzz/search")).status == 404
    r = await cloud.get(f"{C}/os-hypervisors?hypervisor_hostname_pattern=hv-1", microversion="2.53")
    assert [h["hypervisor_hostname"] for h in r.body["hypervisors"]] == ["hv-1"]


async def test_hypervisor_show_paging_and_errors(cloud):
    await wait_computes(cloud)
    listed = (await cloud.get(f"{C}/os-hypervisors", microversion="2.53")).body["hypervisors"]
    first = listed[0]
    r = await cloud.get(f"{C}/os-hypervisors/{first['id']}", microversion="2.53")
    assert r.status == 200 and set(r.body["hypervisor"]) == HV_DETAIL_2_1
    r = await cloud.get(f"{C}/os-hypervisors/{first['id']}", microversion="2.100")
    assert set(r.body["hypervisor"]) == HV_DETAIL_2_88
    assert r.body["hypervisor"]["uptime"].startswith(" ")
    r = await cloud.get(f"{C}/os-hypervisors/not-a-uuid", microversion="2.53")
    assert r.status == 400 and message(r) == "Invalid uuid not-a-uuid"
    r = await cloud.get(f"{C}/os-hypervisors/00000000-0000-0000-0000-000000000000", microversion="2.53")
    assert r.status == 404
    old = (await cloud.get(f"{C}/os-hypervisors")).body["hypervisors"][0]
    r = await cloud.get(f"{C}/os-hypervisors/{old['id']}")
    assert r.status == 200 and r.body["hypervisor"]["id"] == old["id"]
    r = await cloud.get(f"{C}/os-hypervisors/abc")
    assert r.status == 404 and message(r) == "Hypervisor with ID 'abc' could not be found."
    r = await cloud.get(f"{C}/os-hypervisors/{old['id']}/uptime")
    assert set(r.body["hypervisor"]) == HV_BASE | {"uptime"} and "load average" in r.body["hypervisor"]["uptime"]
    assert (await cloud.get(f"{C}/os-hypervisors/{first['id']}/uptime", microversion="2.88")).status == 404

    r = await cloud.get(f"{C}/os-hypervisors?limit=1", microversion="2.53")
    assert [h["id"] for h in r.body["hypervisors"]] == [first["id"]]
    assert f"marker={first['id']}" in r.body["hypervisors_links"][0]["href"]
    r = await cloud.get(f"{C}/os-hypervisors/detail?limit=1&marker={first['id']}", microversion="2.53")
    assert [h["id"] for h in r.body["hypervisors"]] == [listed[1]["id"]]
    r = await cloud.get(f"{C}/os-hypervisors?limit=1", microversion="2.32")
    assert len(r.body["hypervisors"]) == 2 and "hypervisors_links" not in r.body
    r = await cloud.get(f"{C}/os-hypervisors?hypervisor_hostname_pattern=hv&limit=1", microversion="2.53")
    assert r.status == 400


# -- services ---------------------------------------------------------------------------------------

SERVICE_2_1 = {"id", "binary", "host", "zone", "status", "state", "updated_at", "disabled_reason"}


async def test_service_list_shapes_and_filters(cloud):
    await wait_computes(cloud)
    alice = await person(cloud, "alice", "alpha", "member")
    assert (await cloud.get(f"{C}/os-services", token=alice.token)).status == 403
    r = await cloud.get(f"{C}/os-services")
    services = r.body["services"]
    assert all(set(s) == SERVICE_2_1 and isinstance(s["id"], int) for s in services)
    by_binary = {}
    for s in services:
        by_binary.setdefault(s["binary"], []).append(s)
    assert sorted(s["host"] for s in by_binary["nova-compute"]) == ["hv-1", "hv-2"]
    assert {s["zone"] for s in by_binary["nova-compute"]} == {"nova"}
    assert {s["zone"] for s in by_binary["nova-conductor"]} == {"internal"}
    assert all(s["state"] == "up" and s["status"] == "enabled" for s in services)
    r = await cloud.get(f"{C}/os-services", microversion="2.11")
    assert all(set(s) == SERVICE_2_1 | {"forced_down"} for s in r.body["services"])
    r = await cloud.get(f"{C}/os-services?binary=nova-compute&host=hv-2", microversion="2.100")
    (svc,) = r.body["services"]
    assert svc["host"] == "hv-2" and len(svc["id"]) == 36 and svc["forced_down"] is False
    r = await cloud.get(f"{C}/os-services?bogus=1", microversion="2.100")
    assert r.status == 400


async def test_service_update_v253_and_legacy(cloud):
    await wait_computes(cloud)
    computes = (await cloud.get(f"{C}/os-services?binary=nova-compute", microversion="2.53")).body["services"]
    svc = computes[0]
    url = f"{C}/os-services/{svc['id']}"
    r = await cloud.put(url, {"status": "disabled", "disabled_reason": "maintenance"}, microversion="2.53")
    assert r.status == 200 and set(r.body["service"]) == SERVICE_2_1 | {"forced_down"}
    assert r.body["service"]["status"] == "disabled" and r.body["service"]["disabled_reason"] == "maintenance"
    hv = {h["hypervisor_hostname"]: h for h in (await cloud.get(f"{C}/os-hypervisors")).body["hypervisors"]}
    assert hv[svc["host"]]["status"] == "disabled"

    r = await cloud.put(url, {"status": "enabled", "disabled_reason": "x"}, microversion="2.53")
    assert r.status == 400 and message(r) == "Specifying 'disabled_reason' with status 'enabled' is invalid."
    r = await cloud.put(url, {}, microversion="2.53")
    assert r.status == 400 and message(r).startswith("No updates were requested.")
    assert (await cloud.put(url, {"status": "sideways"}, microversion="2.53")).status == 400
    r = await cloud.put(url, {"forced_down": True}, microversion="2.53")
    assert r.body["service"]["forced_down"] is True and r.body["service"]["state"] == "down"
    r = await cloud.put(url, {"status": "enabled", "forced_down": False}, microversion="2.53")
    assert r.body["service"]["status"] == "enabled" and r.body["service"]["disabled_reason"] is None
    r = await cloud.put(f"{C}/os-services/not-a-uuid", {"status": "enabled"}, microversion="2.53")
    assert r.status == 400 and message(r) == "Invalid uuid not-a-uuid"
    missing = "00000000-0000-0000-0000-000000000000"
    assert (await cloud.put(f"{C}/os-services/{missing}", {"status": "enabled"}, microversion="2.53")).status == 404
    conductor = (await cloud.get(f"{C}/os-services?binary=nova-conductor", microversion="2.53")).body["services"][0]
    r = await cloud.put(f"{C}/os-services/{conductor['id']}", {"status": "disabled"}, microversion="2.53")
    assert r.status == 400 and "Only nova-compute services can be updated" in message(r)

    host = svc["host"]
    r = await cloud.put(f"{C}/os-services/disable", {"host": host, "binary": "nova-compute"})
    assert r.status == 200 and r.body == {"service": {"host": host, "binary": "nova-compute", "status": "disabled"}}
    body = {"host": host, "binary": "nova-compute", "disabled_reason": "why"}
    r = await cloud.put(f"{C}/os-services/disable-log-reason", body)
    assert r.body == {"service": {**body, "status": "disabled"}}
    r = await cloud.put(f"{C}/os-services/enable", {"host": host, "binary": "nova-compute"})
    assert r.body["service"]["status"] == "enabled"
    r = await cloud.put(f"{C}/os-services/force-down", {"host": host, "binary": "nova-compute", "forced_down": True},
                        microversion="2.11")  # fmt: skip
    assert r.body == {"service": {"host": host, "binary": "nova-compute", "forced_down": True}}
    r = await cloud.put(f"{C}/os-services/force-down", {"host": host, "binary": "nova-compute"}, microversion="2.11")
    assert r.status == 400 and message(r) == "Missing forced_down field"
    r = await cloud.put(f"{C}/os-services/force-down", {"host": host, "binary": "nova-compute", "forced_down": True})
    assert r.status == 400  # forced_down is not a 2.1 field
    r = await cloud.put(f"{C}/os-services/disable", {"host": "nohost", "binary": "nova-compute"})
    assert r.status == 404
    alice = await person(cloud, "alice", "alpha", "member")
    r = await cloud.put(url, {"status": "disabled"}, microversion="2.53", token=alice.token)
    assert r.status == 403


async def test_service_delete(cloud):
    await wait_computes(cloud)
    image = await make_image(cloud)
    server = await wait_status(cloud, (await create_server(cloud, image)).body["server"]["id"], "ACTIVE")
    computes = (await cloud.get(f"{C}/os-services?binary=nova-compute", microversion="2.53")).body["services"]
    busy = next(s for s in computes if s["host"] == server["OS-EXT-SRV-ATTR:host"])
    idle = next(s for s in computes if s["host"] != server["OS-EXT-SRV-ATTR:host"])
    r = await cloud.delete(f"{C}/os-services/{busy['id']}", microversion="2.53")
    assert r.status == 409 and message(r).startswith("Unable to delete compute service that is hosting instances.")
    r = await cloud.delete(f"{C}/os-services/{idle['id']}", microversion="2.53")
    assert r.status == 204
    async with cloud.rt.db.connect() as conn:
        assert not await conn.scalar(sa.select(sa.func.count()).where(t.services.c.uuid == idle["id"]))
    assert (await cloud.delete(f"{C}/os-services/{idle['id']}", microversion="2.53")).status == 404
    assert (await cloud.delete(f"{C}/os-services/abc", microversion="2.53")).status == 400
    assert (await cloud.delete(f"{C}/os-services/abc")).status == 400
    assert (await cloud.delete(f"{C}/os-services/999999")).status == 404


# -- availability zones -----------------------------------------------------------------------------


async def test_availability_zones(cloud):
    await wait_computes(cloud)
    alice = await person(cloud, "alice", "alpha", "reader")
    r = await cloud.get(f"{C}/os-availability-zone", token=alice.token)
    assert r.status == 200
    assert r.body == {"availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": True}, "hosts": None}]}
    assert (await cloud.get(f"{C}/os-availability-zone/detail", token=alice.token)).status == 403
    r = await cloud.get(f"{C}/os-availability-zone/detail")
    zones = {z["zoneName"]: z for z in r.body["availabilityZoneInfo"]}
    assert set(zones) == {"nova", "internal"}
    assert set(zones["nova"]["hosts"]) == {"hv-1", "hv-2"}
    entry = zones["nova"]["hosts"]["hv-1"]["nova-compute"]
    assert set(entry) == {"available", "active", "updated_at"} and entry["available"] and entry["active"]
    internal_binaries = {b for services in zones["internal"]["hosts"].values() for b in services}
    assert {"nova-conductor", "nova-scheduler"} <= internal_binaries

    for svc in (await cloud.get(f"{C}/os-services?binary=nova-compute", microversion="2.53")).body["services"]:
        await cloud.put(f"{C}/os-services/{svc['id']}", {"status": "disabled"}, microversion="2.53")
    r = await cloud.get(f"{C}/os-availability-zone")
    assert r.body == {"availabilityZoneInfo": [{"zoneName": "nova", "zoneState": {"available": False}, "hosts": None}]}


# -- limits and quotas ------------------------------------------------------------------------------

LIMITS_2_1 = {
    "maxServerMeta", "maxImageMeta", "maxPersonality", "maxPersonalitySize", "maxTotalCores", "maxTotalInstances",
    "maxTotalRAMSize", "maxTotalKeypairs", "maxTotalFloatingIps", "maxSecurityGroups", "maxSecurityGroupRules",
    "maxServerGroups", "maxServerGroupMembers", "totalCoresUsed", "totalInstancesUsed", "totalRAMUsed",
    "totalSecurityGroupsUsed", "totalFloatingIpsUsed", "totalServerGroupsUsed",
}  # fmt: skip
LIMITS_2_36 = LIMITS_2_1 - {
    "maxTotalFloatingIps", "maxSecurityGroups", "maxSecurityGroupRules", "totalSecurityGroupsUsed",
    "totalFloatingIpsUsed",
}  # fmt: skip
LIMITS_2_39 = LIMITS_2_36 - {"maxImageMeta"}
LIMITS_2_57 = LIMITS_2_39 - {"maxPersonality", "maxPersonalitySize"}

QUOTAS_2_1 = {
    "id", "instances", "cores", "ram", "floating_ips", "fixed_ips", "metadata_items", "injected_files",
    "injected_file_content_bytes", "injected_file_path_bytes", "key_pairs", "security_groups",
    "security_group_rules", "server_groups", "server_group_members",
}  # fmt: skip
QUOTAS_2_36 = QUOTAS_2_1 - {"fixed_ips", "floating_ips", "security_groups", "security_group_rules"}
QUOTAS_2_57 = QUOTAS_2_36 - {"injected_files", "injected_file_content_bytes", "injected_file_path_bytes"}


async def test_limits_per_microversion_and_usage(cloud):
    alice = await person(cloud, "alice", "alpha", "member")
    r = await cloud.get(f"{C}/limits", token=alice.token)
    assert r.status == 200 and r.body["limits"]["rate"] == []
    absolute = r.body["limits"]["absolute"]
    assert set(absolute) == LIMITS_2_1
    assert absolute["maxTotalInstances"] == 10 and absolute["maxTotalCores"] == 20
    assert absolute["maxTotalRAMSize"] == 51200 and absolute["maxTotalKeypairs"] == 100
    assert absolute["maxServerMeta"] == 128 and absolute["totalInstancesUsed"] == 0
    for mv, keys in (("2.36", LIMITS_2_36), ("2.39", LIMITS_2_39), ("2.57", LIMITS_2_57), ("2.100", LIMITS_2_57)):
        r = await cloud.get(f"{C}/limits", microversion=mv, token=alice.token)
        assert set(r.body["limits"]["absolute"]) == keys, mv

    image = await make_image(cloud)
    r = await create_server(cloud, image, flavor="2", token=alice.token)
    await wait_status(cloud, r.body["server"]["id"], "ACTIVE", token=alice.token)
    absolute = (await cloud.get(f"{C}/limits", microversion="2.100", token=alice.token)).body["limits"]["absolute"]
    assert (absolute["totalInstancesUsed"], absolute["totalCoresUsed"], absolute["totalRAMUsed"]) == (1, 1, 2048)
    absolute = (await cloud.get(f"{C}/limits", microversion="2.100")).body["limits"]["absolute"]
    assert absolute["totalInstancesUsed"] == 0  # the admin's own project
    r = await cloud.get(f"{C}/limits?tenant_id={alice.project_id}", microversion="2.100")
    assert r.body["limits"]["absolute"]["totalInstancesUsed"] == 1
    me = await admin(cloud)
    assert (await cloud.get(f"{C}/limits?tenant_id={me.project_id}", token=alice.token)).status == 403


async def test_quota_sets(cloud):
    alice = await person(cloud, "alice", "alpha", "member")
    bob = await person(cloud, "bob", "beta", "member")
    url = f"{C}/os-quota-sets/{alice.project_id}"
    r = await cloud.get(url, token=alice.token)
    assert r.status == 200 and set(r.body["quota_set"]) == QUOTAS_2_1
    assert r.body["quota_set"]["id"] == alice.project_id and r.body["quota_set"]["instances"] == 10
    assert r.body["quota_set"]["floating_ips"] == -1 and r.body["quota_set"]["injected_files"] == 5
    assert set((await cloud.get(url, microversion="2.36")).body["quota_set"]) == QUOTAS_2_36
    assert set((await cloud.get(url, microversion="2.100")).body["quota_set"]) == QUOTAS_2_57
    assert set((await cloud.get(f"{url}/defaults", microversion="2.57")).body["quota_set"]) == QUOTAS_2_57
    assert (await cloud.get(url, token=bob.token)).status == 403
    r = await cloud.get(f"{url}/detail", microversion="2.100", token=alice.token)
    detail = r.body["quota_set"]
    assert set(detail) == QUOTAS_2_57 and detail["cores"] == {"in_use": 0, "limit": 20, "reserved": 0}
    r = await cloud.get(f"{C}/os-quota-sets/no-such-project")
    assert r.status == 400 and message(r) == "Project ID no-such-project is not a valid project."

    r = await cloud.put(url, {"quota_set": {"instances": 2, "cores": "4"}}, token=alice.token)
    assert r.status == 403
    r = await cloud.put(url, {"quota_set": {"instances": 2, "cores": "4"}})
    assert r.status == 200 and set(r.body["quota_set"]) == QUOTAS_2_1 - {"id"}
    assert r.body["quota_set"]["instances"] == 2 and r.body["quota_set"]["cores"] == 4
    r = await cloud.put(url, {"quota_set": {"fixed_ips": 5}}, microversion="2.36")
    assert r.status == 400 and "fixed_ips" in message(r)
    r = await cloud.put(url, {"quota_set": {"instances": -2}})
    assert r.status == 400 and "instances" in message(r)
    r = await cloud.put(url, {"quota_set": {"bogus": 1}})
    assert r.status == 400 and "bogus" in message(r)
    assert (await cloud.get(f"{url}/defaults")).body["quota_set"]["instances"] == 10

    # Quotas bite on server create (the lead's call of check_quota), and can't go below usage.
    image = await make_image(cloud)
    r = await create_server(cloud, image, flavor="3", token=alice.token)  # 2 vCPUs
    assert r.status == 202, r
    r = await create_server(cloud, image, flavor="3", token=alice.token, name="vm2")
    r2 = await create_server(cloud, image, flavor="3", token=alice.token, name="vm3")
    assert r2.status == 403 and "Quota exceeded for" in r2.body["forbidden"]["message"]
    r = await cloud.put(url, {"quota_set": {"instances": 1}})
    assert r.status == 400
    assert message(r) == "Quota limit 1 for instances must be greater than or equal to already used and reserved 2."
    r = await cloud.put(url, {"quota_set": {"instances": 1, "force": True}})
    assert r.status == 200 and r.body["quota_set"]["instances"] == 1

    assert (await cloud.delete(url, token=alice.token)).status == 403
    assert (await cloud.delete(url)).status == 202
    assert (await cloud.get(url)).body["quota_set"]["instances"] == 10


async def test_quota_helpers(cloud):
    alice = await person(cloud, "alice", "alpha", "member")
    settings = cloud.rt.settings
    async with cloud.rt.db.begin() as conn:
        await conn.execute(t.quotas.insert().values(project_id=alice.project_id, resource="cores", hard_limit=20))
        await conn.execute(
            t.instances.insert().values(
                uuid=os.urandom(16).hex()[:36], project_id=alice.project_id, user_id=alice.user_id, flavor={},
                vcpus=18, memory_mb=1024, root_gb=1, ephemeral_gb=0, vm_state="active", tags=[],
                scheduler_hints={}, image_meta={}, created_at=utcnow(), updated_at=utcnow(),
            )
        )  # fmt: skip
        limits = await limits_for(conn, settings, alice.project_id)
        assert limits["cores"] == 20 and limits["instances"] == 10
        usage = await usage_for(conn, alice.project_id)
        assert (usage["instances"], usage["cores"], usage["ram"]) == (1, 18, 1024)
        await check_quota(conn, settings, alice.project_id, instances=1, cores=2, ram=512)
        with pytest.raises(QuotaExceeded) as err:
            await check_quota(conn, settings, alice.project_id, instances=1, cores=4, ram=512)
        assert str(err.value) == "Quota exceeded for cores: Requested 4, but already used 18 of 20 cores"
        assert from_domain(err.value).status == 403 and err.value.resource == "cores"
        with pytest.raises(QuotaExceeded) as err:
            await check_quota(conn, settings, alice.project_id, instances=1, cores=4, ram=60000)
        assert str(err.value).startswith("Quota exceeded for cores, ram: Requested 4, 60000, but already used 18, 1024")


# -- tenant usage -----------------------------------------------------------------------------------

TENANT_USAGE = {"tenant_id", "total_local_gb_usage", "total_vcpus_usage", "total_memory_mb_usage", "total_hours",
                "start", "stop"}  # fmt: skip
SERVER_USAGE = {"hours", "flavor", "instance_id", "name", "tenant_id", "memory_mb", "local_gb", "vcpus",
                "started_at", "ended_at", "state", "uptime"}  # fmt: skip


async def test_simple_tenant_usage(cloud):
    alice = await person(cloud, "alice", "alpha", "member")
    bob = await person(cloud, "bob", "beta", "member")
    image = await make_image(cloud)
    ids = []
    for name in ("u1", "u2"):
        r = await create_server(cloud, image, name=name, flavor="2", token=alice.token)
        ids.append((await wait_status(cloud, r.body["server"]["id"], "ACTIVE", token=alice.token))["id"])
    await asyncio.sleep(0.05)
    start = "2020-01-01T00:00:00"
    r = await cloud.get(f"{C}/os-simple-tenant-usage?start={start}")
    assert r.status == 200 and set(r.body) == {"tenant_usages"}
    (usage,) = r.body["tenant_usages"]
    assert set(usage) == TENANT_USAGE and usage["tenant_id"] == alice.project_id and usage["total_hours"] > 0
    assert usage["start"] == "2020-01-01T00:00:00.000000"
    assert usage["total_vcpus_usage"] == pytest.approx(usage["total_hours"])
    r = await cloud.get(f"{C}/os-simple-tenant-usage?start={start}&detailed=1")
    (usage,) = r.body["tenant_usages"]
    assert set(usage) == TENANT_USAGE | {"server_usages"}
    assert all(set(s) == SERVER_USAGE for s in usage["server_usages"])
    su = usage["server_usages"][0]
    assert su["flavor"] == "m1.small" and su["state"] == "active" and su["ended_at"] is None and su["local_gb"] == 20

    r = await cloud.get(f"{C}/os-simple-tenant-usage/{alice.project_id}?start={start}", token=alice.token)
    assert r.status == 200 and set(r.body["tenant_usage"]) == TENANT_USAGE | {"server_usages"}
    r = await cloud.get(f"{C}/os-simple-tenant-usage/{bob.project_id}?start={start}", token=bob.token)
    assert r.body == {"tenant_usage": {}}
    assert (await cloud.get(f"{C}/os-simple-tenant-usage/{alice.project_id}", token=bob.token)).status == 403
    assert (await cloud.get(f"{C}/os-simple-tenant-usage", token=alice.token)).status == 403
    r = await cloud.get(f"{C}/os-simple-tenant-usage?start=2030-01-01T00:00:00&end=2029-01-01T00:00:00")
    assert r.status == 400 and message(r).startswith("Invalid start time.")
    assert (await cloud.get(f"{C}/os-simple-tenant-usage?start=yesterday")).status == 400

    r = await cloud.get(f"{C}/os-simple-tenant-usage?start={start}&detailed=1&limit=1", microversion="2.40")
    assert [s["instance_id"] for s in r.body["tenant_usages"][0]["server_usages"]] == ids[:1]
    assert f"marker={ids[0]}" in r.body["tenant_usages_links"][0]["href"]
    r = await cloud.get(f"{C}/os-simple-tenant-usage?start={start}&detailed=1&limit=1&marker={ids[0]}",
                        microversion="2.40")  # fmt: skip
    assert [s["instance_id"] for s in r.body["tenant_usages"][0]["server_usages"]] == ids[1:]
    r = await cloud.get(f"{C}/os-simple-tenant-usage/{alice.project_id}?start={start}&limit=1", microversion="2.40")
    assert "tenant_usage_links" in r.body
    r = await cloud.get(f"{C}/os-simple-tenant-usage?start={start}&limit=1", microversion="2.39")
    assert "tenant_usages_links" not in r.body

    # A deleted server keeps counting for the time it existed.
    await cloud.delete(f"{C}/servers/{ids[0]}", token=alice.token)
    await wait_gone(cloud, ids[0])
    r = await cloud.get(f"{C}/os-simple-tenant-usage/{alice.project_id}?start={start}", token=alice.token)
    states = {s["instance_id"]: s for s in r.body["tenant_usage"]["server_usages"]}
    assert states[ids[0]]["state"] == "terminated" and states[ids[0]]["ended_at"]


# -- instance actions -------------------------------------------------------------------------------

ACTION_2_1 = {"action", "instance_uuid", "request_id", "user_id", "project_id", "start_time", "message"}
EVENT_2_1 = {"event", "start_time", "finish_time", "result"}


async def test_instance_actions(cloud):
    alice = await person(cloud, "alice", "alpha", "member")
    bob = await person(cloud, "bob", "beta", "member")
    image = await make_image(cloud)
    r = await create_server(cloud, image, token=alice.token)
    sid = r.body["server"]["id"]
    await wait_status(cloud, sid, "ACTIVE", token=alice.token)
    await cloud.post(f"{C}/servers/{sid}/action", {"os-stop": None}, token=alice.token)
    await wait_status(cloud, sid, "SHUTOFF", token=alice.token)

    url = f"{C}/servers/{sid}/os-instance-actions"
    r = await cloud.get(url, token=alice.token)
    assert r.status == 200 and set(r.body) == {"instanceActions"}
    actions = r.body["instanceActions"]
    assert [a["action"] for a in actions] == ["stop", "create"]
    assert all(set(a) == ACTION_2_1 for a in actions)
    assert actions[1]["project_id"] == alice.project_id and actions[1]["user_id"] == alice.user_id
    r = await cloud.get(url, microversion="2.100", token=alice.token)
    assert all(set(a) == ACTION_2_1 | {"updated_at"} for a in r.body["instanceActions"])
    assert (await cloud.get(url, token=bob.token)).status == 404

    create_req = actions[1]["request_id"]
    r = await cloud.get(f"{url}/{create_req}", microversion="2.50", token=alice.token)
    assert set(r.body["instanceAction"]) == ACTION_2_1  # no events for users before 2.51
    r = await cloud.get(f"{url}/{create_req}", microversion="2.51", token=alice.token)
    events = r.body["instanceAction"]["events"]
    assert events and all(set(e) == EVENT_2_1 for e in events)
    r = await cloud.get(f"{url}/{create_req}", microversion="2.100", token=alice.token)
    assert set(r.body["instanceAction"]) == ACTION_2_1 | {"updated_at", "events"}
    assert all(set(e) == EVENT_2_1 | {"hostId"} for e in r.body["instanceAction"]["events"])
    r = await cloud.get(f"{url}/{create_req}")
    assert all(set(e) == EVENT_2_1 | {"traceback"} for e in r.body["instanceAction"]["events"])
    r = await cloud.get(f"{url}/{create_req}", microversion="2.62")
    assert all(set(e) == EVENT_2_1 | {"traceback", "host", "hostId"} for e in r.body["instanceAction"]["events"])
    r = await cloud.get(f"{url}/{create_req}", microversion="2.100")
    assert all(
        set(e) == EVENT_2_1 | {"traceback", "host", "hostId", "details"} for e in r.body["instanceAction"]["events"]
    )
    r = await cloud.get(f"{url}/req-nope", token=alice.token)
    assert r.status == 404 and message(r) == "Action req-nope not found"

    # Paging and changes-since from 2.58.
    r = await cloud.get(f"{url}?limit=1", microversion="2.58", token=alice.token)
    assert [a["action"] for a in r.body["instanceActions"]] == ["stop"]
    (link,) = r.body["links"]
    assert link["rel"] == "next" and f"marker={actions[0]['request_id']}" in link["href"]
    r = await cloud.get(f"{url}?limit=1&marker={actions[0]['request_id']}", microversion="2.58", token=alice.token)
    assert [a["action"] for a in r.body["instanceActions"]] == ["create"]
    assert (await cloud.get(f"{url}?marker=req-nope", microversion="2.58", token=alice.token)).status == 400
    r = await cloud.get(f"{url}?changes-since=2999-01-01T00:00:00Z", microversion="2.58", token=alice.token)
    assert r.body["instanceActions"] == []
    assert (await cloud.get(f"{url}?changes-since=soon", microversion="2.58", token=alice.token)).status == 400
    r = await cloud.get(
        f"{url}?changes-since=2999-01-01T00:00:00Z&changes-before=2000-01-01T00:00:00Z", microversion="2.66"
    )
    assert r.status == 400

    # A deleted server's actions stay visible from 2.21.
    await cloud.delete(f"{C}/servers/{sid}", token=alice.token)
    await wait_gone(cloud, sid)
    r = await cloud.get(url, microversion="2.21", token=alice.token)
    assert [a["action"] for a in r.body["instanceActions"]] == ["delete", "stop", "create"]
    assert (await cloud.get(url, microversion="2.20", token=alice.token)).status == 404
