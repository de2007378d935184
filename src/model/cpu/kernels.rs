//! The CPU f32 building blocks of the packed decoder forward (`model::cpu`): matrix products on
//! the `gemm` crate (candle's own CPU matmul engine, called directly so that operands can be
//! strided views and results can accumulate into the residual stream), and the row kernels
//! around them (RMSNorm, rotary positions, SiLU·mul, masked softmax).
//!
//! The row kernels are written as plain loops that vectorise, and each is compiled three
//! times (baseline x86-64, AVX2+FMA, AVX-512) with the widest picked at run time: the default
//! target is SSE2 only, and a binary built for one machine must still run on another.

use gemm::Parallelism;
use rayon::prelude::*;

/// Defines `$name(args)` that runs `$body(args)` compiled for the widest vector unit the CPU
/// has. `$body` must be `#[inline(always)]` so that it is compiled inside each variant.
macro_rules! widest {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) => $body:ident) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) { $body($($arg),*) }
                match $crate::model::cpu::kernels::level() {
                    // SAFETY: `level` saw the features each variant is compiled for.
                    4 => return unsafe { v4($($arg),*) },
                    3 => return unsafe { v3($($arg),*) },
                    _ => {}
                }
            }
            $body($($arg),*)
        }
    };
}

pub(super) use widest;

/// 4: AVX-512 (F, VL, BW, DQ); 3: AVX2 + FMA; 0: neither.
#[cfg(target_arch = "x86_64")]
pub(super) fn level() -> u8 {
    use std::is_x86_feature_detected as has;
    use std::sync::OnceLock;
    static LEVEL: OnceLock<u8> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let v3 = has!("avx2") && has!("fma");
        if v3 && has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512dq") {
            4
        } else if v3 {
            3
        } else {
            0
        }
    })
}

/// A row-major matrix view: element `(r, c)` at `ptr[r * rs + c]`.
#[derive(Clone, Copy)]
pub struct View {
    pub ptr: *const f32,
    pub rs: usize,
}

/// The right operand of [`matmul`], a row-major view either way.
#[derive(Clone, Copy)]
pub enum Rhs {
    /// `k x n` as stored.
    Rows(View),
    /// `n x k`, used as its transpose: a Hugging Face `Linear` weight is `(out, in)`, and
    /// `x · Wᵀ` reads it as stored.
    Transposed(View),
}

impl Rhs {
    fn view(self) -> View {
        match self {
            Rhs::Rows(v) | Rhs::Transposed(v) => v,
        }
    }
}

/// The longest run of products summed in one register chain. gemm sums up to 512 (its `kc`)
/// before adding into `dst`; transformers' f32 products on an AVX-512 EPYC (MKL) round every 128,
/// and a f32 chain's error grows with its length. Measured on 2000 x 704 products against
/// float64 (mean |error|, k = 256 / 704 / 1792): one gemm call 1.08e-6 / - / -, blocks of 128
/// 0.81e-6 / 1.40e-6 / 2.39e-6, torch 0.81e-6 / 1.65e-6 / 2.80e-6. On a weight-sensitive PRM
/// this was the larger part of the gap to transformers' accuracy (issue 9, class 6).
pub const K_BLOCK: usize = 128;

/// Left operands of at most this many rows are split into one column chunk per thread.
const SHORT: usize = 128;

