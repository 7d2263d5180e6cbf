"""``wrenchai tenants|users|keys``: identity administration from the command line.

Each command publishes on wrench.admin and waits for the projector, like the API's routes,
so it needs a running stack: beside ``wrenchai dev``, pass the same ``--state-dir`` (the
default is the same) and the command finds its broker and database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal, cast

import click

from events import ROLES, SCOPES, EventProducer, codec_from_settings, role_scopes
from wrenchai._cli_common import cli_actor, command_settings, run
from wrenchai.settings import Settings

if TYPE_CHECKING:
    from api.identity import Identity


@asynccontextmanager
async def _identity(settings: Settings) -> AsyncIterator[Identity]:
    # Imported here: the API's modules are heavy, and most commands never need them.
    from api._database import Database
    from api.identity import Identity
    from api.security import TokenService, api_key_pepper

    database = Database(settings)
    producer = EventProducer(settings, codec_from_settings(settings))
    try:
        yield Identity(
            settings, producer, database, api_key_pepper(settings, TokenService(settings))
        )
    finally:
        await producer.stop()
        await database.close()


def _role(name: str) -> Literal["admin", "operator", "viewer"]:
    if name not in ROLES:
        raise click.BadParameter(f"a role is one of {', '.join(ROLES)}")
    return name


@click.group()
def tenants() -> None:
    """Tenants: create them (and shred them)."""


@tenants.command("create")
@click.argument("name")
@click.option("--id", "tenant_id", default=None, help="The tenant id (default: from NAME).")
def tenants_create(name: str, tenant_id: str | None) -> None:
    """Create a tenant and print its first admin API key (shown once)."""
    settings = command_settings("tenants")

    async def main() -> tuple[str, str]:
        async with _identity(settings) as identity:
            new_id, key = await identity.create_tenant(name, cli_actor(), tenant_id)
            return new_id, key.token

    new_id, token = run(main)
    click.echo(f"tenant {new_id} created")
    click.echo(f"admin API key (shown once): {token}")


@click.group()
def users() -> None:
    """Users who sign in at /auth/token."""


@users.command("create")
@click.argument("username")
@click.option("--tenant", "tenant_id", required=True, help="The user's tenant.")
@click.option("--role", type=click.Choice(ROLES), default="viewer", show_default=True)
@click.password_option(help="The password (prompted for when not given).")
def users_create(username: str, tenant_id: str, role: str, password: str) -> None:
    """Create a user."""
    settings = command_settings("users")

    async def main() -> str:
        async with _identity(settings) as identity:
            user = await identity.create_user(
                tenant_id, username, password, _role(role), cli_actor()
            )
            return str(user.user_id)

    click.echo(f"user {username} created: {run(main)}")


@users.command("disable")
@click.argument("user")
@click.option("--tenant", "tenant_id", default=None, help="The user's tenant.")
@click.option("--reason", default=None, help="Why, for the audit trail.")
def users_disable(user: str, tenant_id: str | None, reason: str | None) -> None:
    """Disable USER (a user id or user name): no more sign-ins, sessions end."""
    settings = command_settings("users")

    async def main() -> str:
        async with _identity(settings) as identity:
            tenant, user_id = await identity.user_id_of(tenant_id, user)
            await identity.disable_user(tenant, user_id, cli_actor(), reason)
            return str(user_id)

    click.echo(f"user {run(main)} disabled")


@click.group()
def keys() -> None:
    """API keys (and the tenants' data keys)."""


@keys.command("issue")
@click.option("--tenant", "tenant_id", required=True, help="The key's tenant.")
@click.option("--name", required=True, help="What the key is for.")
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(sorted(SCOPES)),
    help="A scope the key holds (repeat it); default: the scopes of --role.",
)
@click.option("--role", type=click.Choice(ROLES), default="operator", show_default=True)
@click.option(
    "--expires",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%d"]),
    default=None,
    help="When the key stops working (UTC date, or ISO time with offset).",
)
def keys_issue(
    tenant_id: str, name: str, scopes: tuple[str, ...], role: str, expires: datetime | None
) -> None:
    """Issue an API key and print it (shown once)."""
    settings = command_settings("keys")
    chosen = sorted(scopes) if scopes else sorted(role_scopes(_role(role)))
    expires_at = None
    if expires is not None:
        expires_at = expires if expires.tzinfo else expires.replace(tzinfo=UTC)

    async def main() -> tuple[str, str]:
        async with _identity(settings) as identity:
            key = await identity.issue_key(
                tenant_id, name, chosen, cli_actor(), expires_at=expires_at
            )
            return key.key_id, key.token

    key_id, token = run(main)
    click.echo(f"key {key_id} issued with scopes {', '.join(chosen)}")
    click.echo(f"API key (shown once): {token}")


@keys.command("revoke")
@click.argument("key_id")
@click.option("--tenant", "tenant_id", required=True, help="The key's tenant.")
@click.option("--reason", default=None, help="Why, for the audit trail.")
def keys_revoke(key_id: str, tenant_id: str, reason: str | None) -> None:
    """Revoke an API key: every API process refuses it within two seconds."""
    settings = command_settings("keys")

    async def main() -> None:
        async with _identity(settings) as identity:
            await identity.revoke_key(tenant_id, key_id, cli_actor(), reason)

    run(main)
    click.echo(f"key {key_id} revoked")


@keys.command("list")
@click.option("--tenant", "tenant_id", required=True, help="The tenant whose keys to list.")
def keys_list(tenant_id: str) -> None:
    """List a tenant's API keys (never their secrets)."""
    from api._database import Database

    settings = command_settings("keys")

    async def main() -> list[dict[str, object]]:
        database = Database(settings)
        try:
            async with database.connection() as conn:
                rows = await conn.fetch(
                    """SELECT key_id, prefix, name, scopes, created_at, expires_at, revoked_at,
                           last_used_at
                       FROM api_keys WHERE tenant_id = $1 ORDER BY created_at DESC""",
                    tenant_id,
                )
            return [dict(row) for row in rows]
        finally:
            await database.close()

    for row in run(main):
        state = "revoked" if row["revoked_at"] else "active"
        click.echo(
            f"{row['key_id']}  wr_{row['prefix']}_…  {state:8} {row['name']!r}  "
            f"scopes={','.join(cast(list[str], row['scopes']))}  "
            f"last used {row['last_used_at'] or 'never'}"
        )
