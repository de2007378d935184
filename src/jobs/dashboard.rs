//! What the dashboard shows, computed from the stored rows: the overview (one row per model,
//! round, dataset and kind, with the flawed-step rate and its Wilson interval), the
//! comparison of two rows, and a job's metric curves cut down to a bounded number of points
//! on the server (folded row by row, so neither the request nor the page holds every step).

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

/// One bucket's running mean, min and max of one metric.
#[derive(Clone, Copy)]
struct Acc {
    sum: f64,
    n: usize,
    min: f64,
    max: f64,
}

/// A job's curves folded row by row, so that a request holds `points` buckets per metric
/// and never every row: steps 1..=`last_step` are cut into at most `points` buckets of
/// equal step count; each chosen metric becomes its buckets' mean, min and max (a step
/// without the metric is skipped; a bucket without it is null; a bucket without rows is
/// left out). `keys` None: every numeric metric.
pub struct CurveBuilder {
    bucket: usize,
    keys: Option<BTreeSet<String>>,
    all: BTreeSet<String>,
    rows: usize,
    /// Per bucket: (last step, its round), None while the bucket has no row.
    ends: Vec<Option<(i64, i64)>>,
    acc: BTreeMap<String, Vec<Option<Acc>>>,
}

impl CurveBuilder {
    pub fn new(last_step: i64, points: usize, keys: Option<&[String]>) -> CurveBuilder {
        let steps = last_step.max(0) as usize;
        CurveBuilder {
            bucket: steps.div_ceil(points.max(1)).max(1),
            keys: keys.map(|k| k.iter().cloned().collect()),
            all: BTreeSet::new(),
            rows: 0,
            ends: Vec::new(),
            acc: BTreeMap::new(),
        }
    }

    /// Fold one row in (rows come in step order; a step past `last_step` opens new buckets).
    pub fn push(&mut self, r: &MetricRow) {
        let b = (r.step.max(1) as usize - 1) / self.bucket;
        if self.ends.len() <= b {
            self.ends.resize(b + 1, None);
        }
        self.ends[b] = Some((r.step, r.round));
        self.rows += 1;
        let Some(o) = r.metrics.as_object() else {
            return;
        };
        for (k, v) in o {
            let Some(x) = v.as_f64() else { continue };
            if !self.all.contains(k) {
                self.all.insert(k.clone());
            }
            if !x.is_finite() || self.keys.as_ref().is_some_and(|ks| !ks.contains(k)) {
                continue;
            }
            let col = self.acc.entry(k.clone()).or_default();
            if col.len() <= b {
                col.resize(b + 1, None);
            }
            let a = col[b].get_or_insert(Acc {
                sum: 0.0,
                n: 0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
            });
            a.sum += x;
            a.n += 1;
            a.min = a.min.min(x);
            a.max = a.max.max(x);
        }
    }

    pub fn finish(self) -> Curves {
        let live: Vec<usize> = (0..self.ends.len())
            .filter(|&b| self.ends[b].is_some())
            .collect();
        let ends: Vec<(i64, i64)> = live.iter().filter_map(|&b| self.ends[b]).collect();
        let chosen: Vec<String> = match &self.keys {
            Some(k) => k
                .iter()
                .filter(|k| self.all.contains(*k))
                .cloned()
                .collect(),
            None => self.all.iter().cloned().collect(),
        };
        let series = chosen
            .into_iter()
            .map(|k| {
                let col = self.acc.get(&k);
                let at = |b: usize| col.and_then(|c| c.get(b).copied().flatten());
                let s = Series {
                    mean: live
                        .iter()
                        .map(|&b| at(b).map(|a| a.sum / a.n as f64))
                        .collect(),
                    min: live.iter().map(|&b| at(b).map(|a| a.min)).collect(),
                    max: live.iter().map(|&b| at(b).map(|a| a.max)).collect(),
                };
                (k, s)
            })
            .collect();
        Curves {
            total_steps: self.rows,
            bucket: self.bucket,
            steps: ends.iter().map(|e| e.0).collect(),
            rounds: ends.iter().map(|e| e.1).collect(),
            keys: self.all.into_iter().collect(),
            series,
        }
    }
}

/// [`CurveBuilder`] over rows in memory.
pub fn curves(rows: &[MetricRow], points: usize, keys: Option<&[String]>) -> Curves {
    let last = rows.last().map_or(0, |r| r.step);
    let mut c = CurveBuilder::new(last, points, keys);
    for r in rows {
        c.push(r);
    }
    c.finish()
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