/// `dst (m x n, row stride dst_rs) (+)= a (m x k) · b`. With `accumulate` the product is
/// added to what `dst` holds (the residual stream, or a bias written first). `threads > 1`
/// splits the columns over rayon. `k` is summed in blocks of [`K_BLOCK`], each added into
/// `dst` in order.
///
/// # Safety
/// `a` must cover `m x k` elements at its stride and `b` its `k x n` (or `n x k`), `dst` must
/// cover `m x n` at `dst_rs` and must not overlap either operand.
#[allow(clippy::too_many_arguments)]
pub unsafe fn matmul(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    a: View,
    b: Rhs,
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    // Columns split here rather than by gemm's own rayon mode: that one forks and joins once
    // per call, which is once per k block, and cost small products a quarter of their speed.
    // Four chunks per thread balance the load, but gemm repacks the left operand for each
    // chunk (and k block); for a short left operand (a decoding step's few rows) that
    // repacking outweighs the product, so it gets one chunk per thread.
    let per_thread = if m <= SHORT { 1 } else { 4 };
    let chunk = n.div_ceil(threads.max(1) * per_thread).next_multiple_of(16);
    if threads <= 1 || chunk >= n {
        // SAFETY: the caller's contract.
        return unsafe { k_blocks(m, n, k, dst, dst_rs, accumulate, a, b) };
    }
    // raw pointers are not Send; the column chunks below are disjoint
    let (dst, a_ptr, a_rs) = (dst as usize, a.ptr as usize, a.rs);
    let (b_ptr, b_rs, rows) = (
        b.view().ptr as usize,
        b.view().rs,
        matches!(b, Rhs::Rows(_)),
    );
    (0..n.div_ceil(chunk)).into_par_iter().for_each(|c| {
        let (j0, b_ptr) = (c * chunk, b_ptr as *const f32);
        // SAFETY: columns j0.. of a `k x n` (or rows j0.. of an `n x k`) operand, j0 < n.
        let b = if rows {
            Rhs::Rows(View {
                ptr: unsafe { b_ptr.add(j0) },
                rs: b_rs,
            })
        } else {
            Rhs::Transposed(View {
                ptr: unsafe { b_ptr.add(j0 * b_rs) },
                rs: b_rs,
            })
        };
        let a = View {
            ptr: a_ptr as *const f32,
            rs: a_rs,
        };
        // SAFETY: columns j0..j0+w of `dst` belong to this chunk alone; the caller's contract
        // covers the rest.
        unsafe {
            k_blocks(
                m,
                chunk.min(n - j0),
                k,
                (dst as *mut f32).add(j0),
                dst_rs,
                accumulate,
                a,
                b,
            )
        }
    });
}

/// `dst (rows x out, row stride dst_rs) (+)= x (rows x inp) · wᵀ` for the row-major
/// `(out, inp)` weight `w` of a `Linear`: [`matmul`] on slices, their sizes checked.
pub fn matmul_wt(
    x: &[f32],
    w: &[f32],
    out: usize,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    threads: usize,
) {
    let inp = w.len() / out.max(1);
    let rows = x.len() / inp.max(1);
    assert!(w.len() == out * inp && x.len() == rows * inp && dst_rs >= out);
    assert!(rows == 0 || dst.len() >= (rows - 1) * dst_rs + out);
    let (a, b) = (
        View {
            ptr: x.as_ptr(),
            rs: inp,
        },
        View {
            ptr: w.as_ptr(),
            rs: inp,
        },
    );
    // SAFETY: x is rows x inp, w is out x inp, dst covers rows x out at dst_rs (all checked
    // above) and, being a `&mut`, overlaps neither.
    unsafe {
        matmul(
            rows,
            out,
            inp,
            dst.as_mut_ptr(),
            dst_rs,
            accumulate,
            a,
            Rhs::Transposed(b),
            threads,
        )
    }
}

/// [`matmul`] on one thread, `k` in blocks of [`K_BLOCK`].
///
/// # Safety
/// As [`matmul`].
#[allow(clippy::too_many_arguments)]
unsafe fn k_blocks(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    a: View,
    b: Rhs,
) {
    // gemm takes the right operand as (column stride, row stride) of `k x n`
    let (b, b_cs, b_rs) = match b {
        Rhs::Rows(v) => (v.ptr, 1, v.rs),
        Rhs::Transposed(v) => (v.ptr, v.rs, 1),
    };
    // SAFETY: the caller's contract, with a's column stride 1.
    unsafe {
        strided_blocks(
            m,
            n,
            k,
            dst,
            dst_rs,
            accumulate,
            (a.ptr, a.rs, 1),
            (b, b_rs, b_cs),
        )
    }
}

/// `dst (+)= a · b` for operands given as (pointer, row stride, column stride), `k` summed in
/// blocks of [`K_BLOCK`] each added into `dst` in order, on this thread: the one call into
/// `gemm` that [`matmul`] and `product::product` share.
///
/// # Safety
/// `a` must cover `m x k` and `b` `k x n` at their strides, `dst` `m x n` at `dst_rs`, and
/// `dst` must not overlap either operand.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn strided_blocks(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    (a, a_rs, a_cs): (*const f32, usize, usize),
    (b, b_rs, b_cs): (*const f32, usize, usize),
) {
    // k = 0 still runs once: without `accumulate` it must write zeros
    for k0 in (0..k.div_ceil(K_BLOCK).max(1)).map(|i| i * K_BLOCK) {
        let len = K_BLOCK.min(k - k0);
        // SAFETY: the caller's contract; k0 + len <= k, so the block lies inside both
        // operands, at column k0 of `a` and row k0 of `b`.
        unsafe {
            gemm::gemm(
                m,
                n,
                len,
                dst,
                1,
                dst_rs as isize,
                accumulate || k0 > 0,
                a.add(k0 * a_cs),
                a_cs as isize,
                a_rs as isize,
                b.add(k0 * b_rs),
                b_cs as isize,
                b_rs as isize,
                1.0,
                1.0,
                false,
                false,
                false,
                Parallelism::None,
            )
        }
    }
}

