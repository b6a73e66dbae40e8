"""Property-based fuzzing of the JSON endpoints (issue 9), over real HTTP on SQLite and PostgreSQL.

Hypothesis throws bodies at each endpoint: bodies derived from novalite's own request
schemas (hypothesis-jsonschema), valid bodies with one to three fields mutated (wrong
type, null, huge or odd unicode strings, huge numbers, missing keys, extra keys), valid
bodies with NUL, a lone surrogate or another odd character slipped into one string,
arbitrary JSON values, and bytes that are no JSON at all. Whatever arrives, the API must
answer below 500, every error in its own API's format, and lose no data: a server, flavor
and image that existed before the run are listed unchanged after it.

The end of the file holds one example-based regression test per defect the fuzzing found,
and two tests of defects in ``servers.py`` left to its owner, which fail until fixed.

Each test runs Hypothesis in a worker thread (its engine is synchronous) and sends every
request to the ``cloud`` fixture's event loop, so the cloud is started once per test and
the no-data-loss check runs after all examples. ``derandomize`` makes every run (and CI)
try the same examples; ``max_examples`` keeps the file well inside 90 s on 2 cores.
"""

from __future__ import annotations

import asyncio
import copy
import ipaddress
import json
import os
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from novalite.api.compute import flavors, keypairs, quotas, server_networks, servers
from novalite.api.compute.server_actions import HANDLERS
from novalite.api.errors import NOVA_FAULT_NAMES
from novalite.api.identity import projects, tokens, users
from novalite.api.image.images import PATCH_TYPES
from novalite.api.image.schemas import image_schema
from tests.conftest import ADMIN_PASSWORD, Response
from tests.functional.helpers import create_server, make_image, wait_status

#: Examples per property; the fast endpoints get more. Chosen for < 90 s for the whole file;
#: ``NOVALITE_FUZZ_SCALE=10`` multiplies them for a deeper (still reproducible) run by hand.
SCALE = float(os.environ.get("NOVALITE_FUZZ_SCALE", "1"))
FEW, SOME, MANY = (max(1, int(n * SCALE)) for n in (40, 70, 110))


def fuzz_settings(examples: int) -> Callable[[Any], Any]:
    """Reproducible (``derandomize``), bounded, no example database written into the work tree."""
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large],
    )


# -- values ------------------------------------------------------------------------------------------------

#: Strings a careless handler trips on: empty, blanks, NUL and control characters, lone surrogates,
#: astral characters, right-to-left marks, and lengths around every limit (the body limit is 114,688 bytes).
ODD_STRINGS = [
    "",
    " ",
    " x ",
    "\x00",
    "a\x00b",
    "\x1b[31m",
    "\n",
    "\ud800",
    "x\udfffy",
    "\U0001f4a5" * 3,
    "\u202e\u0645\u0631\u062d\u0628\u0627",
    "null",
    "true",
    "-1",
    "0",
    "1e400",
    "NaN",
    "../../etc/passwd",
    "%s%n",
    "'; DROP TABLE instances; --",
    "x" * 40,
    "x" * 65,
    "x" * 256,
    "x" * 4097,
    "x" * 65536,
    "\u00e9" * 40000,
    "x" * 120_000,
]
ODD_NUMBERS = [
    0,
    -1,
    1,
    2**31,
    2**31 - 1,
    -(2**31) - 1,
    2**63,
    -(2**63) - 1,
    2**64,
    10**30,
    -(10**30),
    1.5,
    -0.0,
    1e308,
]
odd_strings = st.one_of(
    st.sampled_from(ODD_STRINGS),
    st.text(max_size=40),
    st.text(st.characters(codec="utf-8", categories=["Cc", "Cs", "Zs", "So", "Mn"]), max_size=20),
)
odd_numbers = st.one_of(
    st.sampled_from(ODD_NUMBERS),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
)
scalars = st.one_of(st.none(), st.booleans(), odd_numbers, odd_strings)
#: Any JSON value (plus NaN and Infinity, which Python's JSON reads).
json_values = st.recursive(
    scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=12,
)
odd_values = st.one_of(scalars, st.builds(list), st.builds(dict), json_values)


