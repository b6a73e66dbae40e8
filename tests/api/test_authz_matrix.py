"""Issue 9: the authorization matrix — every route of the API, every kind of caller.

``TABLE`` below is the decided policy of each route, as plain data: the HTTP status each
caller gets. The callers are

- ``none``: no token at all (401, in keystonemiddleware's body, for anything but discovery
  and login);
- ``reader``: a ``reader`` of project alpha, the project that owns the resources;
- ``member``: a ``member`` of alpha, who created them;
- ``manager``: a ``manager`` of alpha (Keystone's project-manager persona; the token also carries
  the implied ``member`` and ``reader``). It may do all a member may in alpha, but it is another
  user: the member's key pair, tokens and user record are not its own;
- ``other``: a ``member`` of project beta — for alpha's server, key pair, private image and
  private flavor it must get 404 (never 403, which would confirm the id exists) and never
  their data; for admin-only APIs 403;
- ``admin``: the cloud admin;
- ``expired``, ``revoked``: the admin's tokens, one moved past its expiry in the database, one
  revoked through ``DELETE /v3/auth/tokens`` (what ``openstack token revoke`` does). They have no
  column: each must get exactly what ``none`` gets, on every row — the most privileged token, once
  dead, opens nothing.

The manager column is what novalite implements and what the OpenStack defaults give a
project-scoped ``manager``: Nova (2025.2, the first release with a project-manager persona)
opens to it only the migration APIs, which novalite does not have, so on every route here it
is a member of its project; Keystone's manager rights (users, projects, role assignments) are
the *domain* manager's, for domain-scoped tokens, which novalite does not issue — so grants
stay admin-only.

The policies follow the OpenStack defaults (Nova's ``PROJECT_READER_OR_ADMIN`` for
reads, ``PROJECT_MEMBER_OR_ADMIN`` for changes, ``ADMIN`` for os-hypervisors,
os-services, os-aggregates, flavor management, quota changes...; Keystone's admin-or-self
rules; Glance's secure-RBAC member/reader rules). Nova key pairs belong to a user, not a
project, so alpha's reader and manager get 404 for the member's key pair as any other user would.

``test_every_route_has_a_decided_policy`` walks the routes registered in the aiohttp app
(and the server actions the action route dispatches to) and fails for any route without
a row: no route ships without a decided policy. Each GET row is also checked with HEAD.

Every error answer is checked to be in its API's error format; no answer to ``none``, a dead
token or ``other`` may contain alpha's data (the resources' names, metadata, key, image bytes
all carry the marker :data:`SECRET`), no answer to another user than alpha's member its key
(:data:`MEMBER_ONLY`), and no answer to a non-admin the compute hosts' names.
Rows that change state (delete, stop, upload...) name a ``fresh`` factory: every caller
expected to succeed acts on a resource of its own, so the outcome never depends on the
order of the calls. The whole matrix runs twice, on a cloud on SQLite and on one on
PostgreSQL (one cloud per database serves all its rows).
"""

from __future__ import annotations

import asyncio
import json
import string
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from http import HTTPStatus
from typing import Any

import pytest
import pytest_asyncio
import sqlalchemy as sa
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from novalite.api.app import build_app
from novalite.api.compute.server_actions import HANDLERS as SERVER_ACTIONS
from novalite.api.errors import NOVA_FAULT_NAMES
from novalite.db import schema as t
from novalite.store import consoles, hosts
from novalite.store.tokens import token_hash
from novalite.timeutil import utcnow
from tests.conftest import Cloud, Response, create_pg_database, drop_pg_database, make_settings, start_cloud
from tests.functional.helpers import Who, make_image, make_person, unlimited_quota, wait_status

pytestmark = pytest.mark.asyncio(loop_scope="module")

#: The callers with a column in ``TABLE``, in the order each row calls them.
COLUMNS = ("none", "reader", "member", "manager", "other", "admin")
#: Callers whose token is dead: each gets exactly what ``none`` gets (keystonemiddleware's 401 for
#: anything that needs a token), so they have no column of their own.
DEAD = ("expired", "revoked")
ROLES = (COLUMNS[0], *DEAD, *COLUMNS[1:])
#: Carried by every piece of project alpha's data that ``none``, ``other`` and the dead tokens must never see.
SECRET = "alphasecret"
#: Carried by what belongs to alpha's member as a user (its key pair), not to the project: no other
#: user of alpha, reader or manager, may see it either.
MEMBER_ONLY = "memberonly"
#: The compute microversion of rows that name none (what openstackclient negotiates).
LATEST = "2.100"
PASSWORD = "alpha-pass-1"
PATCH = {"Content-Type": "application/openstack-images-v2.1-json-patch"}
OCTET = {"Content-Type": "application/octet-stream"}
IMAGE_BYTES = (SECRET + "-bytes ") * 64


def ssh_public_key(comment: str) -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " " + comment


#: The public key of the key pairs callers create (alpha's own one carries the marker instead).
PUBLIC_KEY = ssh_public_key("made-by-caller")
PUBLIC_BYTES = "public image data " * 64


@dataclass(frozen=True)
class Row:
    """One route (and body) and the status each caller gets.

    ``route`` is the route's template exactly as registered; its ``{params}`` are filled from
    the world's values, or from ``args`` (param -> template over the values). ``query``,
    ``body`` and ``headers`` are templates too. ``fresh`` names a factory in ``FRESH`` that
    gives each caller expected to succeed (2xx) its own resource.
    """

    method: str
    route: str
    none: int
    reader: int
    member: int
    manager: int
    other: int
    admin: int
    query: str = ""
    body: Any = None
    raw: str | None = None
    headers: dict[str, str] | None = None
    mv: str | None = None
    args: dict[str, str] = field(default_factory=dict)
    fresh: str | None = None
    #: Who gets fresh resources, when not just those expected to succeed.
    fresh_for: tuple[str, ...] = ()
    #: An operator's endpoint, open to whom the network allows (/metrics): host names allowed.
    operator_view: bool = False
    #: Tells apart rows of one route in test ids.
    label: str = ""

    def expected(self, role: str) -> int:
        """The status ``role`` gets: its column, or ``none``'s for an expired or revoked token."""
        status: int = getattr(self, "none" if role in DEAD else role)
        return status


C = "/compute/v2.1"
V3 = "/identity/v3"
G = "/image/v2"
SERVER = C + "/servers/{server_id}"
ACTION = SERVER + "/action"
FLAVOR = C + "/flavors/{flavor_id}"
GRANT = V3 + "/projects/{project_id}/users/{user_id}/roles/{role_id}"
GRANTEE = {"user_id": "{grantee_id}", "role_id": "{member_role_id}"}
SHARED = {"image_id": "{shared_image_id}"}
PUBLIC_ALPHA = {"image_id": "{public_alpha_image_id}"}
COMPUTE_SERVICE = {"ident": "{compute_service_id}"}
N = "/network/v2.0"
NETWORK = N + "/networks/{network_id}"
TAGS = N + "/{resource}/{id}/tags"
NET_TAGS = {"resource": "networks", "id": "{network_id}"}
NEW_SERVER = {
    "server": {"name": "made-by-caller", "imageRef": "{public_image_id}", "flavorRef": "1", "networks": "none"}
}


def with_server(**changes: str) -> dict[str, Any]:
    """``NEW_SERVER`` with some attributes changed."""
    return {"server": {**NEW_SERVER["server"], **changes}}


NEW_IMAGE = {"name": "made-by-caller", "disk_format": "raw", "container_format": "bare"}
TOKEN_LOGIN = {
    "auth": {
        "identity": {"methods": ["token"], "token": {"id": "{member_token}"}},
        "scope": {"project": {"id": "{project_id}"}},
    }
}
SUBJECT = {"X-Subject-Token": "{subject_token}"}


def token_login(token: str) -> dict[str, Any]:
    """``TOKEN_LOGIN`` with another token as the credential."""
    return {"auth": {**TOKEN_LOGIN["auth"], "identity": {"methods": ["token"], "token": {"id": token}}}}


