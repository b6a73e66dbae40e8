"""Issue 9, defect 10: the quota check and the insert are atomic across API processes.

Two controller processes (api, conductor, scheduler each) on one PostgreSQL database and
RabbitMQ vhost. One member of a project with an instances quota of 5 sends 30 creates at
once, split over both APIs. Before the fix each create counted the project's usage, then
inserted: many saw the same usage and passed (18 and 12 accepted in two runs, ``limits
show`` then said "12 used of 5"). Now exactly 5 are accepted, the 25 others get Nova's
403, and the limits say 5 used.
"""

from __future__ import annotations

import asyncio
import collections
import os

import pytest

from tests.conftest import Cloud
from tests.multiprocess.conftest import MV, Deployment, make_image, wait_hosts_up

pytestmark = [pytest.mark.rabbit, pytest.mark.postgres]

QUOTA = 5
CREATES = 30
QUOTA_MESSAGE = f"Quota exceeded for instances: Requested 1, but already used {QUOTA} of {QUOTA} instances"


async def make_member(api: Cloud, project: str, user: str, password: str) -> str:
    """Create ``project`` and ``user`` with the member role on it through Keystone; the project id."""
    r = await api.post("/identity/v3/projects", json={"project": {"name": project, "domain_id": "default"}})
    assert r.status == 201, r
    project_id = r.body["project"]["id"]
    r = await api.post(
        "/identity/v3/users",
        json={"user": {"name": user, "password": password, "domain_id": "default", "default_project_id": project_id}},
    )
    assert r.status == 201, r
    user_id = r.body["user"]["id"]
    r = await api.get("/identity/v3/roles?name=member")
    assert r.status == 200 and r.body["roles"], r
    role_id = r.body["roles"][0]["id"]
    r = await api.put(f"/identity/v3/projects/{project_id}/users/{user_id}/roles/{role_id}")
    assert r.status == 204, r
    return project_id


async def test_concurrent_creates_over_two_apis_never_exceed_the_quota(deployment: Deployment) -> None:
    dep = deployment
    dep.common["NOVALITE_SERVICE_DOWN_TIME"] = "15"  # a loaded machine must not take the host down
    ctl1, ctl2 = await asyncio.gather(dep.start_controller("ctl1"), dep.start_controller("ctl2"))
    dep.start_agent("hv1", driver_options={"memory_mb": 512 * CREATES, "vcpus": 4 * CREATES, "local_gb": 1000})
    admin1, admin2 = dep.api(ctl1), dep.api(ctl2)
    await wait_hosts_up(admin1, {"hv1"}, timeout=45)
    image = await make_image(admin1)

    password = os.urandom(8).hex()
    project_id = await make_member(admin1, "racers", "racer", password)
    r = await admin2.put(f"/compute/v2.1/os-quota-sets/{project_id}", json={"quota_set": {"instances": QUOTA}})
    assert r.status == 200 and r.body["quota_set"]["instances"] == QUOTA, r
    token = await admin1.login("racer", password, "racers")  # a token is valid on either API

    async def create(i: int) -> tuple[int, object]:
        api = admin1 if i % 2 else admin2
        body = {"server": {"name": f"q{i}", "imageRef": image, "flavorRef": "1", "networks": "none"}}
        r = await api.post("/compute/v2.1/servers", json=body, token=token, microversion=MV)
        return r.status, r.body

    results = await asyncio.gather(*(create(i) for i in range(CREATES)))

    statuses = collections.Counter(status for status, _ in results)
    assert statuses == {202: QUOTA, 403: CREATES - QUOTA}, statuses
    for status, body in results:
        if status == 403:
            assert body == {"forbidden": {"code": 403, "message": QUOTA_MESSAGE}}, body

    # What the member then sees, from either API: 5 servers, 5 of 5 used.
    for api in (admin1, admin2):
        r = await api.get("/compute/v2.1/limits", token=token, microversion=MV)
        assert r.status == 200, r
        absolute = r.body["limits"]["absolute"]
        assert (absolute["maxTotalInstances"], absolute["totalInstancesUsed"]) == (QUOTA, QUOTA), absolute
        r = await api.get("/compute/v2.1/servers", token=token, microversion=MV)
        assert r.status == 200 and len(r.body["servers"]) == QUOTA, r

    # And the next create is refused with the same message, on both APIs.
    for i, api in enumerate((admin1, admin2)):
        body = {"server": {"name": f"more{i}", "imageRef": image, "flavorRef": "1", "networks": "none"}}
        r = await api.post("/compute/v2.1/servers", json=body, token=token, microversion=MV)
        assert r.status == 403 and r.body["forbidden"]["message"] == QUOTA_MESSAGE, r
