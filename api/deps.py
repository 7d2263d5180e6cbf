"""FastAPI dependencies: the app's resources, its settings and the calling principal."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from fastapi import Depends, Request

from api._resources import Resources
from events import Actor
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
