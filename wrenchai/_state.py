"""The dev stack's state directory: the secrets it made up, and where its broker and database
are, so that admin commands run beside it (``wrenchai --state-dir DIR users create ...``)
find them by themselves.

Layout: ``secrets/<name>`` (mode 0600, one secret each, made once and kept across restarts),
``stack.json`` (the non-secret settings of the running stack), ``admin-api-key`` and
``admin-password`` (the bootstrap admin's credentials, 0600).
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from events import generate_key
from wrenchai.errors import ConfigurationError
from wrenchai.settings import _SECRET_FIELDS, Settings

STACK_FILE = "stack.json"
SECRETS_DIR = "secrets"
ADMIN_KEY_FILE = "admin-api-key"
ADMIN_PASSWORD_FILE = "admin-password"

# What a stack records for the commands beside it: where the log and the database are, how
# names are spelled there and whether its broker takes idempotent producers. Secrets are
# recorded as files, never in stack.json.
_RECORDED = tuple(
    name
    for name in (
        "kafka_bootstrap",
        "kafka_idempotent",
        "database_url",
        "namespace",
        "partitions",
        "default_tenant",
    )
    if name not in _SECRET_FIELDS
)


def _ed25519_pem() -> str:
    """A new Ed25519 private key, PEM (PKCS#8): the key that signs the archive's checkpoints."""
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


# Secrets the dev stack makes up when the environment does not give them.
_GENERATED: dict[str, Callable[[], str]] = {
    "encryption_keys": generate_key,
    "master_keys": generate_key,
    "jwt_secret": lambda: secrets.token_urlsafe(48),
    "api_key_pepper": lambda: secrets.token_urlsafe(32),
    "checkpoint_signing_key": _ed25519_pem,
}
# A generated secret the environment makes unnecessary by setting another one: an HMAC key
# given for the checkpoints means the operator chose HMAC, so no Ed25519 key is made.
_REPLACED_BY = {"checkpoint_signing_key": "checkpoint_hmac_key"}
# encryption.key predates the secrets folder: a stack started before keeps its key there.
_LEGACY_FILES = {"encryption_keys": "encryption.key"}


def write_private(path: Path, text: str, *, replace: bool = True) -> bool:
    """Write ``text`` to ``path`` readable by its owner only (0600 from the start, never
    wider for a moment). Returns False when ``path`` exists and ``replace`` is off."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if replace else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as out:
        out.write(text + "\n")
    os.chmod(path, 0o600)
    return True


def with_generated_secrets(settings: Settings, state_dir: Path) -> Settings:
    """``settings`` with every secret the environment left unset taken from the state
    directory, made up and written there the first time."""
    update: dict[str, Any] = {}
    for name, make in _GENERATED.items():
        if getattr(settings, name) is not None:
            continue
        if name in _REPLACED_BY and getattr(settings, _REPLACED_BY[name]) is not None:
            continue
        legacy = _LEGACY_FILES.get(name)
        path = state_dir / legacy if legacy else state_dir / SECRETS_DIR / name
        write_private(path, make(), replace=False)
        update[name] = SecretStr(path.read_text().strip())
    return settings.model_copy(update=update)


def secret_files(settings: Settings, state_dir: Path) -> dict[str, Path]:
    """Every secret of ``settings`` written to ``secrets/<name>``, for children to read as
    ``WRENCH_<NAME>_FILE`` instead of finding it in their environment."""
    files: dict[str, Path] = {}
    for name in _SECRET_FIELDS:
        value = getattr(settings, name, None)
        if value is None:
            continue
        text = value.get_secret_value() if isinstance(value, SecretStr) else str(value)
        path = state_dir / SECRETS_DIR / name
        write_private(path, text)
        files[name] = path
    return files


def record_stack(
    settings: Settings, state_dir: Path, api_url: str, secrets_by_name: dict[str, Path]
) -> Path:
    """Write ``stack.json``: where this stack's log, database and API are, and the files
    that hold its secrets."""
    record = {
        "api": api_url,
        "settings": {name: getattr(settings, name) for name in _RECORDED},
        "secrets": {name: str(path) for name, path in secrets_by_name.items()},
    }
    path = state_dir / STACK_FILE
    write_private(path, json.dumps(record, indent=2))
    return path


def recorded_settings(state_dir: Path) -> dict[str, Any]:
    """What a stack recorded in ``state_dir`` (empty when none did), as Settings fields."""
    path = state_dir / STACK_FILE
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
        values: dict[str, Any] = dict(record["settings"])
        for name, secret_path in record["secrets"].items():
            values[name] = Path(secret_path).read_text().strip()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigurationError(
            f"cannot read the stack recorded in {path}: {exc}; start `wrenchai dev` with this "
            "--state-dir again, or set WRENCH_KAFKA_BOOTSTRAP and WRENCH_DATABASE_URL"
        ) from exc
    return values


def settings_for(state_dir: Path | None) -> Settings:
    """The settings of a command: the environment first, then what the stack in
    ``state_dir`` recorded for whatever the environment leaves unset."""
    from_env = Settings()
    if state_dir is None:
        return from_env
    recorded = {
        name: value
        for name, value in recorded_settings(state_dir).items()
        if name not in from_env.model_fields_set
    }
    # Keyword arguments win over the environment, and hold only what it left unset.
    return Settings(**recorded) if recorded else from_env
