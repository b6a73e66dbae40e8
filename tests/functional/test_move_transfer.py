"""The agents' disk transfer in a cold move (issue 10), through the real conductor and agents:
a fake driver that names files to send (as the libvirt driver does) gets them on the
destination's directory, with a ticket the conductor issued; a destination that cannot take
them fails the move on the source, which brings the guest back."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest
from novalite_drivers.base import DriverError, Instance

from novalite.bus import RemoteError
from novalite.context import RequestContext
from tests.functional.helpers import wait_status
from tests.functional.test_resize import action, booted, migration_rows


def agents_of(cloud: Any) -> dict[str, Any]:
    return {a.host: a for a in cloud.rt.services["ComputeAgent"]}


async def test_cold_migrate_streams_the_files_to_the_destination(cloud, tmp_path: Path):
    server = await booted(cloud)
    sid, source = server["id"], server["OS-EXT-SRV-ATTR:host"]
    agents = agents_of(cloud)
    dest = next(h for h in agents if h != source)
    payload = os.urandom(2 * 1024 * 1024 + 5)
    src_file = tmp_path / "disk"
    inbox = tmp_path / "inbox"
    seen: dict[str, Any] = {}

    src_driver = agents[source].driver
    original = src_driver.migrate_disk_and_power_off

    async def migrate_and_name_files(inst: Instance, dest_host: str, flavor: dict[str, Any]) -> list[str]:
        await original(inst, dest_host, flavor)
        src_file.write_bytes(payload)
        return [str(src_file)]

    async def receive(inst: Instance, source_host: str) -> str:
        seen["receive"] = (inst.uuid, source_host)
        inbox.mkdir()
        return str(inbox)

    src_driver.migrate_disk_and_power_off = migrate_and_name_files
    agents[dest].driver.receive_migration = receive

    r = await action(cloud, sid, {"migrate": None})
    assert r.status == 202, r
    s = await wait_status(cloud, sid, {"VERIFY_RESIZE", "ERROR", "ACTIVE"})
    assert (s["status"], s["OS-EXT-SRV-ATTR:host"]) == ("VERIFY_RESIZE", dest)
    assert seen["receive"] == (sid, source)
    assert sorted(os.listdir(inbox)) == ["disk"] and (inbox / "disk").read_bytes() == payload
    assert agents[dest]._receiver is not None and agents[dest]._receiver.expecting() == []

    # The ticket was for that migration only, and the transfer is over: the conductor issues
    # no other one (not to the source, and never to another host).
    (mig,) = await migration_rows(cloud, sid)
    for host in (source, dest):
        as_host = dataclasses.replace(RequestContext.admin(), sender=f"novalite-agent-{host}")
        with pytest.raises(RemoteError):
            await cloud.rt.bus.call(
                as_host,
                "conductor",
                "migration_transfer",
                instance_uuid=sid,
                migration_uuid=mig.uuid,
                host=host,
                timeout=5,
            )
    r = await action(cloud, sid, {"confirmResize": None})
    assert r.status == 204


async def test_a_destination_that_cannot_receive_fails_the_move_on_the_source(cloud, tmp_path: Path):
    server = await booted(cloud)
    sid, source = server["id"], server["OS-EXT-SRV-ATTR:host"]
    agents = agents_of(cloud)
    dest = next(h for h in agents if h != source)
    src_driver = agents[source].driver
    original = src_driver.migrate_disk_and_power_off
    src_file = tmp_path / "disk"
    reverted: list[bool] = []

    async def migrate_and_name_files(inst: Instance, dest_host: str, flavor: dict[str, Any]) -> list[str]:
        await original(inst, dest_host, flavor)
        src_file.write_bytes(b"disk")
        return [str(src_file)]

    revert = src_driver.finish_revert_migration

    async def finish_revert(inst: Instance, power_on: bool = True) -> None:
        reverted.append(power_on)
        await revert(inst, power_on=power_on)

    async def refuse(inst: Instance, source_host: str) -> str:
        raise DriverError(f"instance {inst.uuid} already exists on {dest}")

    src_driver.migrate_disk_and_power_off = migrate_and_name_files
    src_driver.finish_revert_migration = finish_revert
    agents[dest].driver.receive_migration = refuse

    r = await action(cloud, sid, {"migrate": None})
    assert r.status == 202, r
    s = await wait_status(cloud, sid, {"ACTIVE", "ERROR"}, timeout=20)
    (mig,) = await migration_rows(cloud, sid)
    while mig.status != "error":
        s = await wait_status(cloud, sid, {"ACTIVE", "ERROR"}, timeout=20)
        (mig,) = await migration_rows(cloud, sid)
    assert (s["status"], s["OS-EXT-SRV-ATTR:host"]) == ("ACTIVE", source)
    assert reverted == [True]  # the guest came back, running as it was
    assert sid in await src_driver.list_instances()
    r = await cloud.get(f"/compute/v2.1/servers/{sid}/os-instance-actions", microversion="2.84")
    (migrate,) = [a for a in r.body["instanceActions"] if a["action"] == "migrate"]
    r = await cloud.get(f"/compute/v2.1/servers/{sid}/os-instance-actions/{migrate['request_id']}", microversion="2.84")
    (event,) = [e for e in r.body["instanceAction"]["events"] if e["event"] == "compute_resize_instance"]
    assert event["result"] == "Error"
    assert f"{dest} cannot take the disks: instance {sid} already exists on {dest}" in event["traceback"]
