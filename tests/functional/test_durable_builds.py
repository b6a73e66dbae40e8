"""Builds survive the gaps between a commit and its message, and stale messages change nothing.

* The outbox: a build accepted just before the process stopped (its message committed
  but not yet sent) is built after the restart, with exactly one claim.
* Build attempts: reports about an attempt other than the current one (an agent's
  late ``build_failed``, a redelivered build message, a finished build of an attempt
  that was retried) are recognized and ignored.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from novalite.context import RequestContext
from novalite.store import outbox
from tests.conftest import Cloud, make_settings, start_cloud
from tests.functional.helpers import create_server, make_image, wait_status


def conductor(cloud: Cloud) -> Any:
    return cloud.rt.services["ConductorManager"][0]


async def outbox_rows(cloud: Cloud) -> int:
    async with cloud.rt.db.connect() as conn:
        return await outbox.count(conn)


async def wait_spawning(cloud: Cloud, uuid: str) -> dict[str, Any]:
    """The server once its host's agent is building it."""
    for _ in range(200):
        server: dict[str, Any] = (await cloud.get(f"/compute/v2.1/servers/{uuid}", microversion="2.100")).body[
            "server"
        ]
        if server["OS-EXT-STS:task_state"] == "spawning":
            return server
        await asyncio.sleep(0.02)
    raise AssertionError(f"server {uuid} never reached spawning")


async def vcpus_used(cloud: Cloud) -> int:
    r = await cloud.get("/compute/v2.1/os-hypervisors/detail", microversion="2.88")
    assert r.status == 200, r
    stats = await cloud.get("/compute/v2.1/os-hypervisors/statistics", microversion="2.87")
    assert stats.status == 200, stats
    return int(stats.body["hypervisor_statistics"]["vcpus_used"])


