"""API keys: ``wr_<prefix>_<secret>``. The prefix finds the key; only a keyed hash of the
secret is kept. A fast keyed hash (HMAC-SHA256) is right here: the secret is 32 random
bytes, so there is nothing to slow a guesser down for, unlike a password."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

KEY_PATTERN = re.compile(r"^wr_([a-z2-7]{12})_([A-Za-z0-9_-]{43})$")


@dataclass(frozen=True)
class NewKey:
    """A key as handed out once: the whole token, and the parts that are kept."""

    token: str
    prefix: str
    secret: str


def new_api_key() -> NewKey:
    """A fresh key: 60 random bits of prefix, 256 of secret."""
    prefix = base64.b32encode(secrets.token_bytes(10)).decode().lower()[:12]
    secret = secrets.token_urlsafe(32)
    return NewKey(f"wr_{prefix}_{secret}", prefix, secret)


def parse_api_key(token: str) -> tuple[str, str] | None:
    """(prefix, secret) of a well-formed key, None for anything else."""
    match = KEY_PATTERN.match(token)
    return (match.group(1), match.group(2)) if match else None


def looks_like_api_key(token: str) -> bool:
    """Whether a bearer token is meant as an API key rather than a JWT."""
    return token.startswith("wr_")


def hash_secret(pepper: bytes, secret: str) -> str:
    """The keyed hash that is stored and compared."""
    return hmac.new(pepper, secret.encode(), hashlib.sha256).hexdigest()


def secret_matches(pepper: bytes, secret: str, stored: str) -> bool:
    """Constant-time comparison of a presented secret with the stored hash."""
    return hmac.compare_digest(hash_secret(pepper, secret), stored)
