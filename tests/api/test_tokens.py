"""Access tokens under attack: every forged, stale or foreign token is a 401 that says
nothing about why, and only a token we signed for a live session opens the API."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from jose import jwe, jwt
from pydantic import SecretStr

from api.security import TokenService
from tests.api._support import seed_tenant, serve
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("topics")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _segments(token: str) -> list[str]:
    return token.split(".")


def _unsigned(header: dict[str, Any], claims: dict[str, Any], secret: bytes = b"") -> str:
    """A JWS built by hand: HS256 over ``secret`` when given, else no signature."""
    head = _b64(json.dumps(header).encode())
    body = _b64(json.dumps(claims).encode())
    signature = ""
    if secret:
        mac = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
        signature = _b64(mac)
    return f"{head}.{body}.{signature}"


class Session:
    """A user with a live session, and a service that signs tokens for it."""

    def __init__(self, settings: Settings, user_id: str, session_id: str) -> None:
        self.settings = settings
        self.user_id = user_id
        self.session_id = session_id
        self.tokens = TokenService(settings)

    def token(self, now: datetime | None = None, **overrides: Any) -> str:
        if overrides:
            service = TokenService(self.settings.model_copy(update=overrides))
        else:
            service = self.tokens
        return service.issue(
            "access",
            subject=self.user_id,
            tenant_id="default",
            session_id=self.session_id,
            now=now,
        ).token

    def claims(self) -> dict[str, Any]:
        payload: dict[str, Any] = jwt.get_unverified_claims(self.token())
        return payload


async def seed_session(db: asyncpg.Connection, settings: Settings) -> Session:
    """An admin user of the default tenant with a live session, written as the projector
    writes them."""
    await seed_tenant(db)
    user_id, session_id = uuid.uuid4().hex, uuid.uuid4().hex
    await db.execute(
        """INSERT INTO users (user_id, tenant_id, username, role, password_hash, created_at,
               updated_at, event_id)
           VALUES ($1, 'default', $2, 'admin', 'x', now(), now(), $3)""",
        user_id,
        f"user-{user_id[:8]}",
        uuid.uuid4(),
    )
    await db.execute(
        """INSERT INTO auth_sessions (session_id, tenant_id, user_id, refresh_id, expires_at,
               started_at)
           VALUES ($1, 'default', $2, 'r1', now() + interval '1 day', now())""",
        session_id,
        user_id,
    )
    return Session(settings, user_id, session_id)


@pytest.fixture
async def session(db: asyncpg.Connection, settings: Settings) -> Session:
    return await seed_session(db, settings)


@pytest.fixture
async def anonymous(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve(settings) as client:
        yield client


async def _me(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})


def _assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"] == "Bearer"
    error = response.json()["error"]
    # The same words for every failure: nothing tells the caller what was wrong.
    assert error["code"] == "UNAUTHENTICATED" and error["details"] == {}
    assert error["message"].startswith("missing or invalid credentials")


async def test_a_valid_access_token_opens_the_api(
    anonymous: httpx.AsyncClient, session: Session
) -> None:
    """The baseline the attacks are measured against: our own token for a live session."""
    response = await _me(anonymous, session.token())
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["credential"], body["user_id"], body["role"]) == ("jwt", session.user_id, "admin")
    claims = session.claims()
    assert {"iss", "aud", "sub", "iat", "nbf", "exp", "jti"} <= set(claims)
    assert claims["exp"] - claims["iat"] == session.settings.access_token_ttl_s


def _flip(signature: str) -> str:
    """The signature with its first character changed."""
    return ("B" if signature[0] == "A" else "A") + signature[1:]


def _attacks(session: Session) -> dict[str, str]:
    settings = session.settings
    secret = settings.jwt_secret.get_secret_value().encode()  # type: ignore[union-attr]
    good = session.token()
    head, body, signature = _segments(good)
    claims = session.claims()
    header = jwt.get_unverified_header(good)
    tampered = {**claims, "sub": "someone-else"}
    now = datetime.now(UTC)
    return {
        "expired": session.token(now=now - timedelta(hours=2)),
        "not yet valid": session.token(now=now + timedelta(hours=2)),
        "wrong audience": session.token(jwt_audience="another-api"),
        "wrong issuer": session.token(jwt_issuer="someone-else"),
        "alg none": _unsigned({"alg": "none", "typ": "JWT"}, claims),
        "tampered payload": f"{head}.{_b64(json.dumps(tampered).encode())}.{signature}",
        "tampered signature": f"{head}.{body}.{_flip(signature)}",
        "unknown kid": _unsigned({**header, "kid": "not-ours"}, claims, secret),
        "crit header": _unsigned({**header, "crit": ["exp"]}, claims, secret),
        "embedded jwk": _unsigned({**header, "jwk": {"kty": "oct", "k": "AAAA"}}, claims, secret),
        "jwe": jwe.encrypt(
            json.dumps(claims), b"k" * 16, algorithm="dir", encryption="A128GCM"
        ).decode(),
        "oversized": session.token().replace(".", "." + "A" * 5_000, 1),
        "other secret": _unsigned(header, claims, b"x" * 64),
        "refresh token as access": session.tokens.issue(
            "refresh", subject=session.user_id, tenant_id="default", session_id=session.session_id
        ).token,
        "garbage": "not-a-token",
    }


async def test_every_forged_or_stale_token_is_a_401_that_leaks_nothing(
    anonymous: httpx.AsyncClient, session: Session
) -> None:
    """Expired, not yet valid, wrong audience, wrong issuer, alg none, tampered payload,
    tampered signature, unknown kid, crit, an embedded key, a JWE, an oversized token,
    another signer, a refresh token used as an access token: each one is refused alike."""
    attacks = _attacks(session)
    for name, token in attacks.items():
        response = await _me(anonymous, token)
        assert response.status_code == 401, name
        _assert_refused(response)


async def test_a_token_for_an_ended_session_or_a_disabled_user_is_refused(
    anonymous: httpx.AsyncClient, session: Session, db: asyncpg.Connection
) -> None:
    """A token stays as good as its session and its user: revoke the session, or disable
    the user, and the same token is refused (within the principal cache's second)."""
    token = session.token()
    assert (await _me(anonymous, token)).status_code == 200
    revoke = "UPDATE auth_sessions SET revoked_at = {} WHERE session_id = $1"
    await db.execute(revoke.format("now()"), session.session_id)
    await _eventually_refused(anonymous, token)
    await db.execute(revoke.format("NULL"), session.session_id)
    await db.execute("UPDATE users SET disabled_at = now() WHERE user_id = $1", session.user_id)
    await _eventually_refused(anonymous, token)


async def _eventually_refused(client: httpx.AsyncClient, token: str) -> None:
    for _ in range(40):
        response = await _me(client, token)
        if response.status_code == 401:
            _assert_refused(response)
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the token was still accepted after 4 s")


def _rsa_pair() -> tuple[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


async def test_with_rs256_a_token_signed_hs256_with_the_public_key_is_refused(
    db: asyncpg.Connection, settings: Settings
) -> None:
    """Key confusion: with RS256 configured, an HS256 token whose HMAC key is the public
    key (which anyone may have) is refused; a real RS256 token works."""
    private, public = _rsa_pair()
    rs = settings.model_copy(
        update={
            "jwt_algorithm": "RS256",
            "jwt_private_key": SecretStr(private),
            "jwt_public_key": public,
        }
    )
    session = await seed_session(db, rs)
    claims = session.claims()
    header = {"alg": "HS256", "typ": "JWT", "kid": session.tokens.kid}
    confused = _unsigned(header, claims, public.encode())
    async with serve(rs) as client:
        good = await _me(client, session.token())
        assert good.status_code == 200, good.text
        assert jwt.get_unverified_header(session.token())["alg"] == "RS256"
        _assert_refused(await _me(client, confused))
        _assert_refused(await _me(client, _unsigned({"alg": "none"}, claims)))