async def test_build_committed_but_not_sent_is_built_after_restart(tmp_path: Any, db_url: str) -> None:
    settings = make_settings(tmp_path, db_url)
    cloud = await start_cloud(settings)
    try:
        image = await make_image(cloud)
        # The process "dies" between the API's commit and the relay's send: no relay runs.
        await cloud.rt.services["OutboxRelay"][0].stop()
        r = await create_server(cloud, image, name="survivor", min_count=2, max_count=2)
        assert r.status == 202, r
        listed = await cloud.get("/compute/v2.1/servers?name=survivor")
        ids = [s["id"] for s in listed.body["servers"]]
        assert len(ids) == 2
        await asyncio.sleep(0.5)
        for uuid in ids:
            server = await cloud.get(f"/compute/v2.1/servers/{uuid}", microversion="2.100")
            assert (server.body["server"]["status"], server.body["server"]["OS-EXT-STS:task_state"]) == (
                "BUILD",
                "scheduling",
            )
        assert await outbox_rows(cloud) == 1  # one build request for both, committed with them
    finally:
        await cloud.session.close()
        await cloud.node.stop()

    cloud = await start_cloud(settings)
    try:
        for uuid in ids:
            await wait_status(cloud, uuid, "ACTIVE", timeout=15)
        assert await outbox_rows(cloud) == 0
        assert await vcpus_used(cloud) == 2  # one claim each: the restart's recovery and the
        # outbox's build request both asked for these builds, and only one placed each
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_reports_about_another_attempt_change_nothing(tmp_path: Any, db_url: str) -> None:
    cloud = await start_cloud(make_settings(tmp_path, db_url, driver_options={"boot_delay": 3}))
    try:
        image = await make_image(cloud)
        r = await create_server(cloud, image, name="slow")
        assert r.status == 202, r
        uuid = r.body["server"]["id"]
        server = await wait_spawning(cloud, uuid)
        host = server["OS-EXT-SRV-ATTR:host"]
        assert host
        ctx = RequestContext.admin()
        c = conductor(cloud)

        # The build under way is attempt 1; a message of attempt 0 or 2 is not about it.
        assert await c.build_start(ctx, uuid, host, build_attempt=1) is True
        assert await c.build_start(ctx, uuid, host, build_attempt=0) is False
        assert await c.build_start(ctx, uuid, host, build_attempt=2) is False
        assert await c.build_start(ctx, uuid, "some-other-host", build_attempt=1) is False

        # A late failure report of another attempt neither reschedules nor fails the build.
        await c.build_failed(ctx, uuid, host, "an old attempt failed", build_attempt=2)
        # Nor does a finish report of another attempt make it ACTIVE early.
        changed = await c.instance_update(
            ctx,
            uuid,
            {"vm_state": "active", "task_state": None},
            expect_vm_state="building",
            build_attempt=2,
        )
        assert changed is False
        server = (await cloud.get(f"/compute/v2.1/servers/{uuid}", microversion="2.100")).body["server"]
        assert (server["status"], server["OS-EXT-STS:task_state"], server["OS-EXT-SRV-ATTR:host"]) == (
            "BUILD",
            "spawning",
            host,
        )
        # The real attempt finishes normally, with no fault from the stale reports.
        done = await wait_status(cloud, uuid, "ACTIVE", timeout=15)
        assert "fault" not in done
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_delete_during_a_failing_build_deletes_it(tmp_path: Any, db_url: str) -> None:
    """The build fails while the user's delete waits behind it: the server is deleted, not
    rescheduled away from its delete (found by the crash soak: 204, then ERROR for good)."""
    options = {"boot_delay": 1.5, "fail": {"spawn": "disk on fire"}, "fail_name_prefix": "bad"}
    cloud = await start_cloud(make_settings(tmp_path, db_url, fake_hosts=2, driver_options=options))
    try:
        image = await make_image(cloud)
        r = await create_server(cloud, image, name="bad-one")
        assert r.status == 202, r
        uuid = r.body["server"]["id"]
        server = await wait_spawning(cloud, uuid)
        deleted = await cloud.request("DELETE", f"/compute/v2.1/servers/{uuid}")
        assert deleted.status == 204, deleted
        for _ in range(300):
            if (await cloud.get(f"/compute/v2.1/servers/{uuid}")).status == 404:
                break
            await asyncio.sleep(0.02)
        else:
            server = (await cloud.get(f"/compute/v2.1/servers/{uuid}", microversion="2.100")).body["server"]
            raise AssertionError(f"still there: {server['status']}/{server['OS-EXT-STS:task_state']}")
        assert await vcpus_used(cloud) == 0
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_a_restarted_conductor_waits_for_hosts_to_report_before_aborting_builds(
    tmp_path: Any, db_url: str
) -> None:
    """Right after a start every host's last heartbeat is old (nobody listened while the
    controller was down): builds on them are not aborted as "host went down" until the
    hosts had ``service_down_time`` to report (the crash soak: 12 builds aborted at once,
    the in-process agents' first heartbeats a second late)."""
    from novalite.db import schema as t
    from novalite.timeutil import utcnow

    settings = make_settings(
        tmp_path, db_url, driver_options={"boot_delay": 30}, service_down_time=20, report_interval=3600
    )
    cloud = await start_cloud(settings)
    try:
        image = await make_image(cloud)
        r = await create_server(cloud, image, name="slow")
        assert r.status == 202, r
        uuid = r.body["server"]["id"]
        host = (await wait_spawning(cloud, uuid))["OS-EXT-SRV-ATTR:host"]
        async with cloud.rt.db.begin() as conn:  # as if the host last reported before a crash
            await conn.execute(
                t.services.update()
                .where(t.services.c.host == host)
                .values(last_seen_up=utcnow() - timedelta(seconds=60))
            )
        c = conductor(cloud)
        ctx = RequestContext.admin()
        assert await c.check_stuck_builds(ctx) == []
        server = (await cloud.get(f"/compute/v2.1/servers/{uuid}")).body["server"]
        assert server["status"] == "BUILD"
        # Once the host has been silent for service_down_time while the conductor listened, it is down.
        c._started_at -= timedelta(seconds=30)
        assert await c.check_stuck_builds(ctx) == [uuid]
        server = await wait_status(cloud, uuid, "ERROR", timeout=10)
        assert "went down" in server["fault"]["message"]
    finally:
        await cloud.session.close()
        await cloud.node.stop()
