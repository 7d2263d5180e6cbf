"""Per-tenant data keys: the keyring cipher, and the key store it reads them from.

Every tenant has its own Fernet data keys (a MultiFernet, newest first: the newest encrypts,
any decrypts). They are kept wrapped (encrypted) by a master key from
``WRENCH_MASTER_KEYS`` in a :class:`KeyStore`, never in clear and never on the log: an
immutable log cannot forget a key, and forgetting the keys is how a tenant is shredded.

The codec's encode and decode are synchronous, so :meth:`KeyringCipher.prepare` loads the
keys of the tenants about to be used beforehand and keeps them for ``key_cache_ttl_s``;
after that the next prepare reads them again, which is how a rotation or a shredding done by
another process reaches this one. Encrypting or decrypting for a tenant that was never
prepared is a programming error, :class:`KeysNotPrepared`, never a silent fallback.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from events._crypto import DecryptionError, TenantKeysDestroyed
from events._errors import EventsError


class KeysNotPrepared(EventsError):
    """A tenant's fields were encrypted or decrypted before its keys were loaded."""

    code = "KEYS_NOT_PREPARED"


class MasterKeyError(EventsError):
    """A stored data key cannot be unwrapped (or a key cannot be wrapped): the master keys
    configured are not the ones that wrapped it, or none is configured."""

    code = "MASTER_KEY_ERROR"


class KeyStoreUnavailable(EventsError):
    """The key store could not be read or written; nothing was changed."""

    code = "KEY_STORE_UNAVAILABLE"


@dataclass(frozen=True)
class WrappedKey:
    """One data key as stored: encrypted by a master key."""

    key_id: int
    wrapped: bytes
    master_key: str = ""
    """Fingerprint of the master key that wrapped it (see :func:`fingerprint`)."""


@dataclass(frozen=True)
class StoredKeys:
    """What the store holds for one tenant: its wrapped keys, newest first, or the fact that
    they were destroyed."""

    tenant_id: str
    keys: tuple[WrappedKey, ...] = ()
    shredded: bool = False


@dataclass(frozen=True)
class Shredding:
    """The outcome of destroying a tenant's keys; ``first`` is false when they were gone
    already, and ``keys_destroyed`` is then what the first shredding destroyed."""

    tenant_id: str
    keys_destroyed: int
    first: bool


class KeyStore(Protocol):
    """Where wrapped data keys live. Every method is atomic, and creating, adding and
    destroying a tenant's keys are serialised per tenant, so a key made while the tenant is
    being shredded is never left behind."""

    async def load(self, tenant_ids: Collection[str]) -> dict[str, StoredKeys]:
        """What the store holds for each of ``tenant_ids`` (an empty StoredKeys if nothing)."""
        ...

    async def create_first(self, tenant_id: str, key: WrappedKey) -> StoredKeys:
        """Store ``key`` as the tenant's first key unless it has keys or was shredded; returns
        what the store holds afterwards (another process may have won the race)."""
        ...

    async def add(self, tenant_id: str, wrap: Callable[[int], WrappedKey]) -> int | None:
        """Add the tenant's next key, ``wrap(next_key_id)``; returns its id, or None when the
        tenant was shredded."""
        ...

    async def rewrap(self, rewrap: Callable[[str, WrappedKey], WrappedKey]) -> int:
        """Replace every stored key with ``rewrap(tenant_id, key)``, all or nothing; returns
        how many keys were rewrapped."""
        ...

    async def destroy(self, tenant_id: str, reason: str | None) -> Shredding:
        """Delete the tenant's keys and mark it shredded, for good."""
        ...

    async def tenants(self) -> list[str]:
        """Every tenant that has keys and was not shredded."""
        ...


def fingerprint(master_key: str) -> str:
    """A short public name of a master key: enough to tell which one wrapped a data key,
    nothing to learn the key from."""
    return hashlib.sha256(master_key.encode()).hexdigest()[:16]


class MasterKeys:
    """The master keys, newest first: the newest wraps, any unwraps."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise MasterKeyError(
                "no master key configured; set WRENCH_MASTER_KEYS (or WRENCH_MASTER_KEYS_FILE) "
                "to one or more Fernet keys, newest first"
            )
        try:
            self._fernet = MultiFernet([Fernet(key.encode()) for key in keys])
        except ValueError as exc:
            raise MasterKeyError(
                "a master key is not a Fernet key (32 url-safe base64-encoded bytes); generate "
                "one with `python -c 'from events import generate_key; print(generate_key())'`"
            ) from exc
        self.newest = fingerprint(keys[0])

    def wrap(self, key_id: int, data_key: bytes) -> WrappedKey:
        """``data_key`` encrypted by the newest master key."""
        return WrappedKey(key_id, self._fernet.encrypt(data_key), self.newest)

    def unwrap(self, tenant_id: str, key: WrappedKey) -> bytes:
        """The data key in clear; MasterKeyError, naming the tenant and key, if no master
        key opens it."""
        try:
            return self._fernet.decrypt(key.wrapped)
        except InvalidToken as exc:
            raise MasterKeyError(
                f"data key {key.key_id} of tenant {tenant_id!r} was wrapped by master key "
                f"{key.master_key or '(unknown)'}, which is not in WRENCH_MASTER_KEYS; add it "
                "back (after the newest), then run `wrenchai keys rotate` before retiring it",
                tenant_id=tenant_id,
                key_id=key.key_id,
                master_key=key.master_key,
            ) from exc

    def rewrap(self, tenant_id: str, key: WrappedKey) -> WrappedKey:
        """``key`` wrapped by the newest master key instead of the one that wrapped it."""
        return self.wrap(key.key_id, self.unwrap(tenant_id, key))


@dataclass(frozen=True)
class _Ring:
    """One tenant's keys as this process holds them."""

    fernet: MultiFernet | None
    shredded: bool
    loaded_at: float