# fmt: off
TABLE: list[Row] = [
    # method    route                                           none reader member manager other admin
    Row("GET", "/",                                               200, 200, 200, 200, 200, 200),
    # Prometheus scrapes without a token, from metrics_allow_from only (loopback by default, which
    # is where this test's callers are; tests/functional/test_metrics.py checks the 403). It
    # carries counts and host names — an operator's view, by design — and no project's data.
    Row("GET", "/metrics",                                        200, 200, 200, 200, 200, 200,
        operator_view=True),
    # The dashboard's static files: the page logs in with the public APIs, so it holds no data.
    Row("GET", "/dashboard",                                      200, 200, 200, 200, 200, 200),
    Row("GET", "/dashboard/",                                     200, 200, 200, 200, 200, 200),
    Row("GET", "/dashboard/index.html",                           200, 200, 200, 200, 200, 200),
    Row("GET", "/dashboard/{name}",                               200, 200, 200, 200, 200, 200,
        args={"name": "app.js"}),
    # -- Keystone: discovery and tokens -----------------------------------------------------
    Row("GET", "/identity",                                       300, 300, 300, 300, 300, 300),
    Row("GET", "/identity/",                                      300, 300, 300, 300, 300, 300),
    Row("GET", V3,                                                200, 200, 200, 200, 200, 200),
    Row("GET", V3 + "/",                                          200, 200, 200, 200, 200, 200),
    # Logging in needs no token: what counts is the credential in the body (here alpha's member's token).
    Row("POST", V3 + "/auth/tokens",                              201, 201, 201, 201, 201, 201, body=TOKEN_LOGIN),
    # A dead token is no credential either: it is never exchanged for a live one.
    Row("POST", V3 + "/auth/tokens",                              401, 401, 401, 401, 401, 401,
        body=token_login("{expired_token}"), label="with an expired token"),
    Row("POST", V3 + "/auth/tokens",                              401, 401, 401, 401, 401, 401,
        body=token_login("{revoked_token}"), label="with a revoked token"),
    # identity:validate_token / revoke_token: the token's own user, or admin.
    Row("GET", V3 + "/auth/tokens",                               401, 403, 200, 403, 403, 200, headers=SUBJECT),
    Row("DELETE", V3 + "/auth/tokens",                            401, 403, 204, 403, 403, 204, headers=SUBJECT,
        fresh="member_token"),
    Row("GET", V3 + "/auth/catalog",                              401, 200, 200, 200, 200, 200),
    Row("GET", V3 + "/auth/projects",                             401, 200, 200, 200, 200, 200),
    Row("GET", V3 + "/auth/domains",                              401, 200, 200, 200, 200, 200),
    Row("GET", V3 + "/auth/system",                               401, 200, 200, 200, 200, 200),
    # -- Keystone: catalog (admin or system reader), regions (anyone) ----------------------
    Row("GET", V3 + "/services",                                  401, 403, 403, 403, 403, 200),
    Row("GET", V3 + "/services/{service_id}",                     401, 403, 403, 403, 403, 200),
    Row("GET", V3 + "/endpoints",                                 401, 403, 403, 403, 403, 200),
    Row("GET", V3 + "/endpoints/{endpoint_id}",                   401, 403, 403, 403, 403, 200),
    Row("GET", V3 + "/regions",                                   401, 200, 200, 200, 200, 200),
    Row("GET", V3 + "/regions/{region_id}",                       401, 200, 200, 200, 200, 200),
    # -- Keystone: domains (one, read-only: even admin cannot create one) -------------------
    Row("GET", V3 + "/domains",                                   401, 403, 403, 403, 403, 200),
    Row("GET", V3 + "/domains/{domain_id}",                       401, 200, 200, 200, 200, 200),
    Row("POST", V3 + "/domains",                                  401, 403, 403, 403, 403, 403,
        body={"domain": {"name": "d-{uniq}"}}),
    # -- Keystone: projects (admin; a token may read its own project) -----------------------
    Row("GET", V3 + "/projects",                                  401, 403, 403, 403, 403, 200),
    Row("GET", V3 + "/projects/{project_id}",                     401, 200, 200, 200, 403, 200),
    Row("POST", V3 + "/projects",                                 401, 403, 403, 403, 403, 201,
        body={"project": {"name": "p-{uniq}"}}, fresh="unique"),
    Row("PATCH", V3 + "/projects/{project_id}",                   401, 403, 403, 403, 403, 200,
        body={"project": {"description": "alpha"}}),
    Row("DELETE", V3 + "/projects/{project_id}",                  401, 403, 403, 403, 403, 204, fresh="project"),
    # -- Keystone: users (admin; a user may read itself, its projects, change its password) --
    Row("GET", V3 + "/users",                                     401, 403, 403, 403, 403, 200),
    Row("GET", V3 + "/users/{user_id}",                           401, 403, 200, 403, 403, 200),
    Row("POST", V3 + "/users",                                    401, 403, 403, 403, 403, 201,
        body={"user": {"name": "u-{uniq}"}}, fresh="unique"),
    Row("PATCH", V3 + "/users/{user_id}",                         401, 403, 403, 403, 403, 200,
        body={"user": {"description": "alpha member"}}),
    Row("DELETE", V3 + "/users/{user_id}",                        401, 403, 403, 403, 403, 204, fresh="user"),
    Row("POST", V3 + "/users/{user_id}/password",                 401, 403, 204, 403, 403, 204,
        body={"user": {"password": PASSWORD, "original_password": PASSWORD}}),
    Row("GET", V3 + "/users/{user_id}/projects",                  401, 403, 200, 403, 403, 200),
    Row("GET", V3 + "/users/{user_id}/groups",                    401, 403, 200, 403, 403, 200),
    # -- Keystone: roles, grants, assignments (admin) --------------------------------------
    Row("GET", V3 + "/roles",                                     401, 403, 403, 403, 403, 200),
    Row("GET", V3 + "/roles/{role_id}",                           401, 403, 403, 403, 403, 200),
    Row("POST", V3 + "/roles",                                    401, 403, 403, 403, 403, 201,
        body={"role": {"name": "r-{uniq}"}}, fresh="unique"),
    Row("PATCH", V3 + "/roles/{role_id}",                         401, 403, 403, 403, 403, 200,
        body={"role": {"description": "custom"}}),
    Row("DELETE", V3 + "/roles/{role_id}",                        401, 403, 403, 403, 403, 204, fresh="role"),
    Row("GET", V3 + "/role_inferences",                           401, 403, 403, 403, 403, 200),
    Row("PUT", GRANT,                                             401, 403, 403, 403, 403, 204, args=GRANTEE),
    Row("GET", GRANT,                                             401, 403, 403, 403, 403, 204, args=GRANTEE,
        fresh="grant"),
    Row("DELETE", GRANT,                                          401, 403, 403, 403, 403, 204, args=GRANTEE,
        fresh="grant"),
    Row("GET", V3 + "/projects/{project_id}/users/{user_id}/roles", 401, 403, 403, 403, 403, 200, args=GRANTEE),
    Row("GET", V3 + "/role_assignments",                          401, 403, 403, 403, 403, 200),
    # -- Nova: discovery ------------------------------------------------------------------------
    Row("GET", "/compute/",                                       200, 200, 200, 200, 200, 200),
    Row("GET", C,                                                 200, 200, 200, 200, 200, 200),
    Row("GET", C + "/",                                           200, 200, 200, 200, 200, 200),
    # -- Nova: servers (project reader reads, project member changes, others: 404) -------------
    Row("POST", C + "/servers",                                   401, 403, 202, 202, 202, 202, body=NEW_SERVER),
    # Nobody boots from what they may not see: alpha's private image, flavor, or another user's key pair.
    Row("POST", C + "/servers",                                   401, 403, 202, 202, 400, 202,
        body=with_server(imageRef="{image_id}"), label="alpha's private image"),
    Row("POST", C + "/servers",                                   401, 403, 202, 202, 400, 202,
        body=with_server(flavorRef="{flavor_id}"), label="alpha's private flavor"),
    Row("POST", C + "/servers",                                   401, 403, 202, 400, 400, 400,
        body=with_server(key_name="{name}"), label="alpha's member's key pair"),
    # servers:create:forced_host and :requested_destination are ADMIN.
    Row("POST", C + "/servers",                                   401, 403, 403, 403, 403, 202,
        body=with_server(availability_zone="{zone}:{host}"), label="forced host"),
    Row("POST", C + "/servers",                                   401, 403, 403, 403, 403, 202,
        body=with_server(host="{host}"), label="requested host"),
    Row("GET", C + "/servers",                                    401, 200, 200, 200, 200, 200),
    Row("GET", C + "/servers",                                    401, 403, 403, 403, 403, 200, query="all_tenants=1"),
    Row("GET", C + "/servers/detail",                             401, 200, 200, 200, 200, 200),
    # A non-admin's project filter is ignored (beta sees only beta's servers).
    Row("GET", C + "/servers/detail",                             401, 200, 200, 200, 200, 200,
        query="project_id={project_id}"),
    Row("GET", SERVER,                                            401, 200, 200, 200, 404, 200),
    Row("PUT", SERVER,                                            401, 403, 200, 200, 404, 200,
        body={"server": {"name": SECRET + "-server"}}),
    Row("DELETE", SERVER,                                         401, 403, 204, 204, 404, 204, fresh="server"),
    Row("GET", SERVER + "/ips",                                   401, 200, 200, 200, 404, 200),
    Row("GET", SERVER + "/ips/{network}",                         401, 200, 200, 200, 404, 200,
        args={"network": "{net_name}"}, fresh="networked_server"),
    Row("GET", SERVER + "/os-interface",                          401, 200, 200, 200, 404, 200),
    Row("GET", SERVER + "/os-security-groups",                    401, 200, 200, 200, 404, 200),
    Row("GET", SERVER + "/os-interface/{port_id}",                401, 200, 200, 200, 404, 200,
        fresh="networked_server"),
    Row("POST", SERVER + "/os-interface",                         401, 403, 200, 200, 404, 200,
        body={"interfaceAttachment": {"net_id": "{network_id}"}}, fresh="server"),
    Row("DELETE", SERVER + "/os-interface/{port_id}",             401, 403, 202, 202, 404, 202,
        fresh="networked_server"),
    # -- Nova: server actions (one row per action the route dispatches to) ----------------------
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"os-stop": None}, fresh="server"),
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"os-start": None}, fresh="stopped_server"),
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"pause": None}, fresh="server"),
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"unpause": None}, fresh="paused_server"),
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"suspend": None}, fresh="server"),
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"resume": None}, fresh="suspended_server"),
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"reboot": {"type": "SOFT"}}, fresh="server"),
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"lock": None}, fresh="server"),
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202, body={"unlock": None}),
    # os-lock-server:unlock:unlock_override is ADMIN (not opened to the project manager, even in Nova 2025.2):
    # neither a project member nor its manager may undo an admin's lock.
    Row("POST", ACTION,                                           401, 403, 403, 403, 404, 202,
        body={"unlock": None}, fresh="admin_locked_server", fresh_for=("member", "manager", "admin"),
        label="locked by admin"),
    # os-admin-actions:reset_state is ADMIN: checked before the server is looked up, so 403 for beta too.
    Row("POST", ACTION,                                           401, 403, 403, 403, 403, 202,
        body={"os-resetState": {"state": "active"}}),
    # os-deferred-delete:restore and :force are project member or admin (Nova's defaults).
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"restore": None}, fresh="soft_deleted_server"),
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"forceDelete": None}, fresh="soft_deleted_server"),
    # Moves (issue 10). resize: project member or admin; confirm/revert need a resized server (409
    # on this one); migrate, live migrate and evacuate: admin, the server looked up first (404 to
    # beta); evacuating from a host that is up is refused (400, as Nova maps ComputeServiceInUse).
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"resize": {"flavorRef": "2"}}, fresh="server"),
    # A server's networks (issue 12): ips and os-interface reads are the project reader's, attach,
    # detach and the security-group actions its member's (Nova's defaults).
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"addSecurityGroup": {"name": "{group_id}"}}, fresh="networked_server"),
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"removeSecurityGroup": {"name": "{default_group_id}"}}, fresh="networked_server"),
    Row("POST", ACTION,                                           401, 403, 409, 409, 404, 409,
        body={"confirmResize": None}),
    Row("POST", ACTION,                                           401, 403, 409, 409, 404, 409,
        body={"revertResize": None}),
    Row("POST", ACTION,                                           401, 403, 403, 403, 404, 202,
        body={"migrate": None}, fresh="server"),
    Row("POST", ACTION,                                           401, 403, 403, 403, 404, 202,
        body={"os-migrateLive": {"host": None, "block_migration": "auto"}}, mv="2.25", fresh="server"),
    Row("POST", ACTION,                                           401, 403, 403, 403, 404, 400,
        body={"evacuate": {}}, mv="2.29"),
    # Copies and renewals (issue 11): project member or admin; shelveOffload is admin.
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"createImage": {"name": "made-by-caller"}}, mv="2.45", fresh="server"),
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"createBackup": {"name": "made-by-caller", "backup_type": "daily", "rotation": 1}},
        mv="2.45", fresh="server"),
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"rebuild": {"imageRef": "{image_id}"}}, fresh="server"),
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"shelve": None}, fresh="server"),
    Row("POST", ACTION,                                           401, 403, 403, 403, 404, 409,
        body={"shelveOffload": None}),
    Row("POST", ACTION,                                           401, 403, 202, 202, 404, 202,
        body={"unshelve": None}, fresh="shelved_server"),
    # The console log may hold secrets: member or admin (a reader may not).
    Row("POST", ACTION,                                           401, 403, 200, 200, 404, 200,
        body={"os-getConsoleOutput": {}}),
    # Member or admin pass the policy (and get the fake guest's screen).
    Row("POST", ACTION,                                           401, 403, 200, 200, 404, 200,
        body={"os-getVNCConsole": {"type": "novnc"}}, mv="2.5"),
    Row("POST", SERVER + "/remote-consoles",                      401, 403, 200, 200, 404, 200,
        body={"remote_console": {"protocol": "vnc", "type": "novnc"}}),
    # -- Nova: server metadata, instance actions ------------------------------------------------
    Row("GET", SERVER + "/metadata",                              401, 200, 200, 200, 404, 200),
    Row("PUT", SERVER + "/metadata",                              401, 403, 200, 200, 404, 200,
        body={"metadata": {"akey": SECRET + "-meta"}}),
    Row("POST", SERVER + "/metadata",                             401, 403, 200, 200, 404, 200,
        body={"metadata": {"bkey": SECRET + "-meta2"}}),
    Row("GET", SERVER + "/metadata/{key}",                        401, 200, 200, 200, 404, 200),
    Row("PUT", SERVER + "/metadata/{key}",                        401, 403, 200, 200, 404, 200,
        body={"meta": {"akey": SECRET + "-meta"}}),
    Row("DELETE", SERVER + "/metadata/{key}",                     401, 403, 204, 204, 404, 204, fresh="metadata_key"),
    Row("GET", SERVER + "/os-instance-actions",                   401, 200, 200, 200, 404, 200),
    Row("GET", SERVER + "/os-instance-actions/{request_id}",      401, 200, 200, 200, 404, 200),
    # Moves (issue 10): the server first (404 to another project), then admin only, as Nova.
    # No live migration runs in this world: the admin meets "no such migration" or the state check.
    Row("GET", SERVER + "/migrations",                            401, 403, 403, 403, 404, 200, mv="2.80"),
    Row("GET", SERVER + "/migrations/{migration_id}",             401, 403, 403, 403, 404, 404, mv="2.80",
        args={"migration_id": "42"}),
    Row("DELETE", SERVER + "/migrations/{migration_id}",          401, 403, 403, 403, 404, 409, mv="2.80",
        args={"migration_id": "42"}),
    Row("POST", SERVER + "/migrations/{migration_id}/action",     401, 403, 403, 403, 404, 409, mv="2.80",
        args={"migration_id": "42"}, body={"force_complete": None}),
    Row("GET", C + "/os-migrations",                              401, 403, 403, 403, 403, 200, mv="2.80"),
    # -- Nova: flavors (anyone reads what it may see; alpha's private flavor is 404 to beta) ---
    Row("GET", C + "/flavors",                                    401, 200, 200, 200, 200, 200),
    Row("GET", C + "/flavors/detail",                             401, 200, 200, 200, 200, 200),
    Row("GET", C + "/flavors/detail",                             401, 200, 200, 200, 200, 200, query="is_public=none"),
    Row("GET", FLAVOR,                                            401, 200, 200, 200, 404, 200),
    Row("POST", C + "/flavors",                                   401, 403, 403, 403, 403, 200,
        body={"flavor": {"name": "f-{uniq}", "ram": 64, "vcpus": 1, "disk": 0}}, fresh="unique"),
    Row("PUT", FLAVOR,                                            401, 403, 403, 403, 403, 200,
        body={"flavor": {"description": "alpha only"}}),
    Row("DELETE", FLAVOR,                                         401, 403, 403, 403, 403, 202, fresh="flavor"),
    Row("GET", FLAVOR + "/os-extra_specs",                        401, 200, 200, 200, 404, 200),
    Row("POST", FLAVOR + "/os-extra_specs",                       401, 403, 403, 403, 403, 200,
        body={"extra_specs": {"akey": "v1"}}),
    Row("GET", FLAVOR + "/os-extra_specs/{key}",                  401, 200, 200, 200, 404, 200),
    Row("PUT", FLAVOR + "/os-extra_specs/{key}",                  401, 403, 403, 403, 403, 200, body={"akey": "v1"}),
    Row("DELETE", FLAVOR + "/os-extra_specs/{key}",               401, 403, 403, 403, 403, 200, fresh="extra_spec"),
    Row("GET", FLAVOR + "/os-flavor-access",                      401, 403, 403, 403, 403, 200),
    Row("POST", FLAVOR + "/action",                               401, 403, 403, 403, 403, 200,
        body={"addTenantAccess": {"tenant": "{new_project_id}"}}, fresh="new_project"),
    Row("POST", FLAVOR + "/action",                               401, 403, 403, 403, 403, 200,
        body={"removeTenantAccess": {"tenant": "{gamma_id}"}}, fresh="flavor_access"),
    # -- Nova: key pairs (a user's own; admin names another user with user_id, 2.10+) ----------
    Row("GET", C + "/os-keypairs",                                401, 200, 200, 200, 200, 200),
    Row("GET", C + "/os-keypairs",                                401, 403, 200, 403, 403, 200,
        query="user_id={member_user_id}"),
    Row("POST", C + "/os-keypairs",                               401, 201, 201, 201, 201, 201,
        body={"keypair": {"name": "k-{uniq}", "public_key": PUBLIC_KEY}}, fresh="unique"),
    Row("POST", C + "/os-keypairs",                               401, 403, 201, 403, 403, 201,
        body={"keypair": {"name": "k-{uniq}", "public_key": PUBLIC_KEY, "user_id": "{member_user_id}"}},
        fresh="unique", label="for alpha's member"),
    Row("GET", C + "/os-keypairs/{name}",                         401, 404, 200, 404, 404, 404),
    Row("GET", C + "/os-keypairs/{name}",                         401, 403, 200, 403, 403, 200,
        query="user_id={member_user_id}"),
    Row("DELETE", C + "/os-keypairs/{name}",                      401, 404, 204, 404, 404, 404, fresh="keypair"),
    Row("DELETE", C + "/os-keypairs/{name}",                      401, 403, 204, 403, 403, 204,
        query="user_id={member_user_id}", fresh="keypair"),
    # -- Nova: hypervisors, services, aggregates (ADMIN) ---------------------------------------
    Row("GET", C + "/os-hypervisors",                             401, 403, 403, 403, 403, 200),
    Row("GET", C + "/os-hypervisors/detail",                      401, 403, 403, 403, 403, 200),
    Row("GET", C + "/os-hypervisors/statistics",                  401, 403, 403, 403, 403, 200, mv="2.87"),
    Row("GET", C + "/os-hypervisors/{ident}",                     401, 403, 403, 403, 403, 200),
    Row("GET", C + "/os-hypervisors/{ident}/uptime",              401, 403, 403, 403, 403, 200, mv="2.87"),
    Row("GET", C + "/os-hypervisors/{pattern}/search",            401, 403, 403, 403, 403, 200, mv="2.52"),
    Row("GET", C + "/os-hypervisors/{pattern}/servers",           401, 403, 403, 403, 403, 200, mv="2.52"),
    Row("GET", C + "/os-services",                                401, 403, 403, 403, 403, 200),
    Row("PUT", C + "/os-services/{ident}",                        401, 403, 403, 403, 403, 200,
        body={"status": "enabled"}, args=COMPUTE_SERVICE),
    Row("PUT", C + "/os-services/{ident}",                        401, 403, 403, 403, 403, 200,
        body={"host": "{host}", "binary": "nova-compute"}, args={"ident": "enable"}, mv="2.52", label="legacy"),
    Row("DELETE", C + "/os-services/{ident}",                     401, 403, 403, 403, 403, 204,
        args=COMPUTE_SERVICE, fresh="service"),
    Row("GET", C + "/os-aggregates",                              401, 403, 403, 403, 403, 200),
    Row("GET", C + "/os-aggregates/{aggregate_id}",               401, 403, 403, 403, 403, 404),
    # -- Nova: zones (anyone; the host detail is ADMIN), limits, quotas, usage -----------------
    Row("GET", C + "/os-availability-zone",                       401, 200, 200, 200, 200, 200),
    Row("GET", C + "/os-availability-zone/detail",                401, 403, 403, 403, 403, 200),
    Row("GET", C + "/limits",                                     401, 200, 200, 200, 200, 200),
    Row("GET", C + "/limits",                                     401, 200, 200, 200, 403, 200,
        query="tenant_id={project_id}"),
    Row("GET", C + "/os-quota-sets/{project_id}",                 401, 200, 200, 200, 403, 200),
    Row("GET", C + "/os-quota-sets/{project_id}/defaults",        401, 200, 200, 200, 200, 200),
    Row("GET", C + "/os-quota-sets/{project_id}/detail",          401, 200, 200, 200, 403, 200),
    # Nobody but admin changes quotas, not even of their own project (admin acts on a project of its own).
    Row("PUT", C + "/os-quota-sets/{project_id}",                 401, 403, 403, 403, 403, 200,
        body={"quota_set": {"instances": 100}}, fresh="project"),
    Row("DELETE", C + "/os-quota-sets/{project_id}",              401, 403, 403, 403, 403, 202, fresh="project"),
    Row("GET", C + "/os-simple-tenant-usage",                     401, 403, 403, 403, 403, 200),
    Row("GET", C + "/os-simple-tenant-usage/{tenant_id}",         401, 200, 200, 200, 403, 200),
    Row("GET", C + "/os-console-auth-tokens/{token}",             401, 403, 403, 403, 403, 200),
    # -- Glance: discovery, schemas -------------------------------------------------------------
    Row("GET", "/image",                                          300, 300, 300, 300, 300, 300),
    Row("GET", "/image/",                                         300, 300, 300, 300, 300, 300),
    Row("GET", "/image/versions",                                 200, 200, 200, 200, 200, 200),
    Row("GET", G,                                                 300, 300, 300, 300, 300, 300),
    Row("GET", G + "/",                                           300, 300, 300, 300, 300, 300),
    Row("GET", G + "/schemas/image",                              401, 200, 200, 200, 200, 200),
    Row("GET", G + "/schemas/images",                             401, 200, 200, 200, 200, 200),
    Row("GET", G + "/schemas/member",                             401, 200, 200, 200, 200, 200),
    Row("GET", G + "/schemas/members",                            401, 200, 200, 200, 200, 200),
    Row("GET", G + "/info/import",                                401, 200, 200, 200, 200, 200),
    # -- Glance: images (project reader reads, project member changes; others: 404) -----------
    Row("POST", G + "/images",                                    401, 403, 201, 201, 201, 201, body=NEW_IMAGE),
    # publicize_image is ADMIN; only admin creates images for another project.
    Row("POST", G + "/images",                                    401, 403, 403, 403, 403, 201,
        body={**NEW_IMAGE, "visibility": "public"}, label="public"),
    Row("POST", G + "/images",                                    401, 403, 403, 403, 403, 201,
        body={**NEW_IMAGE, "owner": "{gamma_id}"}, label="for gamma"),
    Row("GET", G + "/images",                                     401, 200, 200, 200, 200, 200),
    Row("GET", G + "/images",                                     401, 200, 200, 200, 200, 200,
        query="owner={project_id}"),
    Row("GET", G + "/images",                                     401, 200, 200, 200, 200, 200, query="visibility=all"),
    Row("GET", G + "/images",                                     401, 200, 200, 200, 200, 200,
        query="visibility=shared&member_status=all"),
    Row("GET", G + "/images",                                     401, 200, 200, 200, 200, 200,
        query="visibility=private"),
    Row("GET", G + "/images/{image_id}",                          401, 200, 200, 200, 404, 200),
    Row("PATCH", G + "/images/{image_id}",                        401, 403, 200, 200, 404, 200,
        body=[{"op": "add", "path": "/x_note", "value": "alpha"}], headers=PATCH),
    Row("PATCH", G + "/images/{image_id}",                        401, 403, 403, 403, 404, 200,
        body=[{"op": "replace", "path": "/visibility", "value": "public"}], headers=PATCH, fresh="unmarked_image",
        label="publicize"),
    Row("PATCH", G + "/images/{image_id}",                        401, 403, 403, 403, 404, 200,
        body=[{"op": "replace", "path": "/owner", "value": "{gamma_id}"}], headers=PATCH, fresh="image",
        label="give away"),
    Row("DELETE", G + "/images/{image_id}",                       401, 403, 204, 204, 404, 204, fresh="image"),
    Row("PUT", G + "/images/{image_id}/tags/{tag}",               401, 403, 204, 204, 404, 204),
    Row("DELETE", G + "/images/{image_id}/tags/{tag}",            401, 403, 204, 204, 404, 204, fresh="tag"),
    Row("POST", G + "/images/{image_id}/actions/{action}",        401, 403, 204, 204, 404, 204,
        args={"action": "deactivate"}, fresh="image"),
    Row("POST", G + "/images/{image_id}/actions/{action}",        401, 403, 204, 204, 404, 204,
        args={"action": "reactivate"}, fresh="deactivated_image"),
    Row("PUT", G + "/images/{image_id}/file",                     401, 403, 204, 204, 404, 204,
        raw=IMAGE_BYTES, headers=OCTET, fresh="queued_image"),
    Row("GET", G + "/images/{image_id}/file",                     401, 200, 200, 200, 404, 200),
    Row("PUT", G + "/images/{image_id}/stage",                    401, 403, 204, 204, 404, 204,
        raw=IMAGE_BYTES, headers=OCTET, fresh="queued_image"),
    Row("POST", G + "/images/{image_id}/import",                  401, 403, 202, 202, 404, 202,
        body={"method": {"name": "glance-direct"}}, fresh="staged_image"),
    # -- Glance: alpha's public image: everyone reads it, only alpha's members (and admin) change it --
    Row("GET", G + "/images/{image_id}",                          401, 200, 200, 200, 200, 200, args=PUBLIC_ALPHA,
        label="alpha's public image"),
    Row("GET", G + "/images/{image_id}/file",                     401, 200, 200, 200, 200, 200, args=PUBLIC_ALPHA,
        label="alpha's public image"),
    Row("PATCH", G + "/images/{image_id}",                        401, 403, 200, 200, 403, 200, args=PUBLIC_ALPHA,
        body=[{"op": "add", "path": "/x_note", "value": "alpha"}], headers=PATCH, label="alpha's public image"),
    Row("PUT", G + "/images/{image_id}/tags/{tag}",               401, 403, 204, 204, 403, 204, args=PUBLIC_ALPHA,
        label="alpha's public image"),
    Row("DELETE", G + "/images/{image_id}",                       401, 403, 204, 204, 403, 204, args=PUBLIC_ALPHA,
        fresh="public_image", label="alpha's public image"),
    # -- Glance: members of alpha's shared image (shared with gamma, not with beta) -----------
    Row("POST", G + "/images/{image_id}/members",                 401, 403, 200, 200, 404, 200,
        body={"member": "{new_member}"}, args=SHARED, fresh="new_member"),
    Row("GET", G + "/images/{image_id}/members",                  401, 200, 200, 200, 404, 200, args=SHARED),
    Row("GET", G + "/images/{image_id}/members/{member_id}",      401, 200, 200, 200, 404, 200, args=SHARED),
    # Only the member project itself (or admin) accepts or rejects a shared image.
    Row("PUT", G + "/images/{image_id}/members/{member_id}",      401, 403, 403, 403, 404, 200,
        body={"status": "accepted"}, args=SHARED),
    Row("DELETE", G + "/images/{image_id}/members/{member_id}",   401, 403, 204, 204, 404, 204,
        args=SHARED, fresh="image_member"),
    # -- Neutron (issue 12): discovery public; project reader reads, member changes; others: 404 --
    Row("GET", "/network",                                        200, 200, 200, 200, 200, 200),
    Row("GET", "/network/",                                       200, 200, 200, 200, 200, 200),
    Row("GET", N,                                                 200, 200, 200, 200, 200, 200),
    Row("GET", N + "/",                                           200, 200, 200, 200, 200, 200),
    Row("GET", N + "/extensions",                                 401, 200, 200, 200, 200, 200),
    Row("GET", N + "/extensions/{alias}",                         401, 200, 200, 200, 200, 200,
        args={"alias": "quotas"}),
    Row("GET", N + "/networks",                                   401, 200, 200, 200, 200, 200),
    Row("POST", N + "/networks",                                  401, 403, 201, 201, 201, 201,
        body={"network": {"name": "made-by-caller"}}),
    # Provider attributes and shared networks are the admin's.
    Row("POST", N + "/networks",                                  401, 403, 403, 403, 403, 201,
        body={"network": {"name": "made-by-caller", "provider:network_type": "local"}}, label="provider"),
    Row("GET", NETWORK,                                           401, 200, 200, 200, 404, 200),
    Row("GET", NETWORK,                                           401, 200, 200, 200, 200, 200,
        args={"network_id": "{private_network_id}"}, label="the shared private network"),
    Row("PUT", NETWORK,                                           401, 403, 200, 200, 404, 200,
        body={"network": {"name": SECRET + "-net"}}),
    Row("PUT", NETWORK,                                           401, 403, 403, 403, 403, 200,
        body={"network": {"description": "novalite's built-in network"}},
        args={"network_id": "{private_network_id}"}, label="the shared private network"),
    Row("DELETE", NETWORK,                                        401, 403, 204, 204, 404, 204, fresh="network"),
    Row("GET", N + "/subnets",                                    401, 200, 200, 200, 200, 200),
    Row("POST", N + "/subnets",                                   401, 403, 201, 201, 404, 201, fresh="network",
        body={"subnet": {"network_id": "{network_id}", "cidr": "10.31.0.0/24", "ip_version": 4}}),
    Row("GET", N + "/subnets/{subnet_id}",                        401, 200, 200, 200, 404, 200),
    Row("PUT", N + "/subnets/{subnet_id}",                        401, 403, 200, 200, 404, 200,
        body={"subnet": {"name": SECRET + "-subnet"}}),
    Row("DELETE", N + "/subnets/{subnet_id}",                     401, 403, 204, 204, 404, 204, fresh="subnet"),
    Row("GET", N + "/ports",                                      401, 200, 200, 200, 200, 200),
    Row("POST", N + "/ports",                                     401, 403, 201, 201, 404, 201,
        body={"port": {"network_id": "{network_id}"}}),
    # binding:host_id is the admin's.
    Row("POST", N + "/ports",                                     401, 403, 403, 403, 404, 201,
        body={"port": {"network_id": "{network_id}", "binding:host_id": "{host}"}}, label="binding"),
    Row("GET", N + "/ports/{port_id}",                            401, 200, 200, 200, 404, 200),
    Row("PUT", N + "/ports/{port_id}",                            401, 403, 200, 200, 404, 200,
        body={"port": {"name": SECRET + "-port"}}),
    Row("DELETE", N + "/ports/{port_id}",                         401, 403, 204, 204, 404, 204, fresh="port"),
    Row("GET", N + "/security-groups",                            401, 200, 200, 200, 200, 200),
    Row("POST", N + "/security-groups",                           401, 403, 201, 201, 201, 201,
        body={"security_group": {"name": "made-by-caller"}}),
    Row("GET", N + "/security-groups/{group_id}",                 401, 200, 200, 200, 404, 200),
    Row("PUT", N + "/security-groups/{group_id}",                 401, 403, 200, 200, 404, 200,
        body={"security_group": {"name": SECRET + "-group"}}),
    Row("DELETE", N + "/security-groups/{group_id}",              401, 403, 204, 204, 404, 204,
        fresh="security_group"),
    Row("GET", N + "/security-group-rules",                       401, 200, 200, 200, 200, 200),
    Row("POST", N + "/security-group-rules",                      401, 403, 201, 201, 404, 201, fresh="security_group",
        body={"security_group_rule": {"security_group_id": "{group_id}", "direction": "ingress",
                                      "protocol": "tcp", "port_range_min": 22, "port_range_max": 22}}),
    Row("GET", N + "/security-group-rules/{rule_id}",             401, 200, 200, 200, 404, 200),
    Row("DELETE", N + "/security-group-rules/{rule_id}",          401, 403, 204, 204, 404, 204,
        fresh="security_group_rule"),
    # Quotas: a project reads its own; only the admin lists and changes them.
    Row("GET", N + "/quotas",                                     401, 403, 403, 403, 403, 200),
    Row("GET", N + "/quotas/{project_id}",                        401, 200, 200, 200, 403, 200),
    Row("GET", N + "/quotas/{project_id}/default",                401, 200, 200, 200, 403, 200),
    Row("GET", N + "/quotas/{project_id}/details",                401, 200, 200, 200, 403, 200),
    # (Changed on gamma's quotas: alpha's stay unlimited for the rows that create.)
    Row("PUT", N + "/quotas/{project_id}",                        401, 403, 403, 403, 403, 200,
        body={"quota": {"network": 100}}, args={"project_id": "{gamma_id}"}),
    Row("DELETE", N + "/quotas/{project_id}",                     401, 403, 403, 403, 403, 204,
        args={"project_id": "{gamma_id}"}),
    # Tags of alpha's resources (one route per operation for the four taggable collections).
    Row("GET", TAGS,                                              401, 200, 200, 200, 404, 200, args=NET_TAGS),
    Row("PUT", TAGS,                                              401, 403, 200, 200, 404, 200, args=NET_TAGS,
        body={"tags": ["atag"]}),
    Row("DELETE", TAGS,                                           401, 403, 204, 204, 404, 204, args=NET_TAGS,
        fresh="tagged_network"),
    Row("GET", TAGS + "/{tag}",                                   401, 204, 204, 204, 404, 204, args=NET_TAGS),
    Row("PUT", TAGS + "/{tag}",                                   401, 403, 201, 201, 404, 201, args=NET_TAGS),
    Row("DELETE", TAGS + "/{tag}",                                401, 403, 204, 204, 404, 204, args=NET_TAGS,
        fresh="tagged_network"),
]
# fmt: on


