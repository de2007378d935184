//! Causal self-attention for the packed CPU forward (`model::cpu`), reading queries, keys and
//! values in place from the fused `qkv` activations (one row per token, items end to end,
//! no padding), plus the additive mask of the dense path used elsewhere (CUDA, bf16).
//!
//! Work is split into (item, kv head, block of query rows) tasks on rayon. A task stacks the
//! query heads that share its kv head (grouped-query attention without copying keys per
//! head) and walks the keys its rows may see in tiles (so the upper triangle is skipped a
//! block at a time and nothing of size `len x len` exists): per tile, the scores are one
//! matrix product, the masked softmax runs in place in its running (flash-attention) form,
//! and the values are added in with the rescaled output so far.

use std::cell::RefCell;

use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

use super::amx::{self, Packed, Split};
use super::kernels::{Rhs, View, exp_tile, matmul, softmax_row};

/// Query rows per task: small enough that the part of the diagonal block above the diagonal
/// (computed, then masked) stays a few percent of the work at PRM lengths, large enough
/// (times the heads per kv head) for efficient products.
const BLOCK: usize = 32;

/// Keys per tile: a tile's scores (heads per kv head x `BLOCK` x `KEYS`) stay in L2.
const KEYS: usize = 256;

/// Shapes of the fused activations: `nq` query heads, then `nkv` key heads, then `nkv` value
/// heads, each `hd` wide, in rows of `stride = (nq + 2 nkv) hd`.
#[derive(Clone, Copy)]
pub struct Heads {
    pub nq: usize,
    pub nkv: usize,
    pub hd: usize,
    /// A key is visible from query `i` when it is at or before `i` and fewer than `window`
    /// positions back (`usize::MAX`: no window).
    pub window: usize,
}

impl Heads {
    pub fn stride(&self) -> usize {
        (self.nq + 2 * self.nkv) * self.hd
    }

    pub(super) fn rep(&self) -> usize {
        self.nq / self.nkv
    }

    pub(super) fn scale(&self) -> f32 {
        1.0 / (self.hd as f32).sqrt()
    }

    /// Row `row`'s key (`kind` 0) or value (`kind` 1) view of kv head `g`.
    fn kv(&self, qkv: &[f32], row: usize, g: usize, kind: usize) -> View {
        View {
            ptr: qkv[row * self.stride() + (self.nq + kind * self.nkv + g) * self.hd..].as_ptr(),
            rs: self.stride(),
        }
    }
}

/// A pointer that tasks write disjoint parts of.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: every task writes rows and head columns no other task writes.
unsafe impl Send for Shared {}
unsafe impl Sync for Shared {}

impl Shared {
    fn at(self, i: usize) -> *mut f32 {
        // SAFETY (of callers): `i` is inside the buffer the pointer came from.
        unsafe { self.0.add(i) }
    }
}

thread_local! {
    /// Per-thread scratch for stacked queries, scores and outputs (reused across tasks: fresh
    /// allocations of this size would be fresh pages every time).
    static SCRATCH: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

pub(super) fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    SCRATCH.with_borrow_mut(|s| {
        if s.len() < len {
            s.resize(len, 0.0);
        }
        f(&mut s[..len])
    })
}

/// One task: query rows `s..e` of the item whose first row is `off`, for the query heads of
/// kv head `g`. Its rows are stacked head by head: stacked row `i` is query head
/// `g * rep + i / nb` at item row `s + i % nb` (`nb = e - s`).
#[derive(Clone, Copy)]
struct Task {
    off: usize,
    g: usize,
    s: usize,
    e: usize,
}

impl Task {
    /// Every task of the items of `lens`.
    fn all(lens: &[usize], d: Heads) -> Vec<Task> {
        let mut tasks = Vec::new();
        let mut off = 0;
        for &len in lens {
            for g in 0..d.nkv {
                for s in (0..len).step_by(BLOCK) {
                    let e = (s + BLOCK).min(len);
                    tasks.push(Task { off, g, s, e });
                }
            }
            off += len;
        }
        tasks
    }

    /// Stacked rows.
    fn rows(&self, d: Heads) -> usize {
        d.rep() * (self.e - self.s)
    }

