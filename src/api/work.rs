//! What the verify, judge and reward handlers share: guarded cache reads and writes (grouped
//! across concurrent requests: one lookup query and one write transaction serve many), and
//! running CPU-bound work on the blocking pool with a deadline and cancellation.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::AppState;
use super::error::ApiError;
use super::metrics::Metrics;
use crate::outcome::Budget;

/// Run a cache operation with a 2 s bound; a failure or timeout is logged and counted, and
/// the request goes on without the cache.
async fn guarded<T>(
    m: &Metrics,
    what: &str,
    op: impl std::future::Future<Output = Result<T, crate::store::StoreError>>,
) -> Option<T> {
    match tokio::time::timeout(Duration::from_secs(2), op).await {
        Ok(Ok(v)) => Some(v),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "{what} failed; serving without the cache");
            Metrics::add(&m.store_errors, 1);
            None
        }
        Err(_) => {
            tracing::warn!("{what} timed out; serving without the cache");
            Metrics::add(&m.store_errors, 1);
            None
        }
    }
}

/// One request's cache keys, waiting for the reader.
struct Lookup {
    keys: Vec<String>,
    found: tokio::sync::oneshot::Sender<HashMap<String, String>>,
}

/// Grouped cache reads, the twin of [`CacheWriter`]: concurrent requests' keys are looked
/// up in one query, so a burst of one-sample requests costs one database round trip
/// instead of one each.
#[derive(Default)]
pub struct CacheReader {
    tx: std::sync::OnceLock<tokio::sync::mpsc::Sender<Lookup>>,
}

/// Reader tasks: as many queries at once as the SQLite pool has connections, so one slow
/// group does not hold up the rest; each takes everything waiting when it starts.
const READERS: usize = 4;

fn reader(st: Arc<AppState>) -> tokio::sync::mpsc::Sender<Lookup> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Lookup>(GROUP_QUEUE);
    let rx = Arc::new(tokio::sync::Mutex::new(rx));
    for _ in 0..READERS {
        let (st, rx) = (st.clone(), rx.clone());
        tokio::spawn(async move {
            loop {
                let group = {
                    let mut rx = rx.lock().await;
                    let Some(first) = rx.recv().await else { return };
                    let mut group = vec![first];
                    let mut n = group[0].keys.len();
                    while n < GROUP_ROWS {
                        match rx.try_recv() {
                            Ok(l) => {
                                n += l.keys.len();
                                group.push(l);
                            }
                            Err(_) => break,
                        }
                    }
                    group
                };
                let mut all: Vec<String> =
                    group.iter().flat_map(|l| l.keys.iter().cloned()).collect();
                all.sort_unstable();
                all.dedup();
                let found = match &st.store {
                    Some(store) => guarded(&st.metrics, "cache lookup", store.get_many(&all))
                        .await
                        .unwrap_or_default(),
                    None => HashMap::new(),
                };
                for l in group {
                    let mine: HashMap<String, String> = l
                        .keys
                        .iter()
                        .filter_map(|k| found.get(k).map(|v| (k.clone(), v.clone())))
                        .collect();
                    let _ = l.found.send(mine);
                }
            }
        });
    }
    tx
}

/// Cached bodies for `keys` (empty when there is no store or it is down).
pub async fn cache_lookup(st: &Arc<AppState>, keys: &[String]) -> HashMap<String, String> {
    let Some(store) = &st.store else {
        return HashMap::new();
    };
    if keys.is_empty() {
        return HashMap::new();
    }
    let tx = st.cache_reads.tx.get_or_init(|| reader(st.clone()));
    let (found, wait) = tokio::sync::oneshot::channel();
    match tx.try_send(Lookup {
        keys: keys.to_vec(),
        found,
    }) {
        Ok(()) => match tokio::time::timeout(Duration::from_secs(3), wait).await {
            Ok(Ok(m)) => m,
            _ => HashMap::new(),
        },
        Err(_) => guarded(&st.metrics, "cache lookup", store.get_many(keys))
            .await
            .unwrap_or_default(),
    }
}

/// One request's cache rows, waiting for the writer.
struct Pending {
    kind: String,
    engine: String,
    rows: Vec<(String, String)>,
    done: tokio::sync::oneshot::Sender<()>,
}

/// Group commit for cache writes: concurrent requests hand their rows to one writer task,
/// which stores everything waiting in one transaction per (kind, engine) and then answers
/// them all. A request still returns only after its rows are stored (or the write failed
/// or took over 2 s), so a verdict it answered is a cache hit for the next request; under
/// load, one SQLite commit serves many requests instead of one each.
#[derive(Default)]
pub struct CacheWriter {
    tx: std::sync::OnceLock<tokio::sync::mpsc::Sender<Pending>>,
}

