//! What the dashboard shows, computed from the stored rows: the overview (one row per model,
//! round, dataset and kind, with the flawed-step rate and its Wilson interval), the
//! comparison of two rows, and a job's metric curves cut down to a bounded number of points
//! on the server, so that a page over 50,000 steps stays light.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value;

use crate::store::evals::EvalRecord;
use crate::store::jobs::MetricRow;

/// The normal quantile of a two-sided 95% interval.
pub const Z95: f64 = 1.959_963_984_540_054;
/// Below this many right answers a rate is shown greyed: its interval is wide.
pub const SMALL_N: u64 = 30;

/// Wilson score interval for `x` successes in `n` trials at normal quantile `z`; None when
/// `n` is 0. Unlike the normal approximation it stays inside [0, 1] and is not empty at
/// x = 0 or x = n, which is where flawed-step rates of good models live.
pub fn wilson(x: u64, n: u64, z: f64) -> Option<(f64, f64)> {
    if n == 0 {
        return None;
    }
    let (x, n) = (x as f64, n as f64);
    let p = x / n;
    let z2 = z * z;
    let d = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / d;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / d;
    Some(((centre - half).max(0.0), (centre + half).min(1.0)))
}

/// One overview row: the newest record of its (model, round, dataset, kind).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OverviewRow {
    pub record_id: String,
    pub model: String,
    pub round: Option<i64>,
    pub dataset: String,
    pub kind: String,
    pub job_id: Option<String>,
    /// Records in this group (the newest is shown).
    pub records: usize,
    /// Samples with a right final answer (correct + flawed): the rate's denominator.
    pub n: u64,
    /// Of those, with a step labelled wrong.
    pub flawed: u64,
    pub wrong: u64,
    pub unknown: u64,
    /// flawed / n (null when n = 0).
    pub flawed_rate: Option<f64>,
    /// Wilson 95% interval of `flawed_rate`.
    pub ci_low: Option<f64>,
    pub ci_high: Option<f64>,
    /// n < 30: the interval is wide, the page greys the rate.
    pub small_n: bool,
    pub pass_at_1: Option<f64>,
    pub maj_at_k: Option<f64>,
    /// The K of Maj@K.
    pub k: Option<u64>,
    /// ProcessBench F1 (a fraction), for processbench records.
    pub f1: Option<f64>,
    pub created_at: i64,
}

fn class(body: &Value, c: &str) -> u64 {
    body["classes"][c].as_u64().unwrap_or(0)
}

/// The row of one record.
pub fn row(r: &EvalRecord, records: usize) -> OverviewRow {
    let body: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
    let (correct, flawed) = (class(&body, "correct"), class(&body, "flawed"));
    let n = correct + flawed;
    let ci = wilson(flawed, n, Z95);
    let m = &body["metrics"];
    OverviewRow {
        record_id: r.id.clone(),
        model: r.model.clone(),
        round: r.round,
        dataset: r.dataset.clone(),
        kind: r.kind.clone(),
        job_id: r.job_id.clone(),
        records,
        n,
        flawed,
        wrong: class(&body, "wrong"),
        unknown: class(&body, "unknown"),
        flawed_rate: (n > 0).then(|| flawed as f64 / n as f64),
        ci_low: ci.map(|c| c.0),
        ci_high: ci.map(|c| c.1),
        small_n: n < SMALL_N,
        pass_at_1: m["pass_at_1"].as_f64(),
        maj_at_k: m["maj_at_k"].as_f64(),
        k: body["counts"]["k"].as_u64(),
        f1: m["f1"].as_f64(),
        created_at: r.created_at,
    }
}

/// Group records (newest first, as the store lists them) by (model, round, dataset, kind):
/// the newest of each group is its row. Rows are sorted by model, dataset, kind, round.
pub fn overview(records: &[EvalRecord]) -> Vec<OverviewRow> {
    type Key = (String, Option<i64>, String, String);
    let mut groups: BTreeMap<Key, (usize, usize)> = BTreeMap::new();
    for (i, r) in records.iter().enumerate() {
        let key = (r.model.clone(), r.round, r.dataset.clone(), r.kind.clone());
        groups.entry(key).or_insert((i, 0)).1 += 1;
    }
    let mut rows: Vec<OverviewRow> = groups
        .into_values()
        .map(|(i, count)| row(&records[i], count))
        .collect();
    rows.sort_by(|a, b| {
        (&a.model, &a.dataset, &a.kind, a.round).cmp(&(&b.model, &b.dataset, &b.kind, b.round))
    });
    rows
}

/// Two rows side by side: b's rate minus a's, and whether their intervals overlap (when
/// they do not, the difference is unlikely to be noise; when they do, it may still be real).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Comparison {
    pub a: OverviewRow,
    pub b: OverviewRow,
    /// b.flawed_rate - a.flawed_rate.
    pub flawed_rate_difference: Option<f64>,
    pub pass_at_1_difference: Option<f64>,
    /// Whether the two Wilson intervals overlap (null when either rate is missing).
    pub intervals_overlap: Option<bool>,
}

