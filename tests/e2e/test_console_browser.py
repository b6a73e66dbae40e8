"""End to end on a real QEMU guest: the URL ``openstack console url show --novnc`` prints,
opened in headless Chromium, shows the guest's screen through novalite's console proxy,
and what is typed there runs in the guest (its effect shows in ``openstack console log show``).

``novalite serve --driver libvirt`` runs as a subprocess with the tiny guest of
scripts/build-tiny-guest.sh (it prints to tty0 and runs a root shell on tty1, the screen).
Needs libvirtd + QEMU (scripts/setup-libvirt.sh), noVNC (scripts/setup-novnc.sh), Debian's
chromium and the playwright package; it fails, never skips, when one is missing.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import free_port
from tests.console.browser import canvas_stats, chromium_page, wait_status
from tests.drivers.conftest import require_libvirt_python, tiny_guest  # noqa: F401  (fixture)
from tests.e2e.cli import Cli

pytestmark = [pytest.mark.e2e, pytest.mark.libvirt]

QEMU_URI = os.environ.get("NOVALITE_TEST_LIBVIRT_URI", "qemu:///system")


@pytest.fixture(scope="module")
def served_libvirt(tmp_path_factory, tiny_guest):  # noqa: F811
    require_libvirt_python()
    state = tmp_path_factory.mktemp("state")
    # Not under pytest's tmp dirs: those are 0700 and QEMU runs as another user.
    instances = Path("/var/tmp/novalite-test-instances") / f"console-{uuid.uuid4().hex[:10]}"
    instances.mkdir(parents=True, mode=0o755)
    os.chmod(instances, 0o755)
    port, console_port = free_port(), free_port()
    env = dict(
        os.environ,
        NOVALITE_STATE_DIR=str(state),
        NOVALITE_LISTEN=f"127.0.0.1:{port}",
        NOVALITE_CONSOLE_LISTEN=f"127.0.0.1:{console_port}",
        NOVALITE_DRIVER="libvirt",
        NOVALITE_DRIVER_OPTIONS=(
            f'{{"uri": "{QEMU_URI}", "virt_type": "qemu", "instances_path": "{instances}", "shutdown_timeout": 5}}'
        ),
        NOVALITE_HOST=f"console-e2e-{uuid.uuid4().hex[:6]}",
        NOVALITE_REPORT_INTERVAL="2",
    )
    env.pop("NOVALITE_ADMIN_PASSWORD", None)
    log = open(state / "serve.log", "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "novalite.cli", "serve"], stdout=subprocess.PIPE, stderr=log, text=True, env=env
    )
    banner = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        banner.append(line)
        if "use it:" in line:
            break
    if "use it:" not in "".join(banner):
        proc.kill()
        pytest.fail(f"novalite serve did not start:\n{''.join(banner)}\n{(state / 'serve.log').read_text()}")
    clouds = state / "clouds.yaml"
    cli_env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    cli_env.update(OS_CLIENT_CONFIG_FILE=str(clouds), OS_CLOUD="novalite")
    info = {"state": state, "cli": Cli(cli_env), "console_port": console_port, "instances": instances}
    try:
        yield info
    finally:
        with_servers = info["cli"].run("server", "list", "-f", "value", "-c", "ID", check=False).split()
        for sid in with_servers:
            if len(sid) == 36:
                info["cli"].run("server", "delete", "--wait", sid, check=False)
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        _destroy_leftovers(instances)
        shutil.rmtree(instances, ignore_errors=True)


def _destroy_leftovers(instances: Path) -> None:
    """Guests of this test's instances dir that a failure left running (only those)."""
    import libvirt

    conn = libvirt.open(QEMU_URI)
    try:
        for dom in conn.listAllDomains():
            try:
                if str(instances) in dom.XMLDesc(0):
                    if dom.isActive():
                        dom.destroy()
                    dom.undefine()
            except libvirt.libvirtError:
                pass
    finally:
        conn.close()


