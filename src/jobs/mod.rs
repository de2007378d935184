//! Training as a service: the workers that claim jobs from the database queue, lease a
//! device from the judges' pool, run the trainer in a bounded thread pool, and write what
//! it reports (metric rows, progress, rounds, eval records) back to the database.
//!
//! A job's files live in `jobs_dir/ID/`: the datasets written out from the database, and
//! `run/`, the trainer's output with its resumable states (`files.rs`). A worker holds a job under a
//! lease it renews every `lease_secs / 3`; if the process dies, the lease lapses and any
//! worker (this process after a restart, or another one on the same database) claims the
//! job again and the trainer resumes from its last saved state. Metric rows are keyed by
//! (job, step), so the steps a resumed round redoes are not stored twice.

pub mod dashboard;
mod files;
pub mod records;
pub mod spec;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::devices::DevicePool;
use crate::judge::batcher::Batcher;
use crate::store::Store;
use crate::store::evals::{EvalRecord, EvalSampleRow};
use crate::store::jobs::{self as q, JobRow, MetricRow};
use crate::train::TrainError;
use crate::train::control::{Control, Event};
use crate::train::label::StepJudge;
use crate::train::rounds::train_with;
use crate::train::run::RunMethod;
pub use files::disk_usage;
use files::{materialize, prune_rounds, rows_on_disk};
use spec::{JobSpec, to_train_config};

/// How this process runs jobs.
#[derive(Debug, Clone)]
pub struct JobsConfig {
    /// Where job directories go.
    pub dir: PathBuf,
    /// Jobs this process runs at once (0: it runs none, only queues them).
    pub max_concurrent: usize,
    /// Threads a job's trainer may use (the judges keep the rest of a shared CPU).
    pub train_threads: usize,
    /// Seconds a claim holds without renewal; a dead worker's job is reclaimed after it.
    pub lease_secs: i64,
    /// How often an idle worker looks for a job.
    pub poll_ms: u64,
    /// Claims of one job before it is failed (a job that kills its process each time).
    pub max_attempts: i64,
    /// Keep the models of only the last N finished rounds (0: keep all).
    pub keep_rounds: usize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            dir: PathBuf::from("stepkto-jobs"),
            max_concurrent: 1,
            train_threads: 1,
            lease_secs: 30,
            poll_ms: 1000,
            max_attempts: 3,
            keep_rounds: 0,
        }
    }
}

/// The worker side of this process: what `/info` and `/metrics` show about it.
pub struct Workers {
    pub config: JobsConfig,
    pub id: String,
    pub running: AtomicUsize,
    /// Optimiser steps and trained tokens since start (all jobs).
    pub steps: std::sync::atomic::AtomicU64,
    pub tokens: std::sync::atomic::AtomicU64,
    /// Set at shutdown: running jobs stop at their next step and give their lease back.
    stopping: AtomicBool,
    /// Cancel flags of this process's running jobs.
    flags: Mutex<BTreeMap<String, Arc<AtomicBool>>>,
}

/// What a job needs from the server.
#[derive(Clone)]
pub struct Context {
    pub store: Store,
    pub devices: Arc<DevicePool>,
    pub served: Vec<Arc<Batcher>>,
    pub workers: Arc<Workers>,
}

impl Workers {
    pub fn new(config: JobsConfig) -> Arc<Workers> {
        Arc::new(Workers {
            config,
            id: q::new_id(&format!("w{}-", std::process::id())),
            running: AtomicUsize::new(0),
            steps: Default::default(),
            tokens: Default::default(),
            stopping: AtomicBool::new(false),
            flags: Mutex::new(BTreeMap::new()),
        })
    }

