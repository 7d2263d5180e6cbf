"""Access and refresh tokens: JWTs signed and checked with python-jose.

python-jose neither enforces the ``crit`` header nor guards against key confusion through
``kid``, so this module does both itself before jose sees a token: a token with ``crit`` is
refused, the algorithm is pinned to the configured one, a ``kid`` must name our own key, and
the verification key is always the configured one, never one the token points at. Every
registered claim is set on issue and required on use: iss, aud, sub, iat, nbf, exp, jti.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import structlog
from jose import jwt
from jose.exceptions import JOSEError

from wrenchai.errors import ConfigurationError, WrenchError
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

MAX_TOKEN_BYTES = 4_096
TokenType = Literal["access", "refresh"]
_REQUIRED = ("iss", "aud", "sub", "iat", "nbf", "exp", "jti")


class InvalidToken(WrenchError):
    """A token that is not ours, not valid now, or not of the kind expected. ``reason`` is
    for logs and audit events only: the caller is told nothing more than 401."""

    code = "INVALID_TOKEN"

    def __init__(self, reason: str) -> None:
        super().__init__(f"invalid token: {reason}", reason=reason)
        self.reason = reason


@dataclass(frozen=True)
class Claims:
    """What a verified token says."""

    type: TokenType
    subject: str
    tenant_id: str
    session_id: str
    token_id: str
    expires_at: datetime


@dataclass(frozen=True)
class Issued:
    """A signed token and when it expires."""

    token: str
    token_id: str
    expires_at: datetime


class TokenService:
    """Signs and verifies WrenchAI's JWTs with the one configured key."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.algorithm = settings.jwt_algorithm
        self._signing_key, self._verifying_key = _keys(settings)
        self.kid = hashlib.sha256(_fingerprint(self._verifying_key)).hexdigest()[:16]

    def signing_material(self) -> bytes:
        """The signing key's bytes, from which other keys may be derived."""
        return _fingerprint(self._signing_key)

    def issue(
        self,
        kind: TokenType,
        *,
        subject: str,
        tenant_id: str,
        session_id: str,
        token_id: str | None = None,
        now: datetime | None = None,
    ) -> Issued:
        """A signed token of ``kind`` for the user ``subject`` in ``session_id``."""
        now = now or datetime.now(UTC)
        ttl = (
            self.settings.access_token_ttl_s
            if kind == "access"
            else self.settings.refresh_token_ttl_s
        )
        expires = now + timedelta(seconds=ttl)
        token_id = token_id or uuid.uuid4().hex
        claims = {
            "iss": self.settings.jwt_issuer,
            "aud": self.settings.jwt_audience,
            "sub": subject,
            "tid": tenant_id,
            "sid": session_id,
            "typ": kind,
            "jti": token_id,
            "iat": int(now.timestamp()),
            "nbf": int(now.timestamp()),
            "exp": int(expires.timestamp()),
        }
        token = jwt.encode(
            claims, self._signing_key, algorithm=self.algorithm, headers={"kid": self.kid}
        )
        return Issued(token, token_id, expires.replace(microsecond=0))

    def verify(self, token: str, kind: TokenType) -> Claims:
        """The claims of a token we signed, of ``kind``, valid now; InvalidToken otherwise."""
        if len(token) > MAX_TOKEN_BYTES:
            raise InvalidToken("oversized")
        if token.count(".") != 2:
            # Five parts is a JWE (encrypted, not signed by us); anything else is not a JWS.
            raise InvalidToken("not a signed JWT")
        try:
            header = jwt.get_unverified_header(token)
        except JOSEError as exc:
            raise InvalidToken("malformed header") from exc
        if "crit" in header:
            raise InvalidToken("crit header")
        if header.get("alg") != self.algorithm:
            raise InvalidToken(f"algorithm {header.get('alg')!r}")
        if "kid" in header and header["kid"] != self.kid:
            raise InvalidToken("unknown kid")
        if any(name in header for name in ("jku", "jwk", "x5u", "x5c")):
            raise InvalidToken("key reference in header")
        try:
            payload: dict[str, Any] = jwt.decode(
                token,
                self._verifying_key,
                algorithms=[self.algorithm],
                audience=self.settings.jwt_audience,
                issuer=self.settings.jwt_issuer,
                options={
                    **{f"require_{name}": True for name in _REQUIRED},
                    "leeway": self.settings.jwt_leeway_s,
                },
            )
        except JOSEError as exc:
            raise InvalidToken(type(exc).__name__) from exc
        if payload.get("typ") != kind:
            raise InvalidToken(f"not an {kind} token")
        try:
            return Claims(
                type=kind,
                subject=str(payload["sub"]),
                tenant_id=str(payload["tid"]),
                session_id=str(payload["sid"]),
                token_id=str(payload["jti"]),
                expires_at=datetime.fromtimestamp(int(payload["exp"]), UTC),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidToken("missing claims") from exc


def _keys(settings: Settings) -> tuple[str | bytes, str | bytes]:
    """(signing key, verification key) for the configured algorithm."""
    if settings.jwt_algorithm == "RS256":
        if settings.jwt_private_key is None or settings.jwt_public_key is None:
            raise ConfigurationError(
                "WRENCH_JWT_ALGORITHM=RS256 needs WRENCH_JWT_PRIVATE_KEY and "
                "WRENCH_JWT_PUBLIC_KEY (or their _FILE variants), both PEM"
            )
        return settings.jwt_private_key.get_secret_value(), settings.jwt_public_key
    if settings.jwt_secret is None:
        log.warning(
            "no WRENCH_JWT_SECRET: tokens are signed with a key made up now, so they stop "
            "working when this process stops and on every other API process"
        )
        secret = secrets.token_urlsafe(48)
        return secret, secret
    secret = settings.jwt_secret.get_secret_value()
    if len(secret.encode()) < 32:
        raise ConfigurationError("WRENCH_JWT_SECRET must be at least 32 bytes long")
    return secret, secret


def _fingerprint(key: str | bytes) -> bytes:
    return key if isinstance(key, bytes) else key.encode()
