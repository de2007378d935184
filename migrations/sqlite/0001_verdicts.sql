-- Verdict cache: one row per (kind, engine, normalised inputs, options) key.
CREATE TABLE IF NOT EXISTS verdicts (
    key        TEXT PRIMARY KEY,
    kind       TEXT NOT NULL,
    engine     TEXT NOT NULL,
    body       TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
