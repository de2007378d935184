//! Process-wide settings for the CPU numerics, made once at start-up.
//!
//! The allocator: glibc serves a block above its mmap threshold with a fresh mapping and
//! unmaps it on free, so every activation of a training step (megabytes each, hundreds per
//! step) was new pages the kernel had to fault in and zero: a quarter of a KTO step on two
//! cores went to page faults, zeroing and TLB shootdowns. Raising the threshold to its
//! maximum (32 MiB on 64-bit) and the trim threshold far above it keeps freed blocks in the
//! heap for the next step; blocks above 32 MiB (a large vocabulary's logits) are still
//! mapped. The thread count: see [`pin_thread_count`]. Here because both calls are
//! `unsafe` (FFI, and the environment). And the process's peak memory, which benchmarks and
//! run reports print.

/// Keep freed blocks of up to 32 MiB for reuse; call once, early (main, benchmarks).
pub fn retain_freed_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // glibc's M_TRIM_THRESHOLD and M_MMAP_THRESHOLD (malloc.h)
        const M_TRIM_THRESHOLD: libc::c_int = -1;
        const M_MMAP_THRESHOLD: libc::c_int = -3;
        // SAFETY: mallopt only changes allocator parameters; both values are in the ranges
        // glibc documents (a rejected value returns 0 and changes nothing).
        unsafe {
            libc::mallopt(M_MMAP_THRESHOLD, 32 << 20);
            libc::mallopt(M_TRIM_THRESHOLD, 1 << 30);
        }
    }
}

/// Name the thread count in `RAYON_NUM_THREADS` when the user has not: candle asks for it
/// before every product, and without the variable each ask reads the CPU topology from
/// /proc and sysfs (a few percent of a training step). The value is what rayon would pick
/// anyway. Call at the start of `main`, before any thread exists.
pub fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        // SAFETY: called first thing in `main`, while the process has one thread, so no other
        // thread reads or writes the environment concurrently.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
}

/// This process's peak resident memory in MiB (`VmHWM`; getrusage's `ru_maxrss` would carry
/// a parent's peak across exec), or NaN where /proc does not say.
pub fn peak_rss_mb() -> f64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(f64::NAN, |kb| kb / 1024.0)
}
