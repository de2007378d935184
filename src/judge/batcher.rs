//! The queue in front of one PRM: an actor on a dedicated inference thread that owns the
//! model and its device lease. Request handlers [`Batcher::submit`] tokenized items and await
//! one reply per item; the thread drains whatever is queued, drops items whose client went
//! away or whose deadline passed, sorts the rest by length and runs them in batches of at most
//! `max_batch_tokens` computed tokens, longest first: on the CPU items are packed end to end
//! (the sum of their lengths), elsewhere right-padded (so padding stays small).
//!
//! Backpressure: at most `max_queue` items wait; a submit that does not fit is refused
//! whole (the API answers 429), so memory never grows with load.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::oneshot;

use super::JudgeError;
use super::prm::Prm;
use super::recipe::Tokenized;
use crate::devices::Lease;

#[derive(Debug, Clone, Copy, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BatchConfig {
    /// Padded tokens per forward pass (items x longest item); one longer item runs alone.
    pub max_batch_tokens: usize,
    /// Items waiting per model before new requests get 429.
    pub max_queue: usize,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct BatchStats {
    pub batches: AtomicU64,
    pub items: AtomicU64,
    /// Token rows computed: padding included where items are padded, tokens after an
    /// item's last read excluded.
    pub computed_tokens: AtomicU64,
    pub real_tokens: AtomicU64,
    pub largest_batch: AtomicU64,
    pub dropped_client_gone: AtomicU64,
    pub dropped_deadline: AtomicU64,
    pub rejected_full: AtomicU64,
    /// Seconds spent in forward passes, in microseconds.
    pub busy_us: AtomicU64,
}

pub type Reply = Result<Vec<f32>, JudgeError>;

struct Job {
    item: Tokenized,
    deadline: Instant,
    timeout_ms: u64,
    reply: oneshot::Sender<Reply>,
}

pub struct Batcher {
    pub prm: Arc<Prm>,
    pub config: BatchConfig,
    pub stats: Arc<BatchStats>,
    pub device: String,
    queued: Arc<AtomicUsize>,
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// Start the inference thread; it runs until the batcher is dropped.
    pub fn spawn(prm: Arc<Prm>, lease: Lease, config: BatchConfig) -> std::io::Result<Batcher> {
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = Arc::new(BatchStats::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let device = lease.name().to_string();
        let (p, s, q) = (prm.clone(), stats.clone(), queued.clone());
        std::thread::Builder::new()
            .name(format!("prm-{}", prm.id))
            .spawn(move || {
                let _lease = lease;
                run(&p, &rx, &s, &q, config)
            })?;
        Ok(Batcher {
            prm,
            config,
            stats,
            device,
            queued,
            tx,
        })
    }

    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Queue every item or none; each receiver gets that item's step scores.
    pub fn submit(
        &self,
        items: Vec<Tokenized>,
        deadline: Instant,
        timeout_ms: u64,
    ) -> Result<Vec<oneshot::Receiver<Reply>>, JudgeError> {
        // Items with nothing to read are answered at once and take no queue slot.
        let n = items.iter().filter(|t| !t.reads.is_empty()).count();
        let max = self.config.max_queue;
        self.queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q + n <= max).then_some(q + n)
            })
            .map_err(|q| {
                self.stats.rejected_full.fetch_add(1, Ordering::Relaxed);
                JudgeError::Overloaded(format!(
                    "model {} queue is full ({q} of max_queue {max} items waiting, {n} more asked)",
                    self.prm.id
                ))
            })?;
        let mut out = Vec::with_capacity(n);
        for item in items {
            let (reply, rx) = oneshot::channel();
            if item.reads.is_empty() {
                let _ = reply.send(Ok(Vec::new()));
                out.push(rx);
                continue;
            }
            let job = Job {
                item,
                deadline,
                timeout_ms,
                reply,
            };
            if self.tx.send(job).is_err() {
                return Err(JudgeError::Backend(format!(
                    "model {} has stopped",
                    self.prm.id
                )));
            }
            out.push(rx);
        }
        Ok(out)
    }
}

/// Drop what no one waits for or what is already late; keep the rest.
fn still_wanted(j: &Job, stats: &BatchStats, now: Instant) -> bool {
    if j.reply.is_closed() {
        stats.dropped_client_gone.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    if now >= j.deadline {
        stats.dropped_deadline.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    true
}

fn run(
    prm: &Prm,
    rx: &mpsc::Receiver<Job>,
    stats: &BatchStats,
    queued: &AtomicUsize,
    cfg: BatchConfig,
) {
    let packed = prm.packed();
    while let Ok(first) = rx.recv() {
        let mut pending = vec![first];
        pending.extend(rx.try_iter());
        pending.sort_by_key(|j| std::cmp::Reverse(j.item.ids.len()));
        let mut rest = pending.into_iter().peekable();
        while let Some(head) = rest.next() {
            // Sorted longest first: the head's length is the padded length of its batch
            // (when the model pads; packed, the cost is the sum of the lengths).
            let width = head.item.ids.len().max(1);
            let mut cost = width;
            let mut batch = vec![head];
            while let Some(next) = rest.peek() {
                let more = if packed {
                    cost + next.item.ids.len()
                } else {
                    (batch.len() + 1) * width
                };
                if more > cfg.max_batch_tokens {
                    break;
                }
                cost = more;
                batch.extend(rest.next());
            }
            let now = Instant::now();
            let (live, dead): (Vec<Job>, Vec<Job>) =
                batch.into_iter().partition(|j| still_wanted(j, stats, now));
            // Slots are freed before the replies go out, so a caller that has all its replies
            // sees the queue without its items.
            queued.fetch_sub(dead.len(), Ordering::AcqRel);
            for j in dead {
                let _ = j.reply.send(Err(JudgeError::Timeout(j.timeout_ms)));
            }
            if !live.is_empty() {
                let items: Vec<&Tokenized> = live.iter().map(|j| &j.item).collect();
                let t0 = Instant::now();
                let result = prm.score(&items);
                stats
                    .busy_us
                    .fetch_add(t0.elapsed().as_micros() as u64, Ordering::Relaxed);
                stats.batches.fetch_add(1, Ordering::Relaxed);
                stats.items.fetch_add(live.len() as u64, Ordering::Relaxed);
                stats
                    .computed_tokens
                    .fetch_add(prm.computed_tokens(&items) as u64, Ordering::Relaxed);
                let real: usize = items.iter().map(|t| t.ids.len()).sum();
                stats.real_tokens.fetch_add(real as u64, Ordering::Relaxed);
                stats
                    .largest_batch
                    .fetch_max(live.len() as u64, Ordering::Relaxed);
                queued.fetch_sub(live.len(), Ordering::AcqRel);
                match result {
                    Ok(scores) => {
                        for (j, s) in live.into_iter().zip(scores) {
                            let _ = j.reply.send(Ok(s));
                        }
                    }
                    Err(e) => {
                        tracing::error!(model = %prm.id, error = %e, "batch failed");
                        for j in live {
                            let _ = j.reply.send(Err(JudgeError::Backend(e.to_string())));
                        }
                    }
                }
            }
        }
    }
}