# -- the world: one cloud, alpha's resources, the callers --------------------------------------

#: Each caller with a token: (user, project, role).
PEOPLE = {
    "reader": ("alpha-reader", "alpha", "reader"),
    "member": ("alpha-member", "alpha", "member"),
    "manager": ("alpha-manager", "alpha", "manager"),
    "other": ("beta-member", "beta", "member"),
    "admin": ("admin", "admin", "admin"),
}


@dataclass
class World:
    cloud: Cloud
    people: dict[str, Who]
    #: What the templates are filled from (ids, names); tokens are added per case.
    values: dict[str, str]
    #: The marked data of alpha that must never reach ``none`` or ``other``.
    secrets: list[str]
    #: What only admins see (the compute hosts' names): never in an answer to anyone else.
    admin_secrets: list[str] = field(default_factory=list)
    #: The admin's expired and revoked tokens (``DEAD`` -> token), made once: a dead token stays dead.
    dead: dict[str, str] = field(default_factory=dict)

    def token_of(self, role: str) -> str | None:
        """The token ``role`` calls with (none for ``none``)."""
        if role == "none":
            return None
        return self.dead[role] if role in DEAD else self.people[role].token

    async def as_(self, who: str, method: str, path: str, **kw: Any) -> Response:
        """A request by one of the people, who must succeed (2xx): setting the stage, not testing."""
        resp = await self.cloud.request(method, path, token=self.people[who].token, **kw)
        assert resp.status < 300, (method, path, resp)
        return resp

    async def refresh_tokens(self) -> None:
        """New tokens for everyone: a row may have revoked the member's (password change)."""
        for role, (user, project, role_name) in PEOPLE.items():
            self.people[role] = await make_person(self.cloud, user, project, role_name)
        self.values["member_token"] = self.people["member"].token

    async def server(self) -> str:
        """A new ACTIVE server of alpha, created by its member."""
        body = {
            "server": {
                "name": SECRET + "-fresh",
                "imageRef": self.values["public_image_id"],
                "flavorRef": "1",
                "networks": "none",
            }
        }
        resp = await self.as_("member", "POST", C + "/servers", json=body, microversion=LATEST)
        server_id: str = resp.body["server"]["id"]
        await wait_status(self.cloud, server_id, "ACTIVE", token=self.people["member"].token)
        return server_id

    async def public_image(self) -> str:
        """A new public image owned by alpha (only admin may publish), with data."""
        body = {**NEW_IMAGE, "name": "alpha-public", "visibility": "public", "owner": self.values["project_id"]}
        image_id: str = (await self.as_("admin", "POST", G + "/images", json=body)).body["id"]
        await self.as_("admin", "PUT", f"{G}/images/{image_id}/file", data=PUBLIC_BYTES, headers=OCTET)
        return image_id

    async def server_in(self, action: str, status: str) -> str:
        server_id = await self.server()
        await self.as_("member", "POST", f"{C}/servers/{server_id}/action", json={action: None}, microversion=LATEST)
        await wait_status(self.cloud, server_id, status, token=self.people["member"].token)
        return server_id

    async def image(self, *, upload: bool = True, **attrs: Any) -> str:
        """A new image of alpha (private unless told), with data unless ``upload`` is false."""
        body = {"name": SECRET + "-image", "disk_format": "raw", "container_format": "bare", **attrs}
        image_id: str = (await self.as_("member", "POST", G + "/images", json=body)).body["id"]
        if upload:
            await self.as_("member", "PUT", f"{G}/images/{image_id}/file", data=IMAGE_BYTES, headers=OCTET)
        return image_id


