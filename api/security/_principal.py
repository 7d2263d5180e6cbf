"""Who is calling: the principal every route acts as."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from events import Actor, Role

CredentialKind = Literal["jwt", "api_key"]


@dataclass(frozen=True)
class Principal:
    """A tenant's user or API key, with the scopes it holds now.

    Every read is scoped by ``tenant_id`` and every write stamped with it and with
    :attr:`actor`. A key owned by a user never holds more than its owner does today.
    """

    tenant_id: str
    credential: CredentialKind
    scopes: frozenset[str] = field(default_factory=frozenset)
    role: Role | None = None
    user_id: str | None = None
    key_id: str | None = None
    session_id: str | None = None
    expires_at: datetime | None = None

    @property
    def subject(self) -> str:
        """A stable name for rate limits and logs: ``user:<id>`` or ``key:<id>``."""
        return f"user:{self.user_id}" if self.credential == "jwt" else f"key:{self.key_id}"

    @property
    def actor(self) -> Actor:
        """The principal as the actor of the events it causes: the user, or the key itself
        when no user owns it."""
        if self.user_id is not None:
            return Actor(kind="user", id=self.user_id)
        return Actor(kind="user", id=f"apikey:{self.key_id}")

    def holds(self, scope: str) -> bool:
        """Whether the principal may do what ``scope`` names."""
        return scope in self.scopes
