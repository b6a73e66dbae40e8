"""Issue 13 part 4: the web dashboard in headless Chromium, against a whole in-process novalite
(fake driver, whose guests have a real VNC screen). Everything the page does goes through the
public APIs with the token it got at login; the test watches what a user would see."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.conftest import ADMIN_PASSWORD
from tests.console.browser import chromium_page, wait_status
from tests.functional.helpers import create_server
from tests.functional.helpers import wait_status as wait_server_status

pytestmark = pytest.mark.e2e

V3 = "/identity/v3"
#: Markup in a server's name must show as text (the page never parses data as HTML).
VM_NAME = 'dash-vm <img src="x" id="injected">'
WAIT_MS = 30_000


@pytest.fixture(params=["sqlite"])
def db_url(request, tmp_path) -> str:  # one database is enough here: this is about the browser
    return f"sqlite:///{tmp_path / 'novalite.db'}"


@pytest.fixture
async def page() -> AsyncIterator[Any]:
    """A Chromium page that fails the test on any script error, CSP violation or refused request."""
    async with chromium_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        page.on(
            "console",
            lambda msg: errors.append(f"console {msg.type}: {msg.text}") if msg.type == "error" else None,
        )
        page.on(
            "response",
            lambda resp: (
                errors.append(f"{resp.status} {resp.request.method} {resp.url}") if resp.status >= 400 else None
            ),
        )
        yield page
        assert errors == [], errors


async def upload_image(cloud: Any, name: str) -> str:
    """A real image through Glance v2: create, then PUT its data."""
    r = await cloud.post(
        "/image/v2/images",
        json={"name": name, "disk_format": "raw", "container_format": "bare", "visibility": "public"},
    )
    assert r.status == 201, r
    image_id = r.body["id"]
    r = await cloud.put(
        f"/image/v2/images/{image_id}/file",
        data=b"\0" * 65536,
        headers={"Content-Type": "application/octet-stream"},
    )
    assert r.status == 204, r
    return image_id


async def add_user(cloud: Any, name: str, password: str, role: str, project: str = "admin") -> None:
    """A user with ``role`` on ``project``, made as an admin would, through Keystone's API."""
    r = await cloud.post(f"{V3}/users", {"user": {"name": name, "password": password}})
    assert r.status == 201, r
    user_id = r.body["user"]["id"]
    project_id = (await cloud.get(f"{V3}/projects?name={project}")).body["projects"][0]["id"]
    role_id = (await cloud.get(f"{V3}/roles?name={role}")).body["roles"][0]["id"]
    r = await cloud.put(f"{V3}/projects/{project_id}/users/{user_id}/roles/{role_id}")
    assert r.status == 204, r


async def log_in(page: Any, cloud: Any, user: str, password: str, project: str = "admin") -> None:
    """Open the cloud's root in the browser (it redirects to the dashboard) and log in."""
    await page.goto(f"{cloud.base}/")
    assert page.url == f"{cloud.base}/dashboard"
    await page.fill("#login-user", user)
    await page.fill("#login-password", password)
    await page.fill("#login-project", project)
    await page.click("#login-submit")
    await page.wait_for_selector("#whoami", state="visible", timeout=WAIT_MS)


def server_row(page: Any, server_id: str) -> Any:
    return page.locator(f'#servers tbody tr[data-id="{server_id}"]')


async def wait_row_status(page: Any, server_id: str, status: str) -> None:
    await page.wait_for_function(
        """([id, status]) => {
            const row = document.querySelector(`#servers tbody tr[data-id="${id}"]`);
            return row && row.querySelector(".col-status").textContent === status
                && row.querySelector(".col-task").textContent === "";
        }""",
        arg=[server_id, status],
        timeout=WAIT_MS,
    )


