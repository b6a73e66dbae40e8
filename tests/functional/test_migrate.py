"""Cold migration and the migration listings (issue 10), on the fake driver, SQLite and PostgreSQL.

``migrate`` is admin-only, keeps the flavor, and goes through the same VERIFY_RESIZE /
confirm / revert cycle as a resize; ``host`` (2.56+) is checked as Nova checks it. The
migrations show in ``GET /os-migrations`` with Nova's fields per microversion; the
per-server routes list only in-progress live migrations, as Nova's do.
"""

from __future__ import annotations

from typing import Any

from tests.conftest import make_settings, start_cloud
from tests.functional.helpers import make_person, wait_status
from tests.functional.test_resize import MV, action, allocations, booted, migration_rows, resized


async def test_cold_migrate_then_confirm(cloud):
    server = await booted(cloud)
    sid, source = server["id"], server["OS-EXT-SRV-ATTR:host"]
    r = await action(cloud, sid, {"migrate": None})
    assert r.status == 202, r
    s = await wait_status(cloud, sid, {"VERIFY_RESIZE", "ERROR", "ACTIVE"})
    assert s["status"] == "VERIFY_RESIZE"
    dest = s["OS-EXT-SRV-ATTR:host"]
    assert dest != source and s["flavor"]["original_name"] == "m1.tiny"
    (mig,) = await migration_rows(cloud, sid)
    assert mig.migration_type == "migration"
    r = await action(cloud, sid, {"confirmResize": None})
    assert r.status == 204
    s = await wait_status(cloud, sid, "ACTIVE")
    assert s["OS-EXT-SRV-ATTR:host"] == dest
    assert await allocations(cloud) == {sid: {dest: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}}}


async def test_cold_migrate_to_a_host_then_revert(tmp_path, db_url):
    cloud = await start_cloud(make_settings(tmp_path, db_url, fake_hosts=3))
    try:
        server = await booted(cloud)
        sid, source = server["id"], server["OS-EXT-SRV-ATTR:host"]
        target = next(h for h in ("hv-1", "hv-2", "hv-3") if h != source)
        r = await action(cloud, sid, {"migrate": {"host": source}})
        assert r.status == 400
        assert r.body["badRequest"]["message"] == "Cannot migrate to the host where the server exists."
        r = await action(cloud, sid, {"migrate": {"host": "nowhere"}})
        assert r.status == 400 and r.body["badRequest"]["message"] == "Compute host nowhere could not be found."
        r = await action(cloud, sid, {"migrate": {"host": target, "bogus": 1}})
        assert r.status == 400
        r = await action(cloud, sid, {"migrate": {"host": target}}, mv="2.55")
        assert r.status == 202  # before 2.56 the body is not read: a plain migrate
        s = await wait_status(cloud, sid, {"VERIFY_RESIZE", "ERROR", "ACTIVE"})
        assert s["status"] == "VERIFY_RESIZE"
        r = await action(cloud, sid, {"revertResize": None})
        assert r.status == 202
        s = await wait_status(cloud, sid, "ACTIVE")
        assert s["OS-EXT-SRV-ATTR:host"] == source

        r = await action(cloud, sid, {"migrate": {"host": target}})
        assert r.status == 202, r
        s = await wait_status(cloud, sid, {"VERIFY_RESIZE", "ERROR", "ACTIVE"})
        assert (s["status"], s["OS-EXT-SRV-ATTR:host"]) == ("VERIFY_RESIZE", target)
        r = await action(cloud, sid, {"migrate": None})
        assert r.status == 409
        assert (
            r.body["conflictingRequest"]["message"]
            == f"Cannot 'migrate' instance {sid} while it is in vm_state resized"
        )
        r = await action(cloud, sid, {"revertResize": None})
        assert r.status == 202
        s = await wait_status(cloud, sid, "ACTIVE")
        assert s["OS-EXT-SRV-ATTR:host"] == source
        assert await allocations(cloud) == {sid: {source: {"VCPU": 1, "MEMORY_MB": 512, "DISK_GB": 1}}}
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_migrate_is_admin_only(cloud):
    alice = await make_person(cloud, "alice", "lab", "member")
    server = await booted(cloud, token=alice.token)
    r = await action(cloud, server["id"], {"migrate": None}, token=alice.token)
    assert r.status == 403
    assert (
        r.body["forbidden"]["message"]
        == "Policy doesn't allow os_compute_api:os-migrate-server:migrate to be performed."
    )
    r = await cloud.get("/compute/v2.1/os-migrations", token=alice.token)
    assert r.status == 403


async def _migrations(cloud: Any, query: str = "", mv: str = MV) -> Any:
    r = await cloud.get(f"/compute/v2.1/os-migrations{query}", microversion=mv)
    assert r.status == 200, r
    return r.body


async def test_os_migrations_lists_with_filters_and_paging(cloud):
    a = await booted(cloud, name="a")
    b = await booted(cloud, name="b")
    await resized(cloud, a["id"], "2")
    r = await action(cloud, b["id"], {"migrate": None})
    assert r.status == 202
    await wait_status(cloud, b["id"], "VERIFY_RESIZE")

    body = await _migrations(cloud)
    assert [m["instance_uuid"] for m in body["migrations"]] == [b["id"], a["id"]]  # newest first
    first = body["migrations"][0]
    assert first["migration_type"] == "migration" and first["status"] == "finished"
    assert {"uuid", "user_id", "project_id", "old_instance_type_id", "new_instance_type_id"} <= set(first)
    second = body["migrations"][1]
    assert second["old_instance_type_id"] != second["new_instance_type_id"]

    old = await _migrations(cloud, mv="2.22")
    assert "migration_type" not in old["migrations"][0] and "uuid" not in old["migrations"][0]
    mid = await _migrations(cloud, mv="2.59")
    assert "uuid" in mid["migrations"][0] and "user_id" not in mid["migrations"][0]

    body = await _migrations(cloud, f"?instance_uuid={a['id']}")
    assert [m["migration_type"] for m in body["migrations"]] == ["resize"]
    body = await _migrations(cloud, "?migration_type=migration")
    assert [m["instance_uuid"] for m in body["migrations"]] == [b["id"]]
    body = await _migrations(cloud, f"?host={a['OS-EXT-SRV-ATTR:host']}&status=finished")
    assert a["id"] in [m["instance_uuid"] for m in body["migrations"]]
    body = await _migrations(cloud, "?status=confirmed")
    assert body["migrations"] == []

    page = await _migrations(cloud, "?limit=1")
    assert [m["instance_uuid"] for m in page["migrations"]] == [b["id"]]
    assert "marker=" in page["migrations_links"][0]["href"]
    rest = await _migrations(cloud, f"?limit=1&marker={page['migrations'][0]['uuid']}")
    assert [m["instance_uuid"] for m in rest["migrations"]] == [a["id"]]
    r = await cloud.get("/compute/v2.1/os-migrations?marker=nope", microversion=MV)
    assert r.status == 400

    # The per-server routes list only in-progress live migrations (Nova): not these.
    r = await cloud.get(f"/compute/v2.1/servers/{a['id']}/migrations", microversion=MV)
    assert r.status == 200 and r.body == {"migrations": []}
    r = await cloud.get(f"/compute/v2.1/servers/{a['id']}/migrations/{second['id']}", microversion=MV)
    assert r.status == 404
    assert r.body["itemNotFound"]["message"] == f"Migration {second['id']} for server {a['id']} is not live-migration."
    r = await cloud.get(f"/compute/v2.1/servers/{a['id']}/migrations", microversion="2.22")
    assert r.status == 404
