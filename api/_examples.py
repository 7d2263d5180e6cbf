"""Example bodies for the OpenAPI schema: one research_report task followed from submission
to completion, and the identity and inspection bodies around it.

The models show them through ``model_config = ConfigDict(json_schema_extra=examples(X))``;
tests/api/test_openapi_examples.py checks each against its model's schema. Plain data, no
imports from the API, so every module of it may use them.
"""

from __future__ import annotations

import json
from typing import Any

TASK_ID = "6f1c2a4e-8b0d-4c1e-9a57-3d2b1f0e4c88"
TENANT_ID = "acme"
SUBMITTED_AT = "2026-03-01T12:00:00.120000Z"
UPDATED_AT = "2026-03-01T12:00:07.480000Z"
EVENT_ID = "0b8e4f6a-2c1d-5e3f-9a7b-8c6d5e4f3a2b"
CURSOR = (
    "eyJvcmRlciI6Ii1jcmVhdGVkX2F0IiwiYWZ0ZXIiOlsiMjAyNi0wMy0wMVQxMjowMDowMC4xMjAwMDArMDA6MDAiLCI2"
    "ZjFjMmE0ZS04YjBkLTRjMWUtOWE1Ny0zZDJiMWYwZTRjODgiXX0"
)
USER_ID = "7c1d9e2f4a6b"


def examples(*bodies: dict[str, Any]) -> dict[str, Any]:
    """``json_schema_extra`` that shows ``bodies`` as the model's examples."""
    return {"examples": list(bodies)}


SUBMIT_TASK = {
    "description": "Research how WrenchAI recovers from errors and write a short report",
    "constraints": {"playbook": "research_report", "alerts": {"stall_after_s": 120}},
    "timeout": 600,
}
CANCEL_TASK = {"reason": "submitted twice by mistake"}
ACCEPTED = {"task_id": TASK_ID, "status": "submitted", "position": "2:41"}

ESTIMATE = {
    "tokens": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "seconds": 2.5,
    "cost_usd": 0.0,
}
TASK = {
    "task_id": TASK_ID,
    "tenant_id": TENANT_ID,
    "description": SUBMIT_TASK["description"],
    "constraints": SUBMIT_TASK["constraints"],
    "timeout": 600,
    "status": "completed",
    "created_at": SUBMITTED_AT,
    "updated_at": UPDATED_AT,
    "last_event_id": EVENT_ID,
    "position": "2:58",
    "playbook": "research_report",
}
TASK_PAGE = {"tasks": [TASK], "next_cursor": CURSOR}
_STEP = {
    "stage_id": "search",
    "role": "researcher",
    "optional": False,
    "status": "completed",
    "attempts": 1,
    "tool": "web.search",
    "tool_version": "1.0.0",
    "model": None,
    "started_at": "2026-03-01T12:00:01.300000Z",
    "completed_at": "2026-03-01T12:00:01.900000Z",
    "duration_s": 0.6,
    "error": None,
}
TASK_DETAIL = {
    **TASK,
    "roles": [
        {
            "name": "researcher",
            "reason": "the task asks to research a question",
            "score": 0.92,
            "depends_on": [],
            "tools": [
                {
                    "tool": "web.search",
                    "version": "1.0.0",
                    "need": "capability:search",
                    "reliability": 0.95,
                    "score": 0.88,
                    "alternatives": [],
                }
            ],
        }
    ],
    "plan": {
        "playbook": "research_report",
        "stages": [
            {
                "id": "search",
                "role": "researcher",
                "tools": ["web.search"],
                "tool_version": "1.0.0",
                "model": None,
                "depends_on": [],
                "inputs": [],
                "tool_input": {"query": SUBMIT_TASK["description"], "limit": 5},
                "success_criteria": ["at least one result with a snippet"],
                "optional": False,
                "timeout": 30,
                "retry": 1,
                "estimate": ESTIMATE,
                "fallbacks": [{"kind": "retry", "detail": "search again", "attempts": 1}],
                "status": "completed",
            }
        ],
        "total": ESTIMATE,
        "critical_path_seconds": 2.5,
        "created_at": "2026-03-01T12:00:01.050000Z",
    },
    "steps": [_STEP],
    "progress": {
        "stages_done": 3,
        "stages_total": 3,
        "elapsed_s": 7.4,
        "estimated_s": 7.5,
        "tokens": 0,
        "cost_usd": 0.0,
    },
    "summary": "3 of 3 stages completed",
    "output": {"final": {"markdown": "# How WrenchAI recovers from errors\n..."}},
}
TASK_THOUGHTS = {
    "task_id": TASK_ID,
    "thoughts": [
        {
            "operation": "plan",
            "number": 1,
            "text": "The task asks for research and a report: research_report fits.",
            "revises": None,
            "branch": None,
            "stage_id": None,
            "occurred_at": "2026-03-01T12:00:01.000000Z",
            "position": "2:43",
        }
    ],
}
TASK_STEPS = {
    "task_id": TASK_ID,
    "steps": [
        {
            **_STEP,
            "tool_calls": [
                {
                    "attempt": 1,
                    "tool": "web.search",
                    "version": "1.0.0",
                    "outcome": "ok",
                    "duration_s": 0.6,
                    "cached": False,
                    "error_code": None,
                    "cost_usd": 0.0,
                    "occurred_at": "2026-03-01T12:00:01.900000Z",
                    "position": "2:47",
                }
            ],
            "recoveries": [],
        }
    ],
}
TASK_EVALUATIONS = {
    "task_id": TASK_ID,
    "evaluations": [
        {
            "stage_id": "search",
            "attempt": 1,
            "role": "researcher",
            "tool": "web.search",
            "model": None,
            "checks": [{"name": "not_empty", "passed": True, "detail": "5 results"}],
            "prior": {"alpha": 2.0, "beta": 1.0, "source": "default"},
            "quality_score": 0.8,
            "interval": [0.47, 0.99],
            "confidence": 0.87,
            "threshold": 0.5,
            "decision": "accept",
            "reason": "every check passed",
            "suggestions": [],
            "occurred_at": "2026-03-01T12:00:02.000000Z",
            "position": "2:48",
        }
    ],
}
HISTORY_EVENT: dict[str, Any] = {
    "id": EVENT_ID,
    "type": "task.submitted",
    "schema_version": 2,
    "task_id": TASK_ID,
    "tenant_id": TENANT_ID,
    "actor": {"kind": "user", "id": USER_ID},
    "occurred_at": SUBMITTED_AT,
    "correlation_id": None,
    "causation_id": None,
    "payload": {**SUBMIT_TASK, "grants": []},
    "position": "2:41",
}
TASK_HISTORY = {"task_id": TASK_ID, "events": [HISTORY_EVENT]}

