-- Agent status, folded from agent.heartbeat on wrench.admin: one row per agent worker
-- process, as its last heartbeat described it.
--
-- Split in two by who may read what. agent_instances is platform data with nothing of any
-- tenant in it (partitions, lag, counts, the last error's code and time): the API's role
-- reads it like consumer_offsets. A heartbeat's per-tenant part (the tenant's tasks in
-- flight, and the last error's message and task when the error was in that tenant's work)
-- is in agent_instance_tenants, under row-level security like every tenant's read model,
-- so a query that forgets its tenant filter still sees only its own tenant.

CREATE TABLE agent_instances (
    agent_id         text             NOT NULL,
    instance         text             NOT NULL,
    started_at       timestamptz      NOT NULL,
    heartbeat_at     timestamptz      NOT NULL,
    interval_s       double precision NOT NULL,
    partitions       integer[]        NOT NULL,
    -- [{partition, committed, high_watermark, lag}], as the heartbeat gave it.
    lag              jsonb            NOT NULL,
    jobs_running     integer          NOT NULL,
    tasks_in_flight  integer          NOT NULL,
    last_error_code  text,
    last_error_at    timestamptz,
    event_id         uuid             NOT NULL,
    PRIMARY KEY (agent_id, instance)
);
CREATE INDEX agent_instances_recent_idx ON agent_instances (agent_id, heartbeat_at DESC);

-- One row per tenant the instance's last heartbeat named: its tasks in flight (the first
-- 100 ids and the count) and, when the last error was in its work, that error.
CREATE TABLE agent_instance_tenants (
    agent_id       text        NOT NULL,
    instance       text        NOT NULL,
    tenant_id      text        NOT NULL,
    task_ids       uuid[]      NOT NULL,
    task_count     integer     NOT NULL,
    error_code     text,
    error_message  text,
    error_task_id  uuid,
    error_at       timestamptz,
    PRIMARY KEY (agent_id, instance, tenant_id)
);
CREATE INDEX agent_instance_tenants_tenant_idx ON agent_instance_tenants (tenant_id, agent_id);

SELECT wrench_isolate('agent_instance_tenants'::regclass);
GRANT SELECT ON agent_instances TO wrench_api;
