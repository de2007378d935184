//! Matrix products on Intel AMX (Advanced Matrix Extensions: Sapphire Rapids and later
//! Xeons) for the packed CPU forward, at f32-grade accuracy: the linear layers (`mod.rs`,
//! [`matmul`]) and attention's two products (`attention.rs`, [`product`]).
//!
//! AMX multiplies bf16 tiles into f32 accumulators, about thirty times the f32 rate of the
//! AVX-512 units on the same core. bf16 alone (8 significant bits) would move PRM scores by
//! ~1e-3, so each f32 operand is split into two bf16, `x = hi + lo` (16 significant bits, see
//! `kernels::split_bf16`), and `x·w` is computed as `hi·hi + hi·lo + lo·hi`: the "bf16x3"
//! scheme oneDNN offers for f32 work. The dropped `lo·lo` term and the split's residue leave
//! a relative error near 2^-16 per product (f32's own is 2^-24); accumulation is f32
//! throughout. Scores stay within 1e-5 of plain f32 on the benchmark (see the README).
//!
//! Layout: a weight is packed once at load into panels of 32 output columns; per 32-wide
//! slice of the input dimension a panel holds four 1 KB tiles (lo and hi of columns 0-15
//! and 16-31) in AMX's pair-interleaved ("VNNI") order. Activations are split per call into
//! rows of `hi | lo`. A micro block is 32 x 32 results (four accumulator tiles); tasks are
//! row chunks (which stay in L2 while the panels stream past) and, when rows are few, panel
//! groups, spread over rayon.
//!
//! The instructions are inline asm (Rust's AMX intrinsics are unstable); `with_tiles` is
//! the one place tile registers are configured and released.

use std::cell::RefCell;

use rayon::prelude::*;

use super::kernels::split_bf16;

/// Rows of a tile, and f32 columns of an accumulator tile.
const T: usize = 16;
/// bf16 values per tile row (64 bytes): the input-dimension step.
const KB: usize = 32;
/// u16 elements per tile.
const TILE: usize = T * KB;
/// Result rows and columns of a micro block: 2 x 2 accumulator tiles.
const MR: usize = 32;
const NR: usize = 32;
/// Rows per task at most: their split halves (rows x 4 bytes x k; 1.4 MB at k = 1408) stay
/// in the core's 2 MB L2 while every panel of the weight streams past.
const MC: usize = 256;

/// Whether this CPU has AMX-BF16 and the OS lets this process use tile registers.
pub fn available() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(detect)
}

/// For tests on AMX code: true (skip) on a CPU without AMX, saying so on stderr; with
/// `STEPKTO_REQUIRE_AMX=1` a missing AMX fails the test instead, so a machine that must
/// check these products cannot pass without running them.
#[cfg(test)]
pub(crate) fn skip_without_amx(what: &str) -> bool {
    if available() {
        return false;
    }
    if std::env::var("STEPKTO_REQUIRE_AMX").as_deref() == Ok("1") {
        panic!("STEPKTO_REQUIRE_AMX=1 but this CPU has no AMX: {what} cannot run");
    }
    eprintln!(
        "SKIPPED: no AMX on this machine, {what} checks nothing here (STEPKTO_REQUIRE_AMX=1 makes this a failure)"
    );
    true
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    let (l1, l7) = (__cpuid_count(1, 0), __cpuid_count(7, 0));
    let amx = (l7.edx >> 22) & 1 == 1 && (l7.edx >> 24) & 1 == 1; // AMX-BF16, AMX-TILE
    let osxsave = (l1.ecx >> 27) & 1 == 1;
    if !amx || !osxsave {
        return false;
    }
    let (lo, _hi): (u32, u32);
    // SAFETY: OSXSAVE is set, so xgetbv is enabled; XCR0 is register 0.
    unsafe {
        std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") _hi,
                        options(nostack, nomem, preserves_flags))
    };
    // XCR0 bits 17 and 18: the OS saves tile configuration and tile data
    if lo & (3 << 17) != 3 << 17 {
        return false;
    }
    // Linux gives a process tile state only on request (ARCH_REQ_XCOMP_PERM for
    // XFEATURE_XTILEDATA); the permission covers all of its threads.
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: a plain syscall with integer arguments.
    unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        ) == 0
    }
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// A cache line of bf16 values. Tile rows are read 64 bytes at a time: a row that straddles
/// two lines costs two, which halved the product rate when buffers were plain `Vec<u16>`.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([u16; KB]);

