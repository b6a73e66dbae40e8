"""Fixtures for the console tests: a cloud whose console proxy listens on a free port,
a fake VNC server, and a fake driver pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from novalite.config import Settings
from tests.conftest import make_settings
from tests.console.fakevnc import FakeVNC
from tests.functional.helpers import create_server, make_image, wait_status


@pytest.fixture
def cloud_settings(tmp_path, db_url: str) -> Settings:  # type: ignore[no-untyped-def]
    return make_settings(tmp_path, db_url, console_listen="127.0.0.1:0")


@pytest.fixture
async def fake_vnc() -> AsyncIterator[FakeVNC]:
    server = await FakeVNC().start()
    try:
        yield server
    finally:
        await server.close()


def point_vnc_at(cloud: Any, port: int, host: str = "127.0.0.1") -> None:
    """Make every fake compute host report ``host:port`` as its guests' VNC server."""
    from novalite_drivers.base import ConsoleAddress

    for agent in cloud.rt.services["ComputeAgent"]:
        driver = agent.driver

        async def get_vnc_console(instance: Any, driver: Any = driver) -> ConsoleAddress:
            driver._guest(instance)  # InstanceNotFound for guests it does not run
            return ConsoleAddress(host, port)

        driver.get_vnc_console = get_vnc_console


async def active_server(cloud: Any, name: str = "vm1") -> dict[str, Any]:
    image = await make_image(cloud)
    r = await create_server(cloud, image, name=name)
    assert r.status == 202, r
    return await wait_status(cloud, r.body["server"]["id"], "ACTIVE")


async def console_url(cloud: Any, server_id: str) -> str:
    r = await cloud.post(
        f"/compute/v2.1/servers/{server_id}/remote-consoles",
        json={"remote_console": {"protocol": "vnc", "type": "novnc"}},
        microversion="2.6",
    )
    assert r.status == 200, r
    return r.body["remote_console"]["url"]


def proxy_of(cloud: Any) -> Any:
    (proxy,) = cloud.rt.services["ConsoleProxy"]
    return proxy
