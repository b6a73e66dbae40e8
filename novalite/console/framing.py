"""websockify, loaded without numpy, with a frame unmasking that needs none.

websockify imports numpy only to unmask the frames a browser sends (RFC 6455 masks every
client frame with a 4-byte key). numpy costs ~12 MB of resident memory in every
controller process that hosts the console service, for a few bytes of keystrokes and
pointer moves per second; websockify's own fallback without it XORs byte by byte in a
Python loop. :class:`UnmaskingWebSocket` XORs the whole payload as one integer instead
(two ``int.from_bytes`` and one ``^``, done in C), which is as fast as numpy's path for
the frame sizes a VNC client sends.

If something else in the process already imported numpy, websockify gets it as usual.
"""

from __future__ import annotations

import sys
import warnings

_numpy_loaded = "numpy" in sys.modules
if not _numpy_loaded:
    sys.modules["numpy"] = None  # type: ignore[assignment]  # makes `import numpy` raise ImportError
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no 'numpy' module, HyBi protocol will be slower"
        from websockify.websocketproxy import ProxyRequestHandler
        from websockify.websocketserver import HttpWebSocket
finally:
    if not _numpy_loaded:
        del sys.modules["numpy"]  # a later `import numpy` elsewhere works as usual

__all__ = ["ProxyRequestHandler", "UnmaskingWebSocket", "unmask"]


def unmask(buf: bytes, mask: bytes) -> bytes:
    """XOR ``buf`` with the 4-byte ``mask`` repeated (RFC 6455 §5.3)."""
    n = len(buf)
    if n == 0:
        return b""
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(buf, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")


class UnmaskingWebSocket(HttpWebSocket):  # type: ignore[misc]  # websockify has no types
    """websockify's WebSocket of a request handler, unmasking without numpy."""

    def _unmask(self, buf: bytes, mask: bytes) -> bytes:
        return unmask(bytes(buf), bytes(mask))