    /// Where stacked row `i`'s query starts in `qkv`.
    fn query(&self, d: Heads, i: usize) -> usize {
        let nb = self.e - self.s;
        (self.off + self.s + i % nb) * d.stride() + (self.g * d.rep() + i / nb) * d.hd
    }

    /// Where stacked row `i`'s output starts in the `(rows, nq * hd)` output.
    fn output(&self, d: Heads, i: usize) -> usize {
        let nb = self.e - self.s;
        (self.off + self.s + i % nb) * d.nq * d.hd + (self.g * d.rep() + i / nb) * d.hd
    }

    /// The running softmax over key tile `k0..k0 + kt`: each stacked score row of `sc`
    /// (`rows x kt`) becomes its masked exponentials, `state` (`[max, sum, factor]` per row)
    /// moves on, and output rows `os` so far are rescaled where the max moved (never on the
    /// first tile, which they have not seen).
    fn softmax_tile(&self, d: Heads, k0: usize, kt: usize, first: bool, tile: TileRows) {
        let nb = self.e - self.s;
        let (sc, state, os) = tile;
        for (r, (row, st)) in sc
            .chunks_exact_mut(kt)
            .zip(state.chunks_exact_mut(3))
            .enumerate()
        {
            let i = self.s + r % nb;
            let from = (i + 1).saturating_sub(d.window).max(k0) - k0;
            let end = (i + 1).min(k0 + kt).saturating_sub(k0);
            exp_tile(row, from, end.max(from), d.scale(), st);
            if !first && st[2] != 1.0 {
                os[r * d.hd..][..d.hd].iter_mut().for_each(|o| *o *= st[2]);
            }
        }
    }

    /// The output rows `os`, divided by their softmax sums, into the task's rows and heads of
    /// `dst`.
    fn write(&self, d: Heads, os: &[f32], state: &[f32], dst: Shared) {
        for (i, src) in os.chunks_exact(d.hd).enumerate() {
            let inv = 1.0 / state[i * 3 + 1];
            // SAFETY: this row and head of the output are written by this task only.
            let o = unsafe { std::slice::from_raw_parts_mut(dst.at(self.output(d, i)), d.hd) };
            o.iter_mut().zip(src).for_each(|(o, x)| *o = x * inv);
        }
    }
}

/// A tile's score rows, the softmax states and the output rows of a task.
type TileRows<'a> = (&'a mut [f32], &'a mut [f32], &'a mut [f32]);

/// Attention over every row: `qkv` holds items of `lens` end to end (rotary positions already
/// applied); writes `(rows, nq * hd)` into `out`. With `amx` the two products run as bf16x3
/// on AMX tiles (`amx.rs`).
pub fn causal(qkv: &[f32], lens: &[usize], d: Heads, out: &mut [f32], amx: bool) {
    let (hd, a) = (d.hd, d.nq * d.hd);
    assert_eq!(qkv.len(), lens.iter().sum::<usize>() * d.stride());
    assert_eq!(out.len(), lens.iter().sum::<usize>() * a);
    if amx {
        return causal_amx(qkv, lens, d, out);
    }
    let dst = Shared(out.as_mut_ptr());
    Task::all(lens, d).into_par_iter().for_each(|t| {
        let (off, g, e) = (t.off, t.g, t.e);
        let m = t.rows(d);
        // keys the block's first row may see onwards
        let lo = (t.s + 1).saturating_sub(d.window);
        with_scratch(m * (2 * hd + KEYS + 3), |buf| {
            let (qs, rest) = buf.split_at_mut(m * hd);
            let (sc, rest) = rest.split_at_mut(m * KEYS);
            let (os, state) = rest.split_at_mut(m * hd);
            for (i, q) in qs.chunks_exact_mut(hd).enumerate() {
                q.copy_from_slice(&qkv[t.query(d, i)..][..hd]);
            }
            for st in state.chunks_exact_mut(3) {
                st.copy_from_slice(&[f32::NEG_INFINITY, 0.0, 1.0]);
            }
            let q = View {
                ptr: qs.as_ptr(),
                rs: hd,
            };
            // Keys in tiles, with the softmax kept running across them, so the scores of a
            // tile stay in cache however long the item is.
            for k0 in (lo..e).step_by(KEYS) {
                let kt = KEYS.min(e - k0);
                let (k, v) = (d.kv(qkv, off + k0, g, 0), d.kv(qkv, off + k0, g, 1));
                let sc = &mut sc[..m * kt];
                // SAFETY: `qs` is m x hd, the key view covers kt rows of hd from row off + k0,
                // `sc` is m x kt; none overlap.
                unsafe {
                    matmul(
                        m,
                        kt,
                        hd,
                        sc.as_mut_ptr(),
                        kt,
                        false,
                        q,
                        Rhs::Transposed(k),
                        1,
                    )
                };
                t.softmax_tile(d, k0, kt, k0 == lo, (&mut *sc, &mut *state, &mut *os));
                // SAFETY: `sc` is m x kt, the value view covers kt rows, `os` is m x hd.
                unsafe {
                    let p = View {
                        ptr: sc.as_ptr(),
                        rs: kt,
                    };
                    matmul(m, hd, kt, os.as_mut_ptr(), hd, k0 > lo, p, Rhs::Rows(v), 1);
                }
            }
            t.write(d, os, state, dst);
        });
    });
}

