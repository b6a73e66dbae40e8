"""Image data on disk: one file per image under ``<state_dir>/images/<id>``.

Uploads are streamed to a temporary file in the same directory while their size, MD5
(Glance's ``checksum``) and SHA-512 (``os_hash_value``) are computed, then renamed into
place, so a reader never sees half an image and an interrupted upload leaves nothing
behind but a temporary file that is removed on the spot. The digests are computed
while streaming because reading a multi-GB image a second time would double the cost
of every upload.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import struct
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from novalite.config import Settings

#: The algorithm of ``os_hash_value`` (Glance's default ``hashing_algorithm``).
HASH_ALGO = "sha512"
#: Bytes gathered before each write: large enough that the thread hop per write is noise.
WRITE_CHUNK = 1 << 20
QCOW2_MAGIC = b"QFI\xfb"


def images_dir(settings: Settings) -> Path:
    return settings.state_dir / "images"


def image_path(settings: Settings, image_id: str) -> Path:
    """Where the data of ``image_id`` lives (whether or not it has been uploaded yet)."""
    if "/" in image_id or image_id in ("", ".", ".."):
        raise ValueError(f"invalid image id {image_id!r}")
    return images_dir(settings) / image_id


@dataclass
class StoredData:
    """What an upload produced: the image record's data fields."""

    path: Path
    size: int
    checksum: str
    os_hash_algo: str
    os_hash_value: str
    virtual_size: int


class UploadTooLarge(Exception):
    """The body exceeded ``limit``: the announced size, or the ``image_size_cap`` when that is smaller."""

    def __init__(self, limit: int, capped: bool) -> None:
        super().__init__(f"the image data exceeds {limit} bytes")
        self.limit = limit
        #: True when the limit hit was ``image_size_cap`` (413), False when it was the announced size (400).
        self.capped = capped


def qcow2_virtual_size(header: bytes) -> int | None:
    """The guest disk size of a qcow2 image: big-endian u64 at offset 24 of the header.

    Reading the header we already have in memory is enough; no ``qemu-img info`` needed.
    """
    if len(header) >= 32 and header[:4] == QCOW2_MAGIC:
        size: int = struct.unpack(">Q", header[24:32])[0]
        return size
    return None


async def write_image(
    settings: Settings,
    image_id: str,
    chunks: AsyncIterator[bytes],
    disk_format: str | None,
    max_size: int | None = None,
) -> StoredData:
    """Stream ``chunks`` into the image's file; atomic: either the whole file or none.

    Hashing and writing run in a worker thread, one MiB at a time, so a large upload
    neither blocks the event loop nor holds more than a few MiB in memory. No upload grows
    past ``settings.image_size_cap`` (nor past ``max_size``, the announced size): the
    stream stops at the first byte over and the partial file is removed.
    """
    capped = max_size is None or max_size > settings.image_size_cap
    limit = settings.image_size_cap if max_size is None or capped else max_size
    final = image_path(settings, image_id)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{image_id}.{uuid.uuid4().hex}.part")
    md5 = hashlib.md5(usedforsecurity=False)
    sha = hashlib.new(HASH_ALGO)
    size = 0
    header = b""
    pending: list[bytes] = []
    pending_len = 0

    def write(fh: object, data: bytes) -> None:
        md5.update(data)
        sha.update(data)
        fh.write(data)  # type: ignore[attr-defined]

    fh = await asyncio.to_thread(open, tmp, "wb")
    try:
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(limit, capped)
                if len(header) < 32:
                    header += chunk[: 32 - len(header)]
                pending.append(chunk)
                pending_len += len(chunk)
                if pending_len >= WRITE_CHUNK:
                    data, pending, pending_len = b"".join(pending), [], 0
                    await asyncio.to_thread(write, fh, data)
            if pending:
                await asyncio.to_thread(write, fh, b"".join(pending))
            await asyncio.to_thread(_flush, fh)
        finally:
            await asyncio.to_thread(fh.close)
        await asyncio.to_thread(os.replace, tmp, final)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    virtual = qcow2_virtual_size(header) if disk_format == "qcow2" else None
    return StoredData(
        path=final,
        size=size,
        checksum=md5.hexdigest(),
        os_hash_algo=HASH_ALGO,
        os_hash_value=sha.hexdigest(),
        virtual_size=virtual if virtual is not None else size,
    )


def _flush(fh: object) -> None:
    fh.flush()  # type: ignore[attr-defined]
    os.fsync(fh.fileno())  # type: ignore[attr-defined]


def delete_data(settings: Settings, image_id: str) -> bool:
    """Remove the image's file; True if there was one."""
    try:
        image_path(settings, image_id).unlink()
    except FileNotFoundError:
        return False
    return True