pub fn compare(a: OverviewRow, b: OverviewRow) -> Comparison {
    let diff = |x: Option<f64>, y: Option<f64>| Some(y? - x?);
    let overlap = match (a.ci_low, a.ci_high, b.ci_low, b.ci_high) {
        (Some(al), Some(ah), Some(bl), Some(bh)) => Some(al <= bh && bl <= ah),
        _ => None,
    };
    Comparison {
        flawed_rate_difference: diff(a.flawed_rate, b.flawed_rate),
        pass_at_1_difference: diff(a.pass_at_1, b.pass_at_1),
        intervals_overlap: overlap,
        a,
        b,
    }
}

/// A metric's points: the mean of each bucket of steps, and its range.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Series {
    pub mean: Vec<Option<f64>>,
    pub min: Vec<Option<f64>>,
    pub max: Vec<Option<f64>>,
}

/// A job's curves, at most `points` per metric.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Curves {
    pub total_steps: usize,
    /// Steps per point (1: every step as it was logged).
    pub bucket: usize,
    /// The last step of each point.
    pub steps: Vec<i64>,
    /// The round of each point's last step.
    pub rounds: Vec<i64>,
    /// Every numeric metric the job logged.
    pub keys: Vec<String>,
    #[schema(value_type = Object)]
    pub series: BTreeMap<String, Series>,
}

/// Cut `rows` (in step order) into at most `points` buckets of equal step count; each
/// chosen metric becomes its buckets' mean, min and max (a step without the metric is
/// skipped; a bucket without it is null). `keys` None: every numeric metric.
pub fn curves(rows: &[MetricRow], points: usize, keys: Option<&[String]>) -> Curves {
    let all: BTreeSet<String> = rows
        .iter()
        .filter_map(|r| r.metrics.as_object())
        .flat_map(|o| {
            o.iter()
                .filter(|(_, v)| v.is_number())
                .map(|(k, _)| k.clone())
        })
        .collect();
    let chosen: Vec<String> = match keys {
        Some(k) => k.iter().filter(|k| all.contains(*k)).cloned().collect(),
        None => all.iter().cloned().collect(),
    };
    let bucket = rows.len().div_ceil(points.max(1)).max(1);
    let mut c = Curves {
        total_steps: rows.len(),
        bucket,
        steps: Vec::new(),
        rounds: Vec::new(),
        keys: all.into_iter().collect(),
        series: chosen
            .iter()
            .map(|k| {
                let s = Series {
                    mean: Vec::new(),
                    min: Vec::new(),
                    max: Vec::new(),
                };
                (k.clone(), s)
            })
            .collect(),
    };
    for chunk in rows.chunks(bucket) {
        let last = chunk.last().expect("chunks are not empty");
        c.steps.push(last.step);
        c.rounds.push(last.round);
        for (k, s) in c.series.iter_mut() {
            let vals: Vec<f64> = chunk
                .iter()
                .filter_map(|r| r.metrics.get(k).and_then(Value::as_f64))
                .filter(|v| v.is_finite())
                .collect();
            if vals.is_empty() {
                s.mean.push(None);
                s.min.push(None);
                s.max.push(None);
            } else {
                s.mean
                    .push(Some(vals.iter().sum::<f64>() / vals.len() as f64));
                s.min.push(vals.iter().copied().reduce(f64::min));
                s.max.push(vals.iter().copied().reduce(f64::max));
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn buckets_hold_mean_min_max() {
        let rows: Vec<MetricRow> = (1..=10)
            .map(|s| MetricRow {
                step: s,
                round: 1 + (s > 5) as i64,
                metrics: json!({"loss": s as f64, "note": "x", "kl": if s == 3 { json!(null) } else { json!(1.0) }}),
            })
            .collect();
        let c = curves(&rows, 4, None);
        assert_eq!(c.bucket, 3);
        assert_eq!(c.steps, [3, 6, 9, 10]);
        assert_eq!(c.rounds, [1, 2, 2, 2]);
        assert_eq!(c.keys, ["kl", "loss"]);
        let l = &c.series["loss"];
        assert_eq!(l.mean, [Some(2.0), Some(5.0), Some(8.0), Some(10.0)]);
        assert_eq!(l.min[1], Some(4.0));
        assert_eq!(l.max[1], Some(6.0));
        assert_eq!(c.series["kl"].mean[0], Some(1.0));
        let raw = curves(&rows, 100, Some(&["loss".to_string(), "nope".to_string()]));
        assert_eq!(raw.bucket, 1);
        assert_eq!(raw.series.len(), 1);
        assert_eq!(raw.steps.len(), 10);
        assert_eq!(curves(&[], 10, None).steps.len(), 0);
    }
}
