"""The fake driver's screens: a real RFB server per running guest that draws its console log.

Read with a minimal RFB 3.8 client (no mocks: the driver's own server on a real socket), and
the picture is read back into text by matching each 8x16 cell against the font, so the tests
check what a person would see on the console page: the guest's name and its console lines.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from novalite_drivers.base import Instance, InvalidState, NotSupported, Port
from novalite_drivers.fake import FakeDriver
from novalite_drivers.fakescreen import CELL_H, CELL_W, FONT, HEIGHT, WIDTH

GLYPHS = {FONT[i * CELL_H : (i + 1) * CELL_H]: chr(32 + i) for i in range(95)}
#: noVNC's SetPixelFormat: 32 bpp, little endian, red in the low byte (not the server's default).
RGBX = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 0, 8, 16)


def screen_text(lit: Callable[[int, int], bool]) -> list[str]:
    """The characters on the screen, cell by cell ('?' for a cell that is no glyph)."""
    rows = []
    for r in range(HEIGHT // CELL_H):
        chars = []
        for c in range(WIDTH // CELL_W):
            cell = bytes(
                sum(0x80 >> x for x in range(CELL_W) if lit(c * CELL_W + x, r * CELL_H + y)) for y in range(CELL_H)
            )
            chars.append(GLYPHS.get(cell, "?"))
        rows.append("".join(chars).rstrip())
    return rows


@dataclass
class Frame:
    width: int
    height: int
    name: bytes
    pixels: bytes  # RGBX, 4 bytes a pixel

    def rgb(self, x: int, y: int) -> tuple[int, int, int]:
        i = 4 * (y * self.width + x)
        return self.pixels[i], self.pixels[i + 1], self.pixels[i + 2]

    def text(self) -> list[str]:
        return screen_text(lambda x, y: sum(self.rgb(x, y)) > 400)


class RFBClient:
    """Just enough of a viewer: handshake, pixel format, update requests, raw rectangles, keys."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.width = self.height = 0
        self.name = b""
        self.fb = bytearray()

    @classmethod
    async def connect(cls, host: str, port: int) -> RFBClient:
        client = cls(*await asyncio.open_connection(host, port))
        r, w = client.reader, client.writer
        assert await r.readexactly(12) == b"RFB 003.008\n"
        w.write(b"RFB 003.008\n")
        count = (await r.readexactly(1))[0]
        assert 1 in await r.readexactly(count)  # None is offered
        w.write(b"\x01")
        assert struct.unpack(">I", await r.readexactly(4)) == (0,)
        w.write(b"\x01")  # shared
        client.width, client.height = struct.unpack(">HH", await r.readexactly(4))
        await r.readexactly(16)
        (length,) = struct.unpack(">I", await r.readexactly(4))
        client.name = await r.readexactly(length)
        client.fb = bytearray(client.width * client.height * 4)
        w.write(b"\x00\x00\x00\x00" + RGBX)
        w.write(struct.pack(">BxHi", 2, 1, 0))  # SetEncodings: raw
        await w.drain()
        return client

    async def update(self, incremental: bool = False, timeout: float = 5.0, request: bool = True) -> Frame:
        """Request an update (unless ``request`` is False: one asked before) and read it."""
        if request:
            self.writer.write(struct.pack(">BBHHHH", 3, incremental, 0, 0, self.width, self.height))
            await self.writer.drain()
        async with asyncio.timeout(timeout):
            assert (await self.reader.readexactly(1))[0] == 0  # FramebufferUpdate
            _, rects = struct.unpack(">BH", await self.reader.readexactly(3))
            for _ in range(rects):
                x, y, w, h, enc = struct.unpack(">HHHHi", await self.reader.readexactly(12))
                assert enc == 0, enc
                data = await self.reader.readexactly(w * h * 4)
                for row in range(h):
                    start = 4 * ((y + row) * self.width + x)
                    self.fb[start : start + 4 * w] = data[row * w * 4 : (row + 1) * w * 4]
        return Frame(self.width, self.height, self.name, bytes(self.fb))

    async def type(self, text: str) -> None:
        for ch in text:
            key = 0xFF0D if ch == "\n" else ord(ch)
            self.writer.write(struct.pack(">BBxxI", 4, 1, key) + struct.pack(">BBxxI", 4, 0, key))
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def driver() -> AsyncIterator[FakeDriver]:
    d = FakeDriver("hv1")
    await d.init_host()
    try:
        yield d
    finally:
        await d.cleanup_host()


