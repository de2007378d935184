//! Prometheus counters and a latency histogram, rendered as text at `/metrics`.
//! Hand-rolled (a few atomics and a mutex-guarded map) to keep the dependency tree small.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::judge::Judges;
use crate::judge::batcher::Batcher;

const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

#[derive(Default)]
struct Hist {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    n: u64,
}

#[derive(Default)]
pub struct Metrics {
    /// (route, status) -> requests.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    latency: Mutex<BTreeMap<String, Hist>>,
    pub verify_equal: AtomicU64,
    pub verify_not_equal: AtomicU64,
    pub verify_item_errors: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    /// Computed verdicts that finished on the async thread under `--inline-check-us`.
    pub inline_checks: AtomicU64,
    /// Cache reads or writes that failed or were skipped because the store was down.
    pub store_errors: AtomicU64,
}

impl Metrics {
    pub fn observe(&self, route: &str, status: u16, secs: f64) {
        *self
            .requests
            .lock()
            .unwrap()
            .entry((route.to_string(), status))
            .or_default() += 1;
        let mut l = self.latency.lock().unwrap();
        let h = l.entry(route.to_string()).or_default();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.n += 1;
    }

    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            s,
            "# HELP stepkto_http_requests_total HTTP requests by route and status."
        );
        let _ = writeln!(s, "# TYPE stepkto_http_requests_total counter");
        for ((route, status), n) in self.requests.lock().unwrap().iter() {
            let _ = writeln!(
                s,
                "stepkto_http_requests_total{{route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            s,
            "# HELP stepkto_http_request_duration_seconds Request latency."
        );
        let _ = writeln!(s, "# TYPE stepkto_http_request_duration_seconds histogram");
        for (route, h) in self.latency.lock().unwrap().iter() {
            for (i, b) in BUCKETS.iter().enumerate() {
                let _ = writeln!(
                    s,
                    "stepkto_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"{b}\"}} {}",
                    h.counts[i]
                );
            }
            let _ = writeln!(
                s,
                "stepkto_http_request_duration_seconds_bucket{{route=\"{route}\",le=\"+Inf\"}} {}",
                h.n
            );
            let _ = writeln!(
                s,
                "stepkto_http_request_duration_seconds_sum{{route=\"{route}\"}} {}",
                h.sum
            );
            let _ = writeln!(
                s,
                "stepkto_http_request_duration_seconds_count{{route=\"{route}\"}} {}",
                h.n
            );
        }
        let _ = writeln!(
            s,
            "# HELP stepkto_verify_items_total Verify items by result."
        );
        let _ = writeln!(s, "# TYPE stepkto_verify_items_total counter");
        let _ = writeln!(
            s,
            "stepkto_verify_items_total{{result=\"equal\"}} {}",
            g(&self.verify_equal)
        );
        let _ = writeln!(
            s,
            "stepkto_verify_items_total{{result=\"not_equal\"}} {}",
            g(&self.verify_not_equal)
        );
        let _ = writeln!(
            s,
            "stepkto_verify_items_total{{result=\"error\"}} {}",
            g(&self.verify_item_errors)
        );
        let _ = writeln!(
            s,
            "# HELP stepkto_cache_hits_total Verdicts served from the cache."
        );
        let _ = writeln!(s, "# TYPE stepkto_cache_hits_total counter");
        let _ = writeln!(s, "stepkto_cache_hits_total {}", g(&self.cache_hits));
        let _ = writeln!(s, "# HELP stepkto_cache_misses_total Verdicts computed.");
        let _ = writeln!(s, "# TYPE stepkto_cache_misses_total counter");
        let _ = writeln!(s, "stepkto_cache_misses_total {}", g(&self.cache_misses));
        let _ = writeln!(
            s,
            "# HELP stepkto_inline_checks_total Computed verdicts that finished on the async thread, within --inline-check-us."
        );
        let _ = writeln!(s, "# TYPE stepkto_inline_checks_total counter");
        let _ = writeln!(s, "stepkto_inline_checks_total {}", g(&self.inline_checks));
        let _ = writeln!(
            s,
            "# HELP stepkto_store_errors_total Cache operations that failed or were skipped (store down)."
        );
        let _ = writeln!(s, "# TYPE stepkto_store_errors_total counter");
        let _ = writeln!(s, "stepkto_store_errors_total {}", g(&self.store_errors));
        s
    }
}

