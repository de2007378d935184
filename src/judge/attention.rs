//! Causal self-attention for CPU inference, in blocks of query rows: each block's scores
//! are one matrix product against the keys it may see, so the upper triangle is skipped
//! block by block (about half the work of a masked dense attention) and no `len x len`
//! score matrix is ever allocated. The masked softmax runs in place on rayon (the pool candle
//! already uses), with an exponential written to vectorise; on x86-64 it is compiled a second
//! time with AVX2 and picked at run time.

use candle_core::{CpuStorage, Device, InplaceOp1, Layout, Result, Tensor};
use rayon::prelude::*;

/// Query rows per block: scores for a block are one matrix product against the keys up to
/// the block's end, so the work above the diagonal is skipped a block at a time.
const BLOCK: usize = 256;

/// `q`: (batch, heads, len, head_dim); `k`, `v`: (batch, kv_heads, len, head_dim); f32 on
/// the CPU. Returns (batch, heads, len, head_dim). A key is visible from query `i` when it is
/// at or before `i` and, with a sliding `window`, fewer than `window` positions back.
///
/// Per block of query rows: scores = Q_block K[lo..end]^T (candle's matmul, all query heads
/// that share a kv head stacked), then the causal softmax in place (rows in parallel), then
/// P V[lo..end]. Nothing of size len x len is allocated.
pub fn causal(q: &Tensor, k: &Tensor, v: &Tensor, window: Option<usize>) -> Result<Tensor> {
    let (b, nh, t, hd) = q.dims4()?;
    let nkv = k.dims4()?.1;
    let rep = nh / nkv;
    let w = window.unwrap_or(usize::MAX);
    let scale = 1.0 / (hd as f32).sqrt();
    let mut blocks = Vec::with_capacity(t.div_ceil(BLOCK));
    for s in (0..t).step_by(BLOCK) {
        let e = (s + BLOCK).min(t);
        let n = e - s;
        // keys the first row of the block may see onwards
        let lo = (s + 1).saturating_sub(w);
        let qb = q.narrow(2, s, n)?.reshape((b, nkv, rep * n, hd))?;
        let kb = k.narrow(2, lo, e - lo)?;
        let vb = v.narrow(2, lo, e - lo)?.contiguous()?;
        let p = qb.matmul(&kb.t()?)?;
        p.inplace_op1(&MaskedSoftmax { s, n, lo, w, scale })?;
        blocks.push(p.matmul(&vb)?.reshape((b, nkv, rep, n, hd))?);
    }
    Tensor::cat(&blocks, 3)?.reshape((b, nh, t, hd))
}

