-- Read models of identity, folded from wrench.admin: tenants, users, API keys and sessions.
-- Nothing about identity lives anywhere else; every row can be rebuilt from the log.

CREATE TABLE tenants (
    tenant_id    text        PRIMARY KEY,
    name         text        NOT NULL,
    status       text        NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'shredded')),
    created_at   timestamptz NOT NULL,
    shredded_at  timestamptz,
    event_id     uuid        NOT NULL
);

-- Usernames are unique across the platform (people sign in with the name alone): the first
-- user.created of a name wins, a later one is kept on the log and changes nothing.
CREATE TABLE users (
    user_id        text        PRIMARY KEY,
    tenant_id      text        NOT NULL,
    username       text        NOT NULL UNIQUE,
    role           text        NOT NULL CHECK (role IN ('admin', 'operator', 'viewer')),
    extra_scopes   text[]      NOT NULL DEFAULT '{}',
    password_hash  text        NOT NULL,
    disabled_at    timestamptz,
    created_at     timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL,
    event_id       uuid        NOT NULL
);
CREATE INDEX users_tenant_idx ON users (tenant_id, created_at DESC, user_id DESC);

-- Only the keyed hash of a key's secret is kept; the prefix finds the row.
CREATE TABLE api_keys (
    key_id        text        PRIMARY KEY,
    tenant_id     text        NOT NULL,
    prefix        text        NOT NULL UNIQUE,
    secret_hash   text        NOT NULL,
    name          text        NOT NULL,
    scopes        text[]      NOT NULL,
    user_id       text,
    created_by    text        NOT NULL,
    created_at    timestamptz NOT NULL,
    expires_at    timestamptz,
    revoked_at    timestamptz,
    last_used_at  timestamptz,
    event_id      uuid        NOT NULL
);
CREATE INDEX api_keys_tenant_idx ON api_keys (tenant_id, created_at DESC, key_id DESC);

-- A session is a family of refresh tokens: ``refresh_id`` is the one that may be spent next.
CREATE TABLE auth_sessions (
    session_id      text        PRIMARY KEY,
    tenant_id       text        NOT NULL,
    user_id         text        NOT NULL,
    refresh_id      text        NOT NULL,
    expires_at      timestamptz NOT NULL,
    started_at      timestamptz NOT NULL,
    refreshed_at    timestamptz,
    revoked_at      timestamptz,
    revoked_reason  text
);
CREATE INDEX auth_sessions_user_idx ON auth_sessions (user_id) WHERE revoked_at IS NULL;
