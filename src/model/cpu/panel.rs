//! f32 matrix products against weights packed once at load, on AVX-512: the sampler's
//! products (`decode.rs`), whose left operand is a decoding step's few rows.
//!
//! Why not `gemm` there: it packs both operands on every call. For a step of 48 rows that
//! repacking of the whole weight matrix (90 MB per step on a 23M-parameter model) took as
//! long as the arithmetic. Here a `Linear` weight `(out, in)` is laid out once into panels of
//! [`NR`] output columns, each panel `in x NR` with a row of NR values per input index, so a
//! micro block streams its panel front to back; the activations are read where they lie.
//!
//! The micro block is [`MR`] x [`NR`] results in 24 zmm accumulators: per input index, two
//! loads of the panel row and one broadcast per result row, 24 fused multiply-adds. The input
//! dimension is summed in blocks of `kernels::K_BLOCK`, each block from fresh registers and
//! then added into `dst` in order, as `kernels::matmul` does: the same rounding behaviour,
//! which keeps greedy decoding on transformers' tokens. Tasks are (row chunk, panel group)
//! pairs over rayon; a row chunk of [`MC`] rows stays in L2 while its panels stream past.
//!
//! Only AVX-512 machines pack (Intel since Skylake-SP, AMD since Zen 4); elsewhere the
//! caller keeps the plain weight and `gemm`.

use rayon::prelude::*;

use super::kernels::K_BLOCK;

/// Output columns per panel: two zmm registers.
pub const NR: usize = 32;
/// Result rows of a micro block.
pub const MR: usize = 12;
/// Rows per task at most.
const MC: usize = 192;

/// Whether this CPU runs the packed products.
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// A `(out, in)` weight as `out.div_ceil(NR)` panels of `in x NR` (the last zero-padded).
pub struct Panels {
    out: usize,
    inp: usize,
    data: Vec<f32>,
}

impl Panels {
    /// Pack the row-major `(out, inp)` matrix `w`.
    pub fn new(w: &[f32], out: usize, inp: usize) -> Panels {
        assert_eq!(w.len(), out * inp);
        let panels = out.div_ceil(NR);
        let mut data = vec![0f32; panels * inp * NR];
        data.par_chunks_mut(inp * NR)
            .enumerate()
            .for_each(|(p, panel)| {
                for j in 0..NR.min(out - p * NR) {
                    let src = &w[(p * NR + j) * inp..][..inp];
                    for (k, &v) in src.iter().enumerate() {
                        panel[k * NR + j] = v;
                    }
                }
            });
        Panels { out, inp, data }
    }

    pub fn panels(&self) -> usize {
        self.out.div_ceil(NR)
    }
}

/// `dst (rows x out, row stride dst_rs) (+)= x (rows x in) · wᵀ` with `accumulate` adding
/// onto what `dst` holds. `available()` must have said yes (checked: a caller's bug).
pub fn matmul(
    x: &[f32],
    w: &Panels,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    threads: usize,
) {
    let (out, inp) = (w.out, w.inp);
    let rows = x.len() / inp;
    assert!(available(), "panel products need AVX-512");
    assert!(x.len() == rows * inp && dst_rs >= out);
    if rows == 0 {
        return;
    }
    assert!(dst.len() >= (rows - 1) * dst_rs + out);
    // tasks: row chunks x panel groups, about two per thread when there is one row chunk
    let chunks = rows.div_ceil(MC);
    let groups = (2 * threads.max(1)).div_ceil(chunks).clamp(1, w.panels());
    let per = w.panels().div_ceil(groups);
    let dst_at = dst.as_mut_ptr() as usize;
    (0..chunks * groups).into_par_iter().for_each(|t| {
        let (c, g) = (t / groups, t % groups);
        let r = c * MC..rows.min((c + 1) * MC);
        let panels = g * per..w.panels().min((g + 1) * per);
        for p in panels {
            let cols = NR.min(out - p * NR);
            for k0 in (0..inp).step_by(K_BLOCK) {
                let kc = K_BLOCK.min(inp - k0);
                let add = accumulate || k0 > 0;
                let b = &w.data[(p * inp + k0) * NR..][..kc * NR];
                for i in r.clone().step_by(MR) {
                    let m = MR.min(r.end - i);
                    let a = &x[i * inp + k0..(i + m - 1) * inp + k0 + kc];
                    let d = (dst_at as *mut f32).wrapping_add(i * dst_rs + p * NR);
                    // SAFETY: AVX-512 is present (asserted above); `a` holds m rows of kc at
                    // stride inp, `b` kc rows of NR; the m x cols block of dst at `d` lies
                    // inside `dst` (rows and columns checked above) and belongs to this
                    // task alone (tasks split rows by chunk and columns by panel).
                    let share = ((i - r.start) / MR, r.len().div_ceil(MR));
                    unsafe { block(m, a, inp, b, kc, d, dst_rs, cols, add, share) };
                }
            }
        }
    });
}

