"""Signatures over chain heads and exports: Ed25519, or HMAC-SHA256 with a shared key.

A signed head says "the record at (topic, partition, offset) has this chain hash". What is
signed is the length-prefixed encoding of the archive (:func:`projections._archive.field`):

    field("wrench.chain.checkpoint.v1") || field(topic) || field(partition) || field(offset)
    || field(hash) || field(chain_version) || field(signed_at)

with topic and the numbers as ASCII text, ``hash`` as its 32 raw bytes and ``signed_at`` as
``YYYY-MM-DDTHH:MM:SS.ffffffZ`` (UTC, always six fractional digits). Ed25519 needs only the
public key to verify, so an auditor can check without being able to sign; HMAC needs the same
key on both sides. ``key_id`` (16 hex digits of sha256 of the public key, or of a label and
the HMAC key) tells which key signed, without revealing it.

An export's manifest is signed the same way over ``field("wrench.audit.export.v1") ||
field(canonical JSON of the manifest without its signature)``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from events import SignatureAlgorithm, SignedHead, canonical_json
from projections._archive import field
from wrenchai.errors import ConfigurationError
from wrenchai.settings import Settings

_HEAD_TAG = b"wrench.chain.checkpoint.v1"
_EXPORT_TAG = b"wrench.audit.export.v1"
_HMAC_ID_LABEL = b"wrench.checkpoint.hmac-key-id"


def instant(moment: datetime) -> str:
    """The one text form of an instant in signed data: UTC, microseconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def head_message(
    topic: str,
    partition: int,
    offset: int,
    chain_hash: bytes,
    chain_version: int,
    signed_at: datetime,
) -> bytes:
    """The bytes a checkpoint's signature covers (see the module's docstring)."""
    return b"".join(
        field(part)
        for part in (
            _HEAD_TAG,
            topic.encode("utf-8"),
            str(partition).encode(),
            str(offset).encode(),
            chain_hash,
            str(chain_version).encode(),
            instant(signed_at).encode(),
        )
    )


def manifest_message(manifest: dict[str, Any]) -> bytes:
    """The bytes an export manifest's signature covers: the tag, then the manifest without
    its ``signature`` as canonical JSON (sorted keys, no spaces)."""
    signed = {k: v for k, v in manifest.items() if k != "signature"}
    return field(_EXPORT_TAG) + field(canonical_json(signed))


class Signer(Protocol):
    """Signs messages with one key."""

    @property
    def algorithm(self) -> SignatureAlgorithm: ...

    @property
    def key_id(self) -> str: ...

    def sign(self, message: bytes) -> bytes: ...

    def verifier(self) -> Verifier: ...


class Verifier(Protocol):
    """Checks signatures made with one key."""

    @property
    def algorithm(self) -> SignatureAlgorithm: ...

    @property
    def key_id(self) -> str: ...

    def verify(self, message: bytes, signature: bytes) -> bool: ...


@dataclass(frozen=True)
class Ed25519Verifier:
    """Verifies with an Ed25519 public key."""

    public_key: Ed25519PublicKey
    algorithm: SignatureAlgorithm = "ed25519"

    @property
    def key_id(self) -> str:
        raw = self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        return hashlib.sha256(raw).hexdigest()[:16]

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            self.public_key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def public_pem(self) -> str:
        """The public key as PEM (SubjectPublicKeyInfo): what auditors are given."""
        return self.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode()


@dataclass(frozen=True)
class Ed25519Signer:
    """Signs with an Ed25519 private key."""

    private_key: Ed25519PrivateKey
    algorithm: SignatureAlgorithm = "ed25519"

    @property
    def key_id(self) -> str:
        return self.verifier().key_id

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)

    def verifier(self) -> Ed25519Verifier:
        return Ed25519Verifier(self.private_key.public_key())


@dataclass(frozen=True)
class HmacKey:
    """HMAC-SHA256 with a shared key: it both signs and verifies."""

    key: bytes
    algorithm: SignatureAlgorithm = "hmac-sha256"

    def __repr__(self) -> str:  # the key is a secret
        return f"HmacKey(key_id={self.key_id!r})"

    @property
    def key_id(self) -> str:
        return hashlib.sha256(_HMAC_ID_LABEL + self.key).hexdigest()[:16]

    def sign(self, message: bytes) -> bytes:
        return hmac.new(self.key, message, hashlib.sha256).digest()

    def verify(self, message: bytes, signature: bytes) -> bool:
        return hmac.compare_digest(self.sign(message), signature)

    def verifier(self) -> HmacKey:
        return self


