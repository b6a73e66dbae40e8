"""Issue 9, defects 5 and 6 (SQLite and PostgreSQL): console access needs member-or-admin,
a paging marker never reveals another project's server, and ``/servers/detail`` always
agrees with ``GET /servers/{id}`` after every write route.
"""

from __future__ import annotations

import uuid
from typing import Any

from tests.functional.helpers import Who, create_server, make_image, make_person, wait_status

C = "/compute/v2.1"
MV = "2.100"
VNC = {"remote_console": {"protocol": "vnc", "type": "novnc"}}


async def member_server(cloud: Any, who: Who, name: str = "vm") -> str:
    """An ACTIVE server of ``who``'s project, created by ``who``."""
    image = await make_image(cloud)
    r = await create_server(cloud, image, name=name, token=who.token)
    assert r.status == 202, r
    server_id = r.body["server"]["id"]
    await wait_status(cloud, server_id, "ACTIVE", token=who.token)
    return server_id


def forbidden(resp: Any, rule: str) -> bool:
    return resp.status == 403 and resp.body == {
        "forbidden": {"code": 403, "message": f"Policy doesn't allow {rule} to be performed."}
    }


# -- defect 5: console policy -------------------------------------------------------------------


async def test_reader_gets_no_console_output(cloud):
    member = await make_person(cloud, "mia", "p1", "member")
    reader = await make_person(cloud, "rob", "p1", "reader")
    server_id = await member_server(cloud, member)
    action = f"{C}/servers/{server_id}/action"

    r = await cloud.post(action, json={"os-getConsoleOutput": {}}, token=member.token)
    assert r.status == 200 and isinstance(r.body["output"], str), r
    # The reader sees the server but may not read its console log (Nova: member or admin).
    assert (await cloud.get(f"{C}/servers/{server_id}", token=reader.token)).status == 200
    r = await cloud.post(action, json={"os-getConsoleOutput": {}}, token=reader.token)
    assert forbidden(r, "os_compute_api:os-console-output"), r
    r = await cloud.post(action, json={"os-getConsoleOutput": {"length": 5}}, token=reader.token)
    assert forbidden(r, "os_compute_api:os-console-output"), r


async def test_reader_gets_no_remote_console(cloud):
    member = await make_person(cloud, "mia", "p1", "member")
    reader = await make_person(cloud, "rob", "p1", "reader")
    server_id = await member_server(cloud, member)

    r = await cloud.post(f"{C}/servers/{server_id}/remote-consoles", json=VNC, microversion="2.6", token=reader.token)
    assert forbidden(r, "os_compute_api:os-remote-consoles"), r
    r = await cloud.post(
        f"{C}/servers/{server_id}/action",
        json={"os-getVNCConsole": {"type": "novnc"}},
        microversion="2.5",
        token=reader.token,
    )
    assert forbidden(r, "os_compute_api:os-remote-consoles"), r
    # A member passes the policy (and gets the fake guest's screen).
    r = await cloud.post(f"{C}/servers/{server_id}/remote-consoles", json=VNC, microversion="2.6", token=member.token)
    assert r.status == 200 and "token=" in r.body["remote_console"]["url"], r


# -- defect 5: marker visibility ----------------------------------------------------------------


async def test_marker_of_another_project_is_not_found(cloud):
    alice = await make_person(cloud, "alice", "pa", "member")
    bob = await make_person(cloud, "bob", "pb", "member")
    theirs = await member_server(cloud, alice, "theirs")
    mine = await member_server(cloud, bob, "mine")
    unknown = str(uuid.uuid4())

    for listing in ("servers", "servers/detail"):
        for sort in ("", "&sort_key=display_name&sort_dir=asc"):
            for marker in (unknown, theirs):
                r = await cloud.get(f"{C}/{listing}?marker={marker}{sort}", token=bob.token)
                assert r.status == 400, (listing, sort, r)
                assert r.body == {"badRequest": {"code": 400, "message": f"marker [{marker}] not found"}}
            # The marker of the project's own server still pages.
            r = await cloud.get(f"{C}/{listing}?marker={mine}{sort}", token=bob.token)
            assert r.status == 200 and r.body["servers"] == [], r

    # An admin listing every project may page from any project's server.
    r = await cloud.get(f"{C}/servers?all_tenants=1&marker={mine}", microversion=MV)
    assert r.status == 200 and theirs in [s["id"] for s in r.body["servers"]], r  # older, so after mine
    r = await cloud.get(f"{C}/servers?all_tenants=1&marker={theirs}", microversion=MV)
    assert r.status == 200, r


# -- defect 6: detail agrees with show after every write ------------------------------------------


async def _assert_detail_equals_show(cloud: Any, who: Who, server_id: str, step: str) -> None:
    """Each call also fills the detail view cache, so a later write that does not bump
    updated_at shows up as a stale entry at the next call."""
    shown = await cloud.get(f"{C}/servers/{server_id}", microversion=MV, token=who.token)
    assert shown.status == 200, (step, shown)
    listed = await cloud.get(f"{C}/servers/detail", microversion=MV, token=who.token)
    assert listed.status == 200, (step, listed)
    (entry,) = [s for s in listed.body["servers"] if s["id"] == server_id]
    # Nova shows server_groups (2.71+) in show, update and rebuild only, never in a listing.
    expected = {k: v for k, v in shown.body["server"].items() if k != "server_groups"}
    assert "server_groups" in shown.body["server"] and "server_groups" not in entry
    assert entry == expected, step


async def test_detail_equals_show_after_each_write(cloud):
    member = await make_person(cloud, "mia", "p1", "member")
    server_id = await member_server(cloud, member)
    base = f"{C}/servers/{server_id}"
    action = f"{base}/action"

    async def check(step: str) -> None:
        await _assert_detail_equals_show(cloud, member, server_id, step)

    await check("created")
    steps: list[tuple[str, str, str, Any, int, str | None]] = [
        ("set metadata", "PUT", f"{base}/metadata", {"metadata": {"a": "1", "b": "2", "c": "3"}}, 200, None),
        ("update metadata", "POST", f"{base}/metadata", {"metadata": {"b": "20", "d": "4"}}, 200, None),
        ("set one key", "PUT", f"{base}/metadata/a", {"meta": {"a": "10"}}, 200, None),
        ("delete one key", "DELETE", f"{base}/metadata/c", None, 204, None),
        ("update name", "PUT", base, {"server": {"name": "renamed"}}, 200, None),
        ("stop", "POST", action, {"os-stop": None}, 202, "SHUTOFF"),
        ("start", "POST", action, {"os-start": None}, 202, "ACTIVE"),
        ("lock", "POST", action, {"lock": {"locked_reason": "why"}}, 202, None),
        ("unlock", "POST", action, {"unlock": None}, 202, None),
        ("replace metadata", "PUT", f"{base}/metadata", {"metadata": {"z": "26"}}, 200, None),
        ("delete last key", "DELETE", f"{base}/metadata/z", None, 204, None),
    ]
    for step, method, path, body, status, wait_for in steps:
        await check(f"before {step}")  # the view of the old state is in the cache now
        r = await cloud.request(method, path, json=body, microversion=MV, token=member.token)
        assert r.status == status, (step, r)
        if wait_for:
            await wait_status(cloud, server_id, wait_for, token=member.token)
        await check(step)

    shown = (await cloud.get(base, microversion=MV, token=member.token)).body["server"]
    assert shown["name"] == "renamed" and shown["metadata"] == {} and shown["locked"] is False