/// One `m x cols` block (m <= MR, cols <= NR), by the micro kernel for exactly m rows.
///
/// # Safety
/// AVX-512F present; `a` covers `m` rows of `kc` at stride `lda`, `b` covers `kc x NR`, and
/// `d` is writable for `m` rows of `cols` at stride `ldd`.
#[allow(clippy::too_many_arguments)]
#[cfg(target_arch = "x86_64")]
unsafe fn block(
    m: usize,
    a: &[f32],
    lda: usize,
    b: &[f32],
    kc: usize,
    d: *mut f32,
    ldd: usize,
    cols: usize,
    add: bool,
    fetch: (usize, usize),
) {
    debug_assert!(m <= MR && cols <= NR && b.len() >= kc * NR);
    debug_assert!(a.len() >= (m - 1) * lda + kc);
    let (a, b) = (a.as_ptr(), b.as_ptr());
    macro_rules! rows {
        ($($n:literal)*) => {
            match m {
                // SAFETY: the caller's contract, for exactly m rows
                $($n => unsafe { micro::<$n>(a, lda, b, kc, d, ldd, cols, add, fetch) },)*
                _ => unreachable!("at most MR rows"),
            }
        };
    }
    rows!(1 2 3 4 5 6 7 8 9 10 11 12)
}

#[cfg(not(target_arch = "x86_64"))]
#[allow(clippy::too_many_arguments)]
unsafe fn block(
    _: usize,
    _: &[f32],
    _: usize,
    _: &[f32],
    _: usize,
    _: *mut f32,
    _: usize,
    _: usize,
    _: bool,
    _: (usize, usize),
) {
    unreachable!("available() is false off x86-64")
}