    /// Stop claiming; running jobs stop between steps and release their leases, so a
    /// restarted server resumes them at once.
    pub fn stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        for f in lock(&self.flags).values() {
            f.store(true, Ordering::SeqCst);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The claim loop: runs until [`Workers::stop`].
pub async fn run_workers(ctx: Context) {
    let w = ctx.workers.clone();
    if w.config.max_concurrent == 0 {
        return;
    }
    loop {
        if w.stopping.load(Ordering::SeqCst) {
            return;
        }
        let mut claimed = false;
        if w.running.load(Ordering::SeqCst) < w.config.max_concurrent && ctx.store.ready() {
            match ctx.store.claim_job(&w.id, w.config.lease_secs).await {
                Ok(Some(job)) => {
                    claimed = true;
                    w.running.fetch_add(1, Ordering::SeqCst);
                    let c = ctx.clone();
                    tokio::spawn(async move {
                        let id = job.id.clone();
                        if let Err(e) = run_job(&c, job).await {
                            tracing::error!(job = %id, error = %e, "job bookkeeping failed");
                        }
                        c.workers.running.fetch_sub(1, Ordering::SeqCst);
                    });
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "cannot claim a job"),
            }
        }
        if !claimed {
            tokio::time::sleep(Duration::from_millis(w.config.poll_ms)).await;
        }
    }
}

/// What the trainer tells the job's writer task.
enum Msg {
    Metric(MetricRow),
    Round(i64, Value, Option<RoundRecord>),
}

/// A round's eval record and its samples, ready to store.
type RoundRecord = (EvalRecord, Vec<EvalSampleRow>);

/// Progress as `GET /v1/train/{id}` shows it.
#[derive(Default)]
struct Progress {
    phase: String,
    round: usize,
    step: usize,
    round_steps: usize,
    global_step: i64,
    /// The global step where each round starts (round -> offset).
    offsets: BTreeMap<usize, i64>,
    tokens_per_s: f64,
    sec_per_step: f64,
    last: Option<Instant>,
    metrics: Value,
    round_seconds: Vec<f64>,
}

impl Progress {
    fn json(&self, rounds: usize, disk: u64) -> Value {
        // ETA: the rest of this round's steps at the current pace, plus the mean of the
        // finished rounds for each round still to come
        let left_here = self.round_steps.saturating_sub(self.step) as f64 * self.sec_per_step;
        let mean_round = if self.round_seconds.is_empty() {
            None
        } else {
            Some(self.round_seconds.iter().sum::<f64>() / self.round_seconds.len() as f64)
        };
        let later = rounds.saturating_sub(self.round.max(1)) as f64;
        let eta = mean_round.map(|m| left_here + later * m);
        json!({"phase": self.phase, "round": self.round, "rounds": rounds, "step": self.step,
            "round_steps": self.round_steps, "global_step": self.global_step,
            "tokens_per_s": self.tokens_per_s, "eta_seconds": eta,
            "last_metrics": self.metrics, "disk_bytes": disk})
    }
}

async fn fail(
    store: &Store,
    worker: &str,
    job: &JobRow,
    msg: String,
) -> Result<(), crate::store::StoreError> {
    tracing::warn!(job = %job.id, "job failed: {msg}");
    store
        .finish_job(&job.id, worker, q::FAILED, Some(&msg), &job.progress)
        .await
        .map(|_| ())
}

async fn run_job(ctx: &Context, job: JobRow) -> Result<(), crate::store::StoreError> {
    let w = &ctx.workers;
    let store = &ctx.store;
    if job.attempts > w.config.max_attempts {
        return fail(
            store,
            &w.id,
            &job,
            format!(
                "gave up after {} claims: the job's process stopped each time before it finished",
                w.config.max_attempts
            ),
        )
        .await;
    }
    let body: Value = match serde_json::from_str(&job.config) {
        Ok(v) => v,
        Err(e) => {
            return fail(
                store,
                &w.id,
                &job,
                format!("stored config is not JSON: {e}"),
            )
            .await;
        }
    };
    // datasets and the judge were checked at submission; here only their presence matters
    let spec = match JobSpec::parse_stored(&body) {
        Ok(s) => s,
        Err(e) => return fail(store, &w.id, &job, format!("config: {e}")).await,
    };
    let dir = spec::job_dir(&w.config.dir, &job.id);
    if let Err(e) = materialize(store, &dir, &spec).await {
        return fail(store, &w.id, &job, e).await;
    }
    let cfg = match to_train_config(&spec.config, &dir, &spec.datasets) {
        Ok(c) => c,
        Err(e) => return fail(store, &w.id, &job, format!("config: {e}")).await,
    };
    let run_dir = cfg.output.clone();
    let resume = run_dir.join("run.json").is_file();
    if resume {
        // rows are keyed by step: the ones already stored are left as they are
        let mut rows = rows_on_disk(&run_dir);
        flush(store, &job.id, &mut rows).await;
    }
    let rounds = if cfg.dataset.is_some() { 1 } else { cfg.rounds };
    let lease = ctx.devices.lease(&format!("train:{}", job.id));
    let mut cfg = cfg;
    cfg.device = lease.name().to_string();
    let eval_dataset = match spec.datasets.iter().find(|(f, _)| *f == "eval_problems") {
        Some((_, id)) => match store.get_dataset(id).await {
            Ok(Some(d)) => d.name,
            _ => id.clone(),
        },
        None => "eval_problems".into(),
    };
    let judge = match &spec.judge_model {
        None => None,
        Some(name) => match ctx.served.iter().find(|b| b.prm.id == *name) {
            Some(b) => match StepJudge::served(&cfg.judge, Some(b.clone())) {
                Ok(j) => Some(j),
                Err(e) => return fail(store, &w.id, &job, e.to_string()).await,
            },
            None => {
                return fail(store, &w.id, &job, format!(
                    "the step judge {name:?} is not loaded in this server (a server that has it can run the job)"
                ))
                .await;
            }
        },
    };
    tracing::info!(job = %job.id, method = ?spec.method, resume, attempt = job.attempts, device = lease.name(), "job started");

    let cancel = Arc::new(AtomicBool::new(false));
    lock(&w.flags).insert(job.id.clone(), cancel.clone());
    let progress = Arc::new(Mutex::new(Progress {
        phase: "starting".into(),
        ..Default::default()
    }));
    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let observer = {
        let progress = progress.clone();
        let workers = w.clone();
        let job_id = job.id.clone();
        let model_name = cfg.model.display().to_string();
        let names = RecordNames {
            model: base_name(&cfg.model),
            dataset: eval_dataset.clone(),
        };
        let run_dir = run_dir.clone();
        let keep = w.config.keep_rounds;
        Box::new(move |e: &Event| {
            let mut p = lock(&progress);
            match e {
                Event::Phase { round, phase } => {
                    p.phase = phase.to_string();
                    p.round = *round;
                    // the first step of a round is timed from here, so a one-step round
                    // still reports its speed
                    if *phase == "training" {
                        p.last = Some(Instant::now());
                    }
                }
                Event::Step {
                    round,
                    step,
                    total,
                    tokens,
                    metrics,
                } => {
                    let offset = *p.offsets.entry(*round).or_insert(0);
                    let now = Instant::now();
                    if let Some(t) = p.last {
                        let dt = now.duration_since(t).as_secs_f64().max(1e-9);
                        let a = if p.sec_per_step == 0.0 { 1.0 } else { 0.2 };
                        p.sec_per_step = (1.0 - a) * p.sec_per_step + a * dt;
                        p.tokens_per_s = (1.0 - a) * p.tokens_per_s + a * (*tokens as f64 / dt);
                    }
                    p.last = Some(now);
                    p.round = *round;
                    p.step = *step;
                    p.round_steps = *total;
                    p.global_step = offset + *step as i64;
                    p.metrics = json!(metrics);
                    workers.steps.fetch_add(1, Ordering::Relaxed);
                    workers.tokens.fetch_add(*tokens as u64, Ordering::Relaxed);
                    let _ = tx.send(Msg::Metric(MetricRow {
                        step: p.global_step,
                        round: *round as i64,
                        metrics: json!(metrics),
                    }));
                }
                Event::Start { eval, records } => {
                    p.offsets.insert(1, 0);
                    let rec = eval.and_then(|ev| record(&job_id, 0, &names, ev, *records));
                    let body = json!({"round": 0, "model": model_name, "eval": eval});
                    let _ = tx.send(Msg::Round(0, body, rec));
                }
                Event::Round {
                    round,
                    info,
                    eval,
                    records,
                } => {
                    let steps = info["optimizer_steps"].as_i64().unwrap_or(0);
                    let start = *p.offsets.entry(*round).or_insert(0);
                    p.offsets.insert(round + 1, start + steps);
                    if let Some(s) = info["seconds"].as_object() {
                        let total: f64 = s.values().filter_map(|v| v.as_f64()).sum();
                        if p.round_seconds.len() < *round {
                            p.round_seconds.push(total);
                        }
                    }
                    p.last = None; // the pause between rounds is not a step
                    let model = run_dir.join(format!("round-{round}")).join("model");
                    let rec = eval.and_then(|ev| record(&job_id, *round, &names, ev, *records));
                    let body = json!({"round": round, "model": model, "info": info, "eval": eval});
                    let _ = tx.send(Msg::Round(*round as i64, body, rec));
                    prune_rounds(&run_dir, *round, keep);
                }
            }
        })
    };
    let control = Control::new(cancel.clone(), observer);
    // a job may ask for fewer threads than the server gives, never more (a job queued by a
    // server with a larger --train-threads is clamped here)
    let threads = spec
        .threads
        .unwrap_or(usize::MAX)
        .min(w.config.train_threads.max(1));
    let method = spec.method;
    let trainer = tokio::task::spawn_blocking(move || {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("train-{i}"))
            .build();
        let r = match pool {
            // candle's CPU ops and this crate's kernels split work on the current rayon
            // pool, so installing a small one bounds the trainer's share of a shared CPU
            Ok(pool) => pool.install(|| train_with(&cfg, method, resume, &control, judge)),
            Err(e) => Err(TrainError::Config(format!(
                "cannot start the trainer's threads: {e}"
            ))),
        };
        drop(lease);
        r
    });
    tokio::pin!(trainer);

    let renew = Duration::from_millis((w.config.lease_secs.max(1) as u64 * 1000) / 3);
    let mut tick = tokio::time::interval(renew);
    let mut pending: Vec<MetricRow> = Vec::new();
    let mut lost = false;
    let result = loop {
        tokio::select! {
            r = &mut trainer => break r,
            Some(m) = rx.recv() => match m {
                Msg::Metric(row) => {
                    pending.push(row);
                    if pending.len() >= 64 {
                        flush(store, &job.id, &mut pending).await;
                    }
                }
                Msg::Round(r, body, rec) => {
                    flush(store, &job.id, &mut pending).await;
                    write_round(store, &job.id, r, &body, rec.as_ref()).await;
                }
            },
            _ = tick.tick() => {
                flush(store, &job.id, &mut pending).await;
                let p = lock(&progress).json(rounds, disk_usage(&dir)).to_string();
                match store.renew_lease(&job.id, &w.id, w.config.lease_secs, &p).await {
                    Ok(Some(true)) => cancel.store(true, Ordering::SeqCst),
                    Ok(Some(false)) => {}
                    Ok(None) => {
                        // another worker holds the job now: stop without touching it
                        lost = true;
                        cancel.store(true, Ordering::SeqCst);
                    }
                    Err(e) => tracing::warn!(job = %job.id, error = %e, "cannot renew the job's lease"),
                }
            }
        }
    };
    while let Ok(m) = rx.try_recv() {
        match m {
            Msg::Metric(row) => pending.push(row),
            Msg::Round(r, body, rec) => {
                flush(store, &job.id, &mut pending).await;
                write_round(store, &job.id, r, &body, rec.as_ref()).await;
            }
        }
    }
    flush(store, &job.id, &mut pending).await;
    lock(&w.flags).remove(&job.id);
    let final_progress = lock(&progress).json(rounds, disk_usage(&dir));
    let result = match result {
        Ok(r) => r,
        Err(e) => Err(TrainError::Stopped(format!(
            "the trainer thread panicked: {e}"
        ))),
    };
    if lost {
        tracing::warn!(job = %job.id, "lease lost to another worker; stopped");
        return Ok(());
    }
    let p = final_progress.to_string();
    match result {
        Ok(summary) => {
            let mut p = final_progress.clone();
            p["phase"] = json!("done");
            p["final_model"] = summary["final_model"].clone();
            store
                .finish_job(&job.id, &w.id, q::SUCCEEDED, None, &p.to_string())
                .await?;
            tracing::info!(job = %job.id, "job succeeded");
        }
        Err(TrainError::Cancelled)
            if w.stopping.load(Ordering::SeqCst) && !user_cancel(store, &job.id).await =>
        {
            // shutdown, not a cancel: hand the job back for the next start
            store.release_job(&job.id, &w.id, &p).await?;
            tracing::info!(job = %job.id, "job released at shutdown; it resumes on the next start");
        }
        Err(TrainError::Cancelled) => {
            store
                .finish_job(&job.id, &w.id, q::CANCELLED, None, &p)
                .await?;
            tracing::info!(job = %job.id, "job cancelled");
        }
        Err(e) => {
            let msg = e.to_string();
            tracing::warn!(job = %job.id, "job failed: {msg}");
            store
                .finish_job(&job.id, &w.id, q::FAILED, Some(&msg), &p)
                .await?;
        }
    }
    Ok(())
}

async fn user_cancel(store: &Store, id: &str) -> bool {
    matches!(store.get_job(id).await, Ok(Some(j)) if j.cancel_requested)
}

/// How a job's eval records are named: the base model's directory name and the eval
/// dataset's name, so that the rounds of runs from one model line up on the dashboard.
struct RecordNames {
    model: String,
    dataset: String,
}

fn base_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}