/// A zeroed, cache-line-aligned buffer of u16.
#[derive(Default)]
struct Lines(Vec<Line>);

impl Lines {
    /// Grow to at least `n` values (new values are zero).
    fn reserve(&mut self, n: usize) {
        let lines = n.div_ceil(KB);
        if self.0.len() < lines {
            self.0.resize(lines, Line([0; KB]));
        }
    }

    fn as_slice(&self) -> &[u16] {
        // SAFETY: Line is 32 u16 with no padding.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() * KB) }
    }

    fn as_mut_slice(&mut self) -> &mut [u16] {
        // SAFETY: as above, uniquely borrowed.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), self.0.len() * KB) }
    }
}

/// A matrix `(n, k)` used transposed as the right operand, `x · wᵀ` (a `Linear` weight
/// `(out, in)`, or an item's keys), packed for [`matmul`] and [`product`].
pub struct Packed {
    n: usize,
    k: usize,
    /// `k` rounded up to [`KB`].
    kp: usize,
    data: Lines,
}

impl Packed {
    /// Pack `w`, `n` rows (outputs) of `k` (inputs), row-major.
    pub fn new(w: &[f32], n: usize, k: usize) -> Packed {
        assert_eq!(w.len(), n * k);
        Packed::from_rows(n, k, |j, row| row.copy_from_slice(&w[j * k..(j + 1) * k]))
    }

    /// Pack the `n x k` matrix whose row `j` `fill(j, row)` writes (all `k` values). Panels
    /// are packed in parallel (a 7B model's weights are billions of values).
    pub fn from_rows(n: usize, k: usize, fill: impl Fn(usize, &mut [f32]) + Sync) -> Packed {
        let kp = k.next_multiple_of(KB);
        let kbs = kp / KB;
        let per_panel = kbs * 4 * TILE;
        let mut lines = Lines::default();
        lines.reserve(n.div_ceil(NR) * per_panel);
        let data = &mut lines.as_mut_slice()[..n.div_ceil(NR) * per_panel];
        data.par_chunks_mut(per_panel)
            .enumerate()
            .for_each(|(panel, data)| {
                let mut row = vec![0f32; k];
                let (mut hi, mut lo) = (vec![0u16; k], vec![0u16; k]);
                for j in panel * NR..n.min((panel + 1) * NR) {
                    fill(j, &mut row);
                    split_bf16(&row, &mut hi, &mut lo);
                    let (half, col) = ((j % NR) / T, j % T);
                    for i in 0..k {
                        // tile row i/2 within the block holds the pair (i even, i odd) per
                        // column
                        let tile = ((i / KB) * 4 + half) * TILE;
                        let at = tile + (i % KB) / 2 * KB + col * 2 + i % 2;
                        data[at] = lo[i];
                        data[at + 2 * TILE] = hi[i];
                    }
                }
            });
        Packed {
            n,
            k,
            kp,
            data: lines,
        }
    }
}

/// Left-operand rows split for AMX: each row `hi | lo`, `kp` values each, with zero rows up
/// to a whole micro block and zero columns up to `kp`, so that whole tiles can be read.
#[derive(Default)]
pub struct Split {
    lines: Lines,
    m: usize,
    kp: usize,
}

impl Split {
    /// Hold `m` rows of `k` values; row `i` is `row(i)`. In parallel on rayon with `par`.
    pub fn fill<'a>(
        &mut self,
        m: usize,
        k: usize,
        row: impl Fn(usize) -> &'a [f32] + Sync,
        par: bool,
    ) {
        let kp = k.next_multiple_of(KB);
        let rows = m.div_ceil(MR) * MR;
        self.lines.reserve(rows * 2 * kp);
        (self.m, self.kp) = (m, kp);
        let one = |(i, r): (usize, &mut [u16])| {
            let (hi, lo) = r.split_at_mut(kp);
            if i < m {
                split_bf16(row(i), &mut hi[..k], &mut lo[..k]);
                hi[k..].fill(0);
                lo[k..].fill(0);
            } else {
                r.fill(0);
            }
        };
        let buf = &mut self.lines.as_mut_slice()[..rows * 2 * kp];
        if par {
            buf.par_chunks_mut(2 * kp)
                .with_min_len(16)
                .enumerate()
                .for_each(one);
        } else {
            buf.chunks_mut(2 * kp).enumerate().for_each(one);
        }
    }
}

