"""Who may call the API: principals, credentials (passwords, JWTs, API keys), the
authenticator that checks them, and the rate limits on sign-ins and writes."""

from api.security._apikeys import NewKey, hash_secret, looks_like_api_key, new_api_key
from api.security._authenticator import (
    Authenticator,
    CredentialRefused,
    KeyUsage,
    UserRow,
    api_key_pepper,
)
from api.security._limits import RateLimits
from api.security._passwords import (
    MAX_PASSWORD,
    MIN_PASSWORD,
    check_password,
    hash_password,
    verify_password,
)
from api.security._principal import CredentialKind, Principal
from api.security._tokens import Claims, InvalidToken, Issued, TokenService

__all__ = [
    "MAX_PASSWORD",
    "MIN_PASSWORD",
    "Authenticator",
    "Claims",
    "CredentialKind",
    "CredentialRefused",
    "InvalidToken",
    "Issued",
    "KeyUsage",
    "NewKey",
    "Principal",
    "RateLimits",
    "TokenService",
    "UserRow",
    "api_key_pepper",
    "check_password",
    "hash_password",
    "hash_secret",
    "looks_like_api_key",
    "new_api_key",
    "verify_password",
]
