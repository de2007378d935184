//! The sampler's KV cache and the attention of new tokens against it (`decode.rs`).
//!
//! Why not `attention::rows_from` (two `gemm` calls per row and kv head): a decoding step's
//! products there are a few query heads by a few hundred keys, and `gemm` spent more time
//! packing each one than multiplying. Here the cache is laid out for the two products:
//! - keys transposed in tiles of L positions, `(row, kv head, tile, hd, L)`: a query's scores
//!   over a tile's keys are, per head dimension, one broadcast of the query value times L
//!   contiguous key values, added into L accumulators per query head held in registers; a
//!   tile is one contiguous block, so the keys stream (transposed whole rows of `(hd, cap)`
//!   were 64 strided streams per head, and the products waited on them);
//! - values as rows, `(row, kv head, cap, hd)`: the output is, per key, one broadcast of its
//!   probability times a contiguous value row.
//!
//! Both sums run in the order `kernels::matmul` sums them (the head dimension in one chain;
//! keys in blocks of `K_BLOCK`, each added into the output in turn), so the sampler keeps the
//! rounding that puts its greedy tokens on transformers'. The loops are plain Rust compiled
//! for the widest vector unit (the `widest!` dispatch); query heads are taken up to eight at
//! a time for the scores and four for the output, so that their accumulators stay in
//! registers.

use rayon::prelude::*;

use super::attention::{Heads, with_scratch};
use super::kernels::{K_BLOCK, softmax_row, widest};

/// Keys per score chunk: two AVX-512 registers per query head.
const L: usize = 32;
/// Value columns per output chunk: four AVX-512 registers per query head.
const C: usize = 64;
/// Query heads per register block of the scores (16 accumulators at 8).
const QB: usize = 8;
/// Query heads per register block of the output (16 accumulators at 4).
const VB: usize = 4;
/// How many keys (or value rows) ahead the loops prefetch: a head's keys and values are one
/// contiguous run each, but short, and the hardware prefetcher stops at every 4 KB page.
const AHEAD: usize = 8;

/// Ask for the cache line at `p` (any address: a prefetch never faults).
#[inline(always)]
fn prefetch(p: *const f32) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching reads nothing architecturally and cannot fault, whatever `p` is.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>(p as *const i8)
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

/// One layer's keys and values for `rows` sequences of up to `cap` tokens.
pub struct LayerCache {
    /// `(rows, nkv, tiles, hd, L)`.
    k: Vec<f32>,
    /// `(rows, nkv, cap, hd)`.
    v: Vec<f32>,
    cap: usize,
    tiles: usize,
}

impl LayerCache {
    pub fn new(rows: usize, cap: usize, d: Heads) -> LayerCache {
        let tiles = cap.div_ceil(L);
        LayerCache {
            k: vec![0f32; rows * d.nkv * tiles * d.hd * L],
            v: vec![0f32; rows * d.nkv * cap * d.hd],
            cap,
            tiles,
        }
    }

    /// Keep the key and value (`nkv * hd` each, rotary applied to the key) of `row`'s token
    /// at `pos`.
    pub fn store(&mut self, d: Heads, row: usize, pos: usize, key: &[f32], value: &[f32]) {
        assert!(
            pos < self.cap,
            "position {pos} past the cache's {}",
            self.cap
        );
        let hd = d.hd;
        let tile = hd * L;
        for g in 0..d.nkv {
            let at = ((row * d.nkv + g) * self.tiles + pos / L) * tile + pos % L;
            for (j, &x) in key[g * hd..(g + 1) * hd].iter().enumerate() {
                self.k[at + j * L] = x;
            }
            let at = ((row * d.nkv + g) * self.cap + pos) * hd;
            self.v[at..at + hd].copy_from_slice(&value[g * hd..(g + 1) * hd]);
        }
    }
}