thread_local! {
    /// Per-thread split queries and probabilities of the AMX path.
    static SPLITS: RefCell<(Split, Split)> = RefCell::new(Default::default());
}

/// [`causal`] with both products on AMX. Each item's keys, and its values transposed, are
/// packed once per kv head (every query block of the item reads them); a task splits its
/// stacked queries once and each tile's probabilities once. Key tiles start on a multiple of
/// 32 (the packed panels' width): keys before a window's start are masked like any other.
fn causal_amx(qkv: &[f32], lens: &[usize], d: Heads, out: &mut [f32]) {
    let (hd, w) = (d.hd, d.stride());
    let starts: Vec<usize> = lens
        .iter()
        .scan(0, |s, &l| {
            *s += l;
            Some(*s - l)
        })
        .collect();
    let packs: Vec<(Packed, Packed)> = (0..lens.len() * d.nkv)
        .into_par_iter()
        .map(|t| {
            let (off, len, g) = (starts[t / d.nkv], lens[t / d.nkv], t % d.nkv);
            let (kc, vc) = ((d.nq + g) * hd, (d.nq + d.nkv + g) * hd);
            let k = Packed::from_rows(len, hd, |j, row| {
                row.copy_from_slice(&qkv[(off + j) * w + kc..][..hd])
            });
            let v = Packed::from_rows(hd, len, |c, row| {
                for (i, x) in row.iter_mut().enumerate() {
                    *x = qkv[(off + i) * w + vc + c];
                }
            });
            (k, v)
        })
        .collect();
    let item_of = |off: usize| starts.partition_point(|&s| s <= off) - 1;
    let dst = Shared(out.as_mut_ptr());
    Task::all(lens, d).into_par_iter().for_each(|t| {
        let (kp, vp) = &packs[item_of(t.off) * d.nkv + t.g];
        let (m, e) = (t.rows(d), t.e);
        let lo = (t.s + 1).saturating_sub(d.window) / 32 * 32;
        SPLITS.with_borrow_mut(|(qs, ps)| {
            qs.fill(m, hd, |i| &qkv[t.query(d, i)..][..hd], false);
            with_scratch(m * (hd + KEYS + 3), |buf| {
                let (sc, rest) = buf.split_at_mut(m * KEYS);
                let (os, state) = rest.split_at_mut(m * hd);
                for st in state.chunks_exact_mut(3) {
                    st.copy_from_slice(&[f32::NEG_INFINITY, 0.0, 1.0]);
                }
                amx::with_tiles(|tiles| {
                    for k0 in (lo..e).step_by(KEYS) {
                        let kt = KEYS.min(e - k0);
                        let sc = &mut sc[..m * kt];
                        amx::product(tiles, qs, kp, k0..k0 + kt, 0, sc, kt, false);
                        t.softmax_tile(d, k0, kt, k0 == lo, (&mut *sc, &mut *state, &mut *os));
                        let sc = &*sc;
                        ps.fill(m, kt, |i| &sc[i * kt..(i + 1) * kt], false);
                        amx::product(tiles, ps, vp, 0..hd, k0 / 32, os, hd, k0 > lo);
                    }
                });
                t.write(d, os, state, dst);
            });
        });
    });
}

