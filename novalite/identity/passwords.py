"""Password hashing with Argon2id (argon2-cffi's recommended parameters)."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


async def hash_password(password: str) -> str:
    # Argon2 is deliberately slow (tens of ms): keep it off the event loop.
    return await asyncio.to_thread(_hasher.hash, password)


async def verify_password(password_hash: str | None, password: str) -> bool:
    if not password_hash:
        return False

    def check() -> bool:
        try:
            return _hasher.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    return await asyncio.to_thread(check)


_dummy_hash: str | None = None


async def burn_verify(password: str) -> None:
    """Spend one verification's time on a user that does not exist.

    Without it a failed login returns sooner for unknown user names than for wrong
    passwords, and the timing tells an attacker which user names exist.
    """
    global _dummy_hash
    if _dummy_hash is None:
        _dummy_hash = await hash_password("novalite-no-such-user")
    await verify_password(_dummy_hash, password)
