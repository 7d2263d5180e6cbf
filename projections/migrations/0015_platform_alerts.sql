-- Platform alerts and what the ResourceMonitor reads from heartbeats.
--
-- The ResourceMonitor raises alert.raised / alert.cleared about the platform itself
-- (CONSUMER_LAG, MEMORY_HIGH, ERROR_RATE, DLQ_GROWTH) under tenant _system with no task, so
-- an alert row no longer always has one. Its rows are the _system tenant's like any
-- tenant's, under the row-level security migration 0007 put on the table.
ALTER TABLE alerts ALTER COLUMN task_id DROP NOT NULL;

-- What agent.heartbeat now says besides lag: the process's resident memory (null where it
-- cannot be read, and for heartbeats from before the field) and the job failures and
-- records sent to the DLQ since the process started.
ALTER TABLE agent_instances
    ADD COLUMN rss_bytes        bigint,
    ADD COLUMN jobs_failed      bigint NOT NULL DEFAULT 0,
    ADD COLUMN decode_failures  bigint NOT NULL DEFAULT 0;