/// Attention at chosen rows only (the last layer of a PRM, read at a few positions): `q` is
/// `(reads.len(), nq * hd)` with rotary positions applied, `reads` are `(first row of the
/// item in qkv, position in the item)`; keys and values come from `qkv`. Writes
/// `(reads.len(), nq * hd)` into `out`.
pub fn rows(q: &[f32], qkv: &[f32], reads: &[(usize, usize)], d: Heads, out: &mut [f32]) {
    let (k0, v0) = (d.nq * d.hd, (d.nq + d.nkv) * d.hd);
    let kv = KeysValues {
        k: &qkv[k0..],
        v: &qkv[v0..],
        rs: d.stride(),
    };
    rows_from(q, kv, reads, d, out)
}

/// Where keys and values are read: row r's head g at `k[r * rs + g * hd..]` (and `v`).
#[derive(Clone, Copy)]
pub struct KeysValues<'a> {
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub rs: usize,
}

/// [`rows`] with keys and values from their own buffers (a sampler's KV cache): `reads` are
/// `(first row of the sequence in kv, position of the query)`; the query sees the keys of
/// rows `first..=first + position` (within the window).
pub fn rows_from(q: &[f32], kv: KeysValues, reads: &[(usize, usize)], d: Heads, out: &mut [f32]) {
    let (rep, hd, a) = (d.rep(), d.hd, d.nq * d.hd);
    assert_eq!(q.len(), reads.len() * a);
    assert_eq!(out.len(), reads.len() * a);
    assert!(kv.rs >= d.nkv * hd);
    let dst = Shared(out.as_mut_ptr());
    let tasks: Vec<(usize, usize)> = (0..reads.len())
        .flat_map(|j| (0..d.nkv).map(move |g| (j, g)))
        .collect();
    tasks.into_par_iter().for_each(|(j, g)| {
        let (off, p) = reads[j];
        let lo = (p + 1).saturating_sub(d.window);
        let kl = p + 1 - lo;
        let last = (off + p) * kv.rs + d.nkv * hd;
        assert!(
            last <= kv.k.len() && last <= kv.v.len(),
            "read outside its sequence"
        );
        with_scratch(rep * kl, |sc| {
            let at = j * a + g * rep * hd;
            let view = |m: &[f32]| View {
                ptr: m[(off + lo) * kv.rs + g * hd..].as_ptr(),
                rs: kv.rs,
            };
            let (k, v) = (view(kv.k), view(kv.v));
            // SAFETY: the rep query heads of kv head g are adjacent (rep x hd at `at`), the
            // key and value views cover kl rows of hd (checked above), `sc` is rep x kl, the
            // output block is written by this task only.
            unsafe {
                let qv = View {
                    ptr: q[at..].as_ptr(),
                    rs: hd,
                };
                matmul(
                    rep,
                    kl,
                    hd,
                    sc.as_mut_ptr(),
                    kl,
                    false,
                    qv,
                    Rhs::Transposed(k),
                    1,
                );
                for row in sc.chunks_exact_mut(kl) {
                    softmax_row(row, 0, kl, d.scale());
                }
                let pv = View {
                    ptr: sc.as_ptr(),
                    rs: kl,
                };
                matmul(rep, hd, kl, dst.at(at), hd, false, pv, Rhs::Rows(v), 1);
            }
        });
    });
}

/// The additive mask `(len, len)` of dense causal attention: 0 where query `i` may see key
/// `j` (at or before it, and fewer than `window` back), -inf elsewhere. For the dense path
/// (CUDA, bf16) and for checking the kernels here.
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

#[cfg(test)]
mod tests {
    use super::super::kernels::test_values;
    use super::*;

