-- Training as a service (issue 12): uploaded datasets, the job queue, per-step metrics,
-- per-round summaries and eval records for the dashboard.
CREATE TABLE IF NOT EXISTS datasets (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL,
    format     TEXT NOT NULL,
    rows       BIGINT NOT NULL,
    bytes      BIGINT NOT NULL,
    sha256     TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- state: queued | running | succeeded | failed | cancelled. A running job belongs to the
-- worker named in `worker` until `lease_until` (seconds); a lease that lapses (the worker
-- died) lets another worker claim the job and resume it.
CREATE TABLE IF NOT EXISTS jobs (
    id               TEXT PRIMARY KEY,
    method           TEXT NOT NULL,
    config           TEXT NOT NULL,
    state            TEXT NOT NULL,
    worker           TEXT,
    lease_until      BIGINT NOT NULL DEFAULT 0,
    attempts         BIGINT NOT NULL DEFAULT 0,
    cancel_requested BIGINT NOT NULL DEFAULT 0,
    progress         TEXT NOT NULL DEFAULT '{}',
    error            TEXT,
    created_at       BIGINT NOT NULL,
    started_at       BIGINT,
    finished_at      BIGINT
);
CREATE INDEX IF NOT EXISTS jobs_state_created ON jobs (state, created_at);

-- One row per optimiser step; `step` counts across the job's rounds, so a resumed round
-- that redoes a step writes nothing new (the key exists).
CREATE TABLE IF NOT EXISTS job_metrics (
    job_id TEXT NOT NULL,
    step   BIGINT NOT NULL,
    round  BIGINT NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (job_id, step)
);

CREATE TABLE IF NOT EXISTS job_rounds (
    job_id TEXT NOT NULL,
    round  BIGINT NOT NULL,
    body   TEXT NOT NULL,
    PRIMARY KEY (job_id, round)
);

-- An evaluation of one model on one dataset: metric values and counts in `body`, the
-- per-sample verdicts in `samples` (JSON lines).
CREATE TABLE IF NOT EXISTS eval_records (
    id         TEXT PRIMARY KEY,
    model      TEXT NOT NULL,
    job_id     TEXT,
    round      BIGINT,
    dataset    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    body       TEXT NOT NULL,
    samples    TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS eval_records_job_round ON eval_records (job_id, round);