widest! {
    /// RMSNorm of each `w.len()`-wide row of `x` into `out`: `x / sqrt(mean(x²) + eps) * w`.
    pub fn rms_norm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) => rms_norm_body
}

#[inline(always)]
fn rms_norm_body(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let h = w.len();
    for (xr, or) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let ss = lanes(xr, 0.0, |a, b| a + b * b, |a, b| a + b);
        let inv = 1.0 / (ss / h as f32 + eps).sqrt();
        for ((o, &v), &g) in or.iter_mut().zip(xr).zip(w) {
            *o = v * inv * g;
        }
    }
}

widest! {
    /// Each `x` as a sum of two bf16 (`hi + lo`, both rounded to nearest even): `hi` carries
    /// the top 8 significant bits, `lo` the next 8, so `hi + lo` is within 2^-17 of `x`
    /// relatively. The AMX products (`amx.rs`) multiply such pairs.
    pub fn split_bf16(x: &[f32], hi: &mut [u16], lo: &mut [u16]) => split_bf16_body
}

#[inline(always)]
fn split_bf16_body(x: &[f32], hi: &mut [u16], lo: &mut [u16]) {
    for ((&v, h), l) in x.iter().zip(hi.iter_mut()).zip(lo.iter_mut()) {
        let top = bf16(v);
        *h = top;
        *l = bf16(v - f32::from_bits((top as u32) << 16));
    }
}