def _slots(body: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (dict keys and list indexes) to a value inside ``body``."""
    found: list[tuple[Any, ...]] = []
    items = body.items() if isinstance(body, dict) else enumerate(body) if isinstance(body, list) else ()
    for key, value in items:
        found.append((*path, key))
        found.extend(_slots(value, (*path, key)))
    return found


def _containers(body: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every object inside ``body`` (the root included): where an extra key can go."""
    found = [path] if isinstance(body, dict) else []
    items = body.items() if isinstance(body, dict) else enumerate(body) if isinstance(body, list) else ()
    for key, value in items:
        found.extend(_containers(value, (*path, key)))
    return found


def _at(body: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        body = body[key]
    return body


@st.composite
def mutated(draw: st.DrawFn, valid: Any, extra_keys: tuple[str, ...] = ()) -> Any:
    """``valid`` with one to three changes: a value replaced by an odd one, a key dropped, a key added.

    ``extra_keys`` are names worth adding (fields of other versions or other resources).
    """
    body = copy.deepcopy(valid)
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["replace", "replace", "delete", "extra"]))
        slots = _slots(body)
        if kind == "extra" or not slots:
            where = _containers(body)
            if not where:
                return draw(odd_values)
            target = _at(body, draw(st.sampled_from(where)))
            name = draw(st.sampled_from(extra_keys) | st.text(max_size=20)) if extra_keys else draw(st.text())
            target[name] = draw(odd_values)
            continue
        path = draw(st.sampled_from(slots))
        parent = _at(body, path[:-1])
        if kind == "delete":
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(odd_values)
    return body


#: Characters to slip into an otherwise valid string: NUL (PostgreSQL's text cannot hold it), lone
#: surrogates (no UTF-8 encodes them), an astral character, a BOM, bidi and delete controls.
POISON = ["\x00", "\ud800", "\udfff", "\U0001f4a5", "\ufeff", "\u202e", "\x7f"]


@st.composite
def poisoned(draw: st.DrawFn, bodies: Any) -> Any:
    """A body from ``bodies`` with one odd character slipped into one of its strings."""
    body = copy.deepcopy(draw(bodies))
    strings = [path for path in _slots(body) if isinstance(_at(body, path), str)]
    if not strings:
        return body
    path = draw(st.sampled_from(strings))
    text = _at(body, path)
    cut = draw(st.integers(0, len(text)))
    _at(body, path[:-1])[path[-1]] = text[:cut] + draw(st.sampled_from(POISON)) + text[cut:]
    return body


def overlays(valid: dict[str, Any], schema: dict[str, Any], wrap: str | None = None) -> Any:
    """``valid`` with some of its fields replaced by values the schema allows (odd, but allowed):
    these pass validation and reach what the handler does with the values."""
    inner = schema["properties"][wrap] if wrap else schema
    loose = {k: v for k, v in inner.items() if k != "required"}

    def merge(extra: dict[str, Any]) -> dict[str, Any]:
        body = copy.deepcopy(valid)
        (body[wrap] if wrap else body).update(extra)
        return body

    return st.builds(merge, from_schema(loose))


def fuzz_bodies(
    valid: Any,
    *schemas: dict[str, Any],
    wrap: str | None = None,
    extra_keys: tuple[str, ...] = (),
    overlay: dict[str, Any] | None = None,
) -> Any:
    """Bodies for one endpoint: from its schemas, a valid body with schema-allowed values laid over
    it (``overlay``: the schema), mutations of the valid body, valid bodies with an odd character
    in one string, and any JSON at all.

    ``wrap`` puts arbitrary values inside ``{wrap: ...}`` too, the envelope every OpenStack body
    has, so they reach the handler's field checks rather than stopping at the envelope.
    """
    options = [mutated(valid, extra_keys), poisoned(st.just(valid)), json_values]
    options.extend(from_schema(schema) for schema in schemas)
    if overlay is not None:
        options.append(overlays(valid, overlay, wrap))
        options.append(poisoned(overlays(valid, overlay, wrap)))
    if wrap:
        options.append(st.builds(lambda inner: {wrap: inner}, json_values))
    return st.one_of(*options)


# -- the error formats --------------------------------------------------------------------------------------


def assert_answer(resp: Response, api: str) -> None:
    """Below 500, and an error is in ``api``'s format (any 401 is Keystone's, as every API answers it)."""
    assert resp.status < 500, f"{api} answered {resp!r}"
    if resp.status < 400:
        return
    body = resp.body
    assert isinstance(body, dict), f"{api} error is not a JSON object: {resp!r}"
    assert "json" in resp.headers.get("Content-Type", ""), resp.headers
    if api == "keystone" or resp.status == 401:
        assert set(body) == {"error"}, resp
        error = body["error"]
        assert error["code"] == resp.status, resp
        assert isinstance(error["title"], str) and error["title"], resp
        assert isinstance(error["message"], str) and error["message"], resp
    elif api == "nova":
        name = NOVA_FAULT_NAMES.get(resp.status, "computeFault")
        assert set(body) == {name}, resp
        assert body[name]["code"] == resp.status, resp
        assert isinstance(body[name]["message"], str) and body[name]["message"], resp
    else:
        assert set(body) == {"code", "title", "message"}, resp
        assert body["code"] == f"{resp.status} {body['title']}", resp
        assert isinstance(body["message"], str) and body["message"], resp


# -- the cloud under fuzz -----------------------------------------------------------------------------------


