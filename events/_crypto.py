"""Encryption of sensitive payload fields: the seam the codec calls, and a Fernet cipher."""

from __future__ import annotations

from typing import Protocol

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from events._errors import EventsError


class DecryptionError(EventsError):
    """A sensitive field could not be decrypted: wrong, rotated-out or destroyed key."""

    code = "DECRYPTION_ERROR"


class Cipher(Protocol):
    """Encrypts and decrypts field values for one tenant."""

    def encrypt(self, tenant_id: str, plaintext: bytes) -> str: ...

    def decrypt(self, tenant_id: str, token: str) -> bytes: ...


class FernetCipher:
    """MultiFernet over a key list, newest first: the first key encrypts, any key decrypts.

    One key ring for every tenant; per-tenant keys plug in behind the same protocol.
    """

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("FernetCipher needs at least one key")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])

    def encrypt(self, tenant_id: str, plaintext: bytes) -> str:
        return self._fernet.encrypt(plaintext).decode()

    def decrypt(self, tenant_id: str, token: str) -> bytes:
        try:
            return self._fernet.decrypt(token.encode())
        except InvalidToken as exc:
            raise DecryptionError(
                f"cannot decrypt a field of tenant {tenant_id!r}: no configured key opens it",
                tenant_id=tenant_id,
            ) from exc


def generate_key() -> str:
    """A new random Fernet key (urlsafe base64 of 32 bytes)."""
    return Fernet.generate_key().decode()