/// Rows one writer transaction takes at most.
const GROUP_ROWS: usize = 4096;
/// Requests waiting for the writer at most; beyond it a request writes its rows itself.
const GROUP_QUEUE: usize = 4096;

fn writer(st: Arc<AppState>) -> tokio::sync::mpsc::Sender<Pending> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Pending>(GROUP_QUEUE);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut group = vec![first];
            let mut rows = group[0].rows.len();
            while rows < GROUP_ROWS {
                match rx.try_recv() {
                    Ok(p) => {
                        rows += p.rows.len();
                        group.push(p);
                    }
                    Err(_) => break,
                }
            }
            let mut by_kind: HashMap<(String, String), Vec<(String, String)>> = HashMap::new();
            let mut waiting = Vec::with_capacity(group.len());
            for p in group {
                by_kind
                    .entry((p.kind, p.engine))
                    .or_default()
                    .extend(p.rows);
                waiting.push(p.done);
            }
            if let Some(store) = &st.store {
                for ((kind, engine), rows) in &by_kind {
                    guarded(
                        &st.metrics,
                        "cache write",
                        store.put_many(kind, engine, rows),
                    )
                    .await;
                }
            }
            for d in waiting {
                let _ = d.send(());
            }
        }
    });
    tx
}

/// Write fresh results to the cache (best effort), through the group-commit writer.
pub async fn cache_store(st: &Arc<AppState>, kind: &str, engine: &str, rows: &[(String, String)]) {
    let Some(store) = &st.store else { return };
    if rows.is_empty() {
        return;
    }
    let tx = st.cache_writes.tx.get_or_init(|| writer(st.clone()));
    let (done, wait) = tokio::sync::oneshot::channel();
    let p = Pending {
        kind: kind.to_string(),
        engine: engine.to_string(),
        rows: rows.to_vec(),
        done,
    };
    match tx.try_send(p) {
        Ok(()) => {
            // the writer answers after its transaction; 2 s bounds a stuck database
            let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
        }
        Err(_) => {
            guarded(
                &st.metrics,
                "cache write",
                store.put_many(kind, engine, rows),
            )
            .await;
        }
    }
}

/// Sets the flag when dropped, so abandoned requests stop their remaining work.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// The engine budget for a job started now, its time cut to what is left of the request:
/// past the deadline no job keeps computing (the time budget is the engines' only clock).
pub fn clipped(budget: &Budget, deadline: Instant) -> Budget {
    let left = deadline
        .saturating_duration_since(Instant::now())
        .as_millis() as u64;
    Budget {
        time_ms: budget.time_ms.min(left.max(1)),
        ..*budget
    }
}

