"""The disk transfer between agents of cold moves (issue 10, novalite.agent.transfer): a
real receiver on loopback and the real sender, no mocks."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import aiohttp
import pytest

from novalite.agent.transfer import TICKET_HEADER, TransferError, TransferReceiver, new_ticket, send_files

MIG = "6b1d0c1e-3f7a-4c55-9a7e-0d5f2f0e9a01"
INST = "0f7c2b8e-1111-4c55-9a7e-0d5f2f0e9a02"


@pytest.fixture
async def receiver():
    r = TransferReceiver("127.0.0.1:0")
    try:
        yield r
    finally:
        await r.close()


def files_in(path: Path) -> list[str]:
    return sorted(os.listdir(path)) if path.exists() else []


async def test_files_arrive_whole_and_the_ticket_is_used_up(receiver: TransferReceiver, tmp_path: Path):
    src = tmp_path / "src"
    src.mkdir()
    disk = src / "disk"
    disk.write_bytes(os.urandom(3 * 1024 * 1024 + 17))  # several chunks, not a multiple of one
    log = src / "console.log"
    log.write_bytes(b"boot\n")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    ticket = new_ticket()
    url = await receiver.expect(MIG, INST, ticket, str(inbox))
    assert url.startswith("http://127.0.0.1:") and url.endswith(f"/v1/migrations/{MIG}")

    sent = await send_files(url, ticket, [str(disk), str(log)])
    assert sent == disk.stat().st_size + 5
    assert files_in(inbox) == ["console.log", "disk"]  # no temporary file left
    assert (inbox / "disk").read_bytes() == disk.read_bytes()
    assert receiver.expecting() == []

    # One-time: the same ticket opens nothing any more, and nothing is written.
    with pytest.raises(TransferError, match="401"):
        await send_files(url, ticket, [str(log)])
    assert files_in(inbox) == ["console.log", "disk"]


async def test_a_bad_ticket_is_refused_and_nothing_is_written(receiver: TransferReceiver, tmp_path: Path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    ticket = new_ticket()
    url = await receiver.expect(MIG, INST, ticket, str(inbox))
    async with aiohttp.ClientSession() as s:
        for headers in ({}, {TICKET_HEADER: "x"}, {TICKET_HEADER: new_ticket()}, {TICKET_HEADER: ticket[:-1]}):
            async with s.put(f"{url}/files/disk", data=b"evil", headers=headers) as resp:
                assert resp.status == 401, headers
                assert (await resp.json())["error"]["message"] == "The migration ticket is not valid."
        # The right ticket for another migration opens nothing either.
        other = url.replace(MIG, "11111111-2222-3333-4444-555555555555")
        async with s.put(f"{other}/files/disk", data=b"evil", headers={TICKET_HEADER: ticket}) as resp:
            assert resp.status == 401
        # Not a base name: refused before anything is opened.
        async with s.put(f"{url}/files/.hidden", data=b"x", headers={TICKET_HEADER: ticket}) as resp:
            assert resp.status == 400
        async with s.put(f"{url}/files/..", data=b"x", headers={TICKET_HEADER: ticket}) as resp:
            assert resp.status in (400, 404)
    assert files_in(inbox) == []
    with pytest.raises(TransferError, match="401"):
        src = tmp_path / "disk"
        src.write_bytes(b"data")
        await send_files(url, "wrong", [str(src)])
    assert files_in(inbox) == []
    assert receiver.expecting() == [MIG]  # refusals do not use the ticket up


async def test_an_interrupted_upload_leaves_no_partial_file(receiver: TransferReceiver, tmp_path: Path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    ticket = new_ticket()
    url = await receiver.expect(MIG, INST, ticket, str(inbox))
    port = receiver.port
    assert port
    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    length = 4 * 1024 * 1024
    writer.write(
        (
            f"PUT /v1/migrations/{MIG}/files/disk HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"{TICKET_HEADER}: {ticket}\r\nContent-Length: {length}\r\n\r\n"
        ).encode()
    )
    writer.write(os.urandom(1024 * 1024 + 3))  # a quarter of it, then the source dies
    await writer.drain()
    deadline = time.monotonic() + 5
    while not any(n.endswith(".part") for n in files_in(inbox)):  # it was being written...
        assert time.monotonic() < deadline, files_in(inbox)
        await asyncio.sleep(0.02)
    writer.close()
    deadline = time.monotonic() + 10
    while files_in(inbox):  # ...and is gone once the connection dropped
        assert time.monotonic() < deadline, files_in(inbox)
        await asyncio.sleep(0.05)

    # The name is still free: a whole upload of it succeeds.
    src = tmp_path / "disk"
    src.write_bytes(os.urandom(100_000))
    await send_files(url, ticket, [str(src)])
    assert files_in(inbox) == ["disk"] and (inbox / "disk").read_bytes() == src.read_bytes()


async def test_short_body_duplicate_and_abort(receiver: TransferReceiver, tmp_path: Path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    ticket = new_ticket()
    url = await receiver.expect(MIG, INST, ticket, str(inbox))
    headers = {TICKET_HEADER: ticket}
    async with aiohttp.ClientSession() as s:
        async with s.put(f"{url}/files/disk", data=b"0123456789", headers=headers) as resp:
            assert resp.status == 201
            assert (await resp.json())["size"] == 10
        async with s.put(f"{url}/files/disk", data=b"again", headers=headers) as resp:
            assert resp.status == 409
    assert (inbox / "disk").read_bytes() == b"0123456789"

    # A sender whose second file fails gives the transfer up: what arrived is removed.
    good = tmp_path / "disk.eph0"
    good.write_bytes(b"eph")
    with pytest.raises(TransferError):
        await send_files(url, ticket, [str(good), str(tmp_path / "missing")])
    assert files_in(inbox) == [] or not inbox.exists()
    assert receiver.expecting() == []


async def test_an_unused_ticket_expires_with_what_it_received(tmp_path: Path):
    receiver = TransferReceiver("127.0.0.1:0", ttl=0.3)
    try:
        inbox = tmp_path / "inbox"
        inbox.mkdir()
        ticket = new_ticket()
        url = await receiver.expect(MIG, INST, ticket, str(inbox))
        async with aiohttp.ClientSession() as s:
            async with s.put(f"{url}/files/disk", data=b"x" * 10, headers={TICKET_HEADER: ticket}) as resp:
                assert resp.status == 201
        await asyncio.sleep(0.4)
        assert receiver.expecting() == []
        assert not (inbox / "disk").exists()
        deadline = time.monotonic() + 5
        while receiver.port is not None:  # nothing expected: it stops listening
            assert time.monotonic() < deadline
            await asyncio.sleep(0.1)
    finally:
        await receiver.close()
