//! A job's directory on the worker's disk: the datasets written out from the database, the
//! disk it uses, the round models pruned by `--keep-rounds`, and the metric rows read back
//! from the trainer's `metrics.jsonl` when a killed job resumes.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::spec::{DATASET_FIELDS, JobSpec};
use crate::store::Store;
use crate::store::jobs::MetricRow;

/// Write the job's datasets from the database into its directory (once).
pub(crate) async fn materialize(store: &Store, dir: &Path, spec: &JobSpec) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for (field, id) in &spec.datasets {
        let file = DATASET_FIELDS
            .iter()
            .find(|(f, _)| f == field)
            .map(|(_, f)| dir.join(f))
            .expect("a known field");
        if file.is_file() {
            continue;
        }
        let body = store
            .dataset_body(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("dataset {id} ({field}) no longer exists"))?;
        let tmp = file.with_extension("partial");
        std::fs::write(&tmp, body).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &file).map_err(|e| format!("{}: {e}", file.display()))?;
    }
    Ok(())
}

/// Bytes under `dir`.
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => disk_usage(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// Remove the models of finished rounds older than the last `keep` (round-0 has none).
pub(crate) fn prune_rounds(run: &Path, finished: usize, keep: usize) {
    if keep == 0 {
        return;
    }
    for r in 1..=finished.saturating_sub(keep) {
        let m = run.join(format!("round-{r}")).join("model");
        if m.is_dir() {
            let _ = std::fs::remove_dir_all(&m);
        }
    }
}

/// The metric rows of a run's `metrics.jsonl` (numbered across rounds by the rounds'
/// `round.json`). A killed worker may not have stored the steps between its last flush and
/// its death, and the resumed trainer does not redo steps before its saved state: the file,
/// written and flushed by the trainer at each step, is the record they are taken from.
pub(crate) fn rows_on_disk(run: &Path) -> Vec<MetricRow> {
    let Ok(text) = std::fs::read_to_string(run.join("metrics.jsonl")) else {
        return Vec::new();
    };
    let mut offsets: BTreeMap<i64, i64> = BTreeMap::from([(1, 0)]);
    let mut r = 1;
    while let Some(info) = std::fs::read_to_string(run.join(format!("round-{r}/round.json")))
        .ok()
        .and_then(|t| serde_json::from_str::<Value>(&t).ok())
    {
        let steps = info["optimizer_steps"].as_i64().unwrap_or(0);
        offsets.insert(r + 1, offsets[&r] + steps);
        r += 1;
    }
    text.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok()) // a half-written last line
        .filter_map(|mut v| {
            let round = v["round"].as_i64()?;
            let step = v["step"].as_i64()?;
            let offset = *offsets.get(&round)?;
            let o = v.as_object_mut()?;
            for k in ["round", "step", "epoch"] {
                o.remove(k);
            }
            Some(MetricRow {
                step: offset + step,
                round,
                metrics: v,
            })
        })
        .collect()
}
