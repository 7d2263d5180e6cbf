-- The archive as evidence (docs/audit.md, "Tamper evidence"): hash chain v2 over key, headers
-- and value; signed checkpoints of each partition's chain head; and an archive that takes
-- inserts only.

-- Rows archived before this migration keep the rule they were chained with (1: the value
-- only) and verify under it; the projector writes 2 from now on.
ALTER TABLE event_log ADD COLUMN chain_version smallint NOT NULL DEFAULT 1
    CHECK (chain_version IN (1, 2));

-- Signed chain heads: "the record at (topic, partition, offset) has this hash", signed by the
-- projector every WRENCH_CHECKPOINT_EVERY_RECORDS records or WRENCH_CHECKPOINT_INTERVAL_S
-- seconds, and published on wrench.admin as chain.checkpoint. Not a read model: nothing
-- rebuilds it, and a rebuild never touches it.
CREATE TABLE chain_checkpoints (
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    "offset"       bigint      NOT NULL,
    hash           bytea       NOT NULL CHECK (length(hash) = 32),
    chain_version  smallint    NOT NULL,
    signed_at      timestamptz NOT NULL,
    algorithm      text        NOT NULL CHECK (algorithm IN ('ed25519', 'hmac-sha256')),
    key_id         text        NOT NULL,
    signature      bytea       NOT NULL,
    event_id       uuid,
    PRIMARY KEY (topic, partition, "offset", signed_at, key_id)
);

-- Refuses every UPDATE, DELETE and TRUNCATE of the table it guards. A superuser or the
-- table's owner can still disable the trigger: the hash chain and the signed checkpoints
-- are what catch that; this stops mistakes, scripts and every other role.
CREATE FUNCTION wrench_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_LEVEL = 'ROW' THEN
        RAISE EXCEPTION '% is append-only: % of %[%] offset % refused', TG_TABLE_NAME, TG_OP,
            OLD.topic, OLD.partition, OLD."offset"
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'The archive is the audit trail, hash-chained and signed; rows are '
                      'only ever added. Repair read models with `wrenchai projections '
                      'rebuild`, never by editing the archive (docs/audit.md).';
    END IF;
    RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'The archive is the audit trail, hash-chained and signed; rows are only '
                  'ever added (docs/audit.md).';
END
$$;

CREATE TRIGGER event_log_append_only BEFORE UPDATE OR DELETE ON event_log
    FOR EACH ROW EXECUTE FUNCTION wrench_append_only();
CREATE TRIGGER event_log_no_truncate BEFORE TRUNCATE ON event_log
    FOR EACH STATEMENT EXECUTE FUNCTION wrench_append_only();
CREATE TRIGGER chain_checkpoints_append_only BEFORE UPDATE OR DELETE ON chain_checkpoints
    FOR EACH ROW EXECUTE FUNCTION wrench_append_only();
CREATE TRIGGER chain_checkpoints_no_truncate BEFORE TRUNCATE ON chain_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION wrench_append_only();

-- The API reads the archive (row-level security, 0007) and the checkpoints (hashes and
-- positions only, no tenant's content), and writes neither.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER
    ON event_log, chain_checkpoints FROM PUBLIC, wrench_api;
GRANT SELECT ON chain_checkpoints TO wrench_api;
