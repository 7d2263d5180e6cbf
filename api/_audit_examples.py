"""Example bodies of the audit endpoints for the OpenAPI schema: one page of the trail, and a
task's state as of its first step's failed attempt. Plain data, no imports from the API, so
api.audit_models may use them (tests/api/test_openapi_examples.py checks each against its
model's schema)."""

from __future__ import annotations

from typing import Any

TASK_ID = "6f1c2a4e-8b0d-4c1e-9a57-3d2b1f0e4c88"
TENANT_ID = "acme"
CURSOR = "WyIyMDI2LTAzLTAxVDEyOjAwOjAwLjEyMDAwMCswMDowMCIsIndyZW5jaC5ldmVudHMiLDIsMF0"


def examples(*bodies: dict[str, Any]) -> dict[str, Any]:
    """``json_schema_extra`` that shows ``bodies`` as the model's examples."""
    return {"examples": list(bodies)}


AUDIT_EVENT = {
    "id": "0b8e4f6a-2c1d-5e3f-9a7b-8c6d5e4f3a2b",
    "type": "task.submitted",
    "schema_version": 2,
    "task_id": TASK_ID,
    "tenant_id": TENANT_ID,
    "actor": {"kind": "user", "id": "7c1d9e2f4a6b"},
    "occurred_at": "2026-03-01T12:00:00.120000Z",
    "correlation_id": None,
    "causation_id": None,
    "payload": {
        "description": "Find how WrenchAI retries and write it up",
        "constraints": None,
        "timeout": 600,
        "grants": ["playbooks:inline"],
    },
    "position": "2:0",
    "topic": "wrench.events",
}
AUDIT_EVENT_PAGE = {"events": [AUDIT_EVENT], "next_cursor": CURSOR}

_ESTIMATE = {
    "tokens": 0,
    "prompt_tokens": 0,
    "completion_tokens": 0,
    "seconds": 0.1,
    "cost_usd": 0.002,
}
_ERROR = {"code": "TOOL_FAILED", "message": "the backend did not answer", "category": "transient"}
_STEP = {
    "stage_id": "gather",
    "role": "researcher",
    "optional": False,
    "status": "failed",
    "attempts": 1,
    "tool": "web.search",
    "tool_version": "1.0.0",
    "model": None,
    "started_at": "2026-03-01T12:00:01.300000Z",
    "completed_at": None,
    "duration_s": None,
    "error": _ERROR,
}
TASK_STATE = {
    "task_id": TASK_ID,
    "tenant_id": TENANT_ID,
    "as_of": {
        "position": "2:17",
        "event_id": "3c4d5e6f-7a8b-5c9d-8e0f-1a2b3c4d5e6f",
        "type": "step.failed",
        "occurred_at": "2026-03-01T12:00:01.900000Z",
        "events": 12,
    },
    "task": {
        "task_id": TASK_ID,
        "tenant_id": TENANT_ID,
        "description": "Find how WrenchAI retries and write it up",
        "constraints": None,
        "timeout": 600,
        "status": "running",
        "created_at": "2026-03-01T12:00:00.120000Z",
        "playbook": "research_report",
        "roles": [
            {
                "name": "researcher",
                "reason": "the task asks to find something",
                "score": 0.92,
                "depends_on": [],
                "tools": [
                    {
                        "tool": "web.search",
                        "version": "1.0.0",
                        "need": "capability:search",
                        "reliability": 0.5,
                        "score": 0.5,
                        "alternatives": [],
                    }
                ],
            }
        ],
        "plan": {
            "playbook": "research_report",
            "stages": [
                {
                    "id": "gather",
                    "role": "researcher",
                    "tools": ["web.search"],
                    "tool_version": "1.0.0",
                    "model": None,
                    "depends_on": [],
                    "inputs": [],
                    "tool_input": {"query": "WrenchAI retries"},
                    "success_criteria": [],
                    "optional": False,
                    "timeout": 60,
                    "retry": 2,
                    "estimate": _ESTIMATE,
                    "fallbacks": [],
                    "status": "failed",
                }
            ],
            "total": _ESTIMATE,
            "critical_path_seconds": 0.1,
            "created_at": "2026-03-01T12:00:01.100000Z",
        },
        "steps": [_STEP],
        "progress": None,
        "summary": None,
        "output": None,
    },
    "steps": [
        {
            **_STEP,
            "tool_calls": [
                {
                    "attempt": 1,
                    "tool": "web.search",
                    "version": "1.0.0",
                    "outcome": "error",
                    "duration_s": 0.5,
                    "cached": False,
                    "error_code": "TOOL_FAILED",
                    "cost_usd": 0.002,
                    "occurred_at": "2026-03-01T12:00:01.850000Z",
                    "position": "2:16",
                }
            ],
            "recoveries": [],
        }
    ],
    "evaluations": [],
    "attempts": [
        {
            "stage_id": "gather",
            "attempt": 1,
            "tool": "web.search",
            "tool_version": "1.0.0",
            "model": None,
            "suggestions": [],
            "started_at": "2026-03-01T12:00:01.300000Z",
            "outcome": "failed",
            "ended_at": "2026-03-01T12:00:01.900000Z",
            "duration_s": 0.6,
            "error_code": "TOOL_FAILED",
            "error": "the backend did not answer",
            "decision": None,
            "quality_score": None,
            "cost_usd": 0.002,
            "position": "2:14",
        }
    ],
    "usage": {"tokens": 0, "execution_tokens": 0, "cost_usd": 0.002},
    "agents": {
        "planner": {"planned": True, "closed": None},
        "journey": {
            "stages": [
                {
                    "stage_id": "gather",
                    "status": "failed",
                    "attempt": 1,
                    "tool": "web.search",
                    "model": None,
                    "accepted": False,
                    "retries": 0,
                    "recovery": None,
                }
            ],
            "settled": 0,
            "reported": 0,
        },
        "inspector": {
            "awaiting": [],
            "judged": 0,
            "open_alerts": {},
            "failed_attempts": 1,
            "retries": 0,
            "tokens": 0,
            "last_event_at": "2026-03-01T12:00:01.900000Z",
        },
    },
}