thread_local! {
    /// The split activations of the last product on this thread (the device's inference
    /// thread), kept so that the next one reuses the memory.
    static SPLIT: RefCell<Split> = RefCell::new(Split::default());
}

/// A pointer that rayon tasks share; each task touches its own rows and columns.
#[derive(Clone, Copy)]
struct Shared<P>(P);
// SAFETY: the split rows and weights are only read, and each task writes rows and columns of
// the destination that no other task touches.
unsafe impl<P> Send for Shared<P> {}
unsafe impl<P> Sync for Shared<P> {}

impl<P: Copy> Shared<P> {
    /// The pointer (a method, so that closures capture the `Shared`, not the field).
    fn get(self) -> P {
        self.0
    }
}

/// `dst (m x n, row stride dst_rs) (+)= x (m x k, contiguous) · wᵀ` on AMX, where `m` is
/// `x.len() / k`, over rayon. With `accumulate` the product adds to what `dst` holds. Panics
/// when AMX is not [`available`].
pub fn matmul(x: &[f32], w: &Packed, dst: &mut [f32], dst_rs: usize, accumulate: bool) {
    let (n, k) = (w.n, w.k);
    let m = x.len() / k;
    assert!(x.len() == m * k && dst_rs >= n);
    if m == 0 || n == 0 {
        return;
    }
    assert!(dst.len() >= (m - 1) * dst_rs + n);
    assert!(available(), "AMX products on a CPU without AMX");
    let threads = rayon::current_num_threads();
    let panels = n.div_ceil(NR);
    // row chunks: whole micro blocks, at most MC rows, at least one per thread when the rows
    // allow; when they do not, the panels are split too
    let blocks = m.div_ceil(MR);
    let chunks = m.div_ceil(MC).next_multiple_of(threads).min(blocks);
    let chunk = blocks.div_ceil(chunks) * MR;
    let chunks = m.div_ceil(chunk);
    let groups = if chunks >= threads {
        1
    } else {
        (threads / chunks).min(panels)
    };
    let per_group = panels.div_ceil(groups);
    // taken out for the call (not borrowed), so that a product started by a task this thread
    // picks up while it waits on rayon finds no borrow in place
    let mut split = SPLIT.take();
    split.fill(m, k, |i| &x[i * k..(i + 1) * k], true);
    let (a, d) = (&split, Shared(dst.as_mut_ptr()));
    (0..chunks * groups).into_par_iter().for_each(|t| {
        let (c, g) = (t / groups, t % groups);
        let rows = c * chunk..((c + 1) * chunk).min(m);
        let ps = g * per_group..((g + 1) * per_group).min(panels);
        with_tiles(|tiles| {
            // SAFETY: the task writes rows `rows` x the columns of panels `ps` of `dst`,
            // which the asserts above put inside it, and no other task writes them.
            unsafe { blocks_of(tiles, a, rows, w, ps, 0, 0..n, d.get(), dst_rs, accumulate) }
        });
    });
    SPLIT.set(split);
}

/// Proof that this thread's tile registers are configured (see [`with_tiles`]).
pub struct Tiles(std::marker::PhantomData<*const ()>);

/// Run `f` with the tile registers configured on this thread, and release them after (so
/// the kernel need not save tile state on context switches). Panics without AMX.
pub fn with_tiles<R>(f: impl FnOnce(&Tiles) -> R) -> R {
    assert!(available(), "AMX products on a CPU without AMX");
    // SAFETY: AMX is available.
    unsafe { tiles::configure() };
    let r = f(&Tiles(std::marker::PhantomData));
    // SAFETY: as above.
    unsafe { tiles::release() };
    r
}

/// `dst (a's rows x cols) (+)= a · w[cols, inputs from block kb0]ᵀ` on this thread: the
/// output columns `cols` of `w` (`cols.start` a multiple of 32), over `a`'s width of `w`'s
/// inputs starting at input `32 kb0`. `dst` has row stride `dst_rs`; its column 0 is
/// column `cols.start`.
#[allow(clippy::too_many_arguments)]
pub fn product(
    tiles: &Tiles,
    a: &Split,
    w: &Packed,
    cols: std::ops::Range<usize>,
    kb0: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
) {
    let m = a.m;
    assert!(cols.start.is_multiple_of(NR) && cols.end <= w.n && cols.len() <= dst_rs);
    assert!(kb0 * KB + a.kp <= w.kp);
    if m == 0 || cols.is_empty() {
        return;
    }
    assert!(dst.len() >= (m - 1) * dst_rs + cols.len());
    let ps = cols.start / NR..cols.end.div_ceil(NR);
    // SAFETY: rows < m and the columns of `cols` at dst_rs are inside `dst` (asserted).
    unsafe {
        blocks_of(
            tiles,
            a,
            0..m,
            w,
            ps,
            kb0,
            cols.clone(),
            dst.as_mut_ptr().wrapping_sub(cols.start),
            dst_rs,
            accumulate,
        )
    }
}