/// `x` rounded to bf16, to nearest even (finite inputs; an infinity stays one).
#[inline(always)]
fn bf16(x: f32) -> u16 {
    let b = x.to_bits();
    (b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

widest! {
    /// Rotary positions in place on `heads` consecutive `2 * cos.len()`-wide heads at the
    /// start of `row` (Hugging Face's rotate-half layout): `cos`, `sin` are the row's angles.
    pub fn rope(row: &mut [f32], heads: usize, cos: &[f32], sin: &[f32]) => rope_body
}

#[inline(always)]
fn rope_body(row: &mut [f32], heads: usize, cos: &[f32], sin: &[f32]) {
    let half = cos.len();
    for head in row[..heads * 2 * half].chunks_exact_mut(2 * half) {
        let (a, b) = head.split_at_mut(half);
        for i in 0..half {
            let (x, y) = (a[i], b[i]);
            a[i] = x * cos[i] - y * sin[i];
            b[i] = y * cos[i] + x * sin[i];
        }
    }
}

widest! {
    /// SwiGLU: for each row of `gu` (gate then up, `2 * inter` wide), `silu(gate) * up` into
    /// the matching `inter`-wide row of `out`.
    pub fn silu_mul(gu: &[f32], inter: usize, out: &mut [f32]) => silu_mul_body
}

#[inline(always)]
fn silu_mul_body(gu: &[f32], inter: usize, out: &mut [f32]) {
    for (r, o) in gu.chunks_exact(2 * inter).zip(out.chunks_exact_mut(inter)) {
        let (g, u) = r.split_at(inter);
        for ((o, &g), &u) in o.iter_mut().zip(g).zip(u) {
            // sigmoid from e^-|g| (never overflows), chosen branch-free so the loop vectorises
            let e = exp_neg(-g.abs());
            let s = if g >= 0.0 { 1.0 } else { e } / (1.0 + e);
            *o = g * s * u;
        }
    }
}

widest! {
    /// Softmax of `row[first..end] * scale` in place; the rest of the row (masked) becomes 0.
    pub fn softmax_row(row: &mut [f32], first: usize, end: usize, scale: f32) => softmax_body
}

#[inline(always)]
fn softmax_body(row: &mut [f32], first: usize, end: usize, scale: f32) {
    let m = lanes(&row[first..end], f32::NEG_INFINITY, f32::max, f32::max) * scale;
    let inv = 1.0 / exp_masked(row, first, end, scale, m);
    for x in row[first..end].iter_mut() {
        *x *= inv;
    }
}

/// `row[first..end]` becomes `e^(x * scale - m)` and the rest of the row 0; returns the sum
/// of the exponentials (one pass, sixteen lanes).
#[inline(always)]
fn exp_masked(row: &mut [f32], first: usize, end: usize, scale: f32, m: f32) -> f32 {
    let (head, rest) = row.split_at_mut(end);
    head[..first].fill(0.0);
    rest.fill(0.0);
    let mut acc = [0f32; 16];
    let mut chunks = head[first..].chunks_exact_mut(16);
    for c in &mut chunks {
        for l in 0..16 {
            c[l] = exp_neg(c[l] * scale - m);
            acc[l] += c[l];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for x in chunks.into_remainder() {
        *x = exp_neg(*x * scale - m);
        sum += *x;
    }
    sum
}

widest! {
    /// One key tile of an online softmax (flash attention's running form). `state` is
    /// `[max, sum, factor]` of the row so far (start: `[-inf, 0, _]`). `row[first..end]` (this
    /// tile's visible scores) becomes `e^(x * scale - new max)`, the rest 0; the sum is
    /// rescaled and extended, and `factor` = `e^(old max - new max)` is what the row's output
    /// so far must be multiplied by. A tile with nothing visible leaves the state as it was
    /// (factor 1).
    pub fn exp_tile(row: &mut [f32], first: usize, end: usize, scale: f32, state: &mut [f32]) => exp_tile_body
}

#[inline(always)]
fn exp_tile_body(row: &mut [f32], first: usize, end: usize, scale: f32, state: &mut [f32]) {
    if first >= end {
        row.fill(0.0);
        state[2] = 1.0;
        return;
    }
    let tile = lanes(&row[first..end], f32::NEG_INFINITY, f32::max, f32::max) * scale;
    let m = state[0].max(tile);
    // the first visible tile: nothing to rescale (and -inf - m must not reach the exp)
    let factor = if state[0] == f32::NEG_INFINITY {
        0.0
    } else {
        exp_neg(state[0] - m)
    };
    let sum = exp_masked(row, first, end, scale, m);
    state[0] = m;
    state[1] = state[1] * factor + sum;
    state[2] = factor;
}

/// Fold `xs` with sixteen independent lanes (`step(acc, x)`), then the lanes (`join`): a loop
/// into one float accumulator cannot vectorise, as float addition is not reassociated.
#[inline(always)]
fn lanes(
    xs: &[f32],
    init: f32,
    step: impl Fn(f32, f32) -> f32,
    join: impl Fn(f32, f32) -> f32,
) -> f32 {
    let mut acc = [init; 16];
    let chunks = xs.chunks_exact(16);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..16 {
            acc[l] = step(acc[l], c[l]);
        }
    }
    let mut r = acc.into_iter().fold(init, &join);
    for &x in rest {
        r = step(r, x);
    }
    r
}

widest! {
    /// The trainer's fused RMS normalisation (no weight) of each `h`-wide row of `x`.
    pub fn normalize_rows(x: &[f32], h: usize, eps: f32, out: &mut [f32]) => normalize_body
}

#[inline(always)]
fn inv_rms(r: &[f32], eps: f32) -> f32 {
    1.0 / (lanes(r, 0.0, |a, b| a + b * b, |a, b| a + b) / r.len() as f32 + eps).sqrt()
}

#[inline(always)]
fn normalize_body(x: &[f32], h: usize, eps: f32, out: &mut [f32]) {
    for (r, o) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let inv = inv_rms(r, eps);
        o.iter_mut().zip(r).for_each(|(o, v)| *o = v * inv);
    }
}

widest! {
    /// Its backward: `dx = inv (g - y mean(g y))` per row, `y = x inv`.
    pub fn normalize_grad_rows(x: &[f32], g: &[f32], h: usize, eps: f32, out: &mut [f32]) => normalize_grad_body
}

#[inline(always)]
fn normalize_grad_body(x: &[f32], g: &[f32], h: usize, eps: f32, out: &mut [f32]) {
    for ((r, gr), o) in x
        .chunks_exact(h)
        .zip(g.chunks_exact(h))
        .zip(out.chunks_exact_mut(h))
    {
        let inv = inv_rms(r, eps);
        let mut acc = [0f32; 16];
        let mut cx = r.chunks_exact(16);
        let mut cg = gr.chunks_exact(16);
        for (a, b) in (&mut cx).zip(&mut cg) {
            for l in 0..16 {
                acc[l] += a[l] * b[l];
            }
        }
        let tail: f32 = cx
            .remainder()
            .iter()
            .zip(cg.remainder())
            .map(|(a, b)| a * b)
            .sum();
        let gy = (acc.iter().sum::<f32>() + tail) * inv / h as f32;
        for ((o, v), g) in o.iter_mut().zip(r).zip(gr) {
            *o = inv * (g - v * inv * gy);
        }
    }
}

widest! {
    /// `silu(a) * b` elementwise (the trainer's SwiGLU, gate and up apart).
    pub fn swiglu_rows(a: &[f32], b: &[f32], out: &mut [f32]) => swiglu_body
}

/// `(silu(a), sigmoid(a))`, branch-free: sigmoid from e^-|a|, which never overflows.
#[inline(always)]
fn silu(a: f32) -> (f32, f32) {
    let e = exp_neg(-a.abs());
    let s = if a >= 0.0 { 1.0 } else { e } / (1.0 + e);
    (a * s, s)
}

#[inline(always)]
fn swiglu_body(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = silu(a).0 * b;
    }
}

widest! {
    /// Its backward from upstream `g`: `da = g b σ (1 + a (1 - σ))` (`wrt_a`), else
    /// `db = g silu(a)`.
    pub fn swiglu_grad(a: &[f32], b: &[f32], g: &[f32], wrt_a: bool, out: &mut [f32]) => swiglu_grad_body
}

#[inline(always)]
fn swiglu_grad_body(a: &[f32], b: &[f32], g: &[f32], wrt_a: bool, out: &mut [f32]) {
    for (((o, &a), &b), &g) in out.iter_mut().zip(a).zip(b).zip(g) {
        let (y, s) = silu(a);
        *o = if wrt_a {
            g * b * s * (1.0 + a * (1.0 - s))
        } else {
            g * y
        };
    }
}

widest! {
    /// The backward of [`softmax_row`] on `first..end` (the rest 0): `scale y (g - Σ g y)`.
    pub fn softmax_grad_row(y: &[f32], g: &[f32], first: usize, end: usize, scale: f32, out: &mut [f32]) => softmax_grad_body
}

#[inline(always)]
fn softmax_grad_body(y: &[f32], g: &[f32], first: usize, end: usize, scale: f32, out: &mut [f32]) {
    let (y, g) = (&y[first..end], &g[first..end]);
    let mut acc = [0f32; 16];
    let mut cy = y.chunks_exact(16);
    let mut cg = g.chunks_exact(16);
    for (a, b) in (&mut cy).zip(&mut cg) {
        for l in 0..16 {
            acc[l] += a[l] * b[l];
        }
    }
    let tail: f32 = cy
        .remainder()
        .iter()
        .zip(cg.remainder())
        .map(|(a, b)| a * b)
        .sum();
    let dot = acc.iter().sum::<f32>() + tail;
    for ((o, &y), &g) in out[first..end].iter_mut().zip(y).zip(g) {
        *o = scale * y * (g - dot);
    }
}

/// e^x for x <= 0 (softmax arguments after subtracting the max), relative error ~2e-7:
/// x = n ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial, 2^n from the exponent bits.
/// Branch-free so that loops over it vectorise; below -87 it returns e^-87.
#[inline(always)]
pub fn exp_neg(x: f32) -> f32 {
    let x = x.max(-87.0);
    // floor(y + 0.5), not round(): round() is a libm call that stops vectorisation
    let n = (x * std::f32::consts::LOG2_E + 0.5).floor();
    let r = x - n * 0.693_359_4 - n * -2.121_944_4e-4;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^n from the bits of n + 1.5·2^23 + 127, whose low mantissa bits are n + 127 (n is an
    // integer in [-126, 0]); `n as i32` would be a saturating cast, which compiles to a
    // scalar convert-and-compare per lane and made this function half scalar
    let biased = (n + (12_582_912.0 + 127.0)).to_bits() - 0x4B40_0000;
    let scale = f32::from_bits(biased << 23);
    p * scale
}

/// Deterministic test values in [-1, 1) (a linear congruential sequence from `seed`).
#[cfg(test)]
pub fn test_values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `dst (+)= a · b` for every shape around the k blocks and the column chunks, both operand
    /// forms, one and two threads, against float64. (Not bit for bit across thread counts:
    /// gemm sums a narrow edge tile in another order than a full one.)
    #[test]
    fn matmul_blocks_and_chunks_are_one_product() {
        for (m, n, k) in [
            (3, 17, 0),
            (5, 1, 1),
            (7, 100, 127),
            (2, 33, 128),
            (9, 70, 129),
            (4, 200, 300),
        ] {
            let a = test_values(m * k, 1);
            let b = test_values(n * k, 2);
            for transposed in [false, true] {
                for accumulate in [false, true] {
                    let want: Vec<f64> = (0..m * n)
                        .map(|e| {
                            let (i, j) = (e / n, e % n);
                            let dot: f64 = (0..k)
                                .map(|l| {
                                    let w = if transposed {
                                        b[j * k + l]
                                    } else {
                                        b[l * n + j]
                                    };
                                    a[i * k + l] as f64 * w as f64
                                })
                                .sum();
                            dot + if accumulate { 0.5 } else { 0.0 }
                        })
                        .collect();
                    let run = |threads| {
                        // rows of stride n + 3: the product writes only its m x n
                        let mut dst = vec![0.5f32; m * (n + 3)];
                        let rhs = if transposed {
                            Rhs::Transposed(View {
                                ptr: b.as_ptr(),
                                rs: k,
                            })
                        } else {
                            Rhs::Rows(View {
                                ptr: b.as_ptr(),
                                rs: n,
                            })
                        };
                        let lhs = View {
                            ptr: a.as_ptr(),
                            rs: k,
                        };
                        // SAFETY: a is m x k, b is k x n (or n x k), dst covers m rows of n + 3.
                        unsafe {
                            matmul(
                                m,
                                n,
                                k,
                                dst.as_mut_ptr(),
                                n + 3,
                                accumulate,
                                lhs,
                                rhs,
                                threads,
                            )
                        };
                        dst
                    };
                    for (threads, one) in [(1, run(1)), (2, run(2))] {
                        for i in 0..m {
                            for j in 0..n {
                                let got = one[i * (n + 3) + j] as f64;
                                let err = (got - want[i * n + j]).abs();
                                assert!(err < 1e-5, "{m}x{n}x{k} on {threads} ({i},{j}): {err:e}");
                            }
                            let pad = &one[i * (n + 3) + n..(i + 1) * (n + 3)];
                            assert!(pad.iter().all(|&x| x == 0.5), "{m}x{n}x{k}: padding");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn exp_is_accurate_on_softmax_arguments() {
        let mut worst = 0f64;
        for i in 0..=87_000 {
            let x = -(i as f32) / 1000.0;
            let (got, want) = (exp_neg(x) as f64, (x as f64).exp());
            worst = worst.max(((got - want) / want).abs());
        }
        assert!(worst < 5e-7, "relative error {worst}");
        assert_eq!(exp_neg(-1000.0), exp_neg(-87.0));
    }

    #[test]
    fn row_kernels_match_their_formulas() {
        let x: Vec<f32> = (0..2 * 40)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 3.0)
            .collect();
        let w: Vec<f32> = (0..40).map(|i| 0.5 + i as f32 / 40.0).collect();
        let mut out = vec![0.0; 80];
        rms_norm(&x, &w, 1e-6, &mut out);
        for r in 0..2 {
            let row = &x[r * 40..(r + 1) * 40];
            let ms = row.iter().map(|v| (*v as f64).powi(2)).sum::<f64>() / 40.0;
            for c in 0..40 {
                let want = row[c] as f64 / (ms + 1e-6).sqrt() * w[c] as f64;
                assert!((out[r * 40 + c] as f64 - want).abs() < 1e-5);
            }
        }
        let mut o = vec![0.0; 40];
        silu_mul(&x, 40, &mut o);
        for c in 0..40 {
            let g = x[c] as f64;
            let want = g / (1.0 + (-g).exp()) * x[40 + c] as f64;
            assert!((o[c] as f64 - want).abs() < 1e-5, "{c}: {} vs {want}", o[c]);
        }
        let mut row: Vec<f32> = (0..33).map(|i| i as f32 / 7.0).collect();
        let orig = row.clone();
        softmax_row(&mut row, 3, 30, 0.5);
        let z: f64 = orig[3..30].iter().map(|v| (*v as f64 * 0.5).exp()).sum();
        for (i, p) in row.iter().enumerate() {
            let want = if (3..30).contains(&i) {
                (orig[i] as f64 * 0.5).exp() / z
            } else {
                0.0
            };
            assert!((*p as f64 - want).abs() < 1e-6);
        }
        let mut h = vec![1.0, 2.0, 3.0, 4.0];
        rope(&mut h, 1, &[0.5, 1.0], &[0.25, 0.0]);
        assert_eq!(h, vec![1.0 * 0.5 - 3.0 * 0.25, 2.0, 3.0 * 0.5 + 0.25, 4.0]);
    }
}
