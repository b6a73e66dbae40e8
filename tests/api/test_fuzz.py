"""Property-based fuzzing of the JSON endpoints (issue 9), over real HTTP on SQLite and PostgreSQL.

Hypothesis throws bodies at each endpoint: bodies derived from novalite's own request
schemas (hypothesis-jsonschema), valid bodies with one to three fields mutated (wrong
type, null, huge or odd unicode strings, huge numbers, missing keys, extra keys), and
arbitrary JSON values. Whatever arrives, the API must answer below 500, every error in
its own API's format, and lose no data: a server, flavor and image that existed before
the run are listed unchanged after it.

Each test runs Hypothesis in a worker thread (its engine is synchronous) and sends every
request to the ``cloud`` fixture's event loop, so the cloud is started once per test and
the no-data-loss check runs after all examples. ``derandomize`` makes every run (and CI)
try the same examples; ``max_examples`` keeps the file well inside 90 s on 2 cores.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis_jsonschema import from_schema

from novalite.api.compute import flavors, keypairs, quotas, servers
from novalite.api.compute.server_actions import HANDLERS
from novalite.api.errors import NOVA_FAULT_NAMES
from novalite.api.identity import projects, tokens, users
from novalite.api.image.images import PATCH_TYPES
from novalite.api.image.schemas import image_schema
from tests.conftest import ADMIN_PASSWORD, Response
from tests.functional.helpers import create_server, wait_status

#: Examples per property; the fast endpoints get more. Chosen for < 90 s for the whole file.
FEW, SOME, MANY = 40, 70, 110


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
odd_values = st.one_of(scalars, st.just([]), st.just({}), json_values)


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
        print("STATS", sorted(self.statuses.items()))
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
            "networks": "none",
            "metadata": {"k": "v"},
            "min_count": 1,
        }
    }
    extra = tuple(servers.CREATE_SCHEMA["properties"]["server"]["properties"]) + ("os:scheduler_hints",)

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
IMAGE_ATTRIBUTES = tuple(image_schema()["properties"]) + ("locations", "os_glance_x", "hw_disk_bus")


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