@pytest.fixture(scope="module")
def guest(served_libvirt, tiny_guest):  # noqa: F811
    cli = served_libvirt["cli"]
    cli.run(
        "image", "create", "--file", tiny_guest["disk"], "--disk-format", "qcow2", "--container-format", "bare", "tiny"
    )
    cli.run("server", "create", "--flavor", "m1.tiny", "--image", "tiny", "--nic", "none", "--wait", "vm1")
    deadline = time.monotonic() + 180
    log = ""
    while time.monotonic() < deadline:
        log = cli.run("console", "log", "show", "vm1")
        if "novalite-guest-ready" in log:
            break
        time.sleep(1)
    else:
        pytest.fail(f"the guest did not boot; its serial log:\n{log}")
    return served_libvirt


def console_url(cli: Cli) -> str:
    url = cli.run("console", "url", "show", "--novnc", "vm1", "-f", "value", "-c", "url").strip()
    assert url.startswith("http://127.0.0.1:") and "/vnc.html?token=" in url, url
    return url


async def test_browser_types_into_the_guest(guest, tmp_path):
    cli = guest["cli"]
    url = console_url(cli)
    assert url.startswith(f"http://127.0.0.1:{guest['console_port']}/")
    marker = f"novnc-typed-{random.randint(10000, 99999)}"
    shot = Path(os.environ.get("NOVALITE_ARTIFACTS", tmp_path)) / "console-qemu.png"
    async with chromium_page() as page:
        await page.goto(url)
        status = await wait_status(page, "Connected", timeout=30)
        assert status == "Connected", status
        assert await page.inner_text("#name") == "vm1"
        # the guest's text console: wait until the canvas has its real size and shows text
        await page.wait_for_function(
            "() => { const c = document.querySelector('#screen canvas'); return c && c.width >= 640; }",
            timeout=30_000,
        )
        stats = {}
        for _ in range(60):
            stats = await canvas_stats(page)
            if stats["colours"] >= 2 and stats["lit"] > 500:
                break
            await page.wait_for_timeout(500)
        assert stats["colours"] >= 2 and stats["lit"] > 500, f"the canvas stays blank: {stats}"
        await page.click("#screen canvas")
        await page.keyboard.press("Enter")
        await page.keyboard.type(f"echo {marker} ")
        # '>' and 'S' as a user types them, Shift held (keyboard.type would send them unshifted
        # scancodes, which QEMU's keyboard turns into '.' and 's')
        await page.keyboard.press("Shift+Period")
        await page.keyboard.type("/dev/tty")
        await page.keyboard.press("Shift+KeyS")
        await page.keyboard.type("0")
        await page.keyboard.press("Enter")
        deadline = time.monotonic() + 60
        log = ""
        while time.monotonic() < deadline:
            log = cli.run("console", "log", "show", "vm1")
            if marker in log:
                break
            await page.wait_for_timeout(500)
        await page.screenshot(path=str(shot))
        assert marker in log, f"typed through noVNC, not in the serial log (screenshot {shot}):\n{log[-2000:]}"
        assert await page.inner_text("#status") == "Connected"


async def test_browser_expired_token_is_refused(guest):
    cli = guest["cli"]
    url = console_url(cli)
    token = url.split("token=", 1)[1]
    db = sqlite3.connect(guest["state"] / "novalite.db")
    try:
        with db:
            changed = db.execute(
                "UPDATE console_auth_tokens SET expires_at = '2000-01-01 00:00:00.000000' WHERE token_hash = ?",
                (hashlib.sha256(token.encode()).hexdigest(),),
            ).rowcount
        assert changed == 1
    finally:
        db.close()
    async with chromium_page() as page:
        await page.goto(url)
        status = await wait_status(page, "Connected", timeout=30)
        assert status.startswith("Failed") and "expired" in status, status
        # and the websocket itself is refused, not only the page's check
        refused = await page.evaluate(
            """(url) => new Promise((resolve) => {
                const ws = new WebSocket(url);
                ws.onopen = () => resolve("opened");
                ws.onerror = () => resolve("refused");
            })""",
            url.replace("http://", "ws://").replace("/vnc.html?", "/websockify?"),
        )
        assert refused == "refused"
