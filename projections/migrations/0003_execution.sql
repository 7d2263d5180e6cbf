-- Read models of execution: where each stage of the plan stands, every tool call, every
-- recovery, each task's progress, and tool statistics per tenant and task type.

-- The stages of 0002 are the steps of execution: step.*, recovery.* and their status live on
-- the same row, so a stage has one status whichever view reads it. The ``last_*`` columns
-- describe the latest attempt; ``tool_version`` and ``model`` stay what the plan asked for.
ALTER TABLE task_stages
    ADD COLUMN tenant_id          text,
    ADD COLUMN attempts           integer          NOT NULL DEFAULT 0,
    ADD COLUMN last_tool          text,
    ADD COLUMN last_tool_version  text,
    ADD COLUMN last_model         text,
    ADD COLUMN started_at         timestamptz,
    ADD COLUMN completed_at       timestamptz,
    ADD COLUMN duration_s         double precision,
    ADD COLUMN last_error         jsonb,
    ADD COLUMN updated_at         timestamptz,
    ADD COLUMN last_event_id      uuid,
    ADD COLUMN last_partition     integer,
    ADD COLUMN last_offset        bigint;
-- Stages projected before this migration take the tenant of the plan.created that wrote them.
UPDATE task_stages s SET tenant_id = e.tenant_id FROM event_log e WHERE e.id = s.event_id;
ALTER TABLE task_stages ALTER COLUMN tenant_id SET NOT NULL;
ALTER TABLE task_stages DROP CONSTRAINT task_stages_status_check;
ALTER TABLE task_stages ADD CONSTRAINT task_stages_status_check
    CHECK (status IN ('pending', 'running', 'completed', 'failed', 'skipped', 'recovering'));

-- One row per tool.returned. The result is user content and is never stored here.
CREATE TABLE tool_calls (
    event_id     uuid             PRIMARY KEY,
    task_id      uuid             NOT NULL,
    tenant_id    text             NOT NULL,
    stage_id     text             NOT NULL,
    attempt      integer          NOT NULL,
    tool         text             NOT NULL,
    version      text             NOT NULL,
    outcome      text             NOT NULL CHECK (outcome IN ('ok', 'error')),
    duration_s   double precision NOT NULL,
    cached       boolean          NOT NULL,
    error_code   text,
    cost_usd     double precision NOT NULL,
    task_type    text,
    occurred_at  timestamptz      NOT NULL,
    partition    integer          NOT NULL,
    "offset"     bigint           NOT NULL
);
CREATE INDEX tool_calls_task_idx ON tool_calls (task_id, partition, "offset");

-- One row per failed attempt that got a recovery.planned; recovery.executed fills in when it
-- was carried out and which attempt it started.
CREATE TABLE task_recoveries (
    task_id       uuid             NOT NULL,
    stage_id      text             NOT NULL,
    attempt       integer          NOT NULL,
    tenant_id     text             NOT NULL,
    category      text             NOT NULL,
    action        text             NOT NULL,
    reason        text             NOT NULL,
    delay_s       double precision NOT NULL,
    tool          text,
    model         text,
    suggestion    text,
    planned_at    timestamptz      NOT NULL,
    executed_at   timestamptz,
    next_attempt  integer,
    event_id      uuid             NOT NULL,
    PRIMARY KEY (task_id, stage_id, attempt)
);

-- Where the task stands (the latest progress.updated; null before the first), and the
-- summary task.completed gave.
ALTER TABLE tasks
    ADD COLUMN stages_done   integer,
    ADD COLUMN stages_total  integer,
    ADD COLUMN elapsed_s     double precision,
    ADD COLUMN estimated_s   double precision,
    ADD COLUMN tokens        bigint,
    ADD COLUMN cost_usd      double precision,
    ADD COLUMN summary       text;

-- Tool statistics per tenant, tool and task type ('' when the call named no task type),
-- moved on by the same statement that inserts the tool_calls row, so a call counts once.
-- As in the agents' own statistics, ``calls`` are the calls that ran the tool: a reused
-- (cached) result and a circuit-breaker refusal are counted apart and add no duration or
-- cost. The sums are numeric: exact, so the order calls are added in does not change them.
CREATE TABLE tool_stats (
    tenant_id         text        NOT NULL,
    tool              text        NOT NULL,
    task_type         text        NOT NULL,
    calls             bigint      NOT NULL,
    successes         bigint      NOT NULL,
    failures          bigint      NOT NULL,
    cached            bigint      NOT NULL,
    refused           bigint      NOT NULL,
    total_duration_s  numeric     NOT NULL,
    total_cost_usd    numeric     NOT NULL,
    last_called_at    timestamptz NOT NULL,
    PRIMARY KEY (tenant_id, tool, task_type)
);