/// `R x NR` results: `d (+)= a (R x kc) · b (kc x NR)`, columns `cols..NR` not written.
///
/// # Safety
/// As [`block`], with `m = R`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[allow(clippy::too_many_arguments)]
unsafe fn micro<const R: usize>(
    a: *const f32,
    lda: usize,
    b: *const f32,
    kc: usize,
    d: *mut f32,
    ldd: usize,
    cols: usize,
    add: bool,
    fetch: (usize, usize),
) {
    use std::arch::x86_64::*;
    // The weight streams from L3 (a model's layers do not fit in L2) and each k block of a
    // panel is read by every micro block of the row chunk in turn: micro block `i` of `n`
    // prefetches its share of the next k block's lines (the next block of this panel, or
    // the next panel's first, which follows it in memory), so the fetch of the next block
    // overlaps the whole chunk's work on this one rather than the first micro block's.
    let (i, n) = fetch;
    let lines = kc * NR / 16;
    let share = lines.div_ceil(n);
    let next = b.wrapping_add(kc * NR + i * share * 16);
    let share = share.min(lines.saturating_sub(i * share));
    let mut c = [[_mm512_setzero_ps(); 2]; R];
    for k in 0..kc {
        // SAFETY: k < kc, so b's row k and a's column k of each of the R rows are in range;
        // a prefetch of any address is harmless
        unsafe {
            // a line per k until the share is asked for (a share is at most 2 kc lines)
            if k < share {
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(k * 16) as *const i8);
            }
            if k + kc < share {
                _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add((k + kc) * 16) as *const i8);
            }
            let b0 = _mm512_loadu_ps(b.add(k * NR));
            let b1 = _mm512_loadu_ps(b.add(k * NR + 16));
            for (i, ci) in c.iter_mut().enumerate() {
                let av = _mm512_set1_ps(*a.add(i * lda + k));
                ci[0] = _mm512_fmadd_ps(av, b0, ci[0]);
                ci[1] = _mm512_fmadd_ps(av, b1, ci[1]);
            }
        }
    }
    let lanes = |n: usize| -> __mmask16 {
        match n {
            0 => 0,
            n if n >= 16 => 0xFFFF,
            n => (1u16 << n) - 1,
        }
    };
    let (m0, m1) = (lanes(cols), lanes(cols.saturating_sub(16)));
    for (i, ci) in c.iter().enumerate() {
        // SAFETY: row i < R of d, its first `cols` values (the masks), writable by contract
        unsafe {
            let row = d.add(i * ldd);
            let (mut v0, mut v1) = (ci[0], ci[1]);
            if add {
                v0 = _mm512_add_ps(_mm512_maskz_loadu_ps(m0, row), v0);
                v1 = _mm512_add_ps(_mm512_maskz_loadu_ps(m1, row.add(16)), v1);
            }
            _mm512_mask_storeu_ps(row, m0, v0);
            _mm512_mask_storeu_ps(row.add(16), m1, v1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernels::{matmul_wt, test_values};
    use super::*;

    /// Packed products equal `kernels::matmul` (the same blocks of K_BLOCK summed in the same
    /// order) on shapes with partial panels, partial micro blocks, several row chunks and
    /// input sizes off the block size, replacing and accumulating, into a wider matrix.
    #[test]
    fn panels_equal_the_gemm_product() {
        if !available() {
            eprintln!("skipped: no AVX-512 on this CPU");
            assert!(
                std::env::var_os("STEPKTO_REQUIRE_AVX512").is_none(),
                "STEPKTO_REQUIRE_AVX512 is set but this CPU has no AVX-512"
            );
            return;
        }
        for &(rows, out, inp) in &[
            (1, 1, 1),
            (48, 768, 512),
            (13, 37, 130),
            (5, 600, 64),
            (400, 96, 300),
            (12, 32, 128),
            (25, 65, 257),
        ] {
            let x = test_values(rows * inp, 1);
            let w = test_values(out * inp, 2);
            let p = Panels::new(&w, out, inp);
            for accumulate in [false, true] {
                let rs = out + 3;
                let start = test_values(rows * rs, 3);
                let (mut got, mut want) = (start.clone(), start.clone());
                matmul(&x, &p, &mut got, rs, accumulate, 2);
                matmul_wt(&x, &w, out, &mut want, rs, accumulate, 1);
                for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                    let tol = 1e-5 * (1.0 + e.abs());
                    assert!(
                        (g - e).abs() <= tol,
                        "{rows}x{out}x{inp} acc={accumulate} at {i}: {g} vs {e}"
                    );
                }
                // the padding columns between rows are untouched
                for r in 0..rows {
                    assert_eq!(
                        &got[r * rs + out..(r + 1) * rs],
                        &start[r * rs + out..(r + 1) * rs]
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod timing {
    use super::super::kernels::{matmul_wt, test_values};
    use super::*;

    /// GFLOP/s of `gemm` (packing per call) and of the panels on a decoding step's shapes
    /// (48 rows; q/k/v, gate/up and down of the sampling benchmark's model), a prefill's,
    /// and one whose weight fits in L2 (the micro kernel's ceiling).
    #[test]
    #[ignore = "a timing probe, run by hand"]
    fn short_products() {
        if !available() {
            eprintln!("no AVX-512 on this CPU: nothing to time");
            return;
        }
        let threads = rayon::current_num_threads();
        for &(m, n, k) in &[
            (48usize, 768usize, 512usize),
            (48, 2816, 512),
            (48, 512, 1408),
            (48, 1024, 128),
            (2256, 768, 512),
        ] {
            let a = test_values(m * k, 1);
            let b = test_values(n * k, 2);
            let p = Panels::new(&b, n, k);
            let mut dst = vec![0f32; m * n];
            let reps = if m > 100 { 5 } else { 300 };
            let time = |f: &mut dyn FnMut()| {
                f();
                let t = std::time::Instant::now();
                for _ in 0..reps {
                    f()
                }
                let s = t.elapsed().as_secs_f64() / reps as f64;
                2.0 * (m * n * k) as f64 / s / 1e9
            };
            let g = time(&mut || matmul_wt(&a, &b, n, &mut dst, n, false, threads));
            let q = time(&mut || matmul(&a, &p, &mut dst, n, false, threads));
            // the same product against one of 16 weights in turn (out of L2, as the layers
            // of a model are)
            let many: Vec<Panels> = (0..16)
                .map(|s| Panels::new(&test_values(n * k, 10 + s), n, k))
                .collect();
            let mut i = 0;
            let cold = time(&mut || {
                i = (i + 1) % many.len();
                matmul(&a, &many[i], &mut dst, n, false, threads)
            });
            println!(
                "{m}x{n}x{k}: gemm {g:.1} GFLOP/s, panels {q:.1} GFLOP/s, panels from L3 {cold:.1}"
            );
        }
    }
}
