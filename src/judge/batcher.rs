//! The queue in front of one PRM: an actor on a dedicated inference thread that owns the
//! model and its device lease. Request handlers [`Batcher::submit`] tokenized items and await
//! one reply per item; the thread drains whatever is queued, drops items whose client went
//! away or whose deadline passed, sorts the rest by length and runs them in batches of at most
//! `max_batch_tokens` computed tokens, longest first: on the CPU items are packed end to end
//! (the sum of their lengths), elsewhere right-padded (so padding stays small).
//!
//! Backpressure: at most `max_queue` items wait; a submit that does not fit is refused
//! whole (the API answers 429), so memory never grows with load.
//!
//! Faults: a panic inside a forward pass fails that batch's items (500) and the thread goes
//! on serving; if the thread ends anyway, [`Batcher::alive`] turns false (`/health` reports
//! the model) and submits fail at once, with their queue slots given back.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
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
    /// Forward passes that panicked (their items got a backend error).
    pub panics: AtomicU64,
}

/// How a batch is scored: the model's forward pass, or a stand-in in tests of the queue.
pub type Scorer = Box<dyn Fn(&Prm, &[&Tokenized]) -> Result<Vec<Vec<f32>>, JudgeError> + Send>;

/// Marks the batcher dead when the inference thread ends, however it ends (unwinding too).
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
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
    alive: Arc<AtomicBool>,
    tx: mpsc::Sender<Job>,
}

impl Batcher {
    /// Start the inference thread; it runs until the batcher is dropped.
    pub fn spawn(prm: Arc<Prm>, lease: Lease, config: BatchConfig) -> std::io::Result<Batcher> {
        Self::spawn_with(prm, lease, config, Box::new(|p, items| p.score(items)))
    }

    /// As [`Batcher::spawn`], scoring with `scorer` (tests inject faults through it).
    pub fn spawn_with(
        prm: Arc<Prm>,
        lease: Lease,
        config: BatchConfig,
        scorer: Scorer,
    ) -> std::io::Result<Batcher> {
        let (tx, rx) = mpsc::channel::<Job>();
        let stats = Arc::new(BatchStats::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let alive = Arc::new(AtomicBool::new(true));
        let device = lease.name().to_string();
        let (p, s, q, a) = (prm.clone(), stats.clone(), queued.clone(), alive.clone());
        std::thread::Builder::new()
            .name(format!("prm-{}", prm.id))
            .spawn(move || {
                let _alive = AliveGuard(a);
                let _lease = lease;
                run(&p, &rx, &s, &q, config, &scorer)
            })?;
        Ok(Batcher {
            prm,
            config,
            stats,
            device,
            queued,
            alive,
            tx,
        })
    }

    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Whether the inference thread is running (false: this model cannot serve).
    pub fn alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
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
        let stopped = || {
            JudgeError::Unavailable(format!(
                "model {} cannot serve: its inference thread has stopped",
                self.prm.id
            ))
        };
        if !self.alive() && n > 0 {
            return Err(stopped());
        }
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
                // The thread is gone: nothing sent here will be answered, so every slot this
                // call reserved goes back.
                self.queued.fetch_sub(n, Ordering::AcqRel);
                return Err(stopped());
            }
            out.push(rx);
        }
        Ok(out)
    }
}

/// Queue slots held by a batch in flight; given back on drop.
struct Slots<'a>(&'a AtomicUsize, usize);

impl Drop for Slots<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(self.1, Ordering::AcqRel);
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
    scorer: &Scorer,
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
                // Given back however this batch ends, unwinding included.
                let slots = Slots(queued, live.len());
                let items: Vec<&Tokenized> = live.iter().map(|j| &j.item).collect();
                let t0 = Instant::now();
                // A panic in the forward pass (a kernel bug, an unforeseen shape) fails this
                // batch, not the model: the thread, its device lease and its queue live on.
                let result = catch_unwind(AssertUnwindSafe(|| scorer(prm, &items))).unwrap_or_else(
                    |panic| {
                        stats.panics.fetch_add(1, Ordering::Relaxed);
                        let why = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "unknown cause".into());
                        Err(JudgeError::Backend(format!("inference panicked: {why}")))
                    },
                );
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
                drop(items);
                drop(slots);
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
