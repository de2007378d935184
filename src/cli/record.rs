//! `--record` of `stepkto eval processbench | flawed-steps | generate`: the run's metric
//! values, counts and judged samples stored as an eval record in the database (the same
//! one `stepkto serve` uses), where the dashboard and `GET /v1/evals` find it.

use std::path::Path;

use serde_json::{Map, Value};

use super::CliError;
use crate::config::{ConfigError, RecordArgs, database_url};
use crate::jobs::records::{NewEval, RecordLimits, build};
use crate::store::Store;
use crate::store::jobs::new_id;

/// What an eval command measured, ready to record.
pub struct Measured {
    pub kind: &'static str,
    /// The model's name when `--record-model` is not given (None: the flag is needed).
    pub default_model: Option<String>,
    pub metrics: Map<String, Value>,
    pub counts: Map<String, Value>,
    pub samples: Vec<Value>,
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// Stop before the work when `--record` will not be able to name the model.
pub fn check(args: &RecordArgs, kind: &str, has_default: bool) -> Result<(), CliError> {
    if args.record && args.record_model.is_none() && !has_default {
        return Err(ConfigError::Value {
            name: "--record-model",
            why: format!("`eval {kind}` cannot tell which model wrote the solutions: name it"),
        }
        .into());
    }
    Ok(())
}

/// Store the record when `--record` was given; says on stderr what was stored.
pub fn record(args: &RecordArgs, input: &Path, m: Measured) -> Result<(), CliError> {
    if !args.record {
        return Ok(());
    }
    let Some(model) = args.record_model.clone().or(m.default_model) else {
        return Err(ConfigError::Value {
            name: "--record-model",
            why: format!(
                "`eval {}` cannot tell which model wrote the solutions: name it",
                m.kind
            ),
        }
        .into());
    };
    let e = NewEval {
        model,
        dataset: args.record_dataset.clone().unwrap_or_else(|| stem(input)),
        kind: m.kind.to_string(),
        round: args.record_round,
        metrics: m.metrics,
        counts: m.counts,
        samples: m.samples,
    };
    let limits = RecordLimits {
        max_samples: usize::MAX,
        ..Default::default()
    };
    let (rec, samples) =
        build(new_id("ev-"), None, e, &limits).map_err(|e| ConfigError::Value {
            name: "--record",
            why: format!("the {} record is not valid: {e}", m.kind),
        })?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = {
        let _guard = rt.enter();
        Store::open(&database_url(&args.db))?
    };
    rt.block_on(async {
        store.migrate().await?;
        store.insert_eval(&rec, &samples).await?;
        store.close().await;
        Ok::<_, CliError>(())
    })?;
    eprintln!(
        "recorded eval {} ({} samples; model {}, dataset {}) in {}",
        rec.id,
        samples.len(),
        rec.model,
        rec.dataset,
        store.backend.name()
    );
    Ok(())
}