async def test_admin_creates_watches_consoles_and_deletes_a_server(cloud, page, tmp_path):
    image_id = await upload_image(cloud, "dash-img")
    await log_in(page, cloud, "admin", ADMIN_PASSWORD)
    assert await page.inner_text("#whoami") == "admin @ admin (admin)"
    token = await page.evaluate("() => JSON.parse(sessionStorage.getItem('novalite.dashboard.session')).token")
    assert (await cloud.get("/compute/v2.1/servers", token=token)).status == 200  # a real Keystone token

    # Admins see the hosts: usage bars per hypervisor and the compute services up.
    await page.click("#nav button[data-view=hosts]")
    await page.wait_for_selector("#hosts tbody tr[data-host=hv-2] meter", timeout=WAIT_MS)
    assert await page.locator("#hosts tbody tr").count() == 2
    assert await page.locator("#hosts tbody tr[data-host=hv-1] meter").count() == 3
    assert "0 / 16 vCPU" in await page.inner_text("#hosts tbody tr[data-host=hv-1]")
    services = await page.inner_text("#services tbody")
    assert services.count("nova-compute") == 2 and "down" not in services, services

    # Create from a flavor and the image; the row goes from BUILD to ACTIVE by itself (polling).
    await page.click("#nav button[data-view=servers]")
    await page.wait_for_selector(f'#create-image option[value="{image_id}"]', state="attached", timeout=WAIT_MS)
    await page.fill("#create-name", VM_NAME)
    await page.select_option("#create-flavor", "1")
    await page.select_option("#create-image", image_id)
    await page.select_option("#create-network", "none")
    await page.click("#create-submit")
    await page.wait_for_selector("#servers tbody tr[data-id]", timeout=WAIT_MS)
    server_id = await page.get_attribute("#servers tbody tr[data-id]", "data-id")
    row = server_row(page, server_id)
    await wait_row_status(page, server_id, "ACTIVE")
    assert await row.locator(".col-name").inner_text() == VM_NAME
    assert await page.locator("#injected").count() == 0
    assert await row.locator(".col-image").inner_text() == "dash-img"
    assert await row.locator(".col-flavor").inner_text() == "m1.tiny"
    assert await row.locator(".col-power").inner_text() == "Running"
    server = (await cloud.get(f"/compute/v2.1/servers/{server_id}", microversion="2.47")).body["server"]
    assert server["status"] == "ACTIVE" and server["image"]["id"] == image_id
    await row.locator(".col-host").wait_for(timeout=WAIT_MS)
    assert await row.locator(".col-host").inner_text() == server["OS-EXT-SRV-ATTR:host"]
    await page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)

    # The console opens in a new tab and noVNC connects to the fake guest's screen.
    async with page.context.expect_page(timeout=WAIT_MS) as popup_info:
        await row.locator("button[data-action=console]").click()
    console = await popup_info.value
    assert await wait_status(console, "Connected") == "Connected"
    assert await console.inner_text("#name") == VM_NAME
    assert await console.evaluate("() => window.opener") is None
    await console.close()

    # The console log shows under the list.
    await row.locator("button[data-action=log]").click()
    await page.wait_for_function(
        "() => document.getElementById('console-output').textContent.includes('booting')", timeout=WAIT_MS
    )
    assert "novalite fake guest dash-vm" in await page.inner_text("#console-output")  # the guest's hostname
    assert await page.locator("#console-output img").count() == 0

    # Stop and start from the row's buttons.
    await row.locator("button[data-action=stop]").click()
    await wait_row_status(page, server_id, "SHUTOFF")
    assert await row.locator("button[data-action=stop]").is_disabled()
    await row.locator("button[data-action=start]").click()
    await wait_row_status(page, server_id, "ACTIVE")

    # Delete (after the confirmation) and the row disappears.
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await row.locator("button[data-action=delete]").click()
    await row.wait_for(state="detached", timeout=WAIT_MS)
    assert (await cloud.get(f"/compute/v2.1/servers/{server_id}")).status == 404
    assert await page.is_visible("#servers-empty")
    assert await page.is_hidden("#console-log")


async def visible_buttons(page: Any, scope: str) -> list[str]:
    return await page.evaluate(
        """(scope) => [...document.querySelectorAll(`${scope} button`)]
            .filter((b) => b.offsetParent !== null).map((b) => b.textContent)""",
        scope,
    )


def ssh_public_key() -> str:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " t@lab"


