//! The layer op's causal grouped-query attention, forward and backward, per (sequence,
//! head): `P = softmax(scale q kᵀ)` over the visible keys (causal, within the window),
//! `a = P v`; backward `dP = da vᵀ`, `dS = scale P ∘ (dP - Σ dP ∘ P)`, `dq = dS k`,
//! `dk = dSᵀ q`, `dv = Pᵀ da`. The backward runs one task per key/value head, so the `rep`
//! query heads that share it add into its `dk` and `dv` in a fixed order; `P` is remade
//! there rather than kept (`t x t` per task, not per layer). Every product runs in causal
//! row blocks ([`blocks`]): a block of queries stops at the last key it can see, and entries
//! right of it are neither computed nor read.

use rayon::prelude::*;

use super::{LayerOp, each_row};
use crate::model::cpu::{Strided, product, softmax_grad_row, softmax_row};

impl LayerOp {
    /// The visible keys `lo..hi` of query `i`.
    fn span(&self, i: usize) -> (usize, usize) {
        ((i + 1).saturating_sub(self.layout.window), i + 1)
    }

    /// Probabilities of query head `hq` of sequence `bi`: `(t, t)`, masked entries 0. Only
    /// the columns a row block can see are computed ([`blocks`]).
    fn probs(&self, qkv: &[f32], t: usize, bi: usize, hq: usize) -> Vec<f32> {
        let l = self.layout;
        let (w, hd) = (l.w(), l.hd);
        let g = hq / (l.nh / l.nkv);
        let base = bi * t * w;
        let k = Strided::rows(&qkv[base + (l.nh + g) * hd..], w).t();
        let mut p = vec![0f32; t * t];
        for (r0, r1) in blocks(t) {
            let q = Strided::rows(&qkv[base + r0 * w + hq * hd..], w);
            product(r1 - r0, r1, hd, q, k, &mut p[r0 * t..], t, false, 1);
        }
        let scale = 1.0 / (hd as f32).sqrt();
        for (i, row) in p.chunks_exact_mut(t).enumerate() {
            let (lo, hi) = self.span(i);
            softmax_row(row, lo, hi, scale);
        }
        p
    }

    /// Attention output `(r, q)` from rotated q, k and v.
    pub(super) fn attend(&self, qkv: &[f32], b: usize, t: usize) -> Vec<f32> {
        let l = self.layout;
        let (w, hd, a) = (l.w(), l.hd, l.q());
        let heads: Vec<Vec<f32>> = (0..b * l.nh)
            .into_par_iter()
            .map(|task| {
                let (bi, hq) = (task / l.nh, task % l.nh);
                let g = hq / (l.nh / l.nkv);
                let p = self.probs(qkv, t, bi, hq);
                let v = Strided::rows(&qkv[bi * t * w + (l.nh + l.nkv + g) * hd..], w);
                let mut o = vec![0f32; t * hd];
                for (r0, r1) in blocks(t) {
                    let pr = Strided::rows(&p[r0 * t..], t);
                    product(r1 - r0, hd, r1, pr, v, &mut o[r0 * hd..], hd, false, 1);
                }
                o
            })
            .collect();
        let mut att = vec![0f32; b * t * a];
        each_row(&mut att, a, |r, row| {
            let (bi, i) = (r / t, r % t);
            for hq in 0..l.nh {
                row[hq * hd..][..hd].copy_from_slice(&heads[bi * l.nh + hq][i * hd..][..hd]);
            }
        });
        att
    }

    /// The backward of [`LayerOp::attend`]: `dqkv (r, w)` (q and k still rotated) from `da`.
    pub(super) fn attend_back(&self, qkv: &[f32], da: &[f32], b: usize, t: usize) -> Vec<f32> {
        let l = self.layout;
        let (w, hd, a, rep) = (l.w(), l.hd, l.q(), l.nh / l.nkv);
        let scale = 1.0 / (hd as f32).sqrt();
        // per (sequence, key/value head): dq of its rep query heads, then dk, dv
        let parts: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..b * l.nkv)
            .into_par_iter()
            .map(|task| {
                let (bi, g) = (task / l.nkv, task % l.nkv);
                let base = bi * t * w;
                let k = Strided::rows(&qkv[base + (l.nh + g) * hd..], w);
                let v = Strided::rows(&qkv[base + (l.nh + l.nkv + g) * hd..], w);
                let (mut dq, mut dk, mut dv) = (
                    vec![0f32; rep * t * hd],
                    vec![0f32; t * hd],
                    vec![0f32; t * hd],
                );
                let mut dp = vec![0f32; t * t];
                let mut ds = vec![0f32; t * t];
                for j in 0..rep {
                    let hq = g * rep + j;
                    let p = self.probs(qkv, t, bi, hq);
                    let d_o = |r0: usize| Strided::rows(&da[bi * t * a + r0 * a + hq * hd..], a);
                    for (r0, r1) in blocks(t) {
                        product(
                            r1 - r0,
                            r1,
                            hd,
                            d_o(r0),
                            v.t(),
                            &mut dp[r0 * t..],
                            t,
                            false,
                            1,
                        );
                    }
                    // dp right of a block keeps the last head's values: never read, as
                    // the softmax gradient reads only the visible span
                    ds.fill(0.0);
                    for i in 0..t {
                        let (lo, hi) = self.span(i);
                        let row = i * t..(i + 1) * t;
                        softmax_grad_row(
                            &p[row.clone()],
                            &dp[row.clone()],
                            lo,
                            hi,
                            scale,
                            &mut ds[row],
                        );
                    }
                    // row block by row block, in order: dq's rows are its own; dk and dv
                    // (zero to start with) add up the keys each block sees
                    let dqj = &mut dq[j * t * hd..];
                    for (r0, r1) in blocks(t) {
                        let n = r1 - r0;
                        let s = Strided::rows(&ds[r0 * t..], t);
                        let pr = Strided::rows(&p[r0 * t..], t);
                        let qr = Strided::rows(&qkv[base + r0 * w + hq * hd..], w);
                        product(n, hd, r1, s, k, &mut dqj[r0 * hd..], hd, false, 1);
                        product(r1, hd, n, s.t(), qr, &mut dk, hd, true, 1);
                        product(r1, hd, n, pr.t(), d_o(r0), &mut dv, hd, true, 1);
                    }
                }
                (dq, dk, dv)
            })
            .collect();
        let mut dqkv = vec![0f32; b * t * w];
        each_row(&mut dqkv, w, |r, row| {
            let (bi, i) = (r / t, r % t);
            for g in 0..l.nkv {
                let (dq, dk, dv) = &parts[bi * l.nkv + g];
                for j in 0..rep {
                    let hq = g * rep + j;
                    row[hq * hd..][..hd].copy_from_slice(&dq[(j * t + i) * hd..][..hd]);
                }
                row[(l.nh + g) * hd..][..hd].copy_from_slice(&dk[i * hd..][..hd]);
                row[(l.nh + l.nkv + g) * hd..][..hd].copy_from_slice(&dv[i * hd..][..hd]);
            }
        });
        dqkv
    }
}

/// Query rows per causal block.
const BLOCK: usize = 64;

/// Row blocks `(r0, r1)` of a `t`-token sequence: rows `r0..r1` see at most keys `0..r1`, so
/// a block's products stop there; at t = 256 that is 10/16 of the full square's arithmetic,
/// and the share falls towards a half as sequences grow.
fn blocks(t: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..t.div_ceil(BLOCK)).map(move |b| (b * BLOCK, ((b + 1) * BLOCK).min(t)))
}
