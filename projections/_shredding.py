"""What shredding a tenant does to the read models: its user content becomes ``[shredded]``.

Destroying a tenant's data keys (``wrenchai tenant shred``) makes the log and the archive
unreadable for it, and every event of it decoded from then on carries ``[shredded]`` in its
sensitive fields. The read models, though, hold what was projected while the keys existed:
in clear, since they are what the API serves. On tenant.shredded this read model overwrites
that content wherever it was copied: the columns filled from sensitive payload fields.

It owns no table (a rebuild recreates none for it) and runs on wrench.admin, where
tenant.shredded is published, while most columns it clears are folded from wrench.events:
``names.get(table, table)`` reaches the live table when a rebuild of wrench.admin does not
recreate it. A rebuild of wrench.events needs nothing of it: replayed without keys, the
tenant's events fill the fresh tables with ``[shredded]`` already.
"""

from __future__ import annotations

from collections.abc import Mapping

from events import SHREDDED, TenantShredded
from projections._read_model_types import Applied, Statement

# Table → the assignments that clear its user content; $2 is SHREDDED. Each column here is
# filled from a sensitive payload field (events.EventPayload.sensitive_fields): a new
# sensitive field copied into a read model belongs in this list too.
_CLEARED: dict[str, str] = {
    # task.submitted: description and constraints, and the playbook constraints named (the
    # name the plan gives stays: plan.created's playbook is not user content).
    "tasks": """description = $2,
        constraints = CASE WHEN constraints IS NULL THEN NULL ELSE to_jsonb($2::text) END,
        playbook = (SELECT p.playbook FROM task_plans p WHERE p.task_id = tasks.task_id)""",
    # thought.recorded: text.
    "task_thoughts": "text = $2",
    # plan.created: stages (one encrypted list); what a stage was asked to do and read.
    "task_stages": """tool_input = to_jsonb($2::text),
        inputs = CASE WHEN cardinality(inputs) = 0 THEN inputs ELSE ARRAY[$2::text] END,
        success_criteria = CASE WHEN cardinality(success_criteria) = 0 THEN success_criteria
                                ELSE ARRAY[$2::text] END""",
    # user.created: password_hash (so the tenant's passwords stop working, too).
    "users": "password_hash = $2",
    # apikey.issued: secret_hash (so the tenant's keys stop working, too).
    "api_keys": "secret_hash = $2",
}


class ShreddingModel:
    """On tenant.shredded, every column of the tenant's rows that holds user content reads
    ``[shredded]``. Applying it again changes nothing more."""

    tables: tuple[str, ...] = ()
    event_types: tuple[str, ...] = (TenantShredded.event_type,)

    def statements(self, applied: Applied, names: Mapping[str, str]) -> list[Statement]:
        event = applied.event
        if not isinstance(event.payload, TenantShredded):
            return []
        return [
            (
                f"UPDATE {names.get(table, table)} SET {assignments} WHERE tenant_id = $1",
                (event.tenant_id, SHREDDED),
            )
            for table, assignments in _CLEARED.items()
        ]
