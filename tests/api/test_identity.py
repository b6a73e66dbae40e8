"""Keystone v3 subset: discovery, tokens, catalog, projects, users, roles, assignments, policy.

Every test runs against a whole novalite over real HTTP, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import ADMIN_PASSWORD, Cloud, make_settings, start_cloud

V3 = "/identity/v3"
UNAUTHORIZED = {
    "error": {"code": 401, "message": "The request you have made requires authentication.", "title": "Unauthorized"}
}
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def password_auth(
    user: str, password: str, project: str | None = None, *, by_id: bool = False, domain: dict | None = None
) -> dict[str, Any]:
    user_ref: dict[str, Any] = {"id": user} if by_id else {"name": user, "domain": domain or {"name": "Default"}}
    user_ref["password"] = password
    auth: dict[str, Any] = {"identity": {"methods": ["password"], "password": {"user": user_ref}}}
    if project is not None:
        auth["scope"] = {"project": {"id": project} if by_id else {"name": project, "domain": {"id": "default"}}}
    return {"auth": auth}


async def issue(cloud: Cloud, body: dict[str, Any]) -> Any:
    return await cloud.post(f"{V3}/auth/tokens", body, token=None)


async def make_user(cloud: Cloud, name: str, password: str, project: str | None = None, role: str = "member") -> dict:
    """Create a user (and project, with ``role`` on it) through the API, as an admin would."""
    body: dict[str, Any] = {"name": name, "password": password}
    project_id = None
    if project is not None:
        resp = await cloud.post(f"{V3}/projects", {"project": {"name": project}})
        assert resp.status == 201, resp
        project_id = resp.body["project"]["id"]
    resp = await cloud.post(f"{V3}/users", {"user": body})
    assert resp.status == 201, resp
    user = resp.body["user"]
    if project_id is not None:
        role_id = (await cloud.get(f"{V3}/roles?name={role}")).body["roles"][0]["id"]
        resp = await cloud.put(f"{V3}/projects/{project_id}/users/{user['id']}/roles/{role_id}")
        assert resp.status == 204, resp
    return {"user": user, "project_id": project_id}


# -- discovery ------------------------------------------------------------------------------


async def test_version_discovery(cloud: Cloud) -> None:
    for path in ("/identity", "/identity/"):
        resp = await cloud.get(path, token=None)
        assert resp.status == 300
        (version,) = resp.body["versions"]["values"]
        assert version["id"] == "v3.14" and version["status"] == "stable"
        assert version["links"] == [{"rel": "self", "href": f"{cloud.base}/identity/v3/"}]
    for path in (V3, f"{V3}/"):
        resp = await cloud.get(path, token=None)
        assert resp.status == 200
        doc = resp.body["version"]
        assert doc["id"] == "v3.14"
        assert doc["links"][0] == {"rel": "self", "href": f"{cloud.base}/identity/v3/"}
        assert doc["media-types"][0]["type"] == "application/vnd.openstack.identity-v3+json"


# -- tokens ---------------------------------------------------------------------------------


async def test_issue_project_token_by_name(cloud: Cloud) -> None:
    resp = await issue(cloud, password_auth("admin", ADMIN_PASSWORD, "admin"))
    assert resp.status == 201, resp
    assert resp.headers["X-Subject-Token"]
    token = resp.body["token"]
    assert token["methods"] == ["password"]
    assert token["user"]["name"] == "admin"
    assert token["user"]["domain"] == {"id": "default", "name": "Default"}
    assert token["user"]["password_expires_at"] is None
    assert token["project"]["name"] == "admin"
    assert token["project"]["domain"] == {"id": "default", "name": "Default"}
    assert token["is_domain"] is False
    # admin implies manager, member and reader.
    assert {r["name"] for r in token["roles"]} == {"admin", "manager", "member", "reader"}
    assert TIME.match(token["issued_at"]) and TIME.match(token["expires_at"])
    assert token["expires_at"] > token["issued_at"]
    assert len(token["audit_ids"]) == 1


async def test_token_catalog_urls(cloud: Cloud) -> None:
    resp = await issue(cloud, password_auth("admin", ADMIN_PASSWORD, "admin"))
    catalog = {svc["type"]: svc for svc in resp.body["token"]["catalog"]}
    assert set(catalog) == {"identity", "compute", "image", "network"}
    expected = {
        "identity": f"{cloud.base}/identity",
        "compute": f"{cloud.base}/compute/v2.1",
        "image": f"{cloud.base}/image",
        "network": f"{cloud.base}/network",
    }
    for kind, url in expected.items():
        endpoints = catalog[kind]["endpoints"]
        assert {e["interface"] for e in endpoints} == {"public", "internal", "admin"}
        for endpoint in endpoints:
            assert endpoint["url"] == url
            assert endpoint["region"] == endpoint["region_id"] == "RegionOne"
            assert endpoint["id"]
    # The same catalog through /v3/auth/catalog, and the admin lists agree with it.
    same = await cloud.get(f"{V3}/auth/catalog")
    assert same.status == 200 and same.body["catalog"] == resp.body["token"]["catalog"]
    services = (await cloud.get(f"{V3}/services")).body["services"]
    assert {s["type"] for s in services} == {"identity", "compute", "image", "network"}
    endpoints = (await cloud.get(f"{V3}/endpoints?interface=public")).body["endpoints"]
    assert sorted(e["url"] for e in endpoints) == sorted(expected.values())
    regions = (await cloud.get(f"{V3}/regions")).body["regions"]
    assert [r["id"] for r in regions] == ["RegionOne"]


async def test_issue_by_ids_and_nocatalog(cloud: Cloud) -> None:
    first = (await issue(cloud, password_auth("admin", ADMIN_PASSWORD, "admin"))).body["token"]
    body = password_auth(first["user"]["id"], ADMIN_PASSWORD, first["project"]["id"], by_id=True)
    resp = await cloud.post(f"{V3}/auth/tokens?nocatalog", body, token=None)
    assert resp.status == 201
    assert resp.body["token"]["project"]["id"] == first["project"]["id"]
    assert "catalog" not in resp.body["token"]


@pytest.mark.parametrize(
    "body",
    [
        password_auth("admin", "wrong", "admin"),
        password_auth("nobody", ADMIN_PASSWORD, "admin"),
        password_auth("admin", ADMIN_PASSWORD, "no-such-project"),
        password_auth("admin", ADMIN_PASSWORD, "admin", domain={"id": "other"}),
    ],
    ids=["wrong-password", "unknown-user", "unknown-project", "unknown-domain"],
)
async def test_authentication_failures_are_401(cloud: Cloud, body: dict[str, Any]) -> None:
    resp = await issue(cloud, body)
    assert resp.status == 401
    assert resp.body == UNAUTHORIZED
    assert "X-Subject-Token" not in resp.headers


async def test_malformed_auth_body_is_400(cloud: Cloud) -> None:
    resp = await issue(cloud, {"auth": {"scope": {}}})
    assert resp.status == 400
    assert resp.body["error"]["title"] == "Bad Request"
    assert "identity" in resp.body["error"]["message"]


async def test_validate_and_revoke(cloud: Cloud) -> None:
    await make_user(cloud, "val", "val-pw", "val-project")
    subject = await cloud.login("val", "val-pw", "val-project")
    check = {"X-Subject-Token": subject}
    resp = await cloud.get(f"{V3}/auth/tokens", headers=check)
    assert resp.status == 200
    assert resp.headers["X-Subject-Token"] == subject
    assert resp.body["token"]["user"]["name"] == "val"
    assert resp.body["token"]["project"]["name"] == "val-project"
    assert {r["name"] for r in resp.body["token"]["roles"]} == {"member", "reader"}
    assert (await cloud.request("HEAD", f"{V3}/auth/tokens", headers=check)).status == 200
    # The user can validate their own token; the compute API accepts it.
    assert (await cloud.get(f"{V3}/auth/tokens", token=subject, headers=check)).status == 200
    assert (await cloud.get("/compute/v2.1/flavors", token=subject)).status != 401

    assert (await cloud.delete(f"{V3}/auth/tokens", headers=check)).status == 204
    assert (await cloud.get(f"{V3}/auth/tokens", headers=check)).status == 404
    assert (await cloud.request("HEAD", f"{V3}/auth/tokens", headers=check)).status == 404
    resp = await cloud.get("/compute/v2.1/flavors", token=subject)
    assert resp.status == 401 and resp.body == UNAUTHORIZED
    resp = await cloud.get(f"{V3}/auth/projects", token=subject)
    assert resp.status == 401 and resp.body == UNAUTHORIZED


async def test_users_cannot_validate_other_users_tokens(cloud: Cloud) -> None:
    await make_user(cloud, "peeker", "pw-1", "peek-project")
    mine = await cloud.login("peeker", "pw-1", "peek-project")
    resp = await cloud.get(f"{V3}/auth/tokens", token=mine, headers={"X-Subject-Token": await cloud.admin_token()})
    assert resp.status == 403
    assert resp.body["error"]["title"] == "Forbidden"


async def test_unscoped_token_and_rescope(cloud: Cloud) -> None:
    info = await make_user(cloud, "roamer", "roam-pw", "roam-project")
    resp = await issue(cloud, password_auth("roamer", "roam-pw"))
    assert resp.status == 201
    unscoped = resp.body["token"]
    assert "project" not in unscoped and "catalog" not in unscoped and "roles" not in unscoped
    token = resp.headers["X-Subject-Token"]
    # An unscoped token may list its projects but not use the compute API or get a catalog.
    projects = (await cloud.get(f"{V3}/auth/projects", token=token)).body["projects"]
    assert [p["name"] for p in projects] == ["roam-project"]
    assert (await cloud.get(f"{V3}/auth/catalog", token=token)).status == 403
    assert (await cloud.get("/compute/v2.1/flavors", token=token)).status == 401
    # Re-scope with the token method: same user, project scope, never outliving the original.
    body = {
        "auth": {
            "identity": {"methods": ["token"], "token": {"id": token}},
            "scope": {"project": {"id": info["project_id"]}},
        }
    }
    resp = await issue(cloud, body)
    assert resp.status == 201, resp
    scoped = resp.body["token"]
    assert scoped["user"]["id"] == unscoped["user"]["id"]
    assert scoped["project"]["id"] == info["project_id"]
    assert scoped["expires_at"] <= unscoped["expires_at"]
    assert "catalog" in scoped
    # A revoked token cannot be re-scoped.
    await cloud.delete(f"{V3}/auth/tokens", headers={"X-Subject-Token": token})
    assert (await issue(cloud, body)).status == 401


async def test_no_scope_uses_default_project(cloud: Cloud) -> None:
    resp = await issue(cloud, password_auth("admin", ADMIN_PASSWORD))
    assert resp.status == 201
    assert resp.body["token"]["project"]["name"] == "admin"
    # ...unless the client explicitly asks for an unscoped token.
    body = password_auth("admin", ADMIN_PASSWORD)
    body["auth"]["scope"] = "unscoped"
    assert "project" not in (await issue(cloud, body)).body["token"]


@pytest.fixture
async def short_token_cloud(tmp_path, db_url: str) -> AsyncIterator[Cloud]:  # type: ignore[no-untyped-def]
    cloud = await start_cloud(make_settings(tmp_path, db_url, token_ttl=1))
    try:
        yield cloud
    finally:
        await cloud.session.close()
        await cloud.node.stop()


async def test_tokens_expire(short_token_cloud: Cloud) -> None:
    cloud = short_token_cloud
    token = await cloud.login()
    assert (await cloud.get(f"{V3}/auth/projects", token=token)).status == 200
    await asyncio.sleep(1.2)
    assert (await cloud.get(f"{V3}/auth/projects", token=token)).status == 401
    assert (await cloud.get("/compute/v2.1/flavors", token=token)).status == 401
    fresh = await cloud.login()
    resp = await cloud.get(f"{V3}/auth/tokens", token=fresh, headers={"X-Subject-Token": token})
    assert resp.status == 404


# -- projects -------------------------------------------------------------------------------


async def test_project_crud(cloud: Cloud) -> None:
    resp = await cloud.post(f"{V3}/projects", {"project": {"name": "lab", "description": "a lab"}})
    assert resp.status == 201
    project = resp.body["project"]
    assert project["name"] == "lab" and project["domain_id"] == "default" and project["enabled"] is True
    assert project["links"]["self"] == f"{cloud.base}/identity/v3/projects/{project['id']}"
    pid = project["id"]

    dup = await cloud.post(f"{V3}/projects", {"project": {"name": "lab"}})
    assert dup.status == 409 and dup.body["error"]["title"] == "Conflict"

    listed = (await cloud.get(f"{V3}/projects?name=lab")).body["projects"]
    assert [p["id"] for p in listed] == [pid]
    assert {p["name"] for p in (await cloud.get(f"{V3}/projects")).body["projects"]} == {"admin", "lab"}
    assert (await cloud.get(f"{V3}/projects/{pid}")).body["project"]["description"] == "a lab"

    resp = await cloud.request("PATCH", f"{V3}/projects/{pid}", json={"project": {"name": "lab2", "enabled": False}})
    assert resp.status == 200
    assert resp.body["project"]["name"] == "lab2" and resp.body["project"]["enabled"] is False
    assert [p["name"] for p in (await cloud.get(f"{V3}/projects?enabled=false")).body["projects"]] == ["lab2"]

    assert (await cloud.delete(f"{V3}/projects/{pid}")).status == 204
    resp = await cloud.get(f"{V3}/projects/{pid}")
    assert resp.status == 404
    assert resp.body == {"error": {"code": 404, "message": f"Could not find project: {pid}.", "title": "Not Found"}}
    assert (await cloud.delete(f"{V3}/projects/{pid}")).status == 404


async def test_disabled_project_rejects_login_and_its_tokens(cloud: Cloud) -> None:
    info = await make_user(cloud, "dis", "dis-pw", "dis-project")
    token = await cloud.login("dis", "dis-pw", "dis-project")
    await cloud.request("PATCH", f"{V3}/projects/{info['project_id']}", json={"project": {"enabled": False}})
    assert (await issue(cloud, password_auth("dis", "dis-pw", "dis-project"))).status == 401
    assert (await cloud.get("/compute/v2.1/flavors", token=token)).status == 401
    await cloud.request("PATCH", f"{V3}/projects/{info['project_id']}", json={"project": {"enabled": True}})
    assert (await issue(cloud, password_auth("dis", "dis-pw", "dis-project"))).status == 201


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"project": {}}, "name"),
        ({"project": {"name": 42}}, "name"),
        ({"project": {"name": "x" * 65}}, "name"),
        ({"project": {"name": "ok", "enabled": "yes"}}, "enabled"),
        ({"project": {"name": "ok", "description": 7}}, "description"),
        ({"name": "no wrapper"}, "project"),
    ],
)
async def test_project_validation(cloud: Cloud, body: dict[str, Any], field: str) -> None:
    resp = await cloud.post(f"{V3}/projects", body)
    assert resp.status == 400, resp
    assert resp.body["error"]["code"] == 400
    assert field in resp.body["error"]["message"]


# -- users, roles, assignments --------------------------------------------------------------


async def test_user_crud_and_login_as_new_user(cloud: Cloud) -> None:
    project = (await cloud.post(f"{V3}/projects", {"project": {"name": "team"}})).body["project"]
    resp = await cloud.post(
        f"{V3}/users",
        {
            "user": {
                "name": "alice",
                "password": "alice-pw",
                "default_project_id": project["id"],
                "email": "alice@example.org",
                "description": "Alice",
                "enabled": True,
            }
        },
    )
    assert resp.status == 201
    user = resp.body["user"]
    assert "password" not in user and "password_hash" not in user
    assert user["email"] == "alice@example.org" and user["default_project_id"] == project["id"]
    assert (await cloud.post(f"{V3}/users", {"user": {"name": "alice"}})).status == 409
    assert [u["id"] for u in (await cloud.get(f"{V3}/users?name=alice")).body["users"]] == [user["id"]]

    # No role on the project yet: no token for it.
    assert (await issue(cloud, password_auth("alice", "alice-pw", "team"))).status == 401
    member = (await cloud.get(f"{V3}/roles?name=member")).body["roles"][0]
    grant = f"{V3}/projects/{project['id']}/users/{user['id']}/roles/{member['id']}"
    assert (await cloud.request("HEAD", grant)).status == 404
    assert (await cloud.put(grant)).status == 204
    assert (await cloud.put(grant)).status == 204  # idempotent
    assert (await cloud.request("HEAD", grant)).status == 204
    roles = (await cloud.get(f"{V3}/projects/{project['id']}/users/{user['id']}/roles")).body["roles"]
    assert [r["name"] for r in roles] == ["member"]

    token = await cloud.login("alice", "alice-pw", "team")
    resp = await cloud.get(f"{V3}/auth/tokens", headers={"X-Subject-Token": token})
    assert resp.body["token"]["project"]["id"] == project["id"]
    assert {r["name"] for r in resp.body["token"]["roles"]} == {"member", "reader"}
    # She may read herself, her project and her projects; nothing else.
    assert (await cloud.get(f"{V3}/users/{user['id']}", token=token)).status == 200
    assert (await cloud.get(f"{V3}/projects/{project['id']}", token=token)).status == 200
    mine = (await cloud.get(f"{V3}/users/{user['id']}/projects", token=token)).body["projects"]
    assert [p["name"] for p in mine] == ["team"]

    # Removing the role ends her tokens on the project.
    assert (await cloud.delete(grant)).status == 204
    assert (await cloud.delete(grant)).status == 404
    assert (await cloud.get("/compute/v2.1/flavors", token=token)).status == 401

    assert (await cloud.delete(f"{V3}/users/{user['id']}")).status == 204
    assert (await cloud.get(f"{V3}/users/{user['id']}")).status == 404
    assert (await issue(cloud, password_auth("alice", "alice-pw"))).status == 401


async def test_password_change_and_disable(cloud: Cloud) -> None:
    info = await make_user(cloud, "bob", "old-pw", "bob-project")
    uid = info["user"]["id"]
    old_token = await cloud.login("bob", "old-pw", "bob-project")
    resp = await cloud.request("PATCH", f"{V3}/users/{uid}", json={"user": {"password": "new-pw"}})
    assert resp.status == 200
    assert (await issue(cloud, password_auth("bob", "old-pw", "bob-project"))).status == 401
    assert (await cloud.get("/compute/v2.1/flavors", token=old_token)).status == 401  # revoked
    token = await cloud.login("bob", "new-pw", "bob-project")

    # Self-service change needs the original password.
    change = f"{V3}/users/{uid}/password"
    bad = {"user": {"original_password": "nope", "password": "x"}}
    assert (await cloud.post(change, bad, token=token)).status == 401
    good = {"user": {"original_password": "new-pw", "password": "newer-pw"}}
    assert (await cloud.post(change, good, token=token)).status == 204
    await cloud.login("bob", "newer-pw", "bob-project")

    await cloud.request("PATCH", f"{V3}/users/{uid}", json={"user": {"enabled": False}})
    assert (await issue(cloud, password_auth("bob", "newer-pw", "bob-project"))).status == 401


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"user": {"password": "pw"}}, "name"),
        ({"user": {"name": "x" * 256}}, "name"),
        ({"user": {"name": "u", "enabled": 1}}, "enabled"),
        ({"user": {"name": "u", "password": 123}}, "password"),
    ],
)
async def test_user_validation(cloud: Cloud, body: dict[str, Any], field: str) -> None:
    resp = await cloud.post(f"{V3}/users", body)
    assert resp.status == 400
    assert f"'{field}'" in resp.body["error"]["message"]
    assert "123" not in resp.body["error"]["message"]  # a password is never echoed


async def test_role_crud(cloud: Cloud) -> None:
    names = {r["name"] for r in (await cloud.get(f"{V3}/roles")).body["roles"]}
    assert {"admin", "manager", "member", "reader", "service"} <= names
    resp = await cloud.post(f"{V3}/roles", {"role": {"name": "auditor", "description": "Reads logs"}})
    assert resp.status == 201
    role = resp.body["role"]
    assert (await cloud.post(f"{V3}/roles", {"role": {"name": "auditor"}})).status == 409
    assert (await cloud.get(f"{V3}/roles/{role['id']}")).body["role"]["description"] == "Reads logs"
    assert (await cloud.delete(f"{V3}/roles/{role['id']}")).status == 204
    assert (await cloud.get(f"{V3}/roles/{role['id']}")).status == 404
    assert (await cloud.post(f"{V3}/roles", {"role": {}})).status == 400
    # The default roles carry policy meaning: they cannot be deleted.
    admin = (await cloud.get(f"{V3}/roles?name=admin")).body["roles"][0]
    assert (await cloud.delete(f"{V3}/roles/{admin['id']}")).status == 403


async def test_role_assignment_list(cloud: Cloud) -> None:
    info = await make_user(cloud, "carol", "carol-pw", "carol-project", role="manager")
    uid, pid = info["user"]["id"], info["project_id"]
    resp = await cloud.get(f"{V3}/role_assignments?user.id={uid}&include_names=True")
    assert resp.status == 200
    (assignment,) = resp.body["role_assignments"]
    assert assignment["role"]["name"] == "manager"
    assert assignment["user"] == {"id": uid, "name": "carol", "domain": {"id": "default", "name": "Default"}}
    assert assignment["scope"]["project"]["name"] == "carol-project"
    by_project = (await cloud.get(f"{V3}/role_assignments?scope.project.id={pid}")).body["role_assignments"]
    assert [(a["user"]["id"], a["role"]["id"]) for a in by_project] == [(uid, assignment["role"]["id"])]
    assert "name" not in by_project[0]["user"]
    effective = (await cloud.get(f"{V3}/role_assignments?user.id={uid}&effective&include_names=1")).body
    assert sorted(a["role"]["name"] for a in effective["role_assignments"]) == ["manager", "member", "reader"]
    everyone = (await cloud.get(f"{V3}/role_assignments")).body["role_assignments"]
    assert len(everyone) == 2  # admin's and carol's


async def test_grant_unknown_ids_are_404(cloud: Cloud) -> None:
    info = await make_user(cloud, "dave", "dave-pw", "dave-project")
    uid, pid = info["user"]["id"], info["project_id"]
    member = (await cloud.get(f"{V3}/roles?name=member")).body["roles"][0]["id"]
    resp = await cloud.put(f"{V3}/projects/{pid}/users/{uid}/roles/nope")
    assert resp.status == 404 and resp.body["error"]["message"] == "Could not find role: nope."
    resp = await cloud.put(f"{V3}/projects/{pid}/users/nope/roles/{member}")
    assert resp.body["error"]["message"] == "Could not find user: nope."
    resp = await cloud.put(f"{V3}/projects/nope/users/{uid}/roles/{member}")
    assert resp.body["error"]["message"] == "Could not find project: nope."


async def test_non_admin_gets_403_on_admin_api(cloud: Cloud) -> None:
    info = await make_user(cloud, "eve", "eve-pw", "eve-project", role="manager")
    token = await cloud.login("eve", "eve-pw", "eve-project")
    admin_project = (await cloud.get(f"{V3}/projects?name=admin")).body["projects"][0]["id"]
    forbidden = [
        ("GET", f"{V3}/projects", None),
        ("GET", f"{V3}/users", None),
        ("GET", f"{V3}/roles", None),
        ("GET", f"{V3}/role_assignments", None),
        ("GET", f"{V3}/projects/{admin_project}", None),
        ("POST", f"{V3}/projects", {"project": {"name": "mine"}}),
        ("POST", f"{V3}/users", {"user": {"name": "sneaky"}}),
        ("PATCH", f"{V3}/users/{info['user']['id']}", {"user": {"enabled": True}}),
        ("DELETE", f"{V3}/projects/{admin_project}", None),
    ]
    for method, path, body in forbidden:
        resp = await cloud.request(method, path, token=token, json=body)
        assert resp.status == 403, (method, path, resp)
        assert resp.body["error"]["title"] == "Forbidden"
        assert resp.body["error"]["message"].startswith("You are not authorized to perform the requested action")
    # Nothing was created.
    assert (await cloud.get(f"{V3}/projects?name=mine")).body["projects"] == []


async def test_missing_or_bad_token_is_401(cloud: Cloud) -> None:
    for token in (None, "bogus"):
        resp = await cloud.get(f"{V3}/projects", token=token)
        assert resp.status == 401
        assert resp.body == UNAUTHORIZED
        assert resp.headers["WWW-Authenticate"] == f'Keystone uri="{cloud.base}/identity"'


async def test_domains(cloud: Cloud) -> None:
    resp = await cloud.get(f"{V3}/domains")
    assert [(d["id"], d["name"]) for d in resp.body["domains"]] == [("default", "Default")]
    assert (await cloud.get(f"{V3}/domains?name=Default")).body["domains"][0]["id"] == "default"
    assert (await cloud.get(f"{V3}/domains/default")).body["domain"]["name"] == "Default"
    resp = await cloud.get(f"{V3}/domains/other")
    assert resp.status == 404 and resp.body["error"]["message"] == "Could not find domain: other."


async def test_unknown_identity_path_is_keystone_404(cloud: Cloud) -> None:
    resp = await cloud.get(f"{V3}/no-such-thing")
    assert resp.status == 404
    assert resp.body["error"]["code"] == 404
