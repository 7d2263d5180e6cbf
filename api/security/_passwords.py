"""Passwords: argon2id hashes (argon2-cffi), verified off the event loop.

A sign-in for a name nobody has still verifies against a fixed hash, so the time an answer
takes does not tell whether the user exists.
"""

from __future__ import annotations

import asyncio
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_PASSWORD = 12
MAX_PASSWORD = 1_024

_HASHER = PasswordHasher()


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` (RFC 9106's low-memory parameters)."""
    return _HASHER.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """Whether ``password`` matches; a malformed hash matches nothing."""
    try:
        return _HASHER.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@cache
def _decoy_hash() -> str:
    return _HASHER.hash("no user has this password, it only costs the same time")


async def check_password(password_hash: str | None, password: str) -> bool:
    """Verify in a thread (argon2 takes tens of milliseconds on purpose); with no hash, spend
    the same time on a decoy and answer False."""
    if password_hash is None:
        await asyncio.to_thread(verify_password, _decoy_hash(), password)
        return False
    return await asyncio.to_thread(verify_password, password_hash, password)
