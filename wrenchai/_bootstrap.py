"""The dev stack's first start: the default tenant, its admin user and an admin API key.

They are events like every other identity, so a restart finds them in the read models and
makes nothing new. The key and the password are written to the state directory (0600) and
never logged; the key holds ``tenants:admin``, which makes its holder the platform's
bootstrap admin.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path

import structlog

from api._database import Database
from api.identity import Identity
from api.security import TokenService, api_key_pepper
from events import (
    PLATFORM_SCOPES,
    SYSTEM,
    EventProducer,
    TenantCreated,
    codec_from_settings,
    role_scopes,
)
from wrenchai._state import ADMIN_KEY_FILE, ADMIN_PASSWORD_FILE, write_private
from wrenchai.settings import Settings

log = structlog.get_logger(__name__)

ADMIN_USERNAME = "admin"


@dataclass(frozen=True)
class Bootstrap:
    """Where the admin's credentials are, and whether this start made them."""

    key_file: Path
    password_file: Path
    created: bool


async def bootstrap_admin(settings: Settings, state_dir: Path) -> Bootstrap:
    """Create the default tenant, its admin and an admin key unless the tenant exists."""
    key_file, password_file = state_dir / ADMIN_KEY_FILE, state_dir / ADMIN_PASSWORD_FILE
    database = Database(settings)
    producer = EventProducer(settings, codec_from_settings(settings))
    try:
        tenant_id = settings.default_tenant
        async with database.connection() as conn:
            exists = await conn.fetchval("SELECT 1 FROM tenants WHERE tenant_id = $1", tenant_id)
        if exists:
            return Bootstrap(key_file, password_file, created=False)
        identity = Identity(
            settings, producer, database, api_key_pepper(settings, TokenService(settings))
        )
        await identity.publish(TenantCreated(name=tenant_id), tenant_id, SYSTEM)
        password = secrets.token_urlsafe(18)
        user = await identity.create_user(
            tenant_id,
            ADMIN_USERNAME,
            password,
            "admin",
            SYSTEM,
            extra_scopes=sorted(PLATFORM_SCOPES),
        )
        key = await identity.issue_key(
            tenant_id,
            "bootstrap admin",
            sorted(role_scopes("admin", PLATFORM_SCOPES)),
            SYSTEM,
            user_id=user.user_id,
        )
        write_private(key_file, key.token)
        write_private(password_file, password)
        log.info("bootstrap admin created", tenant_id=tenant_id, key_file=str(key_file))
        return Bootstrap(key_file, password_file, created=True)
    finally:
        await producer.stop()
        await database.close()