@dataclass
class KeyringCipher:
    """Encrypts each tenant's fields with its own data keys.

    ``legacy`` is the deployment-wide ring (``WRENCH_ENCRYPTION_KEYS``) that encrypted
    fields before tenants had keys: it only ever decrypts. A shredded tenant's fields are
    not decrypted even by it: they read as ``[shredded]`` (destroying the legacy keys too is
    what makes them unreadable for good).
    """

    store: KeyStore
    master: MasterKeys
    legacy: MultiFernet | None = None
    ttl_s: float = 5.0
    clock: Callable[[], float] = time.monotonic
    per_tenant: bool = field(default=True, init=False)
    _rings: dict[str, _Ring] = field(default_factory=dict, init=False, repr=False)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock, init=False, repr=False)

    async def prepare(self, tenant_ids: Collection[str], *, create: bool = False) -> None:
        """Load the keys of ``tenant_ids`` that this process does not hold or has held for
        longer than the TTL (one query for all of them); with ``create``, make the first key
        of a tenant that has none, so that it can be encrypted for."""
        if not any(self._stale(t, self.clock(), create) for t in tenant_ids):
            return  # the hot path: every key held and fresh, no lock taken
        async with self._lock:
            now = self.clock()
            stale = [t for t in tenant_ids if self._stale(t, now, create)]
            if not stale:
                return  # another prepare loaded them while this one waited
            stored = await self.store.load(stale)
            for tenant_id in stale:
                found = stored.get(tenant_id, StoredKeys(tenant_id))
                if create and not found.keys and not found.shredded:
                    first = self.master.wrap(1, Fernet.generate_key())
                    found = await self.store.create_first(tenant_id, first)
                self._rings[tenant_id] = self._ring(found, now)

    def forget(self, tenant_id: str) -> None:
        """Drop what this process holds of the tenant's keys (it reads them again next)."""
        self._rings.pop(tenant_id, None)

    def encrypt(self, tenant_id: str, plaintext: bytes) -> str:
        ring = self._prepared(tenant_id)
        if ring.shredded:
            raise TenantKeysDestroyed(
                f"tenant {tenant_id!r} was shredded: its keys are destroyed and nothing more "
                "can be written for it",
                tenant_id=tenant_id,
            )
        if ring.fernet is None:
            raise KeysNotPrepared(
                f"tenant {tenant_id!r} has no data key yet: it was prepared for reading only; "
                "call `await codec.prepare([tenant_id])` before encoding its events",
                tenant_id=tenant_id,
            )
        return ring.fernet.encrypt(plaintext).decode()

    def decrypt(self, tenant_id: str, token: str) -> bytes:
        ring = self._prepared(tenant_id)
        if ring.shredded:
            raise TenantKeysDestroyed(
                f"tenant {tenant_id!r} was shredded: its content is unreadable",
                tenant_id=tenant_id,
            )
        for fernet in (ring.fernet, self.legacy):
            if fernet is None:
                continue
            try:
                return fernet.decrypt(token.encode())
            except InvalidToken:
                continue
        raise DecryptionError(
            f"cannot decrypt a field of tenant {tenant_id!r}: neither its data keys nor "
            "WRENCH_ENCRYPTION_KEYS open it (another tenant's field, or another deployment's)",
            tenant_id=tenant_id,
        )

    def _stale(self, tenant_id: str, now: float, create: bool) -> bool:
        ring = self._rings.get(tenant_id)
        if ring is None or now - ring.loaded_at >= self.ttl_s:
            return True
        return create and ring.fernet is None and not ring.shredded

    def _ring(self, stored: StoredKeys, now: float) -> _Ring:
        if stored.shredded:
            # Nothing of the destroyed keys stays in memory.
            return _Ring(None, shredded=True, loaded_at=now)
        if not stored.keys:
            return _Ring(None, shredded=False, loaded_at=now)
        keys = sorted(stored.keys, key=lambda k: k.key_id, reverse=True)
        fernets = [Fernet(self.master.unwrap(stored.tenant_id, k)) for k in keys]
        return _Ring(MultiFernet(fernets), shredded=False, loaded_at=now)

    def _prepared(self, tenant_id: str) -> _Ring:
        ring = self._rings.get(tenant_id)
        if ring is None:
            raise KeysNotPrepared(
                f"the keys of tenant {tenant_id!r} are not loaded; call "
                "`await codec.prepare([tenant_id])` (or `prepare_records`) before encoding or "
                "decoding its events",
                tenant_id=tenant_id,
            )
        return ring


@dataclass(frozen=True)
class Rotation:
    """What a rotation did: the tenants that got a new data key, and how many stored keys
    are now wrapped by the newest master key."""

    rotated: tuple[str, ...]
    rewrapped: int
    master_key: str


async def rotate(
    store: KeyStore, master: MasterKeys, tenant_ids: Collection[str] | None = None
) -> Rotation:
    """Give each of ``tenant_ids`` (every tenant with keys when None) a new data key, which
    encrypts from now on, then wrap every stored key with the newest master key, so older
    master keys can be retired. Old keys stay: what they encrypted stays readable."""
    targets = sorted(tenant_ids) if tenant_ids is not None else await store.tenants()
    rotated = []
    for tenant_id in targets:
        added = await store.add(
            tenant_id, lambda key_id: master.wrap(key_id, Fernet.generate_key())
        )
        if added is not None:
            rotated.append(tenant_id)
    rewrapped = await store.rewrap(master.rewrap)
    return Rotation(tuple(rotated), rewrapped, master.newest)
