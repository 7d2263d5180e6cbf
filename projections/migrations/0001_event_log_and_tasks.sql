-- The event archive: every record of wrench.events, in log order, hash-chained per partition.
-- Records that were not applied (poison, duplicate event id) are kept with their raw bytes so
-- a restore can republish the log with every offset where it was.
CREATE TABLE event_log (
    topic           text        NOT NULL,
    partition       integer     NOT NULL,
    "offset"        bigint      NOT NULL,
    status          text        NOT NULL CHECK (status IN ('applied', 'duplicate', 'poison')),
    id              uuid        UNIQUE,
    type            text,
    schema_version  integer,
    task_id         uuid,
    tenant_id       text,
    occurred_at     timestamptz,
    payload         jsonb,
    raw_key         bytea,
    raw_value       bytea,
    raw_headers     jsonb       NOT NULL DEFAULT '[]',
    error           text,
    prev_hash       bytea       NOT NULL,
    hash            bytea       NOT NULL,
    archived_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (topic, partition, "offset"),
    CHECK ((status = 'applied') = (id IS NOT NULL))
);
CREATE INDEX event_log_task_idx ON event_log (task_id, partition, "offset") WHERE status = 'applied';

-- Where each consumer group stands, written in the same transaction as what it produced.
CREATE TABLE consumer_offsets (
    group_id    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    next_offset bigint      NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

-- Read model: one row per task.
CREATE TABLE tasks (
    task_id        uuid        PRIMARY KEY,
    tenant_id      text        NOT NULL,
    description    text        NOT NULL,
    constraints    jsonb,
    timeout        integer     NOT NULL,
    status         text        NOT NULL
        CHECK (status IN ('submitted', 'running', 'completed', 'failed', 'cancelled')),
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    last_event_id  uuid        NOT NULL,
    last_partition integer     NOT NULL,
    last_offset    bigint      NOT NULL
);
CREATE INDEX tasks_listing_idx ON tasks (tenant_id, created_at DESC, task_id DESC);
CREATE INDEX tasks_status_idx ON tasks (tenant_id, status, created_at DESC, task_id DESC);