def instance(name: str = "demo-vm") -> Instance:
    return Instance(
        uuid="6f1c7a52-0000-4000-8000-000000000001",
        name="instance-00000001",
        hostname=name,
        ports=[Port(mac="fa:16:3e:00:00:01", ip="10.0.0.5")],
    )


async def test_screen_shows_the_guests_name_and_console_text(driver: FakeDriver):
    inst = instance()
    await driver.spawn(inst)
    address = await driver.get_vnc_console(inst)
    assert address.host == "127.0.0.1" and address.port > 0
    assert await driver.get_vnc_console(inst) == address  # the same server until it stops

    client = await RFBClient.connect(address.host, address.port)
    try:
        assert (client.width, client.height) == (640, 400)
        assert client.name.startswith(b"demo-vm")
        frame = await client.update()
        text = frame.text()
        assert text[0].startswith("demo-vm - novalite fake guest"), text[0]
        console = (await driver.get_console_output(inst)).splitlines()
        assert text[1 : 1 + len(console)] == console, text  # each log line, as logged
        assert "eth: fa:16:3e:00:00:01 ip 10.0.0.5" in text[2]
        assert text[1 + len(console)] == "$ _"  # then a prompt with the cursor
        assert all(line == "" for line in text[len(console) + 2 :])
        # the title bar is blue, the text area dark: colours in noVNC's RGBX order, as asked
        assert frame.rgb(639, 15) == (0x2A, 0x4D, 0x7A)
        assert frame.rgb(639, 399) == (0x10, 0x10, 0x10)

        # what is typed shows on the screen; Return hands the line to the guest's console log
        await client.type("uptime")
        frame = await client.update(incremental=True)
        assert text_line(frame, -1) == "$ uptime_", frame.text()
        await client.type("\n")
        frame = await client.update(incremental=True)
        assert "$ uptime" in await driver.get_console_output(inst)
        assert text_line(frame, -2).endswith("] $ uptime") and text_line(frame, -1) == "$ _", frame.text()
    finally:
        await client.close()


def text_line(frame: Frame, index: int) -> str:
    """The ``index``-th non-empty line of the screen."""
    return [line for line in frame.text() if line][index]


async def test_incremental_update_waits_for_a_change(driver: FakeDriver):
    inst = instance()
    await driver.spawn(inst)
    address = await driver.get_vnc_console(inst)
    client = await RFBClient.connect(address.host, address.port)
    try:
        await client.update()
        with pytest.raises(TimeoutError):  # nothing changed: no frame (an idle viewer costs nothing)
            await client.update(incremental=True, timeout=0.8)
        await driver.reboot(inst)  # the guest logs "reboot": the waiting request is answered
        frame = await client.update(request=False)
        assert text_line(frame, -2).endswith("] reboot"), frame.text()
    finally:
        await client.close()


async def test_screen_goes_dark_with_the_guest_and_comes_back_on_a_new_port(driver: FakeDriver):
    inst = instance()
    await driver.spawn(inst)
    first = await driver.get_vnc_console(inst)
    client = await RFBClient.connect(first.host, first.port)
    await client.update()

    await driver.power_off(inst)
    assert await asyncio.wait_for(client.reader.read(), 5) == b""  # the viewer is disconnected
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(first.host, first.port)
    with pytest.raises(InvalidState, match="shutdown: its screen is off"):
        await driver.get_vnc_console(inst)

    await driver.power_on(inst)
    second = await driver.get_vnc_console(inst)
    client = await RFBClient.connect(second.host, second.port)
    try:
        assert text_line(await client.update(), -2).endswith("] power on")
    finally:
        await client.close()

    await driver.destroy(inst)
    assert driver.screens == {}
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection(second.host, second.port)


async def test_screens_off_by_option():
    d = FakeDriver("hv1", {"screen": False})
    inst = instance()
    await d.spawn(inst)
    with pytest.raises(NotSupported, match="screen = false"):
        await d.get_vnc_console(inst)


async def test_screen_with_the_state_file(tmp_path):
    """A guest loaded from the state file (another engineer's option) gets its screen too."""
    options = {"state_file": str(tmp_path / "fake-state.json")}
    first = FakeDriver("hv1", options)
    await first.init_host()
    inst = instance("kept-vm")
    await first.spawn(inst)
    await first.cleanup_host()

    second = FakeDriver("hv1", options)
    await second.init_host()
    try:
        address = await second.get_vnc_console(inst)
        client = await RFBClient.connect(address.host, address.port)
        try:
            frame = await client.update()
            assert frame.text()[0].startswith("kept-vm"), frame.text()
            assert any("kept-vm booting" in line for line in frame.text())
        finally:
            await client.close()
    finally:
        await second.cleanup_host()