/// A round's eval record (id `JOB-rROUND`); None, with a warning, if the trainer's records
/// do not pass the record checks (they always should).
fn record(
    job: &str,
    round: usize,
    names: &RecordNames,
    eval: &Value,
    samples: Option<&str>,
) -> Option<RoundRecord> {
    let (metrics, counts) = records::split_report(eval);
    let e = records::NewEval {
        model: names.model.clone(),
        dataset: names.dataset.clone(),
        kind: "generate".into(),
        round: Some(round as i64),
        metrics,
        counts,
        samples: records::samples_of(samples.unwrap_or("")),
    };
    let limits = records::RecordLimits {
        max_samples: usize::MAX,
        ..Default::default()
    };
    match records::build(format!("{job}-r{round}"), Some(job.to_string()), e, &limits) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(job = %job, round, error = %e, "the round's eval record is not stored");
            None
        }
    }
}

async fn flush(store: &Store, id: &str, pending: &mut Vec<MetricRow>) {
    if pending.is_empty() {
        return;
    }
    match store.insert_metrics(id, pending).await {
        Ok(()) => pending.clear(),
        // kept for the next flush: the rows are not lost while the database is away
        Err(e) => tracing::warn!(job = %id, error = %e, "cannot store metric rows yet"),
    }
}

async fn write_round(store: &Store, id: &str, r: i64, body: &Value, rec: Option<&RoundRecord>) {
    if let Err(e) = store.put_round(id, r, &body.to_string()).await {
        tracing::warn!(job = %id, round = r, error = %e, "cannot store the round");
    }
    if let Some((rec, samples)) = rec
        && let Err(e) = store.insert_eval(rec, samples).await
    {
        tracing::warn!(job = %id, round = r, error = %e, "cannot store the eval record");
    }
}

/// The method name as stored.
pub fn method_name(m: RunMethod) -> &'static str {
    match m {
        RunMethod::Sft => "sft",
        RunMethod::Kto => "kto",
        RunMethod::StepKto => "step-kto",
    }
}