/// Every micro block of rows `rows` of `a` and panels `ps` of `w`, over `a`'s width of `w`'s
/// inputs from block `kb0`. Only output columns inside `cols` are written, at
/// `dst[row * dst_rs + column]`.
///
/// # Safety
/// `dst` must be writable at those places (it may point before its allocation when
/// `cols.start > 0`: only `cols` columns are touched).
#[allow(clippy::too_many_arguments)]
unsafe fn blocks_of(
    _tiles: &Tiles,
    a: &Split,
    rows: std::ops::Range<usize>,
    w: &Packed,
    ps: std::ops::Range<usize>,
    kb0: usize,
    cols: std::ops::Range<usize>,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
) {
    let kbs = w.kp / KB;
    let kbn = a.kp / KB;
    let mut edge = [0f32; MR * NR];
    let (ab, wb) = (a.lines.as_slice().as_ptr(), w.data.as_slice().as_ptr());
    // SAFETY (whole body): offsets stay inside the split rows (padded to whole blocks), the
    // packed panels (kb0 + kbn <= kbs) and, for dst, the caller's contract.
    unsafe {
        for p in ps {
            let b = wb.add((p * kbs + kb0) * 4 * TILE);
            let c0 = p * NR;
            let (from, to) = (cols.start.max(c0) - c0, (cols.end - c0).min(NR));
            for r in rows.clone().step_by(MR) {
                let ar = ab.add(r * 2 * a.kp);
                let live = (a.m - r).min(MR);
                if live == MR && from == 0 && to == NR {
                    let c = dst.wrapping_add(r * dst_rs + c0);
                    tiles::block(ar, a.kp, b, kbn, c, dst_rs, accumulate);
                    continue;
                }
                // an edge block goes through a full 32 x 32 scratch
                for i in 0..MR {
                    for j in 0..NR {
                        edge[i * NR + j] = if accumulate && i < live && (from..to).contains(&j) {
                            *dst.wrapping_add((r + i) * dst_rs + c0 + j)
                        } else {
                            0.0
                        };
                    }
                }
                tiles::block(ar, a.kp, b, kbn, edge.as_mut_ptr(), NR, true);
                for i in 0..live {
                    for j in from..to {
                        *dst.wrapping_add((r + i) * dst_rs + c0 + j) = edge[i * NR + j];
                    }
                }
            }
        }
    }
}

/// The AMX instructions. Tile registers: 0-3 accumulate the 2 x 2 result tiles, 4-5 hold
/// activation rows 0-15 / 16-31, 6-7 weight columns 0-15 / 16-31.
#[cfg(target_arch = "x86_64")]
mod tiles {
    use std::arch::asm;

    /// The tile shapes: palette 1, eight tiles of 16 rows x 64 bytes.
    #[repr(C, align(64))]
    struct Config {
        palette: u8,
        start_row: u8,
        reserved: [u8; 14],
        colsb: [u16; 16],
        rows: [u8; 16],
    }

    static CONFIG: Config = Config {
        palette: 1,
        start_row: 0,
        reserved: [0; 14],
        colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
        rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
    };

