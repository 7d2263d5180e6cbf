"""Encryption of sensitive payload fields: the seam the codec calls, and a static Fernet cipher.

The codec stays synchronous on its hot paths, so a cipher whose keys live elsewhere (the
per-tenant keyring, :mod:`events._keyring`) loads them beforehand in :meth:`Cipher.prepare`;
a static key ring has nothing to load.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Protocol

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from events._errors import EventsError

SHREDDED = "[shredded]"
"""What a decoded event holds in place of each encrypted field of a shredded tenant."""


class DecryptionError(EventsError):
    """A sensitive field could not be decrypted: wrong, rotated-out or destroyed key."""

    code = "DECRYPTION_ERROR"


class TenantKeysDestroyed(EventsError):
    """The tenant was shredded: its data keys are gone, so nothing is encrypted for it any
    more and what was encrypted reads as ``[shredded]``."""

    code = "TENANT_KEYS_DESTROYED"


class Cipher(Protocol):
    """Encrypts and decrypts field values for one tenant.

    ``per_tenant`` says whether :meth:`prepare` must run for a tenant before its fields are
    encrypted or decrypted; the codec skips finding the tenants of records when it is false.
    """

    per_tenant: bool

    async def prepare(self, tenant_ids: Collection[str], *, create: bool = False) -> None: ...

    def encrypt(self, tenant_id: str, plaintext: bytes) -> str: ...

    def decrypt(self, tenant_id: str, token: str) -> bytes: ...


class FernetCipher:
    """MultiFernet over a key list, newest first: the first key encrypts, any key decrypts.

    One key ring for every tenant (``WRENCH_ENCRYPTION_KEYS``): the cipher of deployments
    without master keys, and the legacy ring the per-tenant keyring still decrypts with.
    """

    per_tenant = False

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("FernetCipher needs at least one key")
        self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])

    async def prepare(self, tenant_ids: Collection[str], *, create: bool = False) -> None:
        """Nothing to load: the keys are in memory already."""

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
