//! Eval records: one evaluation of one model on one dataset (metric values and counts in a
//! JSON body) and its judged samples, one row each with the class it was filed under, so
//! that a reader pages through the flawed solutions of a record without loading the rest.
//! What a record and a sample must hold is decided in `jobs::records`; this module only
//! stores and reads them.

use serde::Serialize;
use sqlx::Row;
use sqlx::any::AnyRow;

use super::{Store, StoreError, now_secs, value_groups};

/// A stored eval record (without its samples).
#[derive(Debug, Clone)]
pub struct EvalRecord {
    pub id: String,
    pub model: String,
    /// The job whose round this is; None for a record posted or made by the CLI.
    pub job_id: Option<String>,
    pub round: Option<i64>,
    pub dataset: String,
    pub kind: String,
    /// `{metrics, counts, classes}` as JSON.
    pub body: String,
    pub created_at: i64,
}

/// One judged sample of a record.
#[derive(Debug, Clone, Serialize)]
pub struct EvalSampleRow {
    /// Position in the record, from 0.
    pub idx: i64,
    /// `correct`, `wrong`, `flawed` or `unknown`.
    pub class: String,
    /// The sample as JSON.
    pub body: String,
}

/// What `list_evals` selects on; every set field must match exactly.
#[derive(Debug, Default)]
pub struct EvalFilter<'a> {
    pub model: Option<&'a str>,
    pub dataset: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub job_id: Option<&'a str>,
}

const COLS: &str = "id, model, job_id, round, dataset, kind, body, created_at";

fn record(r: &AnyRow) -> Result<EvalRecord, StoreError> {
    Ok(EvalRecord {
        id: r.try_get(0)?,
        model: r.try_get(1)?,
        job_id: r.try_get(2)?,
        round: r.try_get(3)?,
        dataset: r.try_get(4)?,
        kind: r.try_get(5)?,
        body: r.try_get(6)?,
        created_at: r.try_get(7)?,
    })
}

/// Rows of samples per INSERT statement: 4 parameters each, well under either database's
/// parameter limit (SQLite's is 32,766).
const SAMPLE_CHUNK: usize = 500;

impl Store {
    /// Store a record and its samples in one transaction: readers see all of it or none.
    /// Returns false, storing nothing, when a record with the same id, or for the same job
    /// round, exists already (a resumed job that evaluates a round again keeps the first).
    pub async fn insert_eval(
        &self,
        e: &EvalRecord,
        samples: &[EvalSampleRow],
    ) -> Result<bool, StoreError> {
        self.check_ready()?;
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("INSERT INTO eval_records (id, model, job_id, round, dataset, kind, body, samples, created_at, seq) VALUES ($1, $2, $3, $4, $5, $6, $7, '', $8, (SELECT COALESCE(MAX(seq), 0) + 1 FROM eval_records)) ON CONFLICT DO NOTHING")
            .bind(e.id.as_str())
            .bind(e.model.as_str())
            .bind(e.job_id.as_deref())
            .bind(e.round)
            .bind(e.dataset.as_str())
            .bind(e.kind.as_str())
            .bind(e.body.as_str())
            .bind(now_secs())
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        for chunk in samples.chunks(SAMPLE_CHUNK) {
            let sql = format!(
                "INSERT INTO eval_samples (record_id, idx, class, body) VALUES {}",
                value_groups(chunk.len(), 4)
            );
            // Safe: only `$n` placeholders are interpolated; every value is bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for s in chunk {
                q = q
                    .bind(e.id.as_str())
                    .bind(s.idx)
                    .bind(s.class.as_str())
                    .bind(s.body.as_str());
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    /// Records matching `f`, newest (last stored) first, and how many match in all.
    pub async fn list_evals(
        &self,
        f: &EvalFilter<'_>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<EvalRecord>, i64), StoreError> {
        self.check_ready()?;
        let fields = [
            ("model", f.model),
            ("dataset", f.dataset),
            ("kind", f.kind),
            ("job_id", f.job_id),
        ];
        let set: Vec<(&str, &str)> = fields
            .iter()
            .filter_map(|(c, v)| v.map(|v| (*c, v)))
            .collect();
        let mut cond: Vec<String> = Vec::new();
        for (i, (c, _)) in set.iter().enumerate() {
            cond.push(format!("{c} = ${}", i + 1));
        }
        let filter = if cond.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", cond.join(" AND "))
        };
        let n = set.len();
        // Safe: the column names are this function's constants; every value is bound.
        let sql = format!(
            "SELECT {COLS} FROM eval_records{filter} ORDER BY seq DESC, id LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (_, v) in &set {
            q = q.bind(*v);
        }
        let rows = q.bind(limit).bind(offset).fetch_all(&self.pool).await?;
        let sql = format!("SELECT COUNT(*) FROM eval_records{filter}");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (_, v) in &set {
            q = q.bind(*v);
        }
        let total: i64 = q.fetch_one(&self.pool).await?.try_get(0)?;
        let records = rows.iter().map(record).collect::<Result<_, _>>()?;
        Ok((records, total))
    }

    pub async fn get_eval(&self, id: &str) -> Result<Option<EvalRecord>, StoreError> {
        self.check_ready()?;
        let sql = format!("SELECT {COLS} FROM eval_records WHERE id = $1");
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(record).transpose()
    }

    /// A page of a record's samples in order, of one class or of all, and how many there are.
    pub async fn eval_samples(
        &self,
        id: &str,
        class: Option<&str>,
        limit: i64,
        offset: i64,
    ) -> Result<(Vec<EvalSampleRow>, i64), StoreError> {
        self.check_ready()?;
        // With a class the parameters are (id, class, limit, offset); without, (id, limit,
        // offset): the statements are constants either way.
        let (rows, total) = match class {
            Some(c) => (
                sqlx::query("SELECT idx, class, body FROM eval_samples WHERE record_id = $1 AND class = $2 ORDER BY idx LIMIT $3 OFFSET $4")
                    .bind(id)
                    .bind(c)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&self.pool)
                    .await?,
                sqlx::query("SELECT COUNT(*) FROM eval_samples WHERE record_id = $1 AND class = $2")
                    .bind(id)
                    .bind(c)
                    .fetch_one(&self.pool)
                    .await?,
            ),
            None => (
                sqlx::query("SELECT idx, class, body FROM eval_samples WHERE record_id = $1 ORDER BY idx LIMIT $2 OFFSET $3")
                    .bind(id)
                    .bind(limit)
                    .bind(offset)
                    .fetch_all(&self.pool)
                    .await?,
                sqlx::query("SELECT COUNT(*) FROM eval_samples WHERE record_id = $1")
                    .bind(id)
                    .fetch_one(&self.pool)
                    .await?,
            ),
        };
        let total: i64 = total.try_get(0)?;
        let samples = rows
            .iter()
            .map(|r| {
                Ok(EvalSampleRow {
                    idx: r.try_get(0)?,
                    class: r.try_get(1)?,
                    body: r.try_get(2)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok((samples, total))
    }

    /// One sample of a record by its position.
    pub async fn eval_sample(
        &self,
        id: &str,
        idx: i64,
    ) -> Result<Option<EvalSampleRow>, StoreError> {
        self.check_ready()?;
        let row = sqlx::query(
            "SELECT idx, class, body FROM eval_samples WHERE record_id = $1 AND idx = $2",
        )
        .bind(id)
        .bind(idx)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(EvalSampleRow {
                idx: r.try_get(0)?,
                class: r.try_get(1)?,
                body: r.try_get(2)?,
            })
        })
        .transpose()
    }
}
