-- Read models of inspection: every evaluation of every attempt, the alerts of every task,
-- and the quality model's fits with the latest converged posterior of each group.

-- One row per evaluation.recorded, in log order per task.
CREATE TABLE evaluations (
    event_id       uuid             PRIMARY KEY,
    task_id        uuid             NOT NULL,
    tenant_id      text             NOT NULL,
    stage_id       text             NOT NULL,
    attempt        integer          NOT NULL,
    role           text             NOT NULL,
    tool           text             NOT NULL,
    model          text,
    checks         jsonb            NOT NULL,
    prior_alpha    double precision NOT NULL,
    prior_beta     double precision NOT NULL,
    prior_source   text             NOT NULL,
    quality_score  double precision NOT NULL,
    interval_low   double precision NOT NULL,
    interval_high  double precision NOT NULL,
    confidence     double precision NOT NULL,
    threshold      double precision NOT NULL,
    decision       text             NOT NULL CHECK (decision IN ('accept', 'retry', 'escalate')),
    reason         text             NOT NULL,
    suggestions    text[]           NOT NULL,
    occurred_at    timestamptz      NOT NULL,
    partition      integer          NOT NULL,
    "offset"       bigint           NOT NULL
);
CREATE INDEX evaluations_task_idx ON evaluations (task_id, partition, "offset");

-- One row per alert: raised by alert.raised, moved to cleared by alert.cleared, and marked
-- by the first alert.acknowledged. ``partition``/``offset`` are those of the raise.
CREATE TABLE alerts (
    alert_id         text        PRIMARY KEY,
    task_id          uuid        NOT NULL,
    tenant_id        text        NOT NULL,
    level            text        NOT NULL CHECK (level IN ('info', 'warning', 'critical')),
    code             text        NOT NULL,
    message          text        NOT NULL,
    details          jsonb       NOT NULL,
    status           text        NOT NULL CHECK (status IN ('open', 'cleared')),
    raised_at        timestamptz NOT NULL,
    cleared_at       timestamptz,
    clear_reason     text,
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    note             text,
    event_id         uuid        NOT NULL,
    partition        integer     NOT NULL,
    "offset"         bigint      NOT NULL
);
CREATE INDEX alerts_listing_idx ON alerts (tenant_id, raised_at DESC, alert_id DESC);
CREATE INDEX alerts_task_idx ON alerts (task_id, raised_at DESC);

-- One row per quality.fitted, converged or not. Fits are platform-wide: they pool every
-- tenant's evaluations, and their event belongs to no task.
CREATE TABLE quality_fits (
    fit_id       text             PRIMARY KEY,
    event_id     uuid             NOT NULL,
    tenant_id    text             NOT NULL,
    evaluations  integer          NOT NULL,
    groups       integer          NOT NULL,
    mu           double precision NOT NULL,
    kappa        double precision NOT NULL,
    r_hat_max    double precision NOT NULL,
    ess_min      double precision NOT NULL,
    converged    boolean          NOT NULL,
    draws        integer          NOT NULL,
    chains       integer          NOT NULL,
    seconds      double precision NOT NULL,
    reason       text             NOT NULL,
    fitted_at    timestamptz      NOT NULL
);
CREATE INDEX quality_fits_time_idx ON quality_fits (fitted_at DESC, fit_id DESC);

-- The latest converged posterior of each (role, tool, model) group; ``model`` is '' for a
-- group without a model. A group absent from a newer fit keeps the posterior it had.
CREATE TABLE quality_posteriors (
    role           text             NOT NULL,
    tool           text             NOT NULL,
    model          text             NOT NULL,
    alpha          double precision NOT NULL,
    beta           double precision NOT NULL,
    mean           double precision NOT NULL,
    interval_low   double precision NOT NULL,
    interval_high  double precision NOT NULL,
    evaluations    integer          NOT NULL,
    fit_id         text             NOT NULL,
    r_hat          double precision NOT NULL,
    ess            double precision NOT NULL,
    fitted_at      timestamptz      NOT NULL,
    PRIMARY KEY (role, tool, model)
);