def encode(body: Any) -> bytes:
    """JSON as Python's ``json`` writes it (lone surrogates escaped, NaN/Infinity as bare words)."""
    return json.dumps(body).encode()


@dataclass
class Fuzz:
    """The cloud, seen from Hypothesis's worker thread, and what existed before the run."""

    cloud: Any
    loop: asyncio.AbstractEventLoop
    server: str
    flavor: str
    image: str
    #: A server, and an image, that the fuzzed updates and actions may change.
    target_server: str
    target_image: str
    project_id: str
    before: dict[str, Any] = field(default_factory=dict)
    statuses: Counter[int] = field(default_factory=Counter)

    def call(self, coro: Coroutine[Any, Any, Response]) -> Response:
        resp = asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)
        self.statuses[resp.status] += 1
        return resp

    def send(
        self,
        method: str,
        path: str,
        body: Any,
        *,
        microversion: str | None = None,
        content_type: str = "application/json",
        token: str | None = "admin",
    ) -> Response:
        data = body if isinstance(body, bytes) else encode(body)
        return self.call(
            self.cloud.request(
                method, path, data=data, headers={"Content-Type": content_type}, microversion=microversion, token=token
            )
        )

    async def run(self, prop: Callable[[], None], *, successes: bool = True) -> None:
        """Run a Hypothesis property (in a thread), then check that nothing was lost.

        ``successes``: some bodies must have been accepted (2xx), else the fuzzing never got
        past validation and proved little.
        """
        await asyncio.to_thread(prop)
        assert await sentinels(self.cloud, self) == self.before
        if successes:
            assert any(200 <= status < 300 for status in self.statuses), self.statuses


async def sentinels(cloud: Any, fz: Fuzz) -> dict[str, Any]:
    """The pre-existing server, flavor and image as the listings show them."""
    found: dict[str, Any] = {}
    resp = await cloud.get("/compute/v2.1/servers/detail", microversion="2.100")
    assert resp.status == 200, resp
    found["server"] = next((s for s in resp.body["servers"] if s["id"] == fz.server), None)
    resp = await cloud.get("/compute/v2.1/flavors/detail?is_public=None", microversion="2.100")
    assert resp.status == 200, resp
    found["flavor"] = next((f for f in resp.body["flavors"] if f["id"] == fz.flavor), None)
    resp = await cloud.get("/image/v2/images?limit=1000")
    assert resp.status == 200, resp
    found["image"] = next((i for i in resp.body["images"] if i["id"] == fz.image), None)
    return found