_STATS: dict[str, Any] = {
    "calls": 12,
    "successes": 11,
    "failures": 1,
    "cached": 3,
    "refused": 0,
    "success_rate": 0.917,
    "mean_duration_s": 0.42,
    "cost_usd": 0.0,
    "reliability": 0.857,
    "last_called_at": "2026-03-01T12:00:01.900000Z",
}
TOOL_LIST = {
    "tools": [
        {
            "name": "web.search",
            "version": "1.0.0",
            "description": "Search the local corpus (or the web, when configured).",
            "capabilities": ["search"],
            "offline": True,
            "uses_llm": False,
            "side_effects": False,
            "idempotent": True,
            "cost": {"usd_per_call": 0.0, "tokens_per_call": 0, "seconds": 0.5},
            "observed": {
                **_STATS,
                "by_task_type": [{**_STATS, "task_type": "research_report"}],
            },
            "health": {"ok": True, "detail": "corpus loaded", "checked_at": UPDATED_AT},
        }
    ]
}

ALERT_ID = f"{TASK_ID}:STALLED:1"
ALERT_PAGE = {
    "alerts": [
        {
            "alert_id": ALERT_ID,
            "task_id": TASK_ID,
            "level": "warning",
            "code": "STALLED",
            "message": "no event for 130 s (threshold 120 s)",
            "details": {"seconds_since_last_event": 130.0, "stall_after_s": 120.0},
            "status": "open",
            "raised_at": "2026-03-01T12:02:10.000000Z",
            "cleared_at": None,
            "clear_reason": None,
            "acknowledged": False,
            "acknowledged_at": None,
            "acknowledged_by": None,
            "note": None,
            "position": "2:61",
        }
    ],
    "next_cursor": None,
}
ACKNOWLEDGE_ALERT = {"note": "looking into it"}
ALERT_ACCEPTED = {
    "alert_id": ALERT_ID,
    "task_id": TASK_ID,
    "status": "acknowledging",
    "position": "2:62",
}
QUALITY_INSIGHTS = {
    "groups": [
        {
            "role": "researcher",
            "tool": "web.search",
            "model": None,
            "alpha": 14.2,
            "beta": 3.1,
            "mean": 0.82,
            "interval": [0.66, 0.94],
            "evaluations": 12,
            "fit_id": "fit-20260301T120000Z",
            "r_hat": 1.002,
            "ess": 812.0,
            "fitted_at": "2026-03-01T12:00:00Z",
        }
    ],
    "last_fit": {
        "fit_id": "fit-20260301T120000Z",
        "converged": True,
        "reason": "r_hat <= 1.01 and ess >= 400 for every group",
        "r_hat_max": 1.004,
        "ess_min": 640.0,
        "seconds": 3.2,
        "evaluations": 12,
        "groups": 1,
        "fitted_at": "2026-03-01T12:00:00Z",
    },
}

