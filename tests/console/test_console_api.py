"""The remote-console API (2.6+), the legacy os-getVNCConsole action (2.1-2.5), console auth
tokens (admin), and the token lifecycle, over real HTTP on SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa

from novalite.db import schema as t
from novalite.store import consoles as tokens
from novalite.timeutil import utcnow
from tests.api.test_compute_resources import person
from tests.console.conftest import active_server, console_url, point_vnc_at, proxy_of
from tests.functional.helpers import wait_gone, wait_status

C = "/compute/v2.1"
VNC = {"remote_console": {"protocol": "vnc", "type": "novnc"}}


def token_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["token"][0]


async def check(cloud, token: str) -> tokens.ConsoleAuth:
    async with cloud.rt.db.connect() as conn:
        return await tokens.check(conn, token)


async def refused(cloud, token: str) -> str:
    try:
        await check(cloud, token)
    except tokens.TokenRefused as exc:
        return str(exc)
    raise AssertionError("token accepted")


async def test_remote_console_26_shape_and_token_storage(cloud, fake_vnc):
    point_vnc_at(cloud, fake_vnc.port)
    server = await active_server(cloud)
    for mv in ("2.6", "2.8", "2.100"):
        r = await cloud.post(f"{C}/servers/{server['id']}/remote-consoles", json=VNC, microversion=mv)
        assert r.status == 200, r
        assert set(r.body) == {"remote_console"}
        console = r.body["remote_console"]
        assert set(console) == {"protocol", "type", "url"}
        assert console["protocol"] == "vnc" and console["type"] == "novnc"
        base = proxy_of(cloud).public_base
        assert console["url"].startswith(f"{base}/vnc.html?token=")
    token = token_of(console["url"])
    assert len(token) >= 22  # >= 128 bits of URL-safe base64
    async with cloud.rt.db.connect() as conn:
        rows = (await conn.execute(sa.select(t.console_auth_tokens))).all()
    assert len(rows) == 3
    stored = {row.token_hash for row in rows}
    assert hashlib.sha256(token.encode()).hexdigest() in stored
    assert not any(token in str(tuple(row)) for row in rows)  # never the token itself
    row = next(r for r in rows if r.token_hash == hashlib.sha256(token.encode()).hexdigest())
    assert (row.instance_uuid, row.host, row.port, row.compute_host) == (
        server["id"],
        "127.0.0.1",
        fake_vnc.port,
        server["OS-EXT-SRV-ATTR:host"],
    )
    assert timedelta(seconds=590) < row.expires_at - row.created_at <= timedelta(seconds=600)


async def test_legacy_action_before_26_and_not_after(cloud, fake_vnc):
    point_vnc_at(cloud, fake_vnc.port)
    server = await active_server(cloud)
    action = f"{C}/servers/{server['id']}/action"
    r = await cloud.post(action, json={"os-getVNCConsole": {"type": "novnc"}})  # 2.1
    assert r.status == 200, r
    assert set(r.body["console"]) == {"type", "url"} and r.body["console"]["type"] == "novnc"
    assert (await check(cloud, token_of(r.body["console"]["url"]))).instance_uuid == server["id"]
    r = await cloud.post(action, json={"os-getVNCConsole": {"type": "novnc"}}, microversion="2.5")
    assert r.status == 200, r
    r = await cloud.post(action, json={"os-getVNCConsole": {"type": "novnc"}}, microversion="2.6")
    assert r.status == 404, r
    # and remote-consoles does not exist before 2.6
    r = await cloud.post(f"{C}/servers/{server['id']}/remote-consoles", json=VNC, microversion="2.5")
    assert r.status == 404 and "itemNotFound" in r.body, r


async def test_bad_requests(cloud, fake_vnc):
    point_vnc_at(cloud, fake_vnc.port)
    server = await active_server(cloud)
    path = f"{C}/servers/{server['id']}/remote-consoles"
    for body in (
        {"remote_console": {"protocol": "telnet", "type": "novnc"}},
        {"remote_console": {"protocol": "vnc"}},
        {"remote_console": {"protocol": "vnc", "type": "novnc", "extra": 1}},
        {"console": {}},
    ):
        r = await cloud.post(path, json=body, microversion="2.6")
        assert r.status == 400 and "badRequest" in r.body, (body, r)
    # mks/webmks only from 2.8 (schema), then unavailable like every non-VNC console
    r = await cloud.post(path, json={"remote_console": {"protocol": "mks", "type": "webmks"}}, microversion="2.6")
    assert r.status == 400
    for body in (
        {"remote_console": {"protocol": "spice", "type": "spice-html5"}},
        {"remote_console": {"protocol": "vnc", "type": "xvpvnc"}},
        {"remote_console": {"protocol": "mks", "type": "webmks"}},
    ):
        r = await cloud.post(path, json=body, microversion="2.8")
        assert r.status == 400 and "Unavailable console type" in r.body["badRequest"]["message"], (body, r)
    action = f"{C}/servers/{server['id']}/action"
    for args in ({}, {"type": "spice-html5"}, {"type": "novnc", "x": 1}):
        r = await cloud.post(action, json={"os-getVNCConsole": args})
        assert r.status == 400, (args, r)
    missing = "00000000-0000-0000-0000-000000000000"
    r = await cloud.post(f"{C}/servers/{missing}/remote-consoles", json=VNC, microversion="2.6")
    assert r.status == 404


async def test_driver_without_vnc_stopped_server_and_host_down(cloud, fake_vnc):
    server = await active_server(cloud)
    path = f"{C}/servers/{server['id']}/remote-consoles"
    # a driver without screens (the fake one with screen = false): Nova's ConsoleTypeUnavailable
    for agent in cloud.rt.services["ComputeAgent"]:
        agent.driver.screen = False
    r = await cloud.post(path, json=VNC, microversion="2.6")
    assert r.status == 400 and r.body["badRequest"]["message"] == "Unavailable console type novnc.", r

    point_vnc_at(cloud, fake_vnc.port)
    r = await cloud.post(f"{C}/servers/{server['id']}/action", json={"os-stop": None})
    assert r.status == 202, r
    await wait_status(cloud, server["id"], "SHUTOFF")
    r = await cloud.post(path, json=VNC, microversion="2.6")
    assert r.status == 409 and "conflictingRequest" in r.body, r
    r = await cloud.post(f"{C}/servers/{server['id']}/action", json={"os-start": None})
    await wait_status(cloud, server["id"], "ACTIVE")

    async with cloud.rt.db.begin() as conn:
        await conn.execute(
            t.services.update().where(t.services.c.host == server["OS-EXT-SRV-ATTR:host"]).values(forced_down=True)
        )
    r = await cloud.post(path, json=VNC, microversion="2.6")
    assert r.status == 409 and "is down" in r.body["conflictingRequest"]["message"], r
    assert fake_vnc.connections == 0  # the API never talks to the VNC server


async def test_policy_members_and_other_projects(cloud, fake_vnc):
    point_vnc_at(cloud, fake_vnc.port)
    server = await active_server(cloud)
    alice = await person(cloud, "alice", "alpha", "member")
    r = await cloud.post(f"{C}/servers/{server['id']}/remote-consoles", json=VNC, microversion="2.6", token=alice.token)
    assert r.status == 404, r  # another project's server does not exist for her
    url = await console_url(cloud, server["id"])
    r = await cloud.get(f"{C}/os-console-auth-tokens/{token_of(url)}", microversion="2.31", token=alice.token)
    assert r.status == 403, r
    reader = await person(cloud, "rita", "admin", "reader")
    path = f"{C}/servers/{server['id']}/remote-consoles"
    r = await cloud.post(path, json=VNC, microversion="2.6", token=reader.token)
    assert r.status == 403, r


async def test_console_auth_tokens_admin_api(cloud, fake_vnc):
    point_vnc_at(cloud, fake_vnc.port)
    server = await active_server(cloud)
    token = token_of(await console_url(cloud, server["id"]))
    r = await cloud.get(f"{C}/os-console-auth-tokens/{token}", microversion="2.31")
    assert r.status == 200, r
    assert r.body == {
        "console": {
            "instance_uuid": server["id"],
            "host": "127.0.0.1",
            "port": fake_vnc.port,
            "internal_access_path": None,
        }
    }
    r = await cloud.get(f"{C}/os-console-auth-tokens/{token}", microversion="2.99")
    assert r.status == 200 and r.body["console"]["tls_port"] is None
    r = await cloud.get(f"{C}/os-console-auth-tokens/{token}")  # 2.1: rdp-html5 only, as Nova
    assert r.status == 401 and "not accessible" in r.body["unauthorized"]["message"], r
    r = await cloud.get(f"{C}/os-console-auth-tokens/{'x' * 43}", microversion="2.31")
    assert r.status == 404, r


async def test_token_lifecycle(cloud, fake_vnc):
    point_vnc_at(cloud, fake_vnc.port)
    server = await active_server(cloud, "vm1")
    other = await active_server(cloud, "vm2")
    token = token_of(await console_url(cloud, server["id"]))
    other_token = token_of(await console_url(cloud, other["id"]))
    assert token != other_token

    # issued: valid, and bound to its own instance only
    auth = await check(cloud, token)
    assert (auth.instance_uuid, auth.instance_name) == (server["id"], "vm1")
    assert (await check(cloud, other_token)).instance_uuid == other["id"]
    assert await refused(cloud, token[:-2] + ("AA" if not token.endswith("AA") else "BB")) == "unknown token"
    assert await refused(cloud, "not a token!") == "malformed or missing token"
    assert await refused(cloud, "") == "malformed or missing token"

    # expired
    async with cloud.rt.db.begin() as conn:
        await conn.execute(
            t.console_auth_tokens.update()
            .where(t.console_auth_tokens.c.token_hash == tokens.hash_token(other_token))
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    assert await refused(cloud, other_token) == "expired token"
    # expired tokens are purged when the next one is issued
    await console_url(cloud, server["id"])
    async with cloud.rt.db.connect() as conn:
        hashes = set((await conn.execute(sa.select(t.console_auth_tokens.c.token_hash))).scalars())
    assert tokens.hash_token(other_token) not in hashes

    # moved to another host
    async with cloud.rt.db.begin() as conn:
        await conn.execute(t.instances.update().where(t.instances.c.uuid == server["id"]).values(host="elsewhere"))
    assert await refused(cloud, token) == "the instance moved to another host"
    async with cloud.rt.db.begin() as conn:
        await conn.execute(
            t.instances.update().where(t.instances.c.uuid == server["id"]).values(host=server["OS-EXT-SRV-ATTR:host"])
        )
    assert (await check(cloud, token)).instance_uuid == server["id"]

    # deleted: the tokens go with the instance
    r = await cloud.delete(f"{C}/servers/{server['id']}")
    assert r.status == 204, r
    await wait_gone(cloud, server["id"])
    assert await refused(cloud, token) == "unknown token"
    async with cloud.rt.db.connect() as conn:
        left = (
            await conn.execute(sa.select(sa.func.count()).where(t.console_auth_tokens.c.instance_uuid == server["id"]))
        ).scalar()
    assert left == 0