/// Attention of the queries `q` (`(reads.len(), nq * hd)`, rotary applied) at `reads` =
/// `(row, position)`: each sees its row's cached keys up to and including its position
/// (within the window). Writes `(reads.len(), nq * hd)` into `out`.
pub fn attend(q: &[f32], cache: &LayerCache, reads: &[(usize, usize)], d: Heads, out: &mut [f32]) {
    let (hd, a, rep, scale) = (d.hd, d.nq * d.hd, d.rep(), d.scale());
    assert!(q.len() == reads.len() * a && out.len() == reads.len() * a);
    // one task per (read, kv head): its rep query heads are adjacent in q and out
    out.par_chunks_mut(rep * hd)
        .zip(q.par_chunks(rep * hd))
        .enumerate()
        .for_each(|(t, (o, qs))| {
            let (j, g) = (t / d.nkv, t % d.nkv);
            let (row, p) = reads[j];
            assert!(p < cache.cap, "read past the cache");
            let lo = (p + 1).saturating_sub(d.window);
            let kl = p + 1 - lo;
            let head = row * d.nkv + g;
            let tile = hd * L;
            let kt = &cache.k[head * cache.tiles * tile..(head + 1) * cache.tiles * tile];
            let v = &cache.v[(head * cache.cap + lo) * hd..(head * cache.cap + p + 1) * hd];
            // every score of sc is written before it is read: no need to clear the scratch
            with_scratch(rep * kl, |sc| {
                for r0 in (0..rep).step_by(QB) {
                    let n = QB.min(rep - r0);
                    let s = &mut sc[r0 * kl..(r0 + n) * kl];
                    scores(&qs[r0 * hd..(r0 + n) * hd], kt, lo, kl, n, hd, s);
                    for row in s.chunks_exact_mut(kl) {
                        softmax_row(row, 0, kl, scale);
                    }
                }
                for r0 in (0..rep).step_by(VB) {
                    let n = VB.min(rep - r0);
                    let s = &sc[r0 * kl..(r0 + n) * kl];
                    values(s, v, kl, n, hd, &mut o[r0 * hd..(r0 + n) * hd]);
                }
            });
        });
}

widest! {
    /// `sc (n x kl) = q (n x hd) · keys lo..lo + kl` of kt `(tiles, hd, L)`, n <= QB.
    fn scores(q: &[f32], kt: &[f32], lo: usize, kl: usize, n: usize, hd: usize, sc: &mut [f32]) => scores_body
}

#[inline(always)]
fn scores_body(q: &[f32], kt: &[f32], lo: usize, kl: usize, n: usize, hd: usize, sc: &mut [f32]) {
    macro_rules! heads {
        ($($r:literal)*) => {
            match n {
                $($r => scores_n::<$r>(q, kt, lo, kl, hd, sc),)*
                _ => unreachable!("at most QB heads"),
            }
        };
    }
    heads!(1 2 3 4 5 6 7 8)
}

#[inline(always)]
fn scores_n<const R: usize>(
    q: &[f32],
    kt: &[f32],
    lo: usize,
    kl: usize,
    hd: usize,
    sc: &mut [f32],
) {
    let end = lo + kl;
    // whole tiles from the one holding `lo`; lanes outside lo..end are computed and dropped
    for tile in lo / L..end.div_ceil(L) {
        let keys = &kt[tile * hd * L..(tile + 1) * hd * L];
        let mut acc = [[0f32; L]; R];
        for (dd, keys) in keys.chunks_exact(L).enumerate() {
            // the same two lines of the next tile
            let next = keys.as_ptr().wrapping_add(hd * L);
            prefetch(next);
            prefetch(next.wrapping_add(16));
            let keys: &[f32; L] = keys.try_into().expect("L");
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = q[r * hd + dd];
                for l in 0..L {
                    acc[l] = x.mul_add(keys[l], acc[l]);
                }
            }
        }
        let (t0, t1) = ((tile * L).max(lo), ((tile + 1) * L).min(end));
        for (r, acc) in acc.iter().enumerate() {
            sc[r * kl + t0 - lo..r * kl + t1 - lo]
                .copy_from_slice(&acc[t0 - tile * L..t1 - tile * L]);
        }
    }
}

widest! {
    /// `out (n x hd) = p (n x kl) · v (kl x hd)`, keys summed in blocks of K_BLOCK, n <= VB.
    fn values(p: &[f32], v: &[f32], kl: usize, n: usize, hd: usize, out: &mut [f32]) => values_body
}

#[inline(always)]
fn values_body(p: &[f32], v: &[f32], kl: usize, n: usize, hd: usize, out: &mut [f32]) {
    macro_rules! heads {
        ($($r:literal)*) => {
            match n {
                $($r => values_n::<$r>(p, v, kl, hd, out),)*
                _ => unreachable!("at most VB heads"),
            }
        };
    }
    heads!(1 2 3 4)
}