def generate_signing_key() -> str:
    """A new Ed25519 private key as PEM (PKCS#8, unencrypted): WRENCH_CHECKPOINT_SIGNING_KEY."""
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
        .strip()
    )


def signer_from_settings(settings: Settings) -> Signer | None:
    """The checkpoint signer the settings configure: the Ed25519 key, else the HMAC key,
    else None (nothing is signed)."""
    if settings.checkpoint_signing_key is not None:
        pem = settings.checkpoint_signing_key.get_secret_value().strip().encode()
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            # Not the parser's message: it could quote the key.
            raise ConfigurationError(
                "WRENCH_CHECKPOINT_SIGNING_KEY is not a PEM private key without a password; "
                "make one with `openssl genpkey -algorithm ed25519`"
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigurationError(
                f"WRENCH_CHECKPOINT_SIGNING_KEY is a {type(key).__name__}, not an Ed25519 key; "
                "make one with `openssl genpkey -algorithm ed25519`"
            )
        return Ed25519Signer(key)
    if settings.checkpoint_hmac_key is not None:
        secret = settings.checkpoint_hmac_key.get_secret_value().strip()
        if secret:
            return HmacKey(secret.encode())
    return None


def load_public_key(pem: bytes) -> Ed25519Verifier:
    """An Ed25519 public key (PEM) to verify with; a private key's PEM gives its public key."""
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        try:
            private = serialization.load_pem_private_key(pem, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigurationError(
                "the public key file is not a PEM Ed25519 key (`wrenchai audit public-key` "
                "prints the one to use)"
            ) from exc
        if not isinstance(private, Ed25519PrivateKey):
            raise ConfigurationError("the key file holds no Ed25519 key") from None
        key = private.public_key()
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigurationError(f"the public key is a {type(key).__name__}, not Ed25519")
    return Ed25519Verifier(key)


class Keyring:
    """The keys a verification accepts, found by (algorithm, key_id)."""

    def __init__(self, verifiers: list[Verifier]) -> None:
        self._by_id: dict[tuple[str, str], Verifier] = {
            (v.algorithm, v.key_id): v for v in verifiers
        }

    def __bool__(self) -> bool:
        return bool(self._by_id)

    def check(self, algorithm: str, key_id: str, message: bytes, signature_b64: str) -> str | None:
        """None when the signature verifies; otherwise why not, in words."""
        verifier = self._by_id.get((algorithm, key_id))
        if verifier is None:
            known = ", ".join(f"{a} {k}" for a, k in sorted(self._by_id)) or "none"
            return (
                f"signed with {algorithm} key {key_id}, which is not one of the keys given "
                f"({known}): forged, or signed with another key"
            )
        try:
            signature = base64.b64decode(signature_b64, validate=True)
        except ValueError:
            return "the signature is not base64"
        if not verifier.verify(message, signature):
            return "the signature does not verify: the signed fields were altered or forged"
        return None

    def check_head(self, head: SignedHead) -> str | None:
        """None when the signed head's signature verifies under one of the keys."""
        message = head_message(
            head.topic,
            head.partition,
            head.offset,
            bytes.fromhex(head.hash),
            head.chain_version,
            head.signed_at,
        )
        return self.check(head.algorithm, head.key_id, message, head.signature)


def keyring_from_settings(settings: Settings) -> Keyring:
    """The verifying side of the configured signer (empty when none is configured)."""
    signer = signer_from_settings(settings)
    return Keyring([signer.verifier()] if signer is not None else [])


def sign_head(
    signer: Signer,
    topic: str,
    partition: int,
    offset: int,
    chain_hash: bytes,
    chain_version: int,
    signed_at: datetime,
) -> SignedHead:
    """Sign one chain head."""
    message = head_message(topic, partition, offset, chain_hash, chain_version, signed_at)
    return SignedHead(
        topic=topic,
        partition=partition,
        offset=offset,
        hash=chain_hash.hex(),
        chain_version=chain_version,
        signed_at=signed_at.astimezone(UTC),
        algorithm=signer.algorithm,
        key_id=signer.key_id,
        signature=base64.b64encode(signer.sign(message)).decode(),
    )