async def test_reader_sees_servers_but_no_buttons_member_sees_them(cloud, page, tmp_path):
    image_id = await upload_image(cloud, "shared-img")
    r = await create_server(cloud, image_id, name="team-vm")
    assert r.status == 202, r
    server_id = r.body["server"]["id"]
    await wait_server_status(cloud, server_id, "ACTIVE")
    await add_user(cloud, "rita", "rita-secret", "reader")
    await add_user(cloud, "mo", "mo-secret", "member")

    # A reader: the list, live, but nothing that would be refused (403).
    await log_in(page, cloud, "rita", "rita-secret")
    assert await page.inner_text("#whoami") == "rita @ admin (reader)"
    await wait_row_status(page, server_id, "ACTIVE")
    assert await server_row(page, server_id).locator(".col-name").inner_text() == "team-vm"
    assert await visible_buttons(page, "#view-servers") == []
    assert await page.is_hidden("#server-create")
    assert await page.is_hidden("#nav button[data-view=hosts]")
    await page.click("#nav button[data-view=images]")
    await page.wait_for_selector("#images tbody tr", timeout=WAIT_MS)
    assert await page.is_hidden("#image-upload")
    assert await visible_buttons(page, "#view-images") == []

    # Log out, and a member of the same project gets the buttons, but still no hosts.
    reader_token = await page.evaluate("() => JSON.parse(sessionStorage.getItem('novalite.dashboard.session')).token")
    await page.click("#logout")
    await page.wait_for_selector("#login", state="visible")
    assert await page.evaluate("() => sessionStorage.length") == 0
    for _ in range(50):  # the page revokes the token (DELETE /auth/tokens) after showing the login
        if (await cloud.get("/compute/v2.1/servers", token=reader_token)).status == 401:
            break
        await asyncio.sleep(0.05)
    assert (await cloud.get("/compute/v2.1/servers", token=reader_token)).status == 401
    await log_in(page, cloud, "mo", "mo-secret")
    assert await page.inner_text("#whoami") == "mo @ admin (member)"
    await page.click("#nav button[data-view=servers]")
    await wait_row_status(page, server_id, "ACTIVE")
    assert await page.is_visible("#server-create")
    assert await visible_buttons(page, f'#servers tbody tr[data-id="{server_id}"]') == [
        "Start",
        "Stop",
        "Reboot",
        "Console",
        "Log",
        "Delete",
    ]
    assert await server_row(page, server_id).locator("button[data-action=start]").is_disabled()
    assert await page.is_hidden("#nav button[data-view=hosts]")
    assert await page.is_hidden("#view-hosts")
    assert await page.locator("#servers th.needs-admin").is_hidden()

    # The member uploads an image file (Glance create + PUT) and imports a key pair.
    (tmp_path / "disk.img").write_bytes(b"\1" * 4096)
    await page.click("#nav button[data-view=images]")
    await page.fill("#upload-name", "member-img")
    await page.set_input_files("#upload-file", str(tmp_path / "disk.img"))
    offered = await page.evaluate(
        "() => [...document.querySelectorAll('#upload-visibility option:enabled')].map((o) => o.value)"
    )
    assert offered == ["shared", "private", "community"]  # publishing is for admins
    await page.click("#upload-submit")
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#images tbody tr')].some((r) => r.textContent.includes('member-img'))",
        timeout=WAIT_MS,
    )
    (uploaded,) = [i for i in (await cloud.get("/image/v2/images")).body["images"] if i["name"] == "member-img"]
    assert (uploaded["status"], uploaded["size"], uploaded["visibility"]) == ("active", 4096, "shared")
    own_row = page.locator(f'#images tbody tr[data-id="{uploaded["id"]}"]')
    assert await own_row.locator("button[data-action=delete]").count() == 1

    await page.click("#nav button[data-view=keypairs]")
    await page.fill("#keypair-name", "mo-key")
    await page.fill("#keypair-key", ssh_public_key())
    await page.click("#keypair-submit")
    await page.wait_for_selector('#keypairs tbody tr[data-name="mo-key"]', timeout=WAIT_MS)
    await page.wait_for_selector('#create-keypair option[value="mo-key"]', state="attached")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click('#keypairs tbody tr[data-name="mo-key"] button[data-action=delete]')
    await page.wait_for_selector('#keypairs tbody tr[data-name="mo-key"]', state="detached", timeout=WAIT_MS)
