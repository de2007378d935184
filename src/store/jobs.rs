//! The training service's tables: uploaded datasets, the job queue with its leases, per-step
//! metrics and per-round summaries (eval records: [`super::evals`]). Same SQL on SQLite and PostgreSQL except
//! the claim, where PostgreSQL adds `FOR UPDATE SKIP LOCKED`.
//!
//! Claiming is safe without it too: the claim is one conditional `UPDATE` whose `WHERE`
//! repeats the claimable condition, so of two workers racing for one job exactly one
//! changes the row; `SKIP LOCKED` only spares the loser the wait and lets it take the next
//! job in the same statement.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Backend, Store, StoreError, now_secs, value_groups};

/// Job states as stored.
pub const QUEUED: &str = "queued";
pub const RUNNING: &str = "running";
pub const SUCCEEDED: &str = "succeeded";
pub const FAILED: &str = "failed";
pub const CANCELLED: &str = "cancelled";
pub const STATES: [&str; 5] = [QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED];

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct DatasetRow {
    pub id: String,
    pub name: String,
    /// `problems`, `kto` (TRL's unpaired rows) or `sft`.
    pub format: String,
    pub rows: i64,
    pub bytes: i64,
    pub sha256: String,
    pub created_at: i64,
}

#[derive(Debug, Clone)]
pub struct JobRow {
    pub id: String,
    pub method: String,
    /// The job's config as submitted (JSON).
    pub config: String,
    pub state: String,
    pub worker: Option<String>,
    pub lease_until: i64,
    pub attempts: i64,
    pub cancel_requested: bool,
    /// The worker's last progress report (JSON).
    pub progress: String,
    pub error: Option<String>,
    pub created_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MetricRow {
    /// Optimiser steps counted across the job's rounds, from 1.
    pub step: i64,
    pub round: i64,
    #[schema(value_type = Object)]
    pub metrics: serde_json::Value,
}

const JOB_COLS: &str = "id, method, config, state, worker, lease_until, attempts, cancel_requested, progress, error, created_at, started_at, finished_at";

fn job(row: &AnyRow) -> Result<JobRow, StoreError> {
    Ok(JobRow {
        id: row.try_get(0)?,
        method: row.try_get(1)?,
        config: row.try_get(2)?,
        state: row.try_get(3)?,
        worker: row.try_get(4)?,
        lease_until: row.try_get(5)?,
        attempts: row.try_get(6)?,
        cancel_requested: row.try_get::<i64, _>(7)? != 0,
        progress: row.try_get(8)?,
        error: row.try_get(9)?,
        created_at: row.try_get(10)?,
        started_at: row.try_get(11)?,
        finished_at: row.try_get(12)?,
    })
}

fn dataset(row: &AnyRow) -> Result<DatasetRow, StoreError> {
    Ok(DatasetRow {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        format: row.try_get(2)?,
        rows: row.try_get(3)?,
        bytes: row.try_get(4)?,
        sha256: row.try_get(5)?,
        created_at: row.try_get(6)?,
    })
}

/// A fresh id: `prefix` and 16 hex digits from the OS's random source (a clock hash when
/// that cannot be read).
pub fn new_id(prefix: &str) -> String {
    use std::io::Read;
    let mut b = [0u8; 8];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .is_ok();
    if !ok {
        use sha2::Digest;
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let d = sha2::Sha256::digest(format!("{t}:{n}:{}", std::process::id()).as_bytes());
        b.copy_from_slice(&d[..8]);
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{prefix}{hex}")
}

impl Store {
    pub(super) fn check_ready(&self) -> Result<(), StoreError> {
        if self.ready() {
            Ok(())
        } else {
            Err(StoreError::NotReady)
        }
    }

    pub async fn insert_dataset(&self, d: &DatasetRow, body: &str) -> Result<(), StoreError> {
        self.check_ready()?;
        sqlx::query("INSERT INTO datasets (id, name, format, rows, bytes, sha256, body, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)")
            .bind(d.id.as_str())
            .bind(d.name.as_str())
            .bind(d.format.as_str())
            .bind(d.rows)
            .bind(d.bytes)
            .bind(d.sha256.as_str())
            .bind(body)
            .bind(d.created_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn list_datasets(&self) -> Result<Vec<DatasetRow>, StoreError> {
        self.check_ready()?;
        let rows = sqlx::query("SELECT id, name, format, rows, bytes, sha256, created_at FROM datasets ORDER BY created_at DESC, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(dataset).collect()
    }

    pub async fn get_dataset(&self, id: &str) -> Result<Option<DatasetRow>, StoreError> {
        self.check_ready()?;
        let row = sqlx::query(
            "SELECT id, name, format, rows, bytes, sha256, created_at FROM datasets WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(dataset).transpose()
    }

    pub async fn dataset_body(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.check_ready()?;
        let row = sqlx::query("SELECT body FROM datasets WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    pub async fn insert_job(&self, id: &str, method: &str, config: &str) -> Result<(), StoreError> {
        self.check_ready()?;
        sqlx::query(
            "INSERT INTO jobs (id, method, config, state, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(method)
        .bind(config)
        .bind(QUEUED)
        .bind(now_secs())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_job(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        self.check_ready()?;
        let sql = format!("SELECT {JOB_COLS} FROM jobs WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(job).transpose()
    }

    /// Jobs, newest first, optionally in one state.
    pub async fn list_jobs(
        &self,
        state: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<Vec<JobRow>, StoreError> {
        self.check_ready()?;
        let rows = match state {
            Some(s) => {
                let sql = format!(
                    "SELECT {JOB_COLS} FROM jobs WHERE state = $1 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(s)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                let sql = format!(
                    "SELECT {JOB_COLS} FROM jobs ORDER BY created_at DESC, id DESC LIMIT $1 OFFSET $2"
                );
                sqlx::query(sqlx::AssertSqlSafe(sql))
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(job).collect()
    }

    /// How many jobs are in each state (for `/metrics`).
    pub async fn job_counts(&self) -> Result<Vec<(String, i64)>, StoreError> {
        self.check_ready()?;
        let rows = sqlx::query("SELECT state, COUNT(*) FROM jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Claim the oldest claimable job for `worker`: queued, or running under a lease that
    /// has lapsed (its worker died; the job resumes). The lease runs `lease_secs`.
    pub async fn claim_job(
        &self,
        worker: &str,
        lease_secs: i64,
    ) -> Result<Option<JobRow>, StoreError> {
        self.check_ready()?;
        let now = now_secs();
        let claimable = "(state = 'queued' OR (state = 'running' AND lease_until < $3))";
        let set = "state = 'running', worker = $1, lease_until = $2, attempts = attempts + 1, started_at = COALESCE(started_at, $3)";
        if self.backend == Backend::Postgres {
            let sql = format!(
                "UPDATE jobs SET {set} WHERE id = (SELECT id FROM jobs WHERE {claimable} ORDER BY created_at, id LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING {JOB_COLS}"
            );
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(worker)
                .bind(now + lease_secs)
                .bind(now)
                .fetch_optional(&self.pool)
                .await?;
            return row.as_ref().map(job).transpose();
        }
        // Portable: pick a candidate, then take it only if it is still claimable; a lost
        // race updates no row and the next candidate is tried.
        for _ in 0..8 {
            let pick = format!(
                "SELECT id FROM jobs WHERE {} ORDER BY created_at, id LIMIT 1",
                claimable.replace("$3", "$1")
            );
            let Some(id) = sqlx::query(sqlx::AssertSqlSafe(pick))
                .bind(now)
                .fetch_optional(&self.pool)
                .await?
                .map(|r| r.try_get::<String, _>(0))
                .transpose()?
            else {
                return Ok(None);
            };
            let sql =
                format!("UPDATE jobs SET {set} WHERE id = $4 AND {claimable} RETURNING {JOB_COLS}");
            let row = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(worker)
                .bind(now + lease_secs)
                .bind(now)
                .bind(id.as_str())
                .fetch_optional(&self.pool)
                .await?;
            if let Some(r) = row {
                return job(&r).map(Some);
            }
        }
        Ok(None)
    }

    /// Extend `worker`'s lease on a running job and store its progress. `None`: the job is
    /// no longer this worker's (another claimed it after a lapse, or it was finished);
    /// `Some(true)`: a cancel was asked for.
    pub async fn renew_lease(
        &self,
        id: &str,
        worker: &str,
        lease_secs: i64,
        progress: &str,
    ) -> Result<Option<bool>, StoreError> {
        self.check_ready()?;
        let row = sqlx::query("UPDATE jobs SET lease_until = $1, progress = $2 WHERE id = $3 AND worker = $4 AND state = 'running' RETURNING cancel_requested")
            .bind(now_secs() + lease_secs)
            .bind(progress)
            .bind(id)
            .bind(worker)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>(0))
            .transpose()?
            .map(|c| c != 0))
    }

    /// Move `worker`'s running job to a final state. False when it was not this worker's.
    pub async fn finish_job(
        &self,
        id: &str,
        worker: &str,
        state: &str,
        error: Option<&str>,
        progress: &str,
    ) -> Result<bool, StoreError> {
        self.check_ready()?;
        let r = sqlx::query("UPDATE jobs SET state = $1, error = $2, progress = $3, finished_at = $4, lease_until = 0 WHERE id = $5 AND worker = $6 AND state = 'running'")
            .bind(state)
            .bind(error)
            .bind(progress)
            .bind(now_secs())
            .bind(id)
            .bind(worker)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Give a running job back without finishing it (shutdown): its lease ends now, so
    /// the next worker to look claims it and resumes.
    pub async fn release_job(
        &self,
        id: &str,
        worker: &str,
        progress: &str,
    ) -> Result<(), StoreError> {
        self.check_ready()?;
        sqlx::query("UPDATE jobs SET lease_until = 0, progress = $1 WHERE id = $2 AND worker = $3 AND state = 'running'")
            .bind(progress)
            .bind(id)
            .bind(worker)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Cancel: a queued job is cancelled at once; a running one is flagged for its worker,
    /// which stops at its next optimiser step or sampling chunk. Finished jobs are left as
    /// they are. Returns the job after the change (None: no such job).
    pub async fn request_cancel(&self, id: &str) -> Result<Option<JobRow>, StoreError> {
        self.check_ready()?;
        sqlx::query("UPDATE jobs SET state = 'cancelled', finished_at = $1 WHERE id = $2 AND state = 'queued'")
            .bind(now_secs())
            .bind(id)
            .execute(&self.pool)
            .await?;
        sqlx::query("UPDATE jobs SET cancel_requested = 1 WHERE id = $1 AND state = 'running'")
            .bind(id)
            .execute(&self.pool)
            .await?;
        self.get_job(id).await
    }

    /// Store metric rows; a step already stored is kept as it is (a resumed round redoes
    /// the steps after its last saved state and computes the same values).
    pub async fn insert_metrics(&self, id: &str, rows: &[MetricRow]) -> Result<(), StoreError> {
        self.check_ready()?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in rows.chunks(100) {
            let sql = format!(
                "INSERT INTO job_metrics (job_id, step, round, body) VALUES {} ON CONFLICT (job_id, step) DO NOTHING",
                value_groups(chunk.len(), 4)
            );
            // Safe: only `$n` placeholders are interpolated; every value is bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for m in chunk {
                q = q
                    .bind(id)
                    .bind(m.step)
                    .bind(m.round)
                    .bind(m.metrics.to_string());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Metric rows with `step > since`, in order, at most `limit`.
    pub async fn metrics_since(
        &self,
        id: &str,
        since: i64,
        limit: i64,
    ) -> Result<Vec<MetricRow>, StoreError> {
        self.check_ready()?;
        let rows = sqlx::query("SELECT step, round, body FROM job_metrics WHERE job_id = $1 AND step > $2 ORDER BY step LIMIT $3")
            .bind(id)
            .bind(since)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let body: String = r.try_get(2)?;
                Ok(MetricRow {
                    step: r.try_get(0)?,
                    round: r.try_get(1)?,
                    metrics: serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
                })
            })
            .collect()
    }

    /// The highest stored metric step of a job (0 when none).
    pub async fn last_metric_step(&self, id: &str) -> Result<i64, StoreError> {
        self.check_ready()?;
        let row = sqlx::query("SELECT COALESCE(MAX(step), 0) FROM job_metrics WHERE job_id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get(0)?)
    }

    pub async fn put_round(&self, id: &str, round: i64, body: &str) -> Result<(), StoreError> {
        self.check_ready()?;
        sqlx::query("INSERT INTO job_rounds (job_id, round, body) VALUES ($1, $2, $3) ON CONFLICT (job_id, round) DO UPDATE SET body = excluded.body")
            .bind(id)
            .bind(round)
            .bind(body)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn rounds(&self, id: &str) -> Result<Vec<(i64, String)>, StoreError> {
        self.check_ready()?;
        let rows =
            sqlx::query("SELECT round, body FROM job_rounds WHERE job_id = $1 ORDER BY round")
                .bind(id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }
}