#[inline(always)]
fn values_n<const R: usize>(p: &[f32], v: &[f32], kl: usize, hd: usize, out: &mut [f32]) {
    let mut c0 = 0;
    while c0 + C <= hd {
        values_cols::<R, C>(p, v, kl, hd, c0, out);
        c0 += C;
    }
    while c0 + 16 <= hd {
        values_cols::<R, 16>(p, v, kl, hd, c0, out);
        c0 += 16;
    }
    while c0 < hd {
        values_cols::<R, 1>(p, v, kl, hd, c0, out);
        c0 += 1;
    }
}

/// Columns `c0..c0 + W` of [`values`].
#[inline(always)]
fn values_cols<const R: usize, const W: usize>(
    p: &[f32],
    v: &[f32],
    kl: usize,
    hd: usize,
    c0: usize,
    out: &mut [f32],
) {
    for t0 in (0..kl).step_by(K_BLOCK) {
        let mut acc = [[0f32; W]; R];
        for t in t0..kl.min(t0 + K_BLOCK) {
            let ahead = v.as_ptr().wrapping_add((t + AHEAD) * hd + c0);
            for l in (0..W).step_by(16) {
                prefetch(ahead.wrapping_add(l));
            }
            let row: &[f32; W] = v[t * hd + c0..][..W].try_into().expect("W");
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = p[r * kl + t];
                for l in 0..W {
                    acc[l] = x.mul_add(row[l], acc[l]);
                }
            }
        }
        for (r, acc) in acc.iter().enumerate() {
            let o = &mut out[r * hd + c0..r * hd + c0 + W];
            if t0 == 0 {
                o.copy_from_slice(acc);
            } else {
                o.iter_mut().zip(acc).for_each(|(o, a)| *o += a);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::kernels::test_values;
    use super::*;

    /// Cached attention equals softmax(q kᵀ / sqrt(hd)) v computed in f64, for grouped
    /// heads (rep 1, 4, 7 and 12, which takes two register blocks), head sizes off the chunk
    /// widths, a sliding window, key counts across K_BLOCK, reads at several positions.
    #[test]
    fn cached_attention_equals_its_formula() {
        for &(nq, nkv, hd, window, len) in &[
            (4, 1, 64, usize::MAX, 40),
            (8, 2, 64, usize::MAX, 300),
            (7, 1, 80, usize::MAX, 33),
            (12, 1, 48, 20, 70),
            (2, 2, 16, usize::MAX, 5),
        ] {
            let d = Heads {
                nq,
                nkv,
                hd,
                window,
            };
            let rows = 2;
            let mut cache = LayerCache::new(rows, len + 3, d);
            let kvw = nkv * hd;
            let keys = test_values(rows * len * kvw, 1);
            let vals = test_values(rows * len * kvw, 2);
            for r in 0..rows {
                for p in 0..len {
                    let at = (r * len + p) * kvw;
                    cache.store(d, r, p, &keys[at..at + kvw], &vals[at..at + kvw]);
                }
            }
            let reads = [(0, 0), (1, len - 1), (0, len / 2), (1, 1)];
            let a = nq * hd;
            let q = test_values(reads.len() * a, 3);
            let mut out = vec![f32::NAN; reads.len() * a];
            attend(&q, &cache, &reads, d, &mut out);
            let rep = nq / nkv;
            for (j, &(r, p)) in reads.iter().enumerate() {
                for h in 0..nq {
                    let g = h / rep;
                    let lo = (p + 1).saturating_sub(window);
                    let qh = &q[j * a + h * hd..][..hd];
                    let s: Vec<f64> = (lo..=p)
                        .map(|t| {
                            let k = &keys[(r * len + t) * kvw + g * hd..][..hd];
                            qh.iter()
                                .zip(k)
                                .map(|(x, y)| *x as f64 * *y as f64)
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = s.iter().map(|x| (x - m).exp()).sum();
                    for c in 0..hd {
                        let want: f64 = (lo..=p)
                            .zip(&s)
                            .map(|(t, x)| {
                                (x - m).exp() / z * vals[(r * len + t) * kvw + g * hd + c] as f64
                            })
                            .sum();
                        let got = out[j * a + h * hd + c] as f64;
                        assert!(
                            (got - want).abs() < 1e-5,
                            "nq {nq} nkv {nkv} hd {hd} read {j} head {h} col {c}: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
