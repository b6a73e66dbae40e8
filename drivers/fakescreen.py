"""A fake guest's screen: a small RFB (VNC) 3.8 server, in the driver's event loop, that draws
the guest's console text, so the console page (noVNC through the console proxy) shows
something real in demo mode.

One :class:`FakeScreen` per guest, listening on 127.0.0.1 on an ephemeral port. It speaks
the least RFB a viewer needs: protocol 3.3/3.7/3.8, security type None, a 640x400 true-colour
framebuffer in whatever pixel format the viewer asks for (8, 16 or 32 bits per pixel), and
raw encoding only (every viewer supports it). The picture is a title bar with the guest's
name and the last lines of its console log, in an 8x16 bitmap font (80x25, like a PC text
console); what is typed shows on a prompt line after them, and Return hands it to the driver
(the fake "guest" echoes it into its console log). Updates are whole frames, sent for a
full request at once and for an incremental one when the text changes, so an idle viewer
costs a comparison every quarter second and no bandwidth.

Pure asyncio: drivers import nothing of novalite.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import struct
from collections.abc import Callable
from dataclasses import dataclass

WIDTH, HEIGHT = 640, 400
CELL_W, CELL_H = 8, 16
COLS, ROWS = WIDTH // CELL_W, HEIGHT // CELL_H
#: How often a viewer waiting for a change (an incremental update request) re-reads the text.
POLL = 0.25
#: Colours (r, g, b): the title bar, then the console text.
TITLE_FG, TITLE_BG = (0xFF, 0xFF, 0xFF), (0x2A, 0x4D, 0x7A)
TEXT_FG, TEXT_BG = (0xD0, 0xD0, 0xD0), (0x10, 0x10, 0x10)

#: ASCII 32-126, 16 bytes a glyph (one a row, high bit leftmost), rasterized once from
#: DejaVu Sans Mono 13px (Bitstream Vera licence: free to embed and redistribute).
FONT = base64.b64decode(
    "AAAAAAAAAAAAAAAAAAAAAAAAABgYGBgYGAAYGAAAAAAAAAAkJCQkAAAAAAAAAAAAAAASFhR/JCT+aEhIAAAAAAAAAAA8aEA4HAJG"
    "PAAAAAAAAABwkJB2GG4LCw4AAAAAAAAAPGAgMFnLxkY6AAAAAAAAABgYGBgAAAAAAAAAAAAACAgYEBAQEBAQGAgIAAAAADAQGBgI"
    "CAgICBgQMAAAAAAAABBSODhSEAAAAAAAAAAAAAAAGBgY/hgYGAAAAAAAAAAAAAAAAAAAABgYEBAAAAAAAAAAAAAAPAAAAAAAAAAA"
    "AAAAAAAAAAAAGBgAAAAAAAAABgQMCAgQEDAgYEAAAAAAADxkRkJaQkZkPAAAAAAAAAB4CAgICAgICD4AAAAAAAAAPEQGBAwYMGB+"
    "AAAAAAAAADxEBgQ8BgZGPAAAAAAAAAAMHBQkZER+BAQAAAAAAAAAfGBgfAQGBkQ4AAAAAAAAADxgQHxmQkJmPAAAAAAAAAB+BgQM"
    "CBgYEDAAAAAAAAAAPGZGZDxmQmY8AAAAAAAAADxkRkZmPgYEOAAAAAAAAAAAABgYAAAAGBgAAAAAAAAAAAAYGAAAABgYEBAAAAAA"
    "AAAAAhxgYBwCAAAAAAAAAAAAAAD+AAD+AAAAAAAAAAAAAABAOA4OOEAAAAAAAAAAADwGBgwYEAAQEAAAAAAAAAA8YkLPk5OTz0Bg"
    "HAAAAAAAGBg8LCRmfkLDAAAAAAAAAHxGRkZ8RkJGfAAAAAAAAAAcImBAQEBgIhwAAAAAAAAAeERGQkJCRkR4AAAAAAAAAH5gYGB+"
    "YGBgfgAAAAAAAAB+YGBgfmBgYGAAAAAAAAAAPGJAQE5CQmI8AAAAAAAAAEJCQkJ+QkJCQgAAAAAAAAB+GBgYGBgYGH4AAAAAAAAA"
    "PAQEBAQEBEx4AAAAAAAAAEJESHB4SExGQgAAAAAAAABgYGBgYGBgYH4AAAAAAAAA5ubm+trawsLCAAAAAAAAAGJiclJaSk5GRgAA"
    "AAAAAAA8ZkZCQkJGZjwAAAAAAAAAfGZiYmZ8YGBgAAAAAAAAADxmRkJCQkZmPAwEAAAAAAB8RkZGfExGQkMAAAAAAAAAPGBAYDwG"
    "AkY8AAAAAAAAAP8YGBgYGBgYGAAAAAAAAABCQkJCQkJCZjwAAAAAAAAAwkJGZCQkPBgYAAAAAAAAAIPDw9paWm5mZgAAAAAAAABC"
    "ZjwYGDwkZsIAAAAAAAAAwmYkPBgYGBgYAAAAAAAAAH4GBAwYECBgfgAAAAAAHBAQEBAQEBAQEBAcAAAAAAAAQGAgMBAQCAgMBAYA"
    "AAA4CAgICAgICAgICDgAAAAAAAAYPGRCAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAD/AAAAMBAAAAAAAAAAAAAAAAAAAAAAADxEBj5G"
    "Rj4AAAAAAEBAQEB8ZmJCYmZ8AAAAAAAAAAAAHCJgYGAiHAAAAAAABgYGBj5mRkZGZj4AAAAAAAAAAAA8ZkJ+QGI8AAAAAAAOGBAQ"
    "fhAQEBAQEAAAAAAAAAAAAD5mRkZGZj4GBDgAAEBAQEB8ZmZGRkZGAAAAAAAYAAAAOBgYGBgYfgAAAAAACAAAADgICAgICAgIGHAA"
    "AGBgYGBmbHh4bGZiAAAAAABwEBAQEBAQEBAQDgAAAAAAAAAAAH5aWlpaWloAAAAAAAAAAAB8ZmZGRkZGAAAAAAAAAAAAPGZCQkJm"
    "PAAAAAAAAAAAAHxmYkJiZnxAQEAAAAAAAAA+ZkZGRmY+BgYGAAAAAAAAPjAwMDAwMAAAAAAAAAAAADxkYDwERDwAAAAAAAAAEBB+"
    "EBAQEBAeAAAAAAAAAAAARkZGRmZmPgAAAAAAAAAAAEJGZCQsGBgAAAAAAAAAAACDw1pafmZkAAAAAAAAAAAARiQYGDwkQgAAAAAA"
    "AAAAAEJmJCQ8GBgYEGAAAAAAAAB+BAgYMCB+AAAAAAAMGBgYEHAQGBgYGAwAAAAAGBgYGBgYGBgYGBgYGAAAAHAQGBgYDBgYGBAQ"
    "cAAAAAAAAAAAAABwDgAAAAAAAAA="
)
assert len(FONT) == 95 * CELL_H

SECURITY_NONE = 1
KEY_BACKSPACE, KEY_RETURN, KEY_KP_ENTER = 0xFF08, 0xFF0D, 0xFF8D


@dataclass(frozen=True)
class PixelFormat:
    """An RFB PIXEL_FORMAT (true colour only): how to turn (r, g, b) into the viewer's bytes."""

    bpp: int = 32
    depth: int = 24
    big_endian: bool = False
    max: tuple[int, int, int] = (255, 255, 255)
    shift: tuple[int, int, int] = (16, 8, 0)

    def pack(self) -> bytes:
        return struct.pack(">BBBBHHHBBB3x", self.bpp, self.depth, self.big_endian, 1, *self.max, *self.shift)

    @classmethod
    def unpack(cls, data: bytes) -> PixelFormat:
        bpp, depth, big, true_colour, rm, gm, bm, rs, gs, bs = struct.unpack(">BBBBHHHBBB3x", data)
        if not true_colour or bpp not in (8, 16, 32):
            raise ValueError(f"pixel format unsupported: {bpp} bpp, true colour {bool(true_colour)}")
        return cls(bpp, depth, bool(big), (rm, gm, bm), (rs, gs, bs))

    def pixel(self, rgb: tuple[int, int, int]) -> bytes:
        value = 0
        for c, m, s in zip(rgb, self.max, self.shift, strict=True):
            value |= (c * m // 255) << s
        return value.to_bytes(self.bpp // 8, "big" if self.big_endian else "little")


class Renderer:
    """Text to framebuffer bytes, by lookup: per colour pair, the 8 pixels of every glyph row byte."""

    def __init__(self, fmt: PixelFormat) -> None:
        self.fmt = fmt
        self._tables: dict[tuple[tuple[int, int, int], tuple[int, int, int]], list[bytes]] = {}

    def _table(self, fg: tuple[int, int, int], bg: tuple[int, int, int]) -> list[bytes]:
        table = self._tables.get((fg, bg))
        if table is None:
            on, off = self.fmt.pixel(fg), self.fmt.pixel(bg)
            table = [b"".join(on if bits & (0x80 >> x) else off for x in range(CELL_W)) for bits in range(256)]
            self._tables[(fg, bg)] = table
        return table

    def row(self, text: str, fg: tuple[int, int, int], bg: tuple[int, int, int]) -> bytes:
        """One text row (CELL_H scanlines, the full width)."""
        table = self._table(fg, bg)
        text = "".join(c if " " <= c <= "~" else "?" for c in text[:COLS]).ljust(COLS)
        starts = [(ord(c) - 32) * CELL_H for c in text]
        return b"".join(b"".join([table[FONT[s + y]] for s in starts]) for y in range(CELL_H))

    def frame(self, title: str, lines: list[str]) -> bytes:
        rows = [self.row(title, TITLE_FG, TITLE_BG)]
        rows += [self.row(line, TEXT_FG, TEXT_BG) for line in lines[-(ROWS - 1) :]]
        rows += [self.row("", TEXT_FG, TEXT_BG)] * (ROWS - len(rows))
        return b"".join(rows)


class FakeScreen:
    """The RFB server of one guest. ``lines()`` is read for every frame (the console log as it
    is now); ``on_line`` gets each line typed and ended with Return."""

    def __init__(self, title: str, lines: Callable[[], list[str]], on_line: Callable[[str], None] | None = None):
        self.title = title
        self.lines = lines
        self.on_line = on_line
        self.typed = ""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._renderers: dict[PixelFormat, Renderer] = {}
        self._frame_cache: tuple[tuple[PixelFormat, tuple[str, ...]], bytes] | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        """Close the listener and every viewer (the guest's screen went dark), and wait for
        their handlers to end, so that nothing of the screen outlives it."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._clients):
            writer.close()
        if self._handlers:
            await asyncio.wait(list(self._handlers), timeout=5)

    @property
    def running(self) -> bool:
        return self._server is not None

    def text(self) -> list[str]:
        """The console lines shown, then the prompt with what is being typed."""
        return [*self.lines(), f"$ {self.typed}_"]

    def frame(self, fmt: PixelFormat, lines: list[str]) -> bytes:
        key = (fmt, tuple(lines[-(ROWS - 1) :]))
        if self._frame_cache is not None and self._frame_cache[0] == key:
            return self._frame_cache[1]
        renderer = self._renderers.setdefault(fmt, Renderer(fmt))
        data = renderer.frame(self.title, list(key[1]))
        self._frame_cache = (key, data)
        return data

    def key(self, keysym: int) -> None:
        if 0x20 <= keysym <= 0x7E:
            self.typed = (self.typed + chr(keysym))[: COLS * 2]
        elif keysym == KEY_BACKSPACE:
            self.typed = self.typed[:-1]
        elif keysym in (KEY_RETURN, KEY_KP_ENTER):
            line, self.typed = self.typed, ""
            if self.on_line is not None:
                self.on_line(line)
        else:
            return
        self._changed.set()

    # -- one viewer -------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self._clients.add(writer)
        updates: asyncio.Task[None] | None = None
        try:
            fmt = await self._handshake(reader, writer)
            if fmt is None:
                return
            state = _Viewer(fmt)
            updates = asyncio.create_task(self._updates(writer, state))
            await self._messages(reader, state)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError):
            pass
        finally:
            self._clients.discard(writer)
            if task is not None:
                self._handlers.discard(task)
            if updates is not None:
                updates.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                    await updates
            writer.close()

    async def _handshake(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> PixelFormat | None:
        writer.write(b"RFB 003.008\n")
        version = await reader.readexactly(12)
        minor = int(version[8:11]) if version[:4] == b"RFB " and version[8:11].isdigit() else 3
        if minor < 7:  # 3.3: the server picks the security type
            writer.write(struct.pack(">I", SECURITY_NONE))
        else:
            writer.write(bytes([1, SECURITY_NONE]))
            chosen = (await reader.readexactly(1))[0]
            if chosen != SECURITY_NONE:
                if minor >= 8:
                    reason = b"only security type None is offered"
                    writer.write(struct.pack(">II", 1, len(reason)) + reason)
                    await writer.drain()
                return None
            if minor >= 8:
                writer.write(struct.pack(">I", 0))
        await reader.readexactly(1)  # ClientInit: shared or not, all viewers share
        fmt = PixelFormat()
        name = self.title.encode("utf-8", errors="replace")
        writer.write(struct.pack(">HH", WIDTH, HEIGHT) + fmt.pack() + struct.pack(">I", len(name)) + name)
        await writer.drain()
        return fmt

    async def _messages(self, reader: asyncio.StreamReader, state: _Viewer) -> None:
        while True:
            kind = (await reader.readexactly(1))[0]
            if kind == 0:  # SetPixelFormat
                state.fmt = PixelFormat.unpack((await reader.readexactly(19))[3:])
            elif kind == 2:  # SetEncodings: raw is always allowed, the only one sent
                _, count = struct.unpack(">BH", await reader.readexactly(3))
                await reader.readexactly(4 * count)
            elif kind == 3:  # FramebufferUpdateRequest
                incremental = (await reader.readexactly(9))[0]
                state.full = state.full or not incremental
                state.wanted.set()
            elif kind == 4:  # KeyEvent
                down, keysym = struct.unpack(">B2xI", await reader.readexactly(7))
                if down:
                    self.key(keysym)
            elif kind == 5:  # PointerEvent
                await reader.readexactly(5)
            elif kind == 6:  # ClientCutText
                _, length = struct.unpack(">3sI", await reader.readexactly(7))
                await reader.readexactly(length)
            else:  # an extension this server never announced
                return

    async def _updates(self, writer: asyncio.StreamWriter, state: _Viewer) -> None:
        """Answer update requests: a full one now, an incremental one once the text changed."""
        while True:
            await state.wanted.wait()
            while True:
                lines = self.text()
                if state.full or lines != state.shown or state.fmt != state.shown_fmt:
                    break
                self._changed.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), POLL)
            state.wanted.clear()
            state.full = False
            fmt = state.fmt
            pixels = self.frame(fmt, lines)
            header = struct.pack(">BxH", 0, 1) + struct.pack(">HHHHi", 0, 0, WIDTH, HEIGHT, 0)
            writer.write(header + pixels)
            await writer.drain()
            state.shown, state.shown_fmt = lines, fmt


class _Viewer:
    """What one connection asked for and was last sent."""

    def __init__(self, fmt: PixelFormat) -> None:
        self.fmt = fmt
        self.full = False
        self.wanted = asyncio.Event()
        self.shown: list[str] | None = None
        self.shown_fmt: PixelFormat | None = None