/// Per-PRM batching counters: batches vs items shows how much requests were batched.
pub fn render_judges(judges: &Judges) -> String {
    let mut s = String::new();
    fn c(a: &AtomicU64) -> u64 {
        a.load(Ordering::Relaxed)
    }
    type Read = fn(&Batcher) -> u64;
    let series: [(&str, &str, Read); 12] = [
        ("stepkto_prm_batches_total", "Forward passes run.", |b| {
            c(&b.stats.batches)
        }),
        (
            "stepkto_prm_batch_items_total",
            "Items scored (sum of batch sizes).",
            |b| c(&b.stats.items),
        ),
        (
            "stepkto_prm_computed_tokens_total",
            "Token rows computed: padding included (non-packed devices), tokens after an item's last step excluded.",
            |b| c(&b.stats.computed_tokens),
        ),
        (
            "stepkto_prm_tokens_total",
            "Tokens of the items scored.",
            |b| c(&b.stats.real_tokens),
        ),
        (
            "stepkto_prm_largest_batch_items",
            "Most items in one forward pass.",
            |b| c(&b.stats.largest_batch),
        ),
        (
            "stepkto_prm_dropped_client_gone_total",
            "Items dropped because their client went away.",
            |b| c(&b.stats.dropped_client_gone),
        ),
        (
            "stepkto_prm_dropped_deadline_total",
            "Items dropped because their deadline passed.",
            |b| c(&b.stats.dropped_deadline),
        ),
        (
            "stepkto_prm_rejected_queue_full_total",
            "Requests refused with 429 (queue full).",
            |b| c(&b.stats.rejected_full),
        ),
        (
            "stepkto_prm_busy_microseconds_total",
            "Time spent in forward passes.",
            |b| c(&b.stats.busy_us),
        ),
        (
            "stepkto_prm_panics_total",
            "Forward passes that panicked (their items got a 500; the model kept serving).",
            |b| c(&b.stats.panics),
        ),
        (
            "stepkto_prm_queue_items",
            "Items waiting for a forward pass.",
            |b| b.queue_depth() as u64,
        ),
        (
            "stepkto_prm_up",
            "1 while the model's inference thread runs, 0 when it cannot serve.",
            |b| u64::from(b.alive()),
        ),
    ];
    for (name, help, read) in series {
        let kind = if name.ends_with("_total") {
            "counter"
        } else {
            "gauge"
        };
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} {kind}");
        for b in &judges.prms {
            let _ = writeln!(s, "{name}{{model=\"{}\"}} {}", b.prm.id, read(b));
        }
    }
    s
}

/// Job series: jobs per state (from the database, so every process on it agrees), and this
/// process's running jobs, optimiser steps and trained tokens.
pub async fn render_jobs(st: &super::AppState) -> String {
    let mut s = String::new();
    if let Some(db) = st.store.as_ref().filter(|d| d.ready())
        && let Ok(counts) = db.job_counts().await
    {
        s.push_str("# HELP stepkto_jobs Training jobs in the database by state.\n# TYPE stepkto_jobs gauge\n");
        for state in crate::store::jobs::STATES {
            let n = counts.iter().find(|(k, _)| k == state).map_or(0, |c| c.1);
            s.push_str(&format!("stepkto_jobs{{state=\"{state}\"}} {n}\n"));
        }
    }
    if let Some(w) = &st.workers {
        s.push_str(&format!(
            "# HELP stepkto_jobs_running_here Jobs this process runs now.\n# TYPE stepkto_jobs_running_here gauge\nstepkto_jobs_running_here {}\n",
            w.running.load(Ordering::Relaxed)
        ));
        s.push_str(&format!(
            "# HELP stepkto_train_steps_total Optimiser steps this process ran.\n# TYPE stepkto_train_steps_total counter\nstepkto_train_steps_total {}\n",
            w.steps.load(Ordering::Relaxed)
        ));
        s.push_str(&format!(
            "# HELP stepkto_train_tokens_total Tokens this process trained on.\n# TYPE stepkto_train_tokens_total counter\nstepkto_train_tokens_total {}\n",
            w.tokens.load(Ordering::Relaxed)
        ));
    }
    s
}
