"""What a submission may ask the agents to run: inline playbooks need playbooks:inline, code
needs tools:code, and the task carries its submitter's execution scopes as its grants."""

from __future__ import annotations

from typing import Any

import asyncpg
import pytest

from events import Codec, Position, TaskSubmitted, role_scopes
from tests.api._support import read_record, seed_api_key, serve
from wrenchai.settings import Settings

pytestmark = pytest.mark.usefixtures("topics")

INLINE = {
    "name": "inline_echo",
    "steps": [{"id": "s", "tool": "text.summarize", "role": "writer", "input": {"text": "x"}}],
}
INLINE_CODE = {
    "name": "inline_code",
    "steps": [{"id": "run", "tool": "code.python", "role": "coder", "input": {"code": "1"}}],
}


async def _submit(
    settings: Settings, key: str, constraints: dict[str, Any] | None
) -> tuple[int, dict[str, Any]]:
    async with serve(settings, api_key=key) as client:
        response = await client.post(
            "/tasks", json={"description": "grants", "constraints": constraints}
        )
    body: dict[str, Any] = response.json()
    return response.status_code, body


async def test_the_task_carries_the_execution_scopes_of_its_submitter(
    settings: Settings, db: asyncpg.Connection, codec: Codec
) -> None:
    """An admin's task may run code and inline playbooks; an operator's only inline
    playbooks; the grants are on the event."""
    for role, grants in (
        ("admin", ["playbooks:inline", "tools:code"]),
        ("operator", ["playbooks:inline"]),
    ):
        key = await seed_api_key(db, settings, scopes=sorted(role_scopes(role)))
        status, body = await _submit(settings, key, None)
        assert status == 202, body
        record = await read_record(settings, Position.parse(body["position"]))
        payload = codec.decode(record.value, tuple(record.headers)).payload
        assert isinstance(payload, TaskSubmitted)
        assert payload.grants == grants, role


@pytest.mark.parametrize(
    ("role", "constraints", "missing"),
    [
        ("operator", {"playbook": INLINE_CODE}, ["tools:code"]),
        ("operator", {"playbook": "code_task"}, ["tools:code"]),
        ("viewer_writer", {"playbook": INLINE}, ["playbooks:inline"]),
    ],
)
async def test_a_submission_needing_a_scope_its_submitter_lacks_is_refused(
    settings: Settings,
    db: asyncpg.Connection,
    role: str,
    constraints: dict[str, Any],
    missing: list[str],
) -> None:
    """An inline playbook without playbooks:inline, or code (inline or through a shipped
    playbook named in the constraints) without tools:code: 403 naming the scope, before
    anything is published."""
    scopes = ["tasks:write"] if role == "viewer_writer" else sorted(role_scopes("operator"))
    key = await seed_api_key(db, settings, scopes=scopes)
    status, body = await _submit(settings, key, constraints)
    assert status == 403, body
    assert body["error"]["code"] == "FORBIDDEN"
    assert body["error"]["details"]["required"] == missing


async def test_an_operator_may_bring_an_inline_playbook_without_code(
    settings: Settings, db: asyncpg.Connection
) -> None:
    key = await seed_api_key(db, settings, scopes=sorted(role_scopes("operator")))
    status, body = await _submit(settings, key, {"playbook": INLINE})
    assert status == 202, body
