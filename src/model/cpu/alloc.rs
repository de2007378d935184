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
//!
//! [`SplitAlloc`], the binary's global allocator: blocks under [`LARGE`] from mimalloc, the
//! rest from glibc tuned as above. The server's requests are thousands of small short-lived
//! blocks on several threads (parsed JSON, parser nodes, cache keys), where glibc's arenas
//! cost a quarter of a one-sample reward request (the OpenRLHF pattern ran 25-30% faster on
//! mimalloc); training's blocks are megabytes, where mimalloc alone made a KTO step up to 10%
//! slower and its peak memory 12-17% larger (it gives freed segments back and faults them in
//! again). Each half serves what it is good at.

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

/// Blocks of this many bytes or more come from glibc; smaller ones from mimalloc.
pub const LARGE: usize = 256 << 10;

/// The global allocator of the `stepkto` binary (see the module header).
pub struct SplitAlloc;

// SAFETY: every block is served and released by the same allocator: the choice depends only
// on the layout's size, and `GlobalAlloc` callers pass `dealloc` and `realloc` the layout
// the block was allocated (or last reallocated) with, so the size picks the same side again.
// A `realloc` that crosses `LARGE` moves the block to the other side by allocating there,
// copying the smaller of the two sizes and releasing the old block on its own side. Both
// allocators honour any alignment `Layout` allows.
unsafe impl std::alloc::GlobalAlloc for SplitAlloc {
    unsafe fn alloc(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: the caller's contract for `alloc` (non-zero size) is passed on unchanged.
        unsafe {
            if layout.size() >= LARGE {
                std::alloc::System.alloc(layout)
            } else {
                mimalloc::MiMalloc.alloc(layout)
            }
        }
    }

    unsafe fn alloc_zeroed(&self, layout: std::alloc::Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        unsafe {
            if layout.size() >= LARGE {
                std::alloc::System.alloc_zeroed(layout)
            } else {
                mimalloc::MiMalloc.alloc_zeroed(layout)
            }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: std::alloc::Layout) {
        // SAFETY: `ptr` came from the side this same size chose in `alloc` / `realloc`.
        unsafe {
            if layout.size() >= LARGE {
                std::alloc::System.dealloc(ptr, layout)
            } else {
                mimalloc::MiMalloc.dealloc(ptr, layout)
            }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: std::alloc::Layout, new_size: usize) -> *mut u8 {
        let (was_large, is_large) = (layout.size() >= LARGE, new_size >= LARGE);
        // SAFETY: same side: that allocator's own realloc, whose contract the caller meets.
        // Crossing: `new_layout` is valid (the caller guarantees `new_size`, rounded up to
        // the alignment, does not overflow isize), the new block is at least
        // `min(old, new)` bytes and distinct from the old one, and the old block is released
        // with its own layout on its own side.
        unsafe {
            if was_large == is_large {
                return if is_large {
                    std::alloc::System.realloc(ptr, layout, new_size)
                } else {
                    mimalloc::MiMalloc.realloc(ptr, layout, new_size)
                };
            }
            let new_layout =
                std::alloc::Layout::from_size_align_unchecked(new_size, layout.align());
            let new = self.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
            new
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{LARGE, SplitAlloc};
    use std::alloc::{GlobalAlloc, Layout};

    /// Blocks keep their bytes and alignment through reallocations on each side and across
    /// `LARGE` both ways, and are released on the side that holds them (a wrong side would
    /// abort the test process in glibc's or mimalloc's free).
    #[test]
    fn split_reallocs_keep_bytes_across_the_threshold() {
        let a = SplitAlloc;
        for align in [8usize, 64, 4096] {
            let sizes = [
                100,
                LARGE - 1,
                LARGE,
                3 * LARGE,
                1000,
                16,
                2 * LARGE + 7,
                LARGE - 8,
            ];
            let layout = Layout::from_size_align(sizes[0], align).unwrap();
            // SAFETY: non-zero sizes; every pointer is used within its current size and
            // released once with its current layout.
            unsafe {
                let mut p = a.alloc(layout);
                assert!(!p.is_null());
                let mut size = sizes[0];
                for i in 0..size {
                    *p.add(i) = (i % 251) as u8;
                }
                for &next in &sizes[1..] {
                    let old = Layout::from_size_align(size, align).unwrap();
                    p = a.realloc(p, old, next);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "align {align} at {next}");
                    for i in 0..size.min(next) {
                        assert_eq!(*p.add(i), (i % 251) as u8, "byte {i}: {size} -> {next}");
                    }
                    for i in size.min(next)..next {
                        *p.add(i) = (i % 251) as u8;
                    }
                    size = next;
                }
                a.dealloc(p, Layout::from_size_align(size, align).unwrap());
                let z = Layout::from_size_align(LARGE + 1, align).unwrap();
                let q = a.alloc_zeroed(z);
                assert!((0..z.size()).all(|i| *q.add(i) == 0));
                a.dealloc(q, z);
            }
        }
    }
}
