"""``wrenchai tenants|users|keys`` as an operator runs them beside a stack: the commands find
the broker and the database in the state directory the stack recorded, publish on
wrench.admin and report what the projector applied."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from projections import run_projector
from wrenchai._state import record_stack, secret_files
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("topics")


@pytest.fixture
async def state_dir(settings: Settings, db: asyncpg.Connection, tmp_path: Path) -> Path:
    """A state directory as `wrenchai dev` leaves it: stack.json and the secrets folder."""
    state = tmp_path / "state"
    record_stack(settings, state, "http://127.0.0.1:1", secret_files(settings, state))
    return state


@pytest.fixture
async def projector(
    settings: Settings, db: asyncpg.Connection, topics: dict[str, int]
) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(run_projector(settings, stop=stop))
    yield
    stop.set()
    await asyncio.wait_for(task, 60)


async def wrenchai(state_dir: Path, *args: str) -> tuple[int, str]:
    """Run the command with no WRENCH_ variable set: all it knows is the state directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WRENCH_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wrenchai",
        "--state-dir",
        str(state_dir),
        *args,
        env={**env, "WRENCH_LOG_LEVEL": "warning"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


@pytest.mark.usefixtures("projector")
async def test_tenants_users_and_keys_from_the_command_line(
    state_dir: Path, db: asyncpg.Connection
) -> None:
    """Create a tenant (its first admin key printed once), a user, a key; list the keys;
    revoke the key and disable the user; each leaves its mark in the read models."""
    code, out = await wrenchai(state_dir, "tenants", "create", "Acme Corp")
    assert code == 0, out
    assert "tenant acme-corp created" in out
    first_key = re.search(r"wr_[a-z2-7]{12}_[A-Za-z0-9_-]{43}", out)
    assert first_key is not None
    assert (
        await db.fetchval("SELECT name FROM tenants WHERE tenant_id = 'acme-corp'") == "Acme Corp"
    )

    code, out = await wrenchai(
        state_dir, "users", "create", "ana@acme.test", "--tenant", "acme-corp",
        "--role", "operator", "--password", "a long passphrase",
    )  # fmt: skip
    assert code == 0, out
    user = await db.fetchrow("SELECT user_id, role FROM users WHERE username = 'ana@acme.test'")
    assert user is not None and user["role"] == "operator"

    code, out = await wrenchai(
        state_dir, "keys", "issue", "--tenant", "acme-corp", "--name", "ci", "--role", "viewer"
    )
    assert code == 0, out
    key_id = re.search(r"key ([0-9a-f]{32}) issued", out)
    assert key_id is not None and "tasks:read" in out and "tasks:write" not in out

    code, out = await wrenchai(state_dir, "keys", "list", "--tenant", "acme-corp")
    assert code == 0, out
    assert "'ci'" in out and "'first admin key'" in out
    assert first_key.group(0) not in out, "a listing never shows a secret"

    code, out = await wrenchai(
        state_dir, "keys", "revoke", key_id.group(1), "--tenant", "acme-corp"
    )
    assert code == 0, out
    revoked = await db.fetchval(
        "SELECT revoked_at FROM api_keys WHERE key_id = $1", key_id.group(1)
    )
    assert revoked is not None

    code, out = await wrenchai(state_dir, "users", "disable", "ana@acme.test", "--reason", "left")
    assert code == 0, out
    disabled = await db.fetchval(
        "SELECT disabled_at FROM users WHERE user_id = $1", user["user_id"]
    )
    assert disabled is not None
    actors = await db.fetch(
        "SELECT DISTINCT raw_value FROM event_log WHERE type IN ('tenant.created', 'user.disabled')"
    )
    assert all(b'"kind":"system"' in r["raw_value"] and b"cli:" in r["raw_value"] for r in actors)


@pytest.mark.usefixtures("projector")
async def test_commands_refuse_what_cannot_be_done_with_a_message(state_dir: Path) -> None:
    """A user for a tenant that does not exist, a weak password and a key for a missing
    tenant each exit 1 with a message that says what is wrong."""
    code, out = await wrenchai(
        state_dir, "users", "create", "bo@x.test", "--tenant", "nowhere", "--password", "x" * 20
    )
    assert code == 1 and "no active tenant nowhere" in out
    await wrenchai(state_dir, "tenants", "create", "Initech")
    code, out = await wrenchai(
        state_dir, "users", "create", "bo@x.test", "--tenant", "initech", "--password", "short"
    )
    assert code == 1 and "12" in out
    code, out = await wrenchai(state_dir, "tenants", "create", "Initech")
    assert code == 1 and "exists already" in out


async def test_a_state_directory_without_a_stack_says_how_to_point_at_one(
    tmp_path: Path,
) -> None:
    """Without a recorded stack the command falls back to the environment and, finding no
    broker there, says so instead of hanging."""
    bad = tmp_path / "state"
    bad.mkdir()
    (bad / "stack.json").write_text("{not json")
    code, out = await wrenchai(bad, "keys", "list", "--tenant", "x")
    assert code == 1 and "cannot read the stack recorded" in out
