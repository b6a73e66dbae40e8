"""The console proxy's websockify runs without numpy (≈12 MB less in every controller process)
and unmasks client frames exactly as RFC 6455 says."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from novalite.console.framing import unmask


def _reference(buf: bytes, mask: bytes) -> bytes:
    return bytes(b ^ mask[i % 4] for i, b in enumerate(buf))


@pytest.mark.parametrize("size", [0, 1, 2, 3, 4, 5, 7, 8, 125, 126, 1000, 65535, 65537])
def test_unmask_matches_the_rfc(size: int) -> None:
    buf, mask = os.urandom(size), os.urandom(4)
    assert unmask(buf, mask) == _reference(buf, mask)
    assert unmask(unmask(buf, mask), mask) == buf  # masking twice gives the frame back


def test_the_console_service_does_not_load_numpy() -> None:
    code = "import sys, novalite.console.proxy; print('numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", out.stderr


def test_numpy_stays_importable_after_the_console_loaded() -> None:
    """The block is only around websockify's import: other code in the process can use numpy."""
    code = "import novalite.console.proxy, numpy; print(int(numpy.arange(4).sum()))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "6", out.stderr
