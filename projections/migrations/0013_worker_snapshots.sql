-- A worker's snapshot of one partition of wrench.events: the records (as on the log, so
-- encrypted fields stay encrypted) of the tasks it holds in flight, and the offset they
-- cover. On assignment a worker restores it and replays the log only from log_offset on.
-- Written by the workers, never by the projector; the API's role cannot read it.

CREATE TABLE worker_snapshots (
    consumer_group  text        NOT NULL,
    partition       integer     NOT NULL,
    log_offset      bigint      NOT NULL,
    tasks           integer     NOT NULL,
    records         bytea       NOT NULL,
    taken_at        timestamptz NOT NULL,
    PRIMARY KEY (consumer_group, partition)
);
