//! The database, behind sqlx's `Any` driver: an embedded SQLite file by default,
//! PostgreSQL when the URL says `postgres://`. Only this module knows SQL. Here: the pool,
//! migrations and the verdict cache; [`jobs`]: the training service's tables.
//!
//! The store is optional at run time: if the database is down, [`Store::ready`] is false,
//! lookups and writes are skipped (and counted by the caller), and a background task keeps
//! trying to connect and migrate. Verdicts are always computed and served.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub mod evals;
pub mod jobs;

use sha2::{Digest, Sha256};
use sqlx::any::{AnyPoolOptions, install_default_drivers};
use sqlx::{AnyPool, Row};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://...")]
    Url(String),
    #[error("database not ready")]
    NotReady,
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// A handle to the cache; cheap to clone.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    pub backend: Backend,
    /// Set once migrations have run; cache operations are skipped until then.
    ready: Arc<AtomicBool>,
}

/// The cache key: SHA-256 over a canonical JSON encoding of what decides a verdict.
pub fn cache_key(parts: &serde_json::Value) -> String {
    let canonical = serde_json::to_string(parts).unwrap_or_default();
    let digest = Sha256::digest(canonical.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `($1, $2, ..), ($k+1, ..), ..`: the VALUES list of a multi-row INSERT of `rows` rows of
/// `cols` bound values each (only placeholders, so the SQL stays free of data).
pub(crate) fn value_groups(rows: usize, cols: usize) -> String {
    (0..rows)
        .map(|r| {
            let one: Vec<String> = (1..=cols).map(|c| format!("${}", r * cols + c)).collect();
            format!("({})", one.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

pub(crate) fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl Store {
    /// Open the pool lazily (no connection is made here) and decide the backend.
    pub fn open(url: &str) -> Result<Store, StoreError> {
        install_default_drivers();
        let (backend, url) = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            (Backend::Postgres, url.to_string())
        } else if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            // Create the file when missing; WAL keeps readers off the writer's back.
            let sep = if path.contains('?') { '&' } else { '?' };
            let url = if path.contains("mode=") {
                url.to_string()
            } else {
                format!("sqlite://{path}{sep}mode=rwc")
            };
            (Backend::Sqlite, url)
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        let mut options = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
            .acquire_timeout(Duration::from_secs(3));
        if backend == Backend::Sqlite {
            // WAL with NORMAL sync is durable against application crashes and much cheaper
            // per commit; writers wait for each other instead of failing at once.
            options = options.after_connect(|conn, _meta| {
                Box::pin(async move {
                    sqlx::query("PRAGMA synchronous = NORMAL")
                        .execute(&mut *conn)
                        .await?;
                    sqlx::query("PRAGMA busy_timeout = 5000")
                        .execute(&mut *conn)
                        .await?;
                    Ok(())
                })
            });
        }
        let pool = options.connect_lazy(&url)?;
        Ok(Store {
            pool,
            backend,
            ready: Arc::new(AtomicBool::new(false)),
        })
    }

    /// Run the migrations for this backend; marks the store ready on success.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        if self.backend == Backend::Sqlite {
            sqlx::query("PRAGMA journal_mode=WAL")
                .execute(&self.pool)
                .await?;
        }
        match self.backend {
            Backend::Sqlite => sqlx::migrate!("migrations/sqlite").run(&self.pool).await?,
            Backend::Postgres => {
                sqlx::migrate!("migrations/postgres")
                    .run(&self.pool)
                    .await?
            }
        }
        self.ready.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Try to migrate now; if the database is down, keep retrying in the background.
    pub async fn start(&self) {
        if let Err(e) = self.migrate().await {
            tracing::warn!(error = %e, backend = self.backend.name(), "verdict store unavailable; serving without cache, retrying");
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    match me.migrate().await {
                        Ok(()) => {
                            tracing::info!("verdict store is ready");
                            break;
                        }
                        Err(e) => tracing::debug!(error = %e, "verdict store still unavailable"),
                    }
                }
            });
        }
    }

    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::SeqCst)
    }

    /// Cheap liveness check for `/health`.
    pub async fn ping(&self) -> Result<(), StoreError> {
        if !self.ready() {
            return Err(StoreError::NotReady);
        }
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Cached bodies for the given keys (missing keys are absent from the map).
    pub async fn get_many(&self, keys: &[String]) -> Result<HashMap<String, String>, StoreError> {
        if !self.ready() {
            return Err(StoreError::NotReady);
        }
        let mut out = HashMap::new();
        for chunk in keys.chunks(500) {
            let placeholders: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
            let sql = format!(
                "SELECT key, body FROM verdicts WHERE key IN ({})",
                placeholders.join(",")
            );
            // Safe: only `$n` placeholders are interpolated; every key is a bound value.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for k in chunk {
                q = q.bind(k.as_str());
            }
            for row in q.fetch_all(&self.pool).await? {
                out.insert(row.try_get::<String, _>(0)?, row.try_get::<String, _>(1)?);
            }
        }
        Ok(out)
    }

    /// Insert verdicts; an existing key is left as it is (the first verdict wins).
    pub async fn put_many(
        &self,
        kind: &str,
        engine: &str,
        rows: &[(String, String)],
    ) -> Result<(), StoreError> {
        if !self.ready() {
            return Err(StoreError::NotReady);
        }
        if rows.is_empty() {
            return Ok(());
        }
        // One multi-row INSERT per 100 rows, in one transaction: a batch costs one commit.
        let mut tx = self.pool.begin().await?;
        let now = now_secs();
        for chunk in rows.chunks(100) {
            let sql = format!(
                "INSERT INTO verdicts (key, kind, engine, body, created_at) VALUES {} ON CONFLICT (key) DO NOTHING",
                value_groups(chunk.len(), 5)
            );
            // Safe: only `$n` placeholders are interpolated; every value is bound.
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (key, body) in chunk {
                q = q
                    .bind(key.as_str())
                    .bind(kind)
                    .bind(engine)
                    .bind(body.as_str())
                    .bind(now);
            }
            q.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
