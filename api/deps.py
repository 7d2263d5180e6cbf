"""FastAPI dependencies: the app's resources, its settings, the calling principal, and the
read-your-writes wait of every read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from fastapi import Depends, Query, Request

from api._readmodels import wait_for_projector
from api._resources import Resources
from api.models import POSITION_PATTERN
from events import Actor, Position
from wrenchai.settings import Settings

Role = Literal["admin", "operator", "viewer"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: every read is scoped by ``tenant_id``, every write stamped with it."""

    tenant_id: str
    user_id: str
    role: Role
    scopes: frozenset[str] = field(default_factory=frozenset)

    @property
    def actor(self) -> Actor:
        """The principal as the actor of the events it causes."""
        return Actor(kind="user", id=self.user_id)


def get_resources(request: Request) -> Resources:
    """The resources the lifespan opened."""
    resources: Resources = request.app.state.resources
    return resources


ResourcesDep = Annotated[Resources, Depends(get_resources)]


def get_settings(resources: ResourcesDep) -> Settings:
    """The app's settings."""
    return resources.settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_principal(settings: SettingsDep) -> Principal:
    """The caller. Until authentication lands (JWT or API key), every request is an anonymous
    user of the default tenant; routes already scope by ``Principal.tenant_id`` so that
    authentication changes only this function."""
    return Principal(tenant_id=settings.default_tenant, user_id="anonymous", role="admin")


PrincipalDep = Annotated[Principal, Depends(get_principal)]


WaitFor = Annotated[
    str | None,
    Query(
        pattern=POSITION_PATTERN,
        description="A position (PARTITION:OFFSET) returned by a write: wait until the read "
        "models include it.",
        examples=["2:41"],
    ),
]


async def wait_for_position(resources: Resources, wait_for: str | None) -> None:
    """Hold a read until the projector has passed ``wait_for``, if given."""
    # The pattern already checked the form; a wait that times out is not an error, the read
    # answers from what the read models hold by then.
    if wait_for is not None:
        await wait_for_projector(resources.database, resources.settings, Position.parse(wait_for))