async def active_image(cloud: Any, name: str) -> str:
    """An image created and uploaded through the Glance API."""
    resp = await cloud.post(
        "/image/v2/images", {"name": name, "disk_format": "raw", "container_format": "bare", "visibility": "public"}
    )
    assert resp.status == 201, resp
    image_id: str = resp.body["id"]
    resp = await cloud.request(
        "PUT",
        f"/image/v2/images/{image_id}/file",
        data=b"\0" * 1024,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert resp.status == 204, resp
    return image_id


async def active_server(cloud: Any, image: str, flavor: str, name: str) -> str:
    resp = await create_server(cloud, image, name=name, flavor=flavor)
    assert resp.status == 202, resp
    server_id: str = resp.body["server"]["id"]
    await wait_status(cloud, server_id, "ACTIVE")
    return server_id


@pytest.fixture
async def fz(cloud: Any) -> Fuzz:
    body = {"flavor": {"name": "fuzz-keep", "id": "fuzz-keep", "ram": 64, "vcpus": 1, "disk": 1}}
    resp = await cloud.post("/compute/v2.1/flavors", body)
    assert resp.status == 200, resp
    image = await active_image(cloud, "fuzz-keep")
    target_image = await active_image(cloud, "fuzz-target")
    server = await active_server(cloud, image, "fuzz-keep", "keep")
    target_server = await active_server(cloud, image, "fuzz-keep", "target")
    resp = await cloud.get("/identity/v3/auth/projects")
    assert resp.status == 200, resp
    project_id = next(p["id"] for p in resp.body["projects"] if p["name"] == "admin")
    fuzz = Fuzz(cloud, asyncio.get_running_loop(), server, "fuzz-keep", image, target_server, target_image, project_id)
    fuzz.before = await sentinels(cloud, fuzz)
    assert all(fuzz.before.values()), fuzz.before
    return fuzz


COMPUTE_VERSIONS = [None, "2.1", "2.2", "2.10", "2.19", "2.37", "2.55", "2.74", "2.90", "2.92", "2.100"]
#: Mostly versions the API serves; a few it must refuse (406, 400).
microversions = st.sampled_from([*COMPUTE_VERSIONS, "latest", "2.999", "two"])


# -- compute ------------------------------------------------------------------------------------------------


async def test_create_server(fz: Fuzz) -> None:
    valid = {
        "server": {
            "name": "fuzzed",
            "imageRef": fz.image,
            "flavorRef": fz.flavor,
            "networks": [],  # valid in every microversion ("none" is 2.37+; issue 12)
            "metadata": {"k": "v"},
            "min_count": 1,
        }
    }
    extra = (*servers.CREATE_SCHEMA["properties"]["server"]["properties"], "os:scheduler_hints")

    @fuzz_settings(MANY)
    @given(
        body=fuzz_bodies(valid, servers.CREATE_SCHEMA, wrap="server", extra_keys=extra, overlay=servers.CREATE_SCHEMA),
        mv=microversions,
    )
    def prop(body: Any, mv: str | None) -> None:
        assert_answer(fz.send("POST", "/compute/v2.1/servers", body, microversion=mv), "nova")

    await fz.run(prop)


async def test_update_server(fz: Fuzz) -> None:
    valid = {"server": {"name": "renamed", "description": "d", "hostname": "h", "accessIPv4": "10.0.0.1"}}
    extra = tuple(servers.UPDATE_SCHEMA["properties"]["server"]["properties"])

    @fuzz_settings(SOME)
    @given(
        body=fuzz_bodies(valid, servers.UPDATE_SCHEMA, wrap="server", extra_keys=extra, overlay=servers.UPDATE_SCHEMA),
        mv=microversions,
    )
    def prop(body: Any, mv: str | None) -> None:
        path = f"/compute/v2.1/servers/{fz.target_server}"
        assert_answer(fz.send("PUT", path, body, microversion=mv), "nova")

    await fz.run(prop)


#: A valid argument for every action name the endpoint knows.
ACTION_ARGS: dict[str, Any] = {
    "os-stop": None,
    "os-start": None,
    "pause": None,
    "unpause": None,
    "suspend": None,
    "resume": None,
    "reboot": {"type": "HARD"},
    "os-getConsoleOutput": {"length": 5},
    "lock": {"locked_reason": "fuzz"},
    "unlock": None,
    "os-resetState": {"state": "active"},
    "os-getVNCConsole": {"type": "novnc"},
    "restore": None,
    "forceDelete": None,
    # issue 11: copy and renew
    "createImage": {"name": "fuzz-snap", "metadata": {"k": "v"}},
    "createBackup": {"name": "fuzz-backup", "backup_type": "daily", "rotation": 1},
    "rebuild": {"imageRef": "00000000-0000-0000-0000-000000000000", "name": "fuzz"},
    "shelve": None,
    "shelveOffload": None,
    "unshelve": None,
    # issue 10: moves
    "resize": {"flavorRef": "2"},
    "confirmResize": None,
    "revertResize": None,
    "migrate": {"host": "hv-1"},
    "os-migrateLive": {"host": None, "block_migration": "auto"},
    "evacuate": {"host": "hv-2"},
    # issue 12: a server's security groups
    "addSecurityGroup": {"name": "default"},
    "removeSecurityGroup": {"name": "default"},
}


def test_every_action_has_fuzz_arguments() -> None:
    """A new action must be added to the fuzzing too."""
    assert set(ACTION_ARGS) == set(HANDLERS)


@st.composite
def action_bodies(draw: st.DrawFn) -> Any:
    """``{name: args}`` for every known action name (and unknown ones), the arguments valid or not."""
    name = draw(st.sampled_from(sorted(ACTION_ARGS)) | st.text(max_size=12))
    valid = ACTION_ARGS.get(name)
    args = draw(st.one_of(st.just(valid), odd_values, mutated(valid) if isinstance(valid, dict) else odd_values))
    return draw(st.one_of(st.just({name: args}), st.just({name: args}), mutated({name: args}), json_values))


async def test_server_actions(fz: Fuzz) -> None:
    @fuzz_settings(MANY)
    @given(body=action_bodies(), mv=microversions)
    def prop(body: Any, mv: str | None) -> None:
        path = f"/compute/v2.1/servers/{fz.target_server}/action"
        assert_answer(fz.send("POST", path, body, microversion=mv), "nova")

    await fz.run(prop)


async def test_attach_interface(fz: Fuzz) -> None:
    """``os-interface`` attach (issue 12): net_id, port_id, fixed_ips and tag, fuzzed."""
    private = (await fz.cloud.get("/network/v2.0/networks?name=private")).body["networks"][0]["id"]
    valid = {"interfaceAttachment": {"net_id": private, "tag": "fz"}}
    schema = server_networks.ATTACH_SCHEMA_2_49
    extra = tuple(schema["properties"]["interfaceAttachment"]["properties"])

    @fuzz_settings(FEW)
    @given(
        body=fuzz_bodies(valid, schema, wrap="interfaceAttachment", extra_keys=extra, overlay=schema),
        mv=microversions,
    )
    def prop(body: Any, mv: str | None) -> None:
        path = f"/compute/v2.1/servers/{fz.target_server}/os-interface"
        assert_answer(fz.send("POST", path, body, microversion=mv), "nova")

    await fz.run(prop)


async def test_create_keypair(fz: Fuzz) -> None:
    valid = {"keypair": {"name": "k", "type": "ssh", "public_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5 me@host"}}
    versions = [keypairs.CREATE_V21, keypairs.CREATE_V22, keypairs.CREATE_V210, keypairs.CREATE_V292]

    bodies = fuzz_bodies(valid, *versions, wrap="keypair", extra_keys=("user_id", "type"), overlay=keypairs.CREATE_V210)

    @fuzz_settings(SOME)
    @given(body=bodies, mv=microversions)
    def prop(body: Any, mv: str | None) -> None:
        assert_answer(fz.send("POST", "/compute/v2.1/os-keypairs", body, microversion=mv), "nova")

    await fz.run(prop)


async def test_create_flavor(fz: Fuzz) -> None:
    valid = {
        "flavor": {
            "name": "f",
            "ram": 128,
            "vcpus": 1,
            "disk": 1,
            "id": "fz-1",
            "swap": 0,
            "rxtx_factor": 1.0,
            "OS-FLV-EXT-DATA:ephemeral": 0,
            "os-flavor-access:is_public": True,
            "description": "d",
        }
    }

    @fuzz_settings(SOME)
    @given(
        body=fuzz_bodies(valid, flavors.CREATE, flavors.CREATE_V255, wrap="flavor", overlay=flavors.CREATE_V255),
        mv=microversions,
    )
    def prop(body: Any, mv: str | None) -> None:
        assert_answer(fz.send("POST", "/compute/v2.1/flavors", body, microversion=mv), "nova")

    await fz.run(prop)


async def test_update_quotas(fz: Fuzz) -> None:
    valid = {"quota_set": {"instances": 20, "cores": "40", "ram": -1, "key_pairs": 100, "force": "true"}}

    @fuzz_settings(SOME)
    @given(
        body=fuzz_bodies(valid, *quotas.UPDATE.values(), wrap="quota_set", overlay=quotas.UPDATE[()]), mv=microversions
    )
    def prop(body: Any, mv: str | None) -> None:
        path = f"/compute/v2.1/os-quota-sets/{fz.project_id}"
        assert_answer(fz.send("PUT", path, body, microversion=mv), "nova")

    await fz.run(prop)


# -- identity -----------------------------------------------------------------------------------------------

#: Keystone's schemas describe what is inside the envelope; these are the whole bodies.
AUTH = {"type": "object", "properties": {"auth": tokens.AUTH_SCHEMA}, "required": ["auth"]}
USER = {"type": "object", "properties": {"user": users.CREATE_SCHEMA}, "required": ["user"]}
PROJECT = {"type": "object", "properties": {"project": projects.CREATE_SCHEMA}, "required": ["project"]}


def login(password: str = ADMIN_PASSWORD) -> dict[str, Any]:
    return {
        "auth": {
            "identity": {
                "methods": ["password"],
                "password": {"user": {"name": "admin", "domain": {"id": "default"}, "password": password}},
            },
            "scope": {"project": {"name": "admin", "domain": {"id": "default"}}},
        }
    }


async def test_issue_token(fz: Fuzz) -> None:
    token = await fz.cloud.admin_token()
    rescope = {"auth": {"identity": {"methods": ["token"], "token": {"id": token}}, "scope": "unscoped"}}

    @fuzz_settings(SOME)
    @given(body=st.one_of(fuzz_bodies(login(), AUTH, wrap="auth"), mutated(rescope)))
    def prop(body: Any) -> None:
        assert_answer(fz.send("POST", "/identity/v3/auth/tokens", body, token=None), "keystone")

    await fz.run(prop)


async def test_create_user(fz: Fuzz) -> None:
    valid = {
        "user": {
            "name": "u",
            "password": "pw",
            "email": "u@example.org",
            "description": "d",
            "enabled": True,
            "default_project_id": fz.project_id,
            "domain_id": "default",
        }
    }

    @fuzz_settings(FEW)
    @given(body=fuzz_bodies(valid, USER, wrap="user", overlay=USER))
    def prop(body: Any) -> None:
        assert_answer(fz.send("POST", "/identity/v3/users", body), "keystone")

    await fz.run(prop)


async def test_create_project(fz: Fuzz) -> None:
    valid = {"project": {"name": "p", "description": "d", "enabled": True, "domain_id": "default", "tags": []}}

    @fuzz_settings(SOME)
    @given(body=fuzz_bodies(valid, PROJECT, wrap="project", overlay=PROJECT))
    def prop(body: Any) -> None:
        assert_answer(fz.send("POST", "/identity/v3/projects", body), "keystone")

    await fz.run(prop)


# -- image --------------------------------------------------------------------------------------------------

IMAGE_SCHEMA = {**image_schema(), "type": "object"}
IMAGE_ATTRIBUTES = (*image_schema()["properties"], "locations", "os_glance_x", "hw_disk_bus")


async def test_create_image(fz: Fuzz) -> None:
    valid = {
        "name": "fuzzed",
        "disk_format": "qcow2",
        "container_format": "bare",
        "visibility": "private",
        "min_ram": 0,
        "min_disk": 1,
        "protected": False,
        "tags": ["a"],
        "hw_disk_bus": "virtio",
    }

    @fuzz_settings(SOME)
    @given(body=fuzz_bodies(valid, IMAGE_SCHEMA, extra_keys=IMAGE_ATTRIBUTES, overlay=IMAGE_SCHEMA))
    def prop(body: Any) -> None:
        assert_answer(fz.send("POST", "/image/v2/images", body), "glance")

    await fz.run(prop)


patch_ops = st.fixed_dictionaries(
    {
        "op": st.sampled_from(["add", "replace", "remove", "move", "test"]) | scalars,
        "path": st.sampled_from([f"/{a}" for a in IMAGE_ATTRIBUTES] + ["/", "", "/a/b", "/~1x", "name"]) | scalars,
    },
    optional={"value": odd_values, "from": odd_values},
)


async def test_patch_image(fz: Fuzz) -> None:
    valid = [
        {"op": "replace", "path": "/name", "value": "renamed"},
        {"op": "add", "path": "/hw_disk_bus", "value": "scsi"},
        {"op": "add", "path": "/tags", "value": ["t"]},
        {"op": "add", "path": "/min_ram", "value": 64},
    ]

    @fuzz_settings(SOME)
    @given(
        body=st.one_of(st.lists(patch_ops, max_size=4), fuzz_bodies(valid), poisoned(st.lists(patch_ops, max_size=4))),
        content_type=st.sampled_from(PATCH_TYPES),
    )
    def prop(body: Any, content_type: str) -> None:
        path = f"/image/v2/images/{fz.target_image}"
        assert_answer(fz.send("PATCH", path, body, content_type=content_type), "glance")

    await fz.run(prop)


# -- bodies that are not JSON -------------------------------------------------------------------------------

#: (method, path template, api, content type of a valid request) of every endpoint fuzzed above.
ENDPOINTS = [
    ("POST", "/compute/v2.1/servers", "nova", "application/json"),
    ("PUT", "/compute/v2.1/servers/{server}", "nova", "application/json"),
    ("POST", "/compute/v2.1/servers/{server}/action", "nova", "application/json"),
    ("POST", "/compute/v2.1/os-keypairs", "nova", "application/json"),
    ("POST", "/compute/v2.1/flavors", "nova", "application/json"),
    ("PUT", "/compute/v2.1/os-quota-sets/{project}", "nova", "application/json"),
    ("POST", "/identity/v3/auth/tokens", "keystone", "application/json"),
    ("POST", "/identity/v3/users", "keystone", "application/json"),
    ("POST", "/identity/v3/projects", "keystone", "application/json"),
    ("POST", "/image/v2/images", "glance", "application/json"),
    ("PATCH", "/image/v2/images/{image}", "glance", PATCH_TYPES[0]),
]
RAW = [
    b"",
    b"{",
    b'{"server": ',
    b"\xff\xfe\x00",
    b'{"name": "\xc3\x28"}',
    b"[" * 2000 + b"]" * 2000,
    b'{"a": 1' + b"9" * 5000 + b"}",
    b"NaN",
    b'{"a": 1} trailing',
    b'\xef\xbb\xbf{"a": 1}',
    b"\x00" * 64,
]


async def test_bodies_that_are_not_json(fz: Fuzz) -> None:
    @fuzz_settings(MANY)
    @given(
        endpoint=st.sampled_from(ENDPOINTS),
        raw=st.sampled_from(RAW) | st.binary(max_size=64) | st.text(max_size=40).map(str.encode),
        content_type=st.sampled_from([None, "text/plain", "application/x-www-form-urlencoded", "application/json; x"]),
    )
    def prop(endpoint: tuple[str, str, str, str], raw: bytes, content_type: str | None) -> None:
        method, template, api, valid_type = endpoint
        path = template.format(server=fz.target_server, project=fz.project_id, image=fz.target_image)
        token = None if path.endswith("/auth/tokens") else "admin"
        assert_answer(fz.send(method, path, raw, content_type=content_type or valid_type, token=token), api)

    await fz.run(prop, successes=False)


# -- regressions: the defects the fuzzing found, one example each ---------------------------------------------


async def send(cloud: Any, method: str, path: str, body: Any, **kw: Any) -> Response:
    """``body`` as Python's JSON, to the running cloud (from the test's own event loop)."""
    headers = {"Content-Type": kw.pop("content_type", "application/json")}
    resp: Response = await cloud.request(method, path, data=encode(body), headers=headers, **kw)
    return resp


def assert_400(resp: Response, api: str) -> None:
    assert resp.status == 400, resp
    assert_answer(resp, api)


SOME_ID = "0b4a9a45-1d5e-4c57-9d57-4c1f1f2b7a10"
JSON_PATCH = "application/openstack-images-v2.1-json-patch"


async def test_unstorable_strings_are_a_400_in_each_format(cloud: Any) -> None:
    """A lone surrogate (no UTF-8 encodes it) crashed every API that stored or echoed it, the keypair and
    JSON-patch errors even outside their error format; NUL crashed every PostgreSQL query holding it."""
    resp = await cloud.post("/image/v2/images", {"name": "victim"})
    assert resp.status == 201, resp
    image = resp.body["id"]
    for odd in ("\ud800", "\udc00", "\x00"):
        cases = [
            ("/compute/v2.1/servers", {"server": {"name": f"s{odd}", "flavorRef": "1", "imageRef": SOME_ID}}, "nova"),
            ("/compute/v2.1/os-keypairs", {"keypair": {"name": f"{odd}k"}}, "nova"),
            ("/compute/v2.1/flavors", {"flavor": {"name": f"f{odd}", "ram": 1, "vcpus": 1, "disk": 1}}, "nova"),
            ("/identity/v3/users", {"user": {"name": f"u{odd}"}}, "keystone"),
            ("/identity/v3/projects", {"project": {"name": "p", "description": odd}}, "keystone"),
            ("/image/v2/images", {"name": f"i{odd}"}, "glance"),
            ("/image/v2/images", {f"key{odd}": "v"}, "glance"),
        ]
        for path, body, api in cases:
            assert_400(await send(cloud, "POST", path, body), api)
        bad_login = login()
        bad_login["auth"]["identity"]["password"]["user"]["domain"] = {"name": f"Default{odd}"}
        assert_400(await send(cloud, "POST", "/identity/v3/auth/tokens", bad_login, token=None), "keystone")
        ops = [{"op": "replace", "path": f"/{odd}name", "value": "x"}]
        assert_400(await send(cloud, "PATCH", f"/image/v2/images/{image}", ops, content_type=JSON_PATCH), "glance")
    # Nothing was stored on the way.
    users = await cloud.get("/identity/v3/users")
    assert not [u for u in users.body["users"] if u["name"].startswith("u")], users
    projects_now = await cloud.get("/identity/v3/projects")
    assert "p" not in [p["name"] for p in projects_now.body["projects"]], projects_now
    images = await cloud.get("/image/v2/images")
    assert [i["name"] for i in images.body["images"]] == ["victim"], images
    # A surrogate pair (an astral character written as escapes) is an ordinary character.
    resp = await send(cloud, "POST", "/identity/v3/projects", {"project": {"name": "p", "description": "\U0001f4a5"}})
    assert resp.status == 201 and resp.body["project"]["description"] == "\U0001f4a5", resp


async def test_numbers_json_has_no_value_for_are_a_400(cloud: Any) -> None:
    """Python's parser reads these as floats; ``{"length": Infinity}`` crashed os-getConsoleOutput (int(inf))."""
    headers = {"Content-Type": "application/json"}
    for number in ("NaN", "Infinity", "-Infinity", "1e400"):
        raw = f'{{"os-getConsoleOutput": {{"length": {number}}}}}'.encode()
        resp = await cloud.request("POST", f"/compute/v2.1/servers/{SOME_ID}/action", data=raw, headers=headers)
        assert_400(resp, "nova")
        raw = f'{{"flavor": {{"name": "f", "ram": 1, "vcpus": 1, "disk": 1, "rxtx_factor": {number}}}}}'.encode()
        assert_400(await cloud.request("POST", "/compute/v2.1/flavors", data=raw, headers=headers), "nova")
    listed = await cloud.get("/compute/v2.1/flavors")
    assert "f" not in [f["name"] for f in listed.body["flavors"]], listed


async def test_flavor_digit_strings_out_of_range_are_a_400(cloud: Any) -> None:
    """The schema's pattern let "" and huge digit strings past its range: int("") and the INT column crashed."""
    for attr, value in (
        ("vcpus", ""),
        ("ram", ""),
        ("disk", "99999999999"),
        ("ram", "9" * 5000),
        ("swap", "2147483648"),
    ):
        body = {"flavor": {"name": "bad-numbers", "ram": 64, "vcpus": 1, "disk": 1, attr: value}}
        assert_400(await send(cloud, "POST", "/compute/v2.1/flavors", body), "nova")
    listed = await cloud.get("/compute/v2.1/flavors")
    assert "bad-numbers" not in [f["name"] for f in listed.body["flavors"]], listed
    # The limits themselves still hold.
    body = {"flavor": {"name": "max", "ram": "2147483647", "vcpus": "1", "disk": "2147483647", "swap": "0"}}
    resp = await send(cloud, "POST", "/compute/v2.1/flavors", body)
    assert resp.status == 200 and resp.body["flavor"]["ram"] == 2147483647, resp


async def test_quota_limits_out_of_range_are_a_400(cloud: Any) -> None:
    """Digit strings skip the schema's -1..2**31-1: a huge one crashed the database, "-5" was stored."""
    listed = await cloud.get("/identity/v3/auth/projects")
    project = next(p["id"] for p in listed.body["projects"] if p["name"] == "admin")
    path = f"/compute/v2.1/os-quota-sets/{project}"
    before = (await cloud.get(path)).body["quota_set"]["cores"]
    for value in ("10000000000000000000", "9" * 5000, "-5", "2147483648"):
        resp = await send(cloud, "PUT", path, {"quota_set": {"cores": value}})
        assert_400(resp, "nova")
        assert resp.body["badRequest"]["message"].endswith("must be in the range of -1 and 2147483647."), resp
    assert (await cloud.get(path)).body["quota_set"]["cores"] == before
    resp = await send(cloud, "PUT", path, {"quota_set": {"cores": "2147483647"}})
    assert resp.status == 200 and resp.body["quota_set"]["cores"] == 2147483647, resp


async def test_nul_in_the_url_is_a_400_in_each_format(cloud: Any) -> None:
    """On PostgreSQL an id or filter holding NUL crashed the lookup."""
    assert_400(await cloud.get("/compute/v2.1/servers/%00"), "nova")
    assert_400(await cloud.get("/compute/v2.1/flavors/a%00b"), "nova")
    assert_400(await cloud.get("/identity/v3/users?name=%00"), "keystone")
    assert_400(await cloud.get("/image/v2/images/%00"), "glance")


async def test_column_limits_the_schemas_did_not_know(cloud: Any) -> None:
    """An admin's keypair ``user_id`` (2.10) or image ``owner`` beyond its 64-character column crashed PostgreSQL."""
    body = {"keypair": {"name": "k", "user_id": "u" * 65}}
    assert_400(await send(cloud, "POST", "/compute/v2.1/os-keypairs", body, microversion="2.10"), "nova")
    body["keypair"]["user_id"] = "u" * 64
    assert (await send(cloud, "POST", "/compute/v2.1/os-keypairs", body, microversion="2.10")).status == 201

    assert_400(await cloud.post("/image/v2/images", {"name": "o", "owner": "o" * 65}), "glance")
    resp = await cloud.post("/image/v2/images", {"name": "o", "owner": "o" * 64})
    assert resp.status == 201, resp
    ops = [{"op": "replace", "path": "/owner", "value": "p" * 65}]
    path = f"/image/v2/images/{resp.body['id']}"
    assert_400(await send(cloud, "PATCH", path, ops, content_type=JSON_PATCH), "glance")


# PUT /servers/{id} took any string as accessIPv4/accessIPv6 (UPDATE_SCHEMA had no "format", unlike
# CREATE_SCHEMA), so "x" * 40 was stored on SQLite (200) and overflowed the 39-character columns on
# PostgreSQL (500). Nova answers 400 (format ipv4/ipv6).
async def test_update_server_access_ips_must_be_addresses(cloud: Any) -> None:
    resp = await create_server(cloud, await make_image(cloud))
    assert resp.status == 202, resp
    path = f"/compute/v2.1/servers/{resp.body['server']['id']}"
    for attr in ("accessIPv4", "accessIPv6"):
        assert_400(await send(cloud, "PUT", path, {"server": {attr: "x" * 40}}), "nova")


# A valid IPv6 address written out in full with an embedded IPv4 part is 45 characters, and create stored
# accessIPv6 as given: on PostgreSQL it overflowed the 39-character column (500). It is now stored in its
# shortest form (at most 39 characters), on update as well.
async def test_create_server_with_a_long_form_ipv6_access_address(cloud: Any) -> None:
    address = "0000:0000:0000:0000:0000:ffff:192.168.100.200"
    resp = await create_server(cloud, await make_image(cloud), accessIPv6=address)
    assert resp.status == 202, resp
    shown = await cloud.get(f"/compute/v2.1/servers/{resp.body['server']['id']}")
    assert ipaddress.ip_address(shown.body["server"]["accessIPv6"]) == ipaddress.ip_address(address), shown