_SANDBOX = {"mode": "isolated", "detail": "bubblewrap namespaces, user 65534"}
HEALTHY = {
    "status": "healthy",
    "checks": {"database": True, "broker": True, "projector_lag": 0},
    "sandbox": _SANDBOX,
}
UNHEALTHY = {
    "status": "unhealthy",
    "checks": {"database": True, "broker": False, "projector_lag": None},
    "sandbox": _SANDBOX,
}

TOKEN_PAIR = {
    "access_token": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiI3YzFkOWUyZjRhNmIifQ.c2lnbmF0dXJl",
    "token_type": "bearer",
    "expires_in": 900,
    "refresh_token": "eyJhbGciOiJIUzI1NiJ9.eyJqdGkiOiJyMSJ9.c2lnbmF0dXJl",
    "refresh_expires_in": 1_209_600,
}
TOKEN_FORM = {"grant_type": "password", "username": "alice", "password": "correct horse battery"}
ME = {
    "tenant_id": TENANT_ID,
    "credential": "jwt",
    "user_id": USER_ID,
    "key_id": None,
    "role": "operator",
    "scopes": ["alerts:read", "alerts:write", "tasks:read", "tasks:write", "tools:read"],
    "expires_at": "2026-03-01T12:15:00Z",
}
CREATE_TENANT = {"name": "Acme Corp", "tenant_id": TENANT_ID}
ISSUE_KEY = {"name": "ci pipeline", "scopes": ["tasks:read", "tasks:write"], "expires_at": None}
API_KEY_ISSUED = {
    "key_id": "k-3f9a2c",
    "key": "wr_3f9a2c1d_Zm9vYmFyYmF6cXV4cXV1eHF1dXg",
    "prefix": "3f9a2c1d",
    "name": "ci pipeline",
    "scopes": ["tasks:read", "tasks:write"],
    "tenant_id": TENANT_ID,
    "user_id": None,
    "expires_at": None,
}
TENANT_CREATED = {
    "tenant_id": TENANT_ID,
    "name": "Acme Corp",
    "api_key": {**API_KEY_ISSUED, "name": "acme admin", "scopes": ["tasks:read"]},
}
API_KEY_LIST = {
    "keys": [
        {
            "key_id": "k-3f9a2c",
            "prefix": "3f9a2c1d",
            "name": "ci pipeline",
            "scopes": ["tasks:read", "tasks:write"],
            "user_id": None,
            "created_by": f"user:{USER_ID}",
            "created_at": "2026-02-27T09:30:00Z",
            "expires_at": None,
            "revoked_at": None,
            "last_used_at": "2026-03-01T11:58:02Z",
        }
    ]
}
CREATE_USER = {"username": "bob@acme.example", "password": "a long passphrase", "role": "viewer"}
CHANGE_ROLE = {"role": "operator"}
DISABLE_USER = {"reason": "left the team"}
USER_INFO = {
    "user_id": USER_ID,
    "username": "bob@acme.example",
    "role": "viewer",
    "created_at": "2026-02-27T09:30:00Z",
    "disabled_at": None,
}
USER_LIST = {"users": [USER_INFO]}

WS_TICKET = {
    "ticket": "gAAAAABnX2f0c2VhbGVkLXRpY2tldC1leGFtcGxl...",
    "expires_in": 30,
}
_FIRST = HISTORY_EVENT
TASK_STREAM = (
    f"id: {_FIRST['position']}\nevent: event\n"
    f"data: {json.dumps({'position': _FIRST['position'], 'event': _FIRST}, separators=(',', ':'))}"
    "\n\nevent: live\ndata: {}\n\n"
    'event: end\ndata: {"status":"completed"}\n\n'
)
"""A task's stream as Server-Sent Events: an event, the switch to live, the end."""
