-- Cost: the budgets set on wrench.admin (a read model of the projector) and the CostGuard's
-- ledger of usage.recorded events (written by the CostGuard alone, one row per usage event,
-- so a usage event redelivered or metered again after a restart is counted once).

CREATE TABLE budgets (
    tenant_id     text             NOT NULL,
    scope         text             NOT NULL,
    scope_id      text             NOT NULL,
    limit_usd     double precision,
    limit_tokens  bigint,
    "window"      text             NOT NULL,
    thresholds    double precision[] NOT NULL,
    hard          boolean          NOT NULL,
    set_at        timestamptz      NOT NULL,
    set_by        text             NOT NULL,
    event_id      uuid             NOT NULL,
    PRIMARY KEY (tenant_id, scope, scope_id)
);

-- seq orders the ledger as the CostGuard counted it: a budget's spend before a usage event
-- is the sum of the rows of its window with a smaller seq, so metering the same event again
-- finds the same crossings. Rows that share a budget are inserted under that budget's
-- advisory lock, so their seq order is their commit order.
CREATE TABLE cost_ledger (
    seq               bigserial        NOT NULL UNIQUE,
    event_id          uuid             PRIMARY KEY,
    tenant_id         text             NOT NULL,
    task_id           uuid             NOT NULL,
    occurred_at       timestamptz      NOT NULL,
    operation         text             NOT NULL,
    model             text             NOT NULL,
    provider          text,
    user_id           text,
    key_id            text,
    playbook          text,
    stage_id          text,
    role              text,
    tool              text,
    input_tokens      bigint           NOT NULL,
    output_tokens     bigint           NOT NULL,
    cached_tokens     bigint           NOT NULL,
    reasoning_tokens  bigint           NOT NULL,
    total_tokens      bigint           NOT NULL,
    cost_usd          double precision,
    source            text             NOT NULL,
    price_version     text,
    "partition"       integer          NOT NULL,
    "offset"          bigint           NOT NULL
);
CREATE INDEX cost_ledger_tenant_time_idx ON cost_ledger (tenant_id, occurred_at);
CREATE INDEX cost_ledger_task_idx ON cost_ledger (task_id);
CREATE INDEX cost_ledger_user_idx ON cost_ledger (tenant_id, user_id, occurred_at);
CREATE INDEX cost_ledger_key_idx ON cost_ledger (tenant_id, key_id, occurred_at);
CREATE INDEX cost_ledger_model_idx ON cost_ledger (tenant_id, model, occurred_at);
CREATE INDEX cost_ledger_playbook_idx ON cost_ledger (tenant_id, playbook, occurred_at);

-- The running spend of each budget scope in each UTC day or month window, up to the ledger
-- row ``last_seq``: metering adds to it instead of summing the window again. (A task's
-- lifetime and a rolling hour are summed from the ledger: both are small.)
CREATE TABLE budget_spend (
    tenant_id     text             NOT NULL,
    scope         text             NOT NULL,
    scope_id      text             NOT NULL,
    "window"      text             NOT NULL,
    window_start  timestamptz      NOT NULL,
    spent_usd     double precision NOT NULL,
    spent_tokens  bigint           NOT NULL,
    last_seq      bigint           NOT NULL,
    PRIMARY KEY (tenant_id, scope, scope_id, "window", window_start)
);

-- Where each budget stood just before each usage event counted against it, so metering an
-- event again (redelivered, or replayed after a crash) finds the same crossings.
CREATE TABLE ledger_spends (
    event_id       uuid             NOT NULL,
    tenant_id      text             NOT NULL,
    scope          text             NOT NULL,
    scope_id       text             NOT NULL,
    "window"       text             NOT NULL,
    before_usd     double precision NOT NULL,
    before_tokens  bigint           NOT NULL,
    PRIMARY KEY (event_id, scope, scope_id, "window")
);

SELECT wrench_isolate(t::regclass)
FROM unnest(ARRAY['budgets', 'cost_ledger', 'budget_spend', 'ledger_spends']) AS t;