async def wait_for_hosts(cloud: Cloud, admin: Who, count: int = 2, within: float = 15.0) -> list[dict[str, Any]]:
    """The fake hosts' hypervisors, once all ``count`` are up."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        resp = await cloud.get(C + "/os-hypervisors/detail", token=admin.token, microversion=LATEST)
        found = [h for h in resp.body["hypervisors"] if h["state"] == "up"] if resp.status == 200 else []
        if len(found) >= count:
            return found
        assert asyncio.get_running_loop().time() < deadline, f"compute hosts did not come up: {resp}"
        await asyncio.sleep(0.05)


@pytest_asyncio.fixture(
    scope="module", loop_scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
async def world(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[World]:
    """One cloud per database (as ``db_url`` in conftest), built once for all the rows."""
    tmp = tmp_path_factory.mktemp(f"authz-{request.param}")
    url = f"sqlite:///{tmp / 'novalite.db'}" if request.param == "sqlite" else await create_pg_database()
    try:
        cloud = await start_cloud(make_settings(tmp, url))
        try:
            yield await build_world(cloud)
        finally:
            await cloud.session.close()
            await cloud.node.stop()
    finally:
        if request.param == "postgres":
            await drop_pg_database(url)


async def dead_tokens(world: World) -> dict[str, str]:
    """Two tokens of the admin, logged in through Keystone: one expired, one revoked.

    Each is shown to work first, so its 401s later come from its death and nothing else. The
    expired one keeps its row (only its expiry moves into the past): novalite must refuse it
    for the time, not because it forgot it.
    """
    cloud = world.cloud
    expired, revoked = await cloud.login(), await cloud.login()
    for token in (expired, revoked):
        assert (await cloud.get(C + "/servers", token=token)).status == 200
    async with cloud.rt.db.begin() as conn:
        moved = await conn.execute(
            t.tokens.update()
            .where(t.tokens.c.id_hash == token_hash(expired))
            .values(expires_at=utcnow() - timedelta(minutes=1))
        )
    assert moved.rowcount == 1
    # As `openstack token revoke <token>`: the admin's current token revokes the other one.
    resp = await cloud.delete(V3 + "/auth/tokens", headers={"X-Subject-Token": revoked})
    assert resp.status == 204, resp
    return {"expired": expired, "revoked": revoked}


async def build_world(cloud: Cloud) -> World:
    """Alpha's server, key pair, private and shared images, private flavor; the people; the ids."""
    people = {role: await make_person(cloud, *spec) for role, spec in PEOPLE.items()}
    gamma = await make_person(cloud, "gamma-member", "gamma", "member")
    grantee = await make_person(cloud, "alpha-grantee", "alpha", "reader")
    await unlimited_quota(cloud, "alpha")
    alpha = people["member"]
    values: dict[str, str] = {
        "project_id": alpha.project_id,
        "tenant_id": alpha.project_id,
        "user_id": alpha.user_id,
        "member_user_id": alpha.user_id,
        "gamma_id": gamma.project_id,
        "grantee_id": grantee.user_id,
        "public_image_id": await make_image(cloud),
        "domain_id": "default",
        "region_id": cloud.rt.settings.region,
        "aggregate_id": "1",
        "key": "akey",
        "name": "akey",
        "tag": "atag",
        "uniq": "unused",
        "new_member": uuid.uuid4().hex,
        "new_project_id": uuid.uuid4().hex,
    }
    world = World(cloud, people, values, [SECRET])
    world.dead = await dead_tokens(world)
    values.update({f"{name}_token": token for name, token in world.dead.items()})
    admin = people["admin"]
    hypervisors = await wait_for_hosts(cloud, admin)
    world.admin_secrets = [f'"{h["hypervisor_hostname"]}"' for h in hypervisors]

    # Keystone: alpha's member gets a password (for the password change), a custom role, catalog ids.
    await world.as_("admin", "PATCH", f"{V3}/users/{alpha.user_id}", json={"user": {"password": PASSWORD}})
    await world.refresh_tokens()  # a new password revokes the user's tokens
    alpha = people["member"]
    roles = (await world.as_("admin", "GET", V3 + "/roles")).body["roles"]
    values["member_role_id"] = next(r["id"] for r in roles if r["name"] == "member")
    custom = await world.as_("admin", "POST", V3 + "/roles", json={"role": {"name": "alpha-custom"}})
    values["role_id"] = custom.body["role"]["id"]
    values["service_id"] = (await world.as_("admin", "GET", V3 + "/services")).body["services"][0]["id"]
    values["endpoint_id"] = (await world.as_("admin", "GET", V3 + "/endpoints")).body["endpoints"][0]["id"]

    # Nova: hosts and services; alpha's server (with metadata), its create action, a console token.
    values["ident"] = hypervisors[0]["id"]
    values["pattern"] = values["host"] = hypervisors[0]["hypervisor_hostname"]
    values["zone"] = cloud.rt.settings.availability_zone
    services = (await world.as_("admin", "GET", C + "/os-services", microversion=LATEST)).body["services"]
    values["compute_service_id"] = next(s["id"] for s in services if s["binary"] == "nova-compute")
    server = {
        "server": {
            "name": SECRET + "-server",
            "imageRef": values["public_image_id"],
            "flavorRef": "1",
            "networks": "none",
            "metadata": {"akey": SECRET + "-meta"},
        }
    }
    resp = await world.as_("member", "POST", C + "/servers", json=server, microversion=LATEST)
    values["server_id"] = server_id = resp.body["server"]["id"]
    active = await wait_status(cloud, server_id, "ACTIVE", token=people["admin"].token)
    actions = await world.as_("member", "GET", f"{C}/servers/{server_id}/os-instance-actions", microversion=LATEST)
    values["request_id"] = actions.body["instanceActions"][0]["request_id"]
    async with cloud.rt.db.begin() as conn:
        values["token"] = await consoles.issue(
            conn,
            instance_uuid=server_id,
            console_type="novnc",
            host="127.0.0.1",
            port=5900,
            compute_host=active["OS-EXT-SRV-ATTR:host"],
            ttl=3600,
        )

    # Nova: alpha's member's key pair (its public key carries the marker), alpha's private flavor.
    key = {"keypair": {"name": "akey", "public_key": ssh_public_key(f"{SECRET}-key-{MEMBER_ONLY}")}}
    await world.as_("member", "POST", C + "/os-keypairs", json=key, microversion=LATEST)
    flavor = {
        "flavor": {
            "name": SECRET + "-flavor",
            "id": "alpha-private",
            "ram": 64,
            "vcpus": 1,
            "disk": 1,
            "os-flavor-access:is_public": False,
        }
    }
    await world.as_("admin", "POST", C + "/flavors", json=flavor, microversion=LATEST)
    values["flavor_id"] = "alpha-private"
    flavor_action = f"{C}/flavors/alpha-private/action"
    for project in (alpha.project_id, gamma.project_id):
        await world.as_("admin", "POST", flavor_action, json={"addTenantAccess": {"tenant": project}})
    specs = {"extra_specs": {"akey": "v1"}}
    await world.as_("admin", "POST", f"{C}/flavors/alpha-private/os-extra_specs", json=specs)

    # Glance: alpha's private image (with data and a tag), its shared image (a member: gamma).
    values["image_id"] = image_id = await world.image(name=SECRET + "-private")
    await world.as_("member", "PUT", f"{G}/images/{image_id}/tags/atag")
    values["shared_image_id"] = shared = await world.image(name=SECRET + "-shared", visibility="shared")
    await world.as_("member", "POST", f"{G}/images/{shared}/members", json={"member": gamma.project_id})
    values["member_id"] = gamma.project_id
    values["public_alpha_image_id"] = await world.public_image()

    # Neutron: alpha's network (tagged), subnet, port, security group and rule; the shared `private`.
    unlimited = {"quota": {name: -1 for name in ("network", "subnet", "port", "security_group", "security_group_rule")}}
    await world.as_("admin", "PUT", f"{N}/quotas/{alpha.project_id}", json=unlimited)
    values.update(await _tagged_network(world))
    values.update(await _subnet_on(world, values["network_id"], "10.30.0.0/24"))
    values.update(await _port(world))
    values.update(await _security_group(world))
    values.update(await _security_group_rule(world))
    private = await world.as_("admin", "GET", N + "/networks?name=private")
    values["private_network_id"] = private.body["networks"][0]["id"]
    values["net_name"] = SECRET + "-net"
    values["default_group_id"] = values["group_id"]  # for callers without a fresh server (404 first)
    return world


