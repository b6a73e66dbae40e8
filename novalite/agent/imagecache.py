"""The compute host's image cache: images fetched once per host from the image API.

The agent downloads an image from the image service (Glance v2
``/v2/images/{id}/file``) — over HTTP, never from the database — with a short-lived
ticket for that one image that the conductor mints (``X-Image-Ticket``; unlike
nova-compute, never with the user's token, which must not travel in bus messages),
into ``<state_dir>/image-cache/<id>``, verifies its MD5 against the image's
``Content-MD5``, and renames it into place, so a half-downloaded file is never used.
Kernel and ramdisk images named by ``kernel_id``/``ramdisk_id`` are fetched the same way.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from novalite_drivers.base import DriverError, Instance

from novalite.config import Settings
from novalite.log import get_logger

log = get_logger("novalite.agent.imagecache")

_locks: dict[str, asyncio.Lock] = {}
CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Credentials:
    """How to download the images of one build: a ticket per image, from the conductor."""

    tickets: dict[str, str]

    def headers(self, image_id: str) -> dict[str, str]:
        ticket = self.tickets.get(image_id)
        if ticket is None:
            raise DriverError(f"cannot download image {image_id}: the conductor gave no ticket for it")
        return {"X-Image-Ticket": ticket}


def cache_dir(settings: Settings) -> Path:
    return settings.state_dir / "image-cache"


def image_api(settings: Settings) -> str:
    return f"{settings.public_base}/image"


async def fetch(settings: Settings, credentials: Credentials, image_id: str) -> Path:
    """Return the local path of ``image_id``, downloading it if this host has not yet."""
    path = cache_dir(settings) / image_id
    if path.exists():
        return path
    lock = _locks.setdefault(image_id, asyncio.Lock())
    async with lock:
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".part")
        url = f"{image_api(settings)}/v2/images/{image_id}/file"
        md5 = hashlib.md5(usedforsecurity=False)
        size = 0
        timeout = aiohttp.ClientTimeout(total=None, sock_read=300)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async with session.get(url, headers=credentials.headers(image_id)) as resp:
                    if resp.status != 200:
                        raise DriverError(f"cannot download image {image_id}: HTTP {resp.status} from the image API")
                    expected = resp.headers.get("Content-MD5")
                    fh = await asyncio.to_thread(open, tmp, "wb")
                    try:
                        async for chunk in resp.content.iter_chunked(CHUNK):
                            md5.update(chunk)
                            size += len(chunk)
                            await asyncio.to_thread(fh.write, chunk)
                    finally:
                        await asyncio.to_thread(fh.close)
            if expected and expected not in (md5.hexdigest(), base64.b64encode(md5.digest()).decode()):
                raise DriverError(f"image {image_id} arrived corrupted (checksum mismatch)")
            os.replace(tmp, path)
        except aiohttp.ClientError as exc:
            raise DriverError(f"cannot download image {image_id}: {exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        log.info("imagecache.fetched", image=image_id, bytes=size)
        return path


def image_ids(inst: Instance) -> list[str]:
    """The images a guest boots from: its image, and the kernel and ramdisk it names."""
    if inst.image is None:
        return []
    props = inst.image.properties or {}
    return [inst.image.id, *(props[k] for k in ("kernel_id", "ramdisk_id") if props.get(k))]


async def fetch_image(settings: Settings, credentials: Credentials, inst: Instance) -> None:
    """Fill ``inst.image.path`` (and kernel/ramdisk paths) with cached local files."""
    image = inst.image
    if image is None:
        return
    image.path = str(await fetch(settings, credentials, image.id))
    props = image.properties or {}
    if props.get("kernel_id"):
        image.kernel_path = str(await fetch(settings, credentials, props["kernel_id"]))
    if props.get("ramdisk_id"):
        image.ramdisk_path = str(await fetch(settings, credentials, props["ramdisk_id"]))
