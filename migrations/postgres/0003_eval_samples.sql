-- The per-sample verdicts of an eval record, one row per judged solution, so that a reader
-- pages through one class (correct / wrong / flawed / unknown) without loading the rest.
-- `class` is decided when the record is stored (see src/jobs/records.rs). Since this
-- migration eval_records.samples is left empty; the column stays so that 0002 is unchanged.
CREATE TABLE IF NOT EXISTS eval_samples (
    record_id TEXT NOT NULL,
    idx       BIGINT NOT NULL,
    class     TEXT NOT NULL,
    body      TEXT NOT NULL,
    PRIMARY KEY (record_id, idx)
);
CREATE INDEX IF NOT EXISTS eval_samples_class ON eval_samples (record_id, class, idx);
CREATE INDEX IF NOT EXISTS eval_records_created ON eval_records (created_at);
-- Insertion order: `created_at` is in seconds, so two records of one second would tie and
-- "the newest record of a group" would be a coin toss.
ALTER TABLE eval_records ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX IF NOT EXISTS eval_records_seq ON eval_records (seq);