# -- fresh resources for the callers that succeed -----------------------------------------------


async def _unique(w: World) -> dict[str, str]:
    return {"uniq": uuid.uuid4().hex[:12]}


async def _member_token(w: World) -> dict[str, str]:
    """A second token of alpha's member, to be revoked (the caller's own stays valid)."""
    who = await make_person(w.cloud, "alpha-member", "alpha", "member")
    return {"subject_token": who.token}


async def _project(w: World) -> dict[str, str]:
    resp = await w.as_("admin", "POST", V3 + "/projects", json={"project": {"name": f"p-{uuid.uuid4().hex[:8]}"}})
    return {"project_id": resp.body["project"]["id"]}


async def _user(w: World) -> dict[str, str]:
    resp = await w.as_("admin", "POST", V3 + "/users", json={"user": {"name": f"u-{uuid.uuid4().hex[:8]}"}})
    return {"user_id": resp.body["user"]["id"]}


async def _role(w: World) -> dict[str, str]:
    resp = await w.as_("admin", "POST", V3 + "/roles", json={"role": {"name": f"r-{uuid.uuid4().hex[:8]}"}})
    return {"role_id": resp.body["role"]["id"]}


async def _grant(w: World) -> dict[str, str]:
    v = w.values
    await w.as_("admin", "PUT", f"{V3}/projects/{v['project_id']}/users/{v['grantee_id']}/roles/{v['member_role_id']}")
    return {}


