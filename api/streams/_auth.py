"""Credentials of streams: from headers, from a first message, or from a single-use ticket.

Browsers cannot set headers on a WebSocket, and a credential in a URL ends up in logs. So a
client with a credential asks ``POST /ws-ticket`` for a ticket: the credential sealed
(Fernet, a key derived from the token signing key) with a short lifetime and an id. Any API
process can open it; the first to redeem it records its id in Postgres, so it opens one socket
only. The socket then acts as the credential inside, and is closed when that credential
expires or is revoked, like one presented in a header.
"""

from __future__ import annotations

import base64
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from starlette.requests import HTTPConnection

from api._database import Database
from api.security import (
    Authenticator,
    CredentialKind,
    CredentialRefused,
    Principal,
    TokenService,
    looks_like_api_key,
)
from wrenchai.settings import Settings

_CLEANUP_EVERY = 100
"""Redemptions between two sweeps of expired ticket ids."""


@dataclass(frozen=True)
class StreamCredential:
    """A credential as presented: the token and what kind it is."""

    token: str
    kind: CredentialKind

    @classmethod
    def of(cls, token: str, *, api_key: bool = False) -> StreamCredential:
        """``token`` presented as an API key (``X-API-Key``) or as a bearer token."""
        is_key = api_key or looks_like_api_key(token)
        return cls(token, "api_key" if is_key else "jwt")


def header_credential(connection: HTTPConnection) -> StreamCredential | None:
    """The credential in ``X-API-Key`` or ``Authorization: Bearer``, if any."""
    api_key = connection.headers.get("x-api-key")
    if api_key:
        return StreamCredential.of(api_key, api_key=True)
    scheme, _, token = connection.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return StreamCredential.of(token.strip())
    return None


async def verify(authenticator: Authenticator, credential: StreamCredential) -> Principal:
    """The principal of ``credential`` now; CredentialRefused when it is not (or no longer)
    valid."""
    if credential.kind == "api_key":
        return await authenticator.api_key(credential.token)
    return await authenticator.access_token(credential.token)


class Tickets:
    """Issues and redeems single-use stream tickets."""

    def __init__(self, settings: Settings, tokens: TokenService, database: Database) -> None:
        self.ttl_s = settings.ws_ticket_ttl_s
        self.database = database
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=None, info=b"wrenchai stream ticket"
        ).derive(tokens.signing_material())
        self._fernet = Fernet(base64.urlsafe_b64encode(key))
        self._redeemed = 0

    def issue(self, credential: StreamCredential) -> str:
        """A ticket standing for ``credential`` for ``ttl_s`` seconds, once."""
        sealed = orjson.dumps(
            {"id": str(uuid.uuid4()), "token": credential.token, "kind": credential.kind}
        )
        return self._fernet.encrypt(sealed).decode()

    async def redeem(self, ticket: str) -> StreamCredential:
        """The credential a ticket stands for; CredentialRefused when the ticket is not one
        of ours, has expired or was used before."""
        try:
            sealed = orjson.loads(self._fernet.decrypt(ticket.encode(), ttl=self.ttl_s))
            ticket_id = uuid.UUID(sealed["id"])
            credential = StreamCredential(str(sealed["token"]), sealed["kind"])
        except (InvalidToken, orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CredentialRefused("invalid_credential") from exc
        expires = datetime.now(UTC) + timedelta(seconds=self.ttl_s + 60)
        async with self.database.connection() as conn:
            first = await conn.fetchval(
                """INSERT INTO ws_tickets_redeemed (ticket_id, expires_at) VALUES ($1, $2)
                   ON CONFLICT (ticket_id) DO NOTHING RETURNING true""",
                ticket_id,
                expires,
            )
            self._redeemed += 1
            if self._redeemed % _CLEANUP_EVERY == 0:
                await conn.execute("DELETE FROM ws_tickets_redeemed WHERE expires_at < now()")
        if not first:
            raise CredentialRefused("invalid_credential")
        return credential
