"""A tiny RFB (VNC) server for tests: records every connection and what it received.

``FakeVNC(handshake=False)`` only sends the ``RFB 003.008`` banner (enough to prove bytes
flow through the proxy). ``handshake=True`` speaks enough RFB 3.8 for noVNC to connect:
security type None, ServerInit with a small 32-bit framebuffer, and a raw full-screen update
for every FramebufferUpdateRequest; key events are recorded in ``keys``.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass, field

BANNER = b"RFB 003.008\n"
WIDTH, HEIGHT = 64, 48


@dataclass
class FakeVNC:
    handshake: bool = False
    name: bytes = b"fake-vnc"
    connections: int = 0
    received: bytearray = field(default_factory=bytearray)
    keys: list[int] = field(default_factory=list)
    port: int = 0
    _server: asyncio.AbstractServer | None = None

    async def start(self) -> FakeVNC:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            writer.write(BANNER)
            await writer.drain()
            if not self.handshake:
                while data := await reader.read(4096):
                    self.received += data
                return
            await self._rfb(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def _rfb(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(12)  # client version
        writer.write(b"\x01\x01")  # one security type: None
        await reader.readexactly(1)
        writer.write(struct.pack(">I", 0))  # SecurityResult OK
        await reader.readexactly(1)  # ClientInit (shared flag)
        # 32 bpp, depth 24, little endian, true colour, max 255, shifts r16 g8 b0
        pixel_format = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)
        writer.write(struct.pack(">HH", WIDTH, HEIGHT) + pixel_format + struct.pack(">I", len(self.name)) + self.name)
        await writer.drain()
        while True:
            kind = (await reader.readexactly(1))[0]
            if kind == 0:  # SetPixelFormat
                await reader.readexactly(19)
            elif kind == 2:  # SetEncodings
                _, count = struct.unpack(">BH", await reader.readexactly(3))
                await reader.readexactly(4 * count)
            elif kind == 3:  # FramebufferUpdateRequest
                await reader.readexactly(9)
                await asyncio.sleep(0.05)
                pixels = b"".join(
                    struct.pack("<I", 0x00FF8800 if (x // 8 + y // 8) % 2 else 0x002266CC)
                    for y in range(HEIGHT)
                    for x in range(WIDTH)
                )
                header = struct.pack(">BxH", 0, 1) + struct.pack(">HHHHi", 0, 0, WIDTH, HEIGHT, 0)
                writer.write(header + pixels)
                await writer.drain()
            elif kind == 4:  # KeyEvent
                down, key = struct.unpack(">B2xI", await reader.readexactly(7))
                if down:
                    self.keys.append(key)
            elif kind == 5:  # PointerEvent
                await reader.readexactly(5)
            elif kind == 6:  # ClientCutText
                _, length = struct.unpack(">3sI", await reader.readexactly(7))
                await reader.readexactly(length)
            else:  # QEMU or other extension we did not announce: stop
                return