async def _server(w: World) -> dict[str, str]:
    return {"server_id": await w.server()}


async def _networked_server(w: World) -> dict[str, str]:
    """A new ACTIVE server of alpha with a port on alpha's network (issue 12)."""
    body = {
        "server": {
            "name": SECRET + "-networked",
            "imageRef": w.values["public_image_id"],
            "flavorRef": "1",
            "networks": [{"uuid": w.values["network_id"]}],
        }
    }
    resp = await w.as_("member", "POST", C + "/servers", json=body, microversion=LATEST)
    server_id: str = resp.body["server"]["id"]
    await wait_status(w.cloud, server_id, "ACTIVE", token=w.people["member"].token)
    (port,) = (await w.as_("member", "GET", f"{N}/ports?device_id={server_id}")).body["ports"]
    return {"server_id": server_id, "port_id": port["id"], "default_group_id": port["security_groups"][0]}


async def _stopped_server(w: World) -> dict[str, str]:
    return {"server_id": await w.server_in("os-stop", "SHUTOFF")}


async def _shelved_server(w: World) -> dict[str, str]:
    return {"server_id": await w.server_in("shelve", "SHELVED_OFFLOADED")}


async def _paused_server(w: World) -> dict[str, str]:
    return {"server_id": await w.server_in("pause", "PAUSED")}


