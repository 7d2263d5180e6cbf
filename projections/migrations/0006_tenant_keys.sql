-- Each tenant's data keys, wrapped (encrypted) by a master key from WRENCH_MASTER_KEYS, never
-- in clear. This is a key store, not a read model: nothing on the log can rebuild it (keys are
-- never on the log, since an immutable log cannot forget them), so a rebuild never drops it
-- and a backup of the archive is useless without it.

-- One row per tenant that has or had keys. It stays after shredding, as the record that the
-- tenant's keys were destroyed, and its lock serialises making, adding and destroying keys.
CREATE TABLE tenant_keyrings (
    tenant_id       text        PRIMARY KEY,
    created_at      timestamptz NOT NULL DEFAULT now(),
    shredded_at     timestamptz,
    shred_reason    text,
    keys_destroyed  integer,
    CHECK ((shredded_at IS NULL) = (keys_destroyed IS NULL))
);

-- The data keys, newest = highest key_id (it encrypts; all of them decrypt). ``master_key`` is
-- the fingerprint of the master key that wrapped it, so an operator can tell when an old
-- master key wraps nothing any more.
CREATE TABLE tenant_keys (
    tenant_id    text        NOT NULL REFERENCES tenant_keyrings (tenant_id),
    key_id       integer     NOT NULL CHECK (key_id >= 1),
    wrapped_key  bytea       NOT NULL,
    master_key   text        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    wrapped_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, key_id)
);

-- Only the owner (the projector, the workers, the admin commands) reads wrapped keys; the API's
-- tenant-scoped role never does.
REVOKE ALL ON tenant_keyrings, tenant_keys FROM PUBLIC;
