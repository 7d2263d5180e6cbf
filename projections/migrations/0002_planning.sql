-- Read models of planning: each task's roles, their tools, its plan of stages, and the
-- reasoning behind them. Keys are deterministic (the task and a place in the event that
-- wrote the row), so applying an event twice changes nothing.

-- The task's roles in execution order (ordinal from 0), as roles.assigned gave them.
CREATE TABLE task_roles (
    task_id     uuid             NOT NULL,
    ordinal     integer          NOT NULL,
    name        text             NOT NULL,
    reason      text             NOT NULL,
    score       double precision NOT NULL,
    depends_on  text[]           NOT NULL,
    event_id    uuid             NOT NULL,
    PRIMARY KEY (task_id, ordinal)
);

-- The tools of each role (ordinal from 0 within the role), as tools.allocated gave them.
CREATE TABLE task_allocations (
    task_id       uuid             NOT NULL,
    role          text             NOT NULL,
    ordinal       integer          NOT NULL,
    tool          text             NOT NULL,
    version       text             NOT NULL,
    need          text             NOT NULL,
    reliability   double precision NOT NULL,
    score         double precision NOT NULL,
    alternatives  text[]           NOT NULL,
    offline_only  boolean          NOT NULL,
    event_id      uuid             NOT NULL,
    PRIMARY KEY (task_id, role, ordinal)
);

-- One plan per task: the first plan.created wins.
CREATE TABLE task_plans (
    task_id                uuid             PRIMARY KEY,
    event_id               uuid             NOT NULL,
    playbook               text,
    total                  jsonb            NOT NULL,
    critical_path_seconds  double precision NOT NULL,
    created_at             timestamptz      NOT NULL
);

-- The plan's stages in dependency order (ordinal from 0). ``status`` is moved on by the
-- execution events; a stage starts pending.
CREATE TABLE task_stages (
    task_id           uuid     NOT NULL,
    stage_id          text     NOT NULL,
    ordinal           integer  NOT NULL,
    role              text     NOT NULL,
    tools             text[]   NOT NULL,
    tool_version      text     NOT NULL,
    model             text,
    depends_on        text[]   NOT NULL,
    inputs            text[]   NOT NULL,
    tool_input        jsonb    NOT NULL,
    success_criteria  text[]   NOT NULL,
    optional          boolean  NOT NULL,
    timeout           integer  NOT NULL,
    retry             integer  NOT NULL,
    estimate          jsonb    NOT NULL,
    fallbacks         jsonb    NOT NULL,
    status            text     NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'completed', 'failed', 'skipped')),
    event_id          uuid     NOT NULL,
    PRIMARY KEY (task_id, stage_id)
);
CREATE INDEX task_stages_order_idx ON task_stages (task_id, ordinal);

-- Every thought of every reasoning call, with where its event sits on the log.
CREATE TABLE task_thoughts (
    event_id     uuid        PRIMARY KEY,
    task_id      uuid        NOT NULL,
    operation    text        NOT NULL,
    number       integer     NOT NULL,
    text         text        NOT NULL,
    revises      integer,
    branch       text,
    stage_id     text,
    occurred_at  timestamptz NOT NULL,
    partition    integer     NOT NULL,
    "offset"     bigint      NOT NULL
);
CREATE INDEX task_thoughts_log_idx ON task_thoughts (task_id, partition, "offset");