async def _suspended_server(w: World) -> dict[str, str]:
    return {"server_id": await w.server_in("suspend", "SUSPENDED")}


async def _soft_deleted_server(w: World) -> dict[str, str]:
    """A server of alpha deleted by its member while deletes are deferred: the matrix's cloud
    deletes at once (reclaim_instance_interval 0), except for the delete of this server."""
    server_id = await w.server()
    settings = w.cloud.rt.settings
    settings.reclaim_instance_interval = 3600
    try:
        await w.as_("member", "DELETE", f"{C}/servers/{server_id}")
    finally:
        settings.reclaim_instance_interval = 0
    await wait_status(w.cloud, server_id, "SOFT_DELETED", token=w.people["member"].token)
    return {"server_id": server_id}


async def _metadata_key(w: World) -> dict[str, str]:
    key = f"d{uuid.uuid4().hex[:8]}"
    path = f"{C}/servers/{w.values['server_id']}/metadata/{key}"
    await w.as_("member", "PUT", path, json={"meta": {key: "gone soon"}})
    return {"key": key}


async def _flavor(w: World) -> dict[str, str]:
    body = {"flavor": {"name": f"f-{uuid.uuid4().hex[:8]}", "ram": 64, "vcpus": 1, "disk": 0}}
    resp = await w.as_("admin", "POST", C + "/flavors", json=body, microversion=LATEST)
    return {"flavor_id": resp.body["flavor"]["id"]}


async def _extra_spec(w: World) -> dict[str, str]:
    key = f"d{uuid.uuid4().hex[:8]}"
    path = f"{C}/flavors/{w.values['flavor_id']}/os-extra_specs"
    await w.as_("admin", "POST", path, json={"extra_specs": {key: "x"}})
    return {"key": key}


async def _new_project(w: World) -> dict[str, str]:
    return {"new_project_id": (await _project(w))["project_id"]}


async def _flavor_access(w: World) -> dict[str, str]:
    """Gamma may use alpha's private flavor (again), so that access can be removed."""
    access = await w.as_("admin", "GET", f"{C}/flavors/{w.values['flavor_id']}/os-flavor-access")
    if w.values["gamma_id"] not in {a["tenant_id"] for a in access.body["flavor_access"]}:
        body = {"addTenantAccess": {"tenant": w.values["gamma_id"]}}
        await w.as_("admin", "POST", f"{C}/flavors/{w.values['flavor_id']}/action", json=body)
    return {}


async def _keypair(w: World) -> dict[str, str]:
    name = f"k-{uuid.uuid4().hex[:8]}"
    body = {"keypair": {"name": name, "public_key": PUBLIC_KEY}}
    await w.as_("member", "POST", C + "/os-keypairs", json=body, microversion=LATEST)
    return {"name": name}


async def _service(w: World) -> dict[str, str]:
    """A compute service of a host that runs nothing (deleting a real one would take a host away)."""
    async with w.cloud.rt.db.begin() as conn:
        row = await hosts.upsert_service(conn, f"ghost-{uuid.uuid4().hex[:8]}", "nova-compute", "compute", None)
    assert row is not None
    return {"compute_service_id": row.uuid}


async def _admin_locked_server(w: World) -> dict[str, str]:
    server_id = await w.server()
    await w.as_("admin", "POST", f"{C}/servers/{server_id}/action", json={"lock": None}, microversion=LATEST)
    return {"server_id": server_id}


async def _public_image(w: World) -> dict[str, str]:
    return {"public_alpha_image_id": await w.public_image()}


async def _image(w: World) -> dict[str, str]:
    return {"image_id": await w.image()}


async def _unmarked_image(w: World) -> dict[str, str]:
    """An image of alpha without the marker: once made public, beta may rightly see it."""
    return {"image_id": await w.image(name="alpha-unmarked")}


async def _deactivated_image(w: World) -> dict[str, str]:
    image_id = await w.image()
    await w.as_("member", "POST", f"{G}/images/{image_id}/actions/deactivate")
    return {"image_id": image_id}


async def _queued_image(w: World) -> dict[str, str]:
    return {"image_id": await w.image(upload=False)}


async def _staged_image(w: World) -> dict[str, str]:
    image_id = await w.image(upload=False)
    await w.as_("member", "PUT", f"{G}/images/{image_id}/stage", data=IMAGE_BYTES, headers=OCTET)
    return {"image_id": image_id}


async def _tag(w: World) -> dict[str, str]:
    await w.as_("member", "PUT", f"{G}/images/{w.values['image_id']}/tags/{w.values['tag']}")
    return {}


async def _new_member(w: World) -> dict[str, str]:
    return {"new_member": (await _project(w))["project_id"]}


async def _image_member(w: World) -> dict[str, str]:
    member = (await _project(w))["project_id"]
    await w.as_("member", "POST", f"{G}/images/{w.values['shared_image_id']}/members", json={"member": member})
    return {"member_id": member}


async def _network(w: World) -> dict[str, str]:
    resp = await w.as_("member", "POST", N + "/networks", json={"network": {"name": SECRET + "-net"}})
    return {"network_id": resp.body["network"]["id"]}


async def _tagged_network(w: World) -> dict[str, str]:
    made = await _network(w)
    await w.as_("member", "PUT", f"{N}/networks/{made['network_id']}/tags/atag")
    return made


async def _subnet_on(w: World, network_id: str, cidr: str) -> dict[str, str]:
    body = {"subnet": {"network_id": network_id, "cidr": cidr, "ip_version": 4, "name": SECRET + "-subnet"}}
    return {"subnet_id": (await w.as_("member", "POST", N + "/subnets", json=body)).body["subnet"]["id"]}


async def _subnet(w: World) -> dict[str, str]:
    return await _subnet_on(w, (await _network(w))["network_id"], "10.32.0.0/24")


async def _port(w: World) -> dict[str, str]:
    body = {"port": {"network_id": w.values["network_id"], "name": SECRET + "-port"}}
    return {"port_id": (await w.as_("member", "POST", N + "/ports", json=body)).body["port"]["id"]}


async def _security_group(w: World) -> dict[str, str]:
    body = {"security_group": {"name": SECRET + "-group"}}
    resp = await w.as_("member", "POST", N + "/security-groups", json=body)
    return {"group_id": resp.body["security_group"]["id"]}


async def _security_group_rule(w: World) -> dict[str, str]:
    group = (await _security_group(w))["group_id"]
    body = {
        "security_group_rule": {
            "security_group_id": group,
            "direction": "ingress",
            "protocol": "udp",
            "port_range_min": 53,
            "port_range_max": 53,
            "description": SECRET,
        }
    }
    resp = await w.as_("member", "POST", N + "/security-group-rules", json=body)
    return {"rule_id": resp.body["security_group_rule"]["id"]}