    /// Dense reference: per item and head, softmax((q kᵀ) / sqrt(hd) + mask) v in f64.
    fn dense(qkv: &[f32], lens: &[usize], d: Heads) -> Vec<f64> {
        let (w, a) = (d.stride(), d.nq * d.hd);
        let mut out = vec![0f64; lens.iter().sum::<usize>() * a];
        let mut off = 0;
        for &len in lens {
            for h in 0..d.nq {
                let g = h / d.rep();
                for i in 0..len {
                    let q = &qkv[(off + i) * w + h * d.hd..][..d.hd];
                    let vis: Vec<usize> = (0..=i).filter(|j| i - j < d.window).collect();
                    let s: Vec<f64> = vis
                        .iter()
                        .map(|&j| {
                            let k = &qkv[(off + j) * w + (d.nq + g) * d.hd..][..d.hd];
                            let dot: f64 = q.iter().zip(k).map(|(a, b)| (a * b) as f64).sum();
                            dot / (d.hd as f64).sqrt()
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    for (x, &j) in s.iter().zip(&vis) {
                        let v = &qkv[(off + j) * w + (d.nq + d.nkv + g) * d.hd..][..d.hd];
                        for c in 0..d.hd {
                            out[(off + i) * a + h * d.hd + c] += (x - m).exp() / z * v[c] as f64;
                        }
                    }
                }
            }
            off += len;
        }
        out
    }

    /// `causal` on random activations for `lens`, and its largest difference from [`dense`].
    fn run_against_dense(
        lens: &[usize],
        d: Heads,
        seed: u64,
        amx: bool,
    ) -> (Vec<f32>, Vec<f32>, f64) {
        let rows_n: usize = lens.iter().sum();
        let qkv = test_values(rows_n * d.stride(), seed);
        let mut out = vec![0f32; rows_n * d.nq * d.hd];
        causal(&qkv, lens, d, &mut out, amx);
        let worst = out
            .iter()
            .zip(&dense(&qkv, lens, d))
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        (qkv, out, worst)
    }

    /// The AMX path: items past one key tile (600 keys: three tiles), a window that starts
    /// inside a panel, GQA, a head width below a tile row (16) and a full one (64). bf16x3
    /// products carry ~16 significant bits, so the bound is 5e-5 (f32 below: 1e-5); a wrong
    /// tile offset or a lost `lo` term is off by 1e-2 or more.
    #[test]
    fn amx_attention_matches_dense() {
        if amx::skip_without_amx("amx_attention_matches_dense") {
            return;
        }
        let lens = [600, 1, 64, 97, 300];
        for (window, hd) in [(usize::MAX, 16), (77, 16), (usize::MAX, 64)] {
            let d = Heads {
                nq: 4,
                nkv: 2,
                hd,
                window,
            };
            let (_, _, worst) = run_against_dense(&lens, d, 11, true);
            eprintln!("window {window}, hd {hd}: max difference {worst:e}");
            assert!(worst < 5e-5, "window {window}, hd {hd}: {worst}");
        }
    }

    /// Items of several lengths (blocks, partial blocks), GQA, with and without a window;
    /// the chosen-row variant gives the same rows.
    #[test]
    fn packed_attention_matches_dense() {
        let lens = [150, 1, 64, 97];
        for window in [usize::MAX, 40] {
            let d = Heads {
                nq: 4,
                nkv: 2,
                hd: 16,
                window,
            };
            let (qkv, out, worst) = run_against_dense(&lens, d, 7, false);
            assert!(worst < 1e-5, "window {window}: {worst}");

            let a = d.nq * d.hd;
            let reads = [(0, 0), (0, 149), (150, 0), (151, 63), (215, 50)];
            let q: Vec<f32> = reads
                .iter()
                .flat_map(|&(off, p)| qkv[(off + p) * d.stride()..][..a].to_vec())
                .collect();
            let mut got = vec![0f32; reads.len() * a];
            rows(&q, &qkv, &reads, d, &mut got);
            for (j, &(off, p)) in reads.iter().enumerate() {
                for c in 0..a {
                    let diff = (got[j * a + c] - out[(off + p) * a + c]).abs();
                    assert!(diff < 1e-5, "read {j} col {c}: {diff}");
                }
            }
        }
    }
}