/// The cores this process may use, read once: `available_parallelism` reads the cgroup
/// files on every call, which a profile of one-sample requests showed at 9% of the server's
/// time.
fn cores() -> usize {
    static CORES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *CORES.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// How long a share of a request's jobs holds its permit before it queues again (past the
/// job running when the slice ends). Longer than a typical 64-item batch's share takes
/// (about 3 ms cold), so ordinary requests still finish in arrival order; short enough that
/// a hop to the blocking pool per slice costs well under 1%.
const SLICE: Duration = Duration::from_millis(5);

/// Run `f` over `jobs` on the blocking pool, split across cores, results in job order; `f`
/// gets the request's deadline (for [`clipped`]). Each share takes one of `permits` (the
/// server's `--check-workers`) before it gets a thread, so concurrent requests queue for
/// the cores instead of each taking threads of its own, and gives it back after each
/// [`SLICE`] to queue again behind the others. Past `deadline_ms` (waiting
/// included) the request fails with 504 and the remaining jobs are skipped; if the client
/// goes away, axum drops this future and the remaining jobs are skipped too.
pub async fn on_workers<J, O, F>(
    jobs: Vec<J>,
    f: F,
    deadline_ms: u64,
    permits: &Arc<Semaphore>,
) -> Result<Vec<O>, ApiError>
where
    J: Send + 'static,
    O: Send + 'static,
    F: Fn(J, Instant) -> O + Send + Sync + 'static,
{
    let deadline = Instant::now() + Duration::from_millis(deadline_ms);
    let cancel = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = CancelOnDrop(cancel.clone());
    let n = jobs.len();
    let workers = cores().min(n.max(1));
    let chunk = n.div_ceil(workers).max(1);
    let f = Arc::new(f);
    // one future per share, all polled at once: a request's shares queue for permits side
    // by side, so requests finish in the order they came instead of all near the end
    let mut shares = Vec::new();
    let mut jobs = jobs.into_iter();
    loop {
        let part: Vec<J> = jobs.by_ref().take(chunk).collect();
        if part.is_empty() {
            break;
        }
        let (cancel, f, permits) = (cancel.clone(), f.clone(), permits.clone());
        shares.push(async move {
            let mut out = Vec::with_capacity(part.len());
            let mut rest = part.into_iter();
            // a slice at a time: a share of slow items (each up to its time budget) goes to
            // the back of the queue after each one, so it cannot hold a permit for the whole
            // request while everyone else's checks wait
            while rest.len() > 0 && !cancel.load(Ordering::Relaxed) {
                let permit = (permits.clone().acquire_owned().await)
                    .map_err(|_| ApiError::Internal("the check permits are closed".into()))?;
                let (cancel, f) = (cancel.clone(), f.clone());
                let (left, done) = tokio::task::spawn_blocking(move || {
                    let _permit = permit;
                    let t0 = Instant::now();
                    let mut done = Vec::new();
                    while t0.elapsed() < SLICE && !cancel.load(Ordering::Relaxed) {
                        let Some(j) = rest.next() else { break };
                        done.push(f(j, deadline));
                    }
                    (rest, done)
                })
                .await
                .map_err(|e| ApiError::Internal(format!("worker failed: {e}")))?;
                out.extend(done);
                rest = left;
            }
            Ok::<_, ApiError>(out)
        });
    }
    let all = async {
        let parts = futures_util::future::try_join_all(shares).await?;
        Ok::<_, ApiError>(parts.into_iter().flatten().collect::<Vec<O>>())
    };
    match tokio::time::timeout(Duration::from_millis(deadline_ms), all).await {
        Ok(Ok(v)) if v.len() == n => Ok(v),
        Ok(Ok(_)) => Err(ApiError::Timeout(deadline_ms)),
        Ok(Err(e)) => Err(e),
        Err(_) => {
            cancel.store(true, Ordering::Relaxed);
            Err(ApiError::Timeout(deadline_ms))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::sync::Semaphore;

    use super::on_workers;
    use crate::api::error::ApiError;

    /// The permits bound the blocking-pool shares of all requests together, and each
    /// request still gets its results in job order.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn permits_bound_the_shares_of_concurrent_requests() {
        let permits = Arc::new(Semaphore::new(2));
        let (now, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut reqs = Vec::new();
        for r in 0..8usize {
            let (now, most, permits) = (now.clone(), most.clone(), permits.clone());
            reqs.push(tokio::spawn(async move {
                let jobs: Vec<usize> = (0..6).map(|j| r * 100 + j).collect();
                let f = move |j: usize, _| {
                    let k = now.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(k, Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(5));
                    now.fetch_sub(1, Ordering::SeqCst);
                    j
                };
                on_workers(jobs, f, 10_000, &permits).await
            }));
        }
        for (r, h) in reqs.into_iter().enumerate() {
            let out = h.await.unwrap().unwrap();
            assert_eq!(out, (0..6).map(|j| r * 100 + j).collect::<Vec<_>>());
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=2).contains(&most), "{most} jobs ran at once");
        assert_eq!(permits.available_permits(), 2, "every permit came back");
    }

    /// A request of slow jobs gives its permit back after each slice: a one-job request
    /// that comes after it finishes long before it does, not after its last job.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_request_does_not_hold_the_permits() {
        let permits = Arc::new(Semaphore::new(1));
        let slow = {
            let permits = permits.clone();
            tokio::spawn(async move {
                let f = |j: usize, _| {
                    std::thread::sleep(Duration::from_millis(20));
                    j
                };
                let out = on_workers((0..20).collect(), f, 30_000, &permits).await;
                (out, std::time::Instant::now())
            })
        };
        // the slow request has the permit and a queue of its own shares behind it
        while permits.available_permits() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let out = on_workers(vec![7], |j: usize, _| j, 30_000, &permits).await;
        let quick_done = std::time::Instant::now();
        assert_eq!(out.unwrap(), vec![7]);
        let (out, slow_done) = slow.await.unwrap();
        assert_eq!(out.unwrap(), (0..20).collect::<Vec<_>>());
        assert!(
            slow_done > quick_done + Duration::from_millis(100),
            "the one-job request waited for the slow one's 20 jobs"
        );
    }

    /// Waiting for a permit counts against the request's deadline: 504, and the held
    /// permit's owner is unaffected.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_for_a_permit_times_out() {
        let permits = Arc::new(Semaphore::new(1));
        let held = permits.clone().acquire_owned().await.unwrap();
        let t0 = std::time::Instant::now();
        let r = on_workers(vec![1, 2, 3], |j: i32, _| j, 50, &permits).await;
        assert!(matches!(r, Err(ApiError::Timeout(50))), "{:?}", r.err());
        assert!(t0.elapsed() < Duration::from_secs(5));
        drop(held);
        let r = on_workers(vec![1, 2, 3], |j: i32, _| j * 2, 1_000, &permits).await;
        assert_eq!(r.unwrap(), vec![2, 4, 6]);
    }
}