FRESH: dict[str, Callable[[World], Awaitable[dict[str, str]]]] = {
    "unique": _unique,
    "member_token": _member_token,
    "project": _project,
    "user": _user,
    "role": _role,
    "grant": _grant,
    "server": _server,
    "networked_server": _networked_server,
    "stopped_server": _stopped_server,
    "paused_server": _paused_server,
    "shelved_server": _shelved_server,
    "suspended_server": _suspended_server,
    "soft_deleted_server": _soft_deleted_server,
    "metadata_key": _metadata_key,
    "flavor": _flavor,
    "extra_spec": _extra_spec,
    "new_project": _new_project,
    "flavor_access": _flavor_access,
    "keypair": _keypair,
    "service": _service,
    "image": _image,
    "admin_locked_server": _admin_locked_server,
    "public_image": _public_image,
    "unmarked_image": _unmarked_image,
    "deactivated_image": _deactivated_image,
    "queued_image": _queued_image,
    "staged_image": _staged_image,
    "tag": _tag,
    "new_member": _new_member,
    "image_member": _image_member,
    "network": _network,
    "tagged_network": _tagged_network,
    "subnet": _subnet,
    "port": _port,
    "security_group": _security_group,
    "security_group_rule": _security_group_rule,
}


# -- making the calls, judging the answers -------------------------------------------------------


def fill(template: Any, values: dict[str, str]) -> Any:
    """The template (a string, or JSON made of them) with ``{name}`` replaced from ``values``."""
    if isinstance(template, str):
        return template.format(**values)
    if isinstance(template, list):
        return [fill(item, values) for item in template]
    if isinstance(template, dict):
        return {key: fill(item, values) for key, item in template.items()}
    return template


def route_params(route: str) -> list[str]:
    return [name for _, name, _, _ in string.Formatter().parse(route) if name]


def url_of(row: Row, values: dict[str, str]) -> str:
    params = {name: fill(row.args.get(name, "{" + name + "}"), values) for name in route_params(row.route)}
    path = row.route.format(**params)
    return f"{path}?{fill(row.query, values)}" if row.query else path


async def call(w: World, row: Row, method: str, role: str, values: dict[str, str]) -> Response:
    headers = dict(fill(row.headers or {}, values))
    data: str | None = row.raw
    if row.body is not None:
        data = json.dumps(fill(row.body, values))
        headers.setdefault("Content-Type", "application/json")
    mv = row.mv or (LATEST if row.route.startswith("/compute/v2.1") else None)
    token = w.token_of(role)
    return await w.cloud.request(method, url_of(row, values), token=token, data=data, headers=headers, microversion=mv)


def error_format_problem(path: str, status: int, body: Any, headers: Any) -> str | None:
    """Why an error answer is not in its API's format (None when it is).

    A 401 is keystonemiddleware's everywhere (``{"error": {...}}`` and ``WWW-Authenticate``),
    as in front of a real Nova or Glance; other errors are Nova's ``{"<fault>": {"code",
    "message"}}``, Keystone's ``{"error": {"code", "title", "message"}}`` or Glance's
    ``{"code": "<status> <phrase>", "title", "message"}``.
    """
    phrase = HTTPStatus(status).phrase
    keystone = isinstance(body, dict) and set(body) == {"error"} and body["error"].get("code") == status
    keystone = keystone and isinstance(body["error"].get("message"), str) and body["error"].get("title") == phrase
    if status == 401 or path.startswith("/identity"):
        if not keystone:
            return "not in Keystone's error format"
        if status == 401 and not str(headers.get("WWW-Authenticate", "")).startswith("Keystone uri="):
            return "a 401 without WWW-Authenticate: Keystone uri=..."
        return None
    if path.startswith("/compute"):
        fault = NOVA_FAULT_NAMES.get(status, "computeFault")
        inner = body.get(fault) if isinstance(body, dict) and len(body) == 1 else None
        if not (isinstance(inner, dict) and inner.get("code") == status and isinstance(inner.get("message"), str)):
            return f"not in Nova's error format ({fault})"
        return None
    if path.startswith("/network"):
        inner = body.get("NeutronError") if isinstance(body, dict) and len(body) == 1 else None
        ok = isinstance(inner, dict) and set(inner) == {"type", "message", "detail"}
        return None if ok and isinstance(inner.get("message"), str) else "not in Neutron's error format"
    if path.startswith("/image"):
        ok = isinstance(body, dict) and body.get("code") == f"{status} {phrase}" and body.get("title") == phrase
        return None if ok and isinstance(body.get("message"), str) else "not in Glance's error format"
    return None


def as_text(body: Any) -> str:
    if isinstance(body, bytes):
        return body.decode("utf-8", "replace")
    return json.dumps(body)


def cases() -> list[Any]:
    """Each row, and each GET row again with HEAD (same statuses, no body)."""
    out = []
    for row in TABLE:
        methods = [row.method, "HEAD"] if row.method == "GET" else [row.method]
        for method in methods:
            extra = f" {next(iter(row.body))}" if isinstance(row.body, dict) and row.route == ACTION else ""
            extra += f" ?{row.query}" if row.query else ""
            extra += f" {row.args['action']}" if "action" in row.args else ""
            extra += f" ({row.label})" if row.label else ""
            out.append(pytest.param(row, method, id=f"{method} {row.route}{extra}"))
    return out


@pytest.mark.parametrize(("row", "method"), cases())
async def test_route_policy(world: World, row: Row, method: str) -> None:
    await world.refresh_tokens()
    outcomes: list[str] = []
    failed = False
    for role in ROLES:
        expected = row.expected(role)
        values = {**world.values, "subject_token": world.values["member_token"]}
        if row.fresh and (role in row.fresh_for or (not row.fresh_for and 200 <= expected < 300)):
            values.update(await FRESH[row.fresh](world))
        resp = await call(world, row, method, role, values)
        problems = []
        if resp.status != expected:
            problems.append(f"expected {expected}")
        if resp.status >= 400 and method != "HEAD":
            problem = error_format_problem(row.route, resp.status, resp.body, resp.headers)
            if problem:
                problems.append(problem)
        if method == "HEAD" and resp.body:
            problems.append("HEAD answered with a body")
        text = as_text(resp.body)
        if role in ("none", *DEAD, "other"):
            leaked = [s for s in world.secrets if s in text]
            if leaked:
                problems.append(f"leaks alpha's data {leaked}")
        if role not in ("member", "admin") and MEMBER_ONLY in text:
            problems.append("shows another user alpha's member's own key pair")
        if role != "admin" and not row.operator_view:
            leaked = [s for s in world.admin_secrets if s in text]
            if leaked:
                problems.append(f"shows a non-admin what only admins see {leaked}")
        failed = failed or bool(problems)
        where = url_of(row, values)
        outcomes.append(
            f"  {role:>6}: {resp.status} {'; '.join(problems) or 'ok'}"
            + (f" (on {where})" if where != url_of(row, world.values) else "")
            + f"  {text[:160]}"
        )
    assert not failed, f"{method} {url_of(row, world.values)}\n" + "\n".join(outcomes)


# -- the table covers the app -------------------------------------------------------------------


def registered_routes(app: web.Application) -> set[tuple[str, str]]:
    """(method, route template) of every route of ``app`` and of its sub-applications."""
    found: set[tuple[str, str]] = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None:
            continue
        sub = resource.get_info().get("app")
        if isinstance(sub, web.Application):
            found |= registered_routes(sub)
        else:
            found.add((route.method, resource.canonical))
    return found


async def test_every_route_has_a_decided_policy(world: World) -> None:
    registered = registered_routes(build_app(world.cloud.rt))
    decided = {(row.method, row.route) for row in TABLE}
    missing = sorted(
        (method, route)
        for method, route in registered
        if (method, route) not in decided and not (method == "HEAD" and ("GET", route) in decided)
    )
    assert not missing, f"routes without a decided policy (add them to TABLE): {missing}"
    stale = sorted(decided - registered)
    assert not stale, f"TABLE rows for routes that do not exist: {stale}"
    actions = {next(iter(row.body)) for row in TABLE if row.route == ACTION}
    assert actions == set(SERVER_ACTIONS), (
        f"server actions without a row: {sorted(set(SERVER_ACTIONS) - actions)}; "
        f"rows for unknown actions: {sorted(actions - set(SERVER_ACTIONS))}"
    )


async def test_dead_tokens_died_as_intended(world: World) -> None:
    """The matrix's dead tokens were what they claim: the expired one is still stored, with its
    expiry in the past (so it was refused for its age, not as an unknown string), the revoked one
    is gone, and the admin they belonged to still gets in with a live token."""
    async with world.cloud.rt.db.connect() as conn:
        expires = {
            name: await conn.scalar(
                sa.select(t.tokens.c.expires_at).where(t.tokens.c.id_hash == token_hash(world.dead[name]))
            )
            for name in DEAD
        }
    assert expires["expired"] is not None and expires["expired"] < utcnow(), expires
    assert expires["revoked"] is None, expires
    for name in DEAD:
        resp = await world.cloud.get(V3 + "/auth/tokens", headers={"X-Subject-Token": world.dead[name]})
        assert resp.status == 404, (name, resp)
    assert (await world.cloud.get(C + "/servers", token=world.people["admin"].token)).status == 200