    /// Load the tile shapes on this thread.
    ///
    /// # Safety
    /// AMX must be available (`super::available`).
    pub unsafe fn configure() {
        unsafe {
            asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly, preserves_flags))
        };
    }

    /// Give the tile state back (so the kernel need not save it on context switches).
    ///
    /// # Safety
    /// AMX must be available.
    pub unsafe fn release() {
        unsafe { asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
    }

    /// `c (32 x 32 f32, row stride cs elements) (+)= a · b` over `kbs` input blocks: `a` is
    /// 32 split rows (`hi | lo`, `kp` each), `b` a packed panel.
    ///
    /// # Safety
    /// Tiles configured; `a`, `b` and `c` cover what is described.
    pub unsafe fn block(
        a: *const u16,
        kp: usize,
        b: *const u16,
        kbs: usize,
        c: *mut f32,
        cs: usize,
        load: bool,
    ) {
        let cs = cs * 4;
        let sa = kp * 4; // bytes per split row
        unsafe {
            let c2 = c.cast::<u8>().add(16 * cs);
            if load {
                asm!(
                    "tileloadd tmm0, [{c} + {cs}*1]",
                    "tileloadd tmm1, [{c} + {cs}*1 + 64]",
                    "tileloadd tmm2, [{c2} + {cs}*1]",
                    "tileloadd tmm3, [{c2} + {cs}*1 + 64]",
                    c = in(reg) c, c2 = in(reg) c2, cs = in(reg) cs,
                    options(nostack, readonly, preserves_flags)
                );
            } else {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    options(nostack, nomem, preserves_flags)
                );
            }
            let a2 = a.cast::<u8>().add(16 * sa);
            // per input block: hi·lo, hi·hi, then lo·hi (the weight's hi tiles stay loaded); each
            // load sits between products so that it waits less on the products still reading
            // the tile it replaces (tile registers are not renamed)
            asm!(
                "2:",
                "tileloadd tmm4, [{a} + {sa}*1]",
                "tileloadd tmm6, [{b} + {s64}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b} + {s64}*1 + 1024]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a2} + {sa}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "tileloadd tmm6, [{b} + {s64}*1 + 2048]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b} + {s64}*1 + 3072]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "tileloadd tmm4, [{al} + {sa}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{al2} + {sa}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a}, 64",
                "add {a2}, 64",
                "add {al}, 64",
                "add {al2}, 64",
                "add {b}, 4096",
                "dec {n}",
                "jnz 2b",
                a = inout(reg) a => _,
                a2 = inout(reg) a2 => _,
                al = inout(reg) a.add(kp) => _,
                al2 = inout(reg) a2.add(2 * kp) => _,
                b = inout(reg) b => _,
                n = inout(reg) kbs => _,
                sa = in(reg) sa,
                s64 = in(reg) 64usize,
                options(nostack, readonly)
            );
            asm!(
                "tilestored [{c} + {cs}*1], tmm0",
                "tilestored [{c} + {cs}*1 + 64], tmm1",
                "tilestored [{c2} + {cs}*1], tmm2",
                "tilestored [{c2} + {cs}*1 + 64], tmm3",
                c = in(reg) c, c2 = in(reg) c2, cs = in(reg) cs,
                options(nostack, preserves_flags)
            );
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod tiles {
    pub unsafe fn configure() {
        unreachable!("AMX is x86-64 only")
    }
    pub unsafe fn release() {}
    pub unsafe fn block(
        _: *const u16,
        _: usize,
        _: *const u16,
        _: usize,
        _: *mut f32,
        _: usize,
        _: bool,
    ) {
        unreachable!("AMX is x86-64 only")
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernels::test_values as values;
    use super::*;

    /// Against an f64 product, at edges in every dimension (rows, outputs and inputs not
    /// multiples of the tile sizes), into a strided destination, replacing and accumulating:
    /// the error stays at bf16x3's ~2^-16 relative to the sum of |terms|.
    #[test]
    fn amx_product_matches_f64() {
        if skip_without_amx("amx_product_matches_f64") {
            return;
        }
        for (m, n, k) in [(45, 50, 70), (300, 96, 512), (1, 33, 31), (64, 32, 32)] {
            let x = values(m * k, 1);
            let w = values(n * k, 2);
            let packed = Packed::new(&w, n, k);
            let rs = n + 5;
            let init = values(m * rs, 3);
            for accumulate in [false, true] {
                let mut dst = init.clone();
                matmul(&x, &packed, &mut dst, rs, accumulate);
                for i in 0..m {
                    for j in 0..n {
                        let (mut want, mut size) = (0f64, 0f64);
                        for t in 0..k {
                            let p = x[i * k + t] as f64 * w[j * k + t] as f64;
                            want += p;
                            size += p.abs();
                        }
                        if accumulate {
                            want += init[i * rs + j] as f64;
                        }
                        let err = (dst[i * rs + j] as f64 - want).abs();
                        assert!(err <= 3e-5 * size + 1e-6, "({m},{n},{k}) [{i},{j}]: {err}");
                    }
                    // the gap past n in each row is untouched
                    assert_eq!(
                        dst[i * rs + n..(i + 1) * rs],
                        init[i * rs + n..(i + 1) * rs]
                    );
                }
            }
        }
    }
}