/// The additive mask `(len, len)` of dense causal attention: 0 where query `i` may see key
/// `j` (at or before it, and fewer than `window` back), -inf elsewhere. The kernels here apply
/// the same rule without building it; it is for the dense path (CUDA) and for checking them.
pub fn causal_mask(t: usize, window: Option<usize>, device: &Device) -> Result<Tensor> {
    let w = window.unwrap_or(usize::MAX);
    let m: Vec<f32> = (0..t)
        .flat_map(|i| {
            (0..t).map(move |j| {
                if j > i || i - j >= w {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(m, (t, t), device)
}

/// The causal softmax of one block of scores, in place (no copy of the block): rows are
/// query positions `s + r % n` of the stacked heads, columns keys `lo..`.
struct MaskedSoftmax {
    s: usize,
    n: usize,
    lo: usize,
    w: usize,
    scale: f32,
}

impl InplaceOp1 for MaskedSoftmax {
    fn name(&self) -> &'static str {
        "causal-masked-softmax"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> Result<()> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("causal attention runs on f32");
        };
        let Some((a, z)) = layout.contiguous_offsets() else {
            candle_core::bail!("scores must be contiguous");
        };
        let cols = *layout.dims().last().unwrap_or(&1);
        let d = self;
        data[a..z]
            .par_chunks_mut(cols)
            .enumerate()
            .for_each(|(r, row)| {
                let i = d.s + r % d.n;
                let first = (i + 1).saturating_sub(d.w) - d.lo;
                softmax_row(row, first, i - d.lo + 1, d.scale);
            });
        Ok(())
    }
}

/// Attention for chosen query rows only (the last layer of a PRM, read at a few positions).
/// `q`: (1, heads, n, head_dim), one row per entry of `reads` (flat `item * len + position`);
/// `k`, `v`: (batch, kv_heads, len, head_dim). Returns (1, heads, n, head_dim).
pub fn rows(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    reads: &[u32],
    window: Option<usize>,
) -> Result<Tensor> {
    let (_, nh, n, hd) = q.dims4()?;
    let (_, nkv, t, _) = k.dims4()?;
    let rep = nh / nkv;
    let w = window.unwrap_or(usize::MAX);
    let scale = 1.0 / (hd as f32).sqrt();
    let q = q.flatten_all()?.to_vec1::<f32>()?;
    let k = k.flatten_all()?.to_vec1::<f32>()?;
    let v = v.flatten_all()?.to_vec1::<f32>()?;
    let mut out = vec![0f32; nh * n * hd];
    out.par_chunks_mut(hd).enumerate().for_each(|(hr, o)| {
        let (head, r) = (hr / n, hr % n);
        let (item, p) = (reads[r] as usize / t, reads[r] as usize % t);
        let base = (item * nkv + head / rep) * t * hd;
        let first = (p + 1).saturating_sub(w);
        let qi = &q[hr * hd..(hr + 1) * hd];
        let mut s: Vec<f32> = (first..=p)
            .map(|j| {
                let kj = &k[base + j * hd..base + (j + 1) * hd];
                qi.iter().zip(kj).map(|(a, b)| a * b).sum::<f32>()
            })
            .collect();
        let len = s.len();
        softmax_row(&mut s, 0, len, scale);
        for (pj, j) in s.iter().zip(first..=p) {
            let vj = &v[base + j * hd..base + (j + 1) * hd];
            for (x, y) in o.iter_mut().zip(vj) {
                *x += pj * y;
            }
        }
    });
    Tensor::from_vec(out, (1, nh, n, hd), &Device::Cpu)
}

/// Softmax of `row[first..end] * scale` in place; the rest of the row (masked) becomes 0.
fn softmax_row(row: &mut [f32], first: usize, end: usize, scale: f32) {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU has the features the function is compiled for.
        unsafe { softmax_row_avx2(row, first, end, scale) };
        return;
    }
    softmax_row_generic(row, first, end, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_row_avx2(row: &mut [f32], first: usize, end: usize, scale: f32) {
    softmax_row_generic(row, first, end, scale)
}

#[inline(always)]
fn softmax_row_generic(row: &mut [f32], first: usize, end: usize, scale: f32) {
    let (head, rest) = row.split_at_mut(end);
    head[..first].fill(0.0);
    rest.fill(0.0);
    let live = &mut head[first..];
    // Separate passes with eight-lane reductions: a loop that accumulates into one float
    // cannot be vectorised (float addition is not reassociated).
    let m = lanes(live, f32::NEG_INFINITY, f32::max) * scale;
    for x in live.iter_mut() {
        *x = exp_neg(*x * scale - m);
    }
    let inv = 1.0 / lanes(live, 0.0, |a, b| a + b);
    for x in live.iter_mut() {
        *x *= inv;
    }
}

/// Reduce with eight independent lanes, then across them.
#[inline(always)]
fn lanes(xs: &[f32], init: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 8];
    let chunks = xs.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for l in 0..8 {
            acc[l] = f(acc[l], c[l]);
        }
    }
    let mut r = acc.into_iter().fold(init, &f);
    for &x in rest {
        r = f(r, x);
    }
    r
}

/// e^x for x <= 0 (softmax arguments after subtracting the max), relative error ~2e-7:
/// x = n ln2 + r with |r| <= ln2/2, e^r by a degree-6 polynomial, 2^n from the exponent bits.
/// Branch-free so that loops over it vectorise; below -87 it returns 0.
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
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Chosen rows give what the full causal attention gives at those rows.
    #[test]
    fn rows_match_the_full_kernel() {
        let dev = Device::Cpu;
        let (b, nh, nkv, t, hd) = (2, 4, 2, 300, 16);
        let q = Tensor::randn(0f32, 1.0, (b, nh, t, hd), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, nkv, t, hd), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, nkv, t, hd), &dev).unwrap();
        let reads: Vec<u32> = vec![0, 5, 299, 300 + 17, 300 + 280];
        for window in [None, Some(40)] {
            let full = causal(&q, &k, &v, window).unwrap();
            let picked: Vec<Tensor> = reads
                .iter()
                .map(|&r| {
                    let (i, p) = (r as usize / t, r as usize % t);
                    q.narrow(0, i, 1).unwrap().narrow(2, p, 1).unwrap()
                })
                .collect();
            let q_at = Tensor::cat(&picked, 2).unwrap();
            let got = rows(&q_at, &k, &v, &reads, window).unwrap();
            for (n, &r) in reads.iter().enumerate() {
                let (i, p) = (r as usize / t, r as usize % t);
                let want = full.narrow(0, i, 1).unwrap().narrow(2, p, 1).unwrap();
                let have = got.narrow(2, n, 1).unwrap();
                let d = (want - have).unwrap().abs().unwrap().flatten_all().unwrap();
                let d = d.max(0).unwrap().to_scalar::<f32>().unwrap();
                assert!(d < 1e-5, "row {r}, window {window:?}: {d}");
            }
        }
    }

    /// The fused kernel against the dense masked formula, with GQA and a window.
    #[test]
    fn matches_dense_attention() {
        let dev = Device::Cpu;
        let (b, nh, nkv, t, hd) = (2, 4, 2, 37, 16);
        let q = Tensor::randn(0f32, 1.0, (b, nh, t, hd), &dev).unwrap();
        let k = Tensor::randn(0f32, 1.0, (b, nkv, t, hd), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (b, nkv, t, hd), &dev).unwrap();
        for window in [None, Some(5)] {
            let got = causal(&q, &k, &v, window).unwrap();
            let mask = causal_mask(t, window, &dev).unwrap();
            let rep = nh / nkv;
            let kk = k
                .unsqueeze(2)
                .unwrap()
                .expand((b, nkv, rep, t, hd))
                .unwrap();
            let kk = kk.reshape((b, nh, t, hd)).unwrap();
            let vv = v
                .unsqueeze(2)
                .unwrap()
                .expand((b, nkv, rep, t, hd))
                .unwrap();
            let vv = vv.reshape((b, nh, t, hd)).unwrap();
            let att = (q.matmul(&kk.t().unwrap()).unwrap() / (hd as f64).sqrt()).unwrap();
            let att = att.broadcast_add(&mask).unwrap();
            let att = candle_nn::ops::softmax_last_dim(&att).unwrap();
            let want = att.matmul(&vv).unwrap();
            let diff = (got - want)
                .unwrap()
                .abs()
                .unwrap()
                .flatten_all()
                .unwrap()
                .max(0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(diff < 1e-5, "window {window:?}: max difference {diff}");
        }
    }
}
