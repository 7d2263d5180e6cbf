"""``wrenchai keys rotate`` and ``wrenchai tenant shred``: the tenants' data keys.

Both work on the key store in Postgres (``tenant_keys``, wrapped by ``WRENCH_MASTER_KEYS``),
which is not on the log: an immutable log cannot forget a key. Shredding also publishes
tenant.shredded on wrench.admin, so the fact is audited and the projector clears the
tenant's content from the read models.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import dataclass

import click

from events import (
    TENANT_ID_PATTERN,
    Actor,
    Event,
    EventProducer,
    PostgresKeyStore,
    Rotation,
    Shredding,
    TenantShredded,
    codec_from_settings,
    master_keys,
)
from events import rotate as rotate_data_keys
from wrenchai._cli_common import cli_actor, command_settings, run
from wrenchai.errors import ConfigurationError, WrenchError
from wrenchai.settings import Settings

PROJECTOR_WAIT_S = 10.0
"""How long ``shred`` waits for the projector to clear the read models before it reports."""


def _per_tenant_keys(settings: Settings, what: str) -> None:
    """Refuse to act on the key store of a deployment whose codec never reads it."""
    if settings.master_keys is None or not settings.master_keys.get_secret_value().strip():
        raise ConfigurationError(
            f"{what} needs per-tenant keys, and WRENCH_MASTER_KEYS is not set: without master "
            "keys every tenant's fields are encrypted with WRENCH_ENCRYPTION_KEYS (rotate "
            "those by putting a new key first). Set WRENCH_MASTER_KEYS (or its _FILE) on "
            "every process, newest first"
        )


async def rotate_keys(settings: Settings, tenant_id: str | None = None) -> Rotation:
    """Give ``tenant_id`` (every tenant with keys when None) a new data key, which encrypts
    from then on, and wrap every stored data key with the newest master key."""
    _per_tenant_keys(settings, "key rotation")
    store = PostgresKeyStore(settings)
    return await rotate_data_keys(
        store, master_keys(settings), [tenant_id] if tenant_id is not None else None
    )


class ShredRefused(WrenchError):
    """The tenant cannot be shredded (its id is not a tenant's, or it is the platform's)."""

    code = "SHRED_REFUSED"


@dataclass(frozen=True)
class ShredOutcome:
    """What ``shred`` did: the keys destroyed, the event published, and whether the
    projector has cleared the read models yet."""

    shredding: Shredding
    event_id: uuid.UUID
    projected: bool


def shred_event_id(tenant_id: str) -> uuid.UUID:
    """One id per tenant: shredding again (after a failed publish) adds no second event."""
    return uuid.uuid5(uuid.NAMESPACE_URL, f"wrench:tenant.shredded:{tenant_id}")


async def shred_tenant(
    settings: Settings,
    tenant_id: str,
    actor: Actor,
    reason: str | None = None,
    *,
    wait_s: float = PROJECTOR_WAIT_S,
) -> ShredOutcome:
    """Destroy the tenant's data keys, then publish tenant.shredded.

    Between the two it waits ``key_cache_ttl_s``: every process has forgotten the keys by
    then, so nothing decrypted with them reaches the read models after the projector has
    cleared them.
    """
    _per_tenant_keys(settings, "shredding")
    if not re.match(TENANT_ID_PATTERN, tenant_id):
        raise ShredRefused(
            f"{tenant_id!r} is not a tenant id (lower-case letters, digits, - and _; the "
            "platform's own _system tenant cannot be shredded)",
            tenant_id=tenant_id,
        )
    shredding = await PostgresKeyStore(settings).destroy(tenant_id, reason)
    if shredding.first:
        await asyncio.sleep(settings.key_cache_ttl_s)
    event = Event.new(
        TenantShredded(reason=reason, keys_destroyed=shredding.keys_destroyed),
        tenant_id=tenant_id,
        actor=actor,
        event_id=shred_event_id(tenant_id),
    )
    producer = EventProducer(settings, codec_from_settings(settings))
    try:
        await producer.publish(event)
    finally:
        await producer.stop()
    return ShredOutcome(shredding, event.id, await _projected(settings, tenant_id, wait_s))


async def _projected(settings: Settings, tenant_id: str, wait_s: float) -> bool:
    """Whether the projector marked the tenant shredded (in the same transaction as it
    cleared the read models) within ``wait_s``."""
    from projections import connect

    conn = await connect(settings)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            status = await conn.fetchval(
                "SELECT status FROM tenants WHERE tenant_id = $1", tenant_id
            )
            if status == "shredded" or loop.time() >= deadline:
                return bool(status == "shredded")
            await asyncio.sleep(0.2)
    finally:
        await conn.close()


@click.command("rotate")
@click.option(
    "--tenant",
    "tenant_id",
    default=None,
    help="Only this tenant gets a new data key (default: every tenant that has keys).",
)
def rotate(tenant_id: str | None) -> None:
    """Add a new data key (it encrypts from now on; old events stay readable) and rewrap every
    stored data key with the newest master key, so older master keys can be retired."""
    settings = command_settings("keys")
    outcome = run(lambda: rotate_keys(settings, tenant_id))
    if outcome.rotated:
        click.echo(
            f"new data key for {len(outcome.rotated)} tenant(s): {', '.join(outcome.rotated)}"
        )
    else:
        click.echo("no tenant got a new data key (none has keys yet, or it was shredded)")
    click.echo(
        f"{outcome.rewrapped} data key(s) now wrapped by master key {outcome.master_key} (the "
        "first of WRENCH_MASTER_KEYS); once every process runs with it first, the keys after "
        "it can be removed"
    )


@click.command("shred")
@click.argument("tenant_id")
@click.option("--reason", default=None, help="Why (an erasure request), for the audit trail.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def shred(tenant_id: str, reason: str | None, yes: bool) -> None:
    """Destroy TENANT_ID's data keys, for good: its content becomes unreadable in the log,
    the archive and the read models ("[shredded]"), and tenant.shredded is recorded."""
    settings = command_settings("tenants")
    if not yes:
        click.confirm(
            f"Destroy every data key of tenant {tenant_id}? Its content cannot be read again",
            abort=True,
        )
    outcome = run(lambda: shred_tenant(settings, tenant_id, cli_actor(), reason))
    done = outcome.shredding
    if done.first:
        click.echo(f"tenant {tenant_id} shredded: {done.keys_destroyed} data key(s) destroyed")
    else:
        click.echo(
            f"tenant {tenant_id} was shredded already ({done.keys_destroyed} data key(s) "
            "destroyed then); tenant.shredded published again (the same event id)"
        )
    if not outcome.projected:
        click.echo(
            "the projector has not applied tenant.shredded yet; the read models show "
            "[shredded] once it does"
        )
