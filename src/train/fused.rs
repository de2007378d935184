//! Fused CPU ops for the trainable decoder, each with its backward: RMS normalisation, rotary
//! positions, the causal softmax of attention scores, and the log-probability of the next
//! token. Built from candle's elementwise ops, each is five to fifteen passes over its
//! tensor forward and again backward, each pass a fresh allocation; on two cores that was
//! more than half a KTO step (the products were a quarter). Here each is one pass forward and
//! one backward, over rows in parallel.
//!
//! They run on CPU f32 tensors only; the decoder uses its op-by-op path on other devices. The
//! formulas (row x of width h, upstream gradient g, output y):
//! - normalise: `y = x / sqrt(mean(x²) + eps)`; `dx = inv (g - y mean(g y))`;
//! - rotary (rotate-half, angles per position): `y = R x`; `dx = Rᵀ g` (the same rotation with
//!   the sines negated);
//! - causal softmax over keys `j <= i` (and within the window) of `scale x`:
//!   `dx = scale y (g - Σ_j g_j y_j)`, masked entries 0;
//! - SwiGLU `y = silu(a) b`, `σ = sigmoid(a)`: `da = g b σ (1 + a (1 - σ))`, `db = g a σ`;
//! - next-token log-probability `lp = x[id] - logsumexp(x)`: `dx = g (onehot(id) - softmax(x))`.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::model::cpu::{
    normalize_grad_rows, normalize_rows, rope as rope_row, softmax_grad_row, softmax_row,
    swiglu_grad, swiglu_rows,
};

/// The tensor's f32 values when it is contiguous on the CPU, else an error naming `op`.
fn slice<'a>(s: &'a CpuStorage, l: &Layout, op: &str) -> candle_core::Result<&'a [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg(format!("{op}: needs a contiguous tensor")))?;
    match s {
        CpuStorage::F32(v) => Ok(&v[a..b]),
        _ => Err(candle_core::Error::Msg(format!("{op}: needs f32"))),
    }
}

/// Rows of `w` in parallel: `f(row index, input row(s), output row)`.
fn rows_map(n: usize, w: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let mut out = vec![0f32; n * w];
    // chunks of rows so that tiny rows do not pay a task each
    let per = (16384 / w.max(1)).max(1);
    out.par_chunks_mut(per * w).enumerate().for_each(|(c, o)| {
        for (i, r) in o.chunks_exact_mut(w).enumerate() {
            f(c * per + i, r)
        }
    });
    out
}

fn last_dim(l: &Layout) -> usize {
    l.dims().last().copied().unwrap_or(1)
}

/// The body of a one-input op over rows of `w` values (the last axis unless said):
/// `f(row index, x row, y row)`; y has x's shape.
fn map_rows(
    s: &CpuStorage,
    l: &Layout,
    op: &str,
    w: usize,
    f: impl Fn(usize, &[f32], &mut [f32]) + Sync,
) -> candle_core::Result<(CpuStorage, Shape)> {
    let x = slice(s, l, op)?;
    let y = rows_map(x.len() / w, w, |i, o| f(i, &x[i * w..(i + 1) * w], o));
    Ok((CpuStorage::F32(y), l.shape().clone()))
}

/// A backward op: from the forward's input or output `x` and the upstream gradient `g`
/// (whole, since its rows need not match x's), `f(row index, x row, g, dx row)` per row.
struct RowGrad<F> {
    name: &'static str,
    f: F,
}

impl<F: Fn(usize, &[f32], &[f32], &mut [f32]) + Send + Sync> CustomOp2 for RowGrad<F> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let g = slice(s2, l2, self.name)?;
        map_rows(s1, l1, self.name, last_dim(l1), |i, x, o| {
            (self.f)(i, x, g, o)
        })
    }
}

/// `dx` of a forward op from `x` (its input or output) and `g`, by [`RowGrad`].
fn grad(
    x: &Tensor,
    g: &Tensor,
    name: &'static str,
    f: impl Fn(usize, &[f32], &[f32], &mut [f32]) + Send + Sync,
) -> candle_core::Result<Option<Tensor>> {
    Ok(Some(x.apply_op2_no_bwd(
        &g.contiguous()?,
        &RowGrad { name, f },
    )?))
}

/// `x / sqrt(mean(x²) + eps)` over the last axis (the weight is multiplied by the caller).
struct Normalize(f32);

impl CustomOp1 for Normalize {
    fn name(&self) -> &'static str {
        "normalize"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        map_rows(s, l, self.name(), last_dim(l), |_, x, o| {
            normalize_rows(x, x.len(), self.0, o)
        })
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let eps = self.0;
        grad(x, g, "normalize-grad", move |i, x, g, o| {
            let h = x.len();
            normalize_grad_rows(x, &g[i * h..(i + 1) * h], h, eps, o)
        })
    }
}

/// RMS normalisation of the last axis of a CPU f32 tensor, with backward.
pub fn normalize(x: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Normalize(eps as f32))
}

/// Rotary positions on `(b, t, heads, hd)`: position `p` of the t axis turns by the angles
/// of row `p` of `cos` / `sin` (`(t, hd / 2)`); the backward turns by `-sin`.
struct Rope {
    cos: Arc<Vec<f32>>,
    sin: Arc<Vec<f32>>,
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rope"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let &[_, t, n, hd] = l.dims() else {
            candle_core::bail!("rope: needs (b, t, heads, head_dim)")
        };
        let half = hd / 2;
        if self.cos.len() != t * half {
            candle_core::bail!(
                "rope: tables for {} positions, {t} given",
                self.cos.len() / half
            )
        }
        // a row is one (b, t) position: all its heads turn by the same angles
        let (cos, sin) = (&self.cos, &self.sin);
        map_rows(s, l, self.name(), n * hd, |i, x, o| {
            let p = i % t;
            o.copy_from_slice(x);
            rope_row(o, n, &cos[p * half..][..half], &sin[p * half..][..half]);
        })
    }

    fn bwd(&self, _x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let back = Rope {
            cos: self.cos.clone(),
            sin: Arc::new(self.sin.iter().map(|s| -s).collect()),
        };
        Ok(Some(g.contiguous()?.apply_op1(back)?))
    }
}

/// Rotary positions 0..t on `(b, t, heads, hd)`; `cos`, `sin` are `(t, hd / 2)` row-major.
pub fn rope(x: &Tensor, cos: Arc<Vec<f32>>, sin: Arc<Vec<f32>>) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(Rope { cos, sin })
}

/// Softmax of `scale x` over the last axis of `(.., t, s)` scores, query `i` (at position
/// `s - t + i`) seeing keys at or before it and fewer than `window` back.
struct CausalSoftmax {
    scale: f32,
    window: usize,
}

impl CausalSoftmax {
    /// The visible keys `lo..hi` of row `i` of a `(t, s)` block.
    fn span(&self, i: usize, t: usize, s: usize) -> (usize, usize) {
        let pos = s - t + i % t;
        ((pos + 1).saturating_sub(self.window), pos + 1)
    }
}

impl CustomOp1 for CausalSoftmax {
    fn name(&self) -> &'static str {
        "causal-softmax"
    }

    fn cpu_fwd(&self, st: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let d = l.dims();
        let (t, s) = (d[d.len() - 2], d[d.len() - 1]);
        if t > s {
            candle_core::bail!("causal-softmax: {t} queries but {s} keys")
        }
        map_rows(st, l, self.name(), s, |i, x, o| {
            let (lo, hi) = self.span(i, t, s);
            o[lo..hi].copy_from_slice(&x[lo..hi]);
            softmax_row(o, lo, hi, self.scale);
        })
    }

    fn bwd(&self, _x: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let d = y.dims();
        let (t, s) = (d[d.len() - 2], d[d.len() - 1]);
        let span = CausalSoftmax { ..*self };
        grad(y, g, "causal-softmax-grad", move |i, y, g, o| {
            let (lo, hi) = span.span(i, t, s);
            softmax_grad_row(y, &g[i * s..(i + 1) * s], lo, hi, span.scale, o)
        })
    }
}

/// Causal softmax of `scale x` over the last axis of `(.., t, s)` (see [`CausalSoftmax`]).
pub fn causal_softmax(x: &Tensor, scale: f64, window: usize) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op1(CausalSoftmax {
        scale: scale as f32,
        window,
    })
}

/// `silu(a) * b`, elementwise (the MLP's gate and up projections).
struct SwiGlu;

impl CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (a, b) = (slice(s1, l1, self.name())?, slice(s2, l2, self.name())?);
        if a.len() != b.len() {
            candle_core::bail!("swiglu: operands of {} and {} values", a.len(), b.len())
        }
        let w = last_dim(l1);
        let y = rows_map(a.len() / w, w, |i, o| {
            let r = i * w..(i + 1) * w;
            swiglu_rows(&a[r.clone()], &b[r], o)
        });
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = g.contiguous()?;
        let da = a.apply_op3_no_bwd(b, &g, &SwiGluGrad(0))?;
        let db = a.apply_op3_no_bwd(b, &g, &SwiGluGrad(1))?;
        Ok((Some(da), Some(db)))
    }
}

/// The gradient of [`SwiGlu`] with respect to operand 0 (a) or 1 (b), from (a, b, g).
struct SwiGluGrad(u8);

impl CustomOp3 for SwiGluGrad {
    fn name(&self) -> &'static str {
        "swiglu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let n = self.name();
        let (a, b, g) = (slice(s1, l1, n)?, slice(s2, l2, n)?, slice(s3, l3, n)?);
        let w = last_dim(l1);
        let wrt_a = self.0 == 0;
        let d = rows_map(a.len() / w, w, |i, o| {
            let r = i * w..(i + 1) * w;
            swiglu_grad(&a[r.clone()], &b[r.clone()], &g[r], wrt_a, o)
        });
        Ok((CpuStorage::F32(d), l1.shape().clone()))
    }
}

/// `silu(gate) * up` of two CPU f32 tensors of one shape, with backward.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> candle_core::Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)
}

/// `log softmax(x)[id]` per row of `(n, vocab)` logits, the ids held by the op.
struct PickedLogprob(Arc<Vec<u32>>);

/// Per row: (max, sum of exp(x - max)).
fn row_lse(r: &[f32]) -> (f32, f32) {
    let m = r.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    (m, r.iter().map(|v| (v - m).exp()).sum())
}

impl CustomOp1 for PickedLogprob {
    fn name(&self) -> &'static str {
        "picked-logprob"
    }

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(s, l, self.name())?;
        let &[n, v] = l.dims() else {
            candle_core::bail!("picked-logprob: needs (rows, vocab)")
        };
        if self.0.len() != n || self.0.iter().any(|&i| i as usize >= v) {
            candle_core::bail!("picked-logprob: one id below {v} per row")
        }
        let mut out = vec![0f32; n];
        out.par_iter_mut().enumerate().for_each(|(i, o)| {
            let r = &x[i * v..(i + 1) * v];
            let (m, z) = row_lse(r);
            *o = r[self.0[i] as usize] - m - z.ln();
        });
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(&self, x: &Tensor, _y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let ids = self.0.clone();
        grad(x, g, "picked-logprob-grad", move |i, r, g, o| {
            let (m, z) = row_lse(r);
            let (gi, inv) = (g[i], 1.0 / z);
            for (o, x) in o.iter_mut().zip(r) {
                *o = -gi * (x - m).exp() * inv;
            }
            o[ids[i] as usize] += gi;
        })
    }
}

/// `log softmax(logits)[ids[i]]` for each row `i` of `(n, vocab)` logits, with backward.
pub fn picked_logprobs(logits: &Tensor, ids: Vec<u32>) -> candle_core::Result<Tensor> {
    logits.contiguous()?.apply_op1(PickedLogprob(Arc::new(ids)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{D, Device, Var};

    fn close(a: &Tensor, b: &Tensor, tol: f32) {
        let (a, b): (Vec<f32>, Vec<f32>) = (
            a.flatten_all().unwrap().to_vec1().unwrap(),
            b.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{i}: {x} vs {y}");
        }
    }

    fn var(shape: &[usize], seed: u64) -> Var {
        let n: usize = shape.iter().product();
        let v = crate::model::cpu::test_values(n, seed);
        Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu).unwrap()).unwrap()
    }

    /// Value and gradient (of sum(out * r) for a fixed random r) of `f` at `x`.
    fn both(x: &Var, f: impl Fn(&Tensor) -> Tensor) -> (Tensor, Tensor) {
        let y = f(x.as_tensor());
        let r = var(y.dims(), 99);
        let g = (&y * r.as_tensor())
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        (y, g.get(x.as_tensor()).unwrap().clone())
    }

    #[test]
    fn each_op_equals_its_op_by_op_form_forward_and_backward() {
        // normalize
        let x = var(&[3, 5, 24], 1);
        let (a, ga) = both(&x, |x| normalize(x, 1e-6).unwrap());
        let (b, gb) = both(&x, |x| {
            let inv = (x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap() + 1e-6)
                .unwrap()
                .sqrt()
                .unwrap()
                .recip()
                .unwrap();
            x.broadcast_mul(&inv).unwrap()
        });
        close(&a, &b, 1e-5);
        close(&ga, &gb, 1e-4);
        // rope on (b, t, heads, hd)
        let (t, hd) = (6, 8);
        let inv: Vec<f32> = (0..hd / 2)
            .map(|i| 1.0 / 10f32.powf(i as f32 / 2.0))
            .collect();
        let (cos, sin) = crate::model::config::rotary_rows(&inv, 0..t);
        let x = var(&[2, t, 3, hd], 2);
        let (cs, sn) = (Arc::new(cos.clone()), Arc::new(sin.clone()));
        let (a, ga) = both(&x, |x| rope(x, cs.clone(), sn.clone()).unwrap());
        let full = |v: Vec<f32>| {
            let h = Tensor::from_vec(v, (t, hd / 2), &Device::Cpu).unwrap();
            Tensor::cat(&[&h, &h], 1)
                .unwrap()
                .reshape((1, t, 1, hd))
                .unwrap()
        };
        let (c4, s4) = (full(cos), full(sin));
        let (b, gb) = both(&x, |x| {
            let (x1, x2) = (
                x.narrow(3, 0, hd / 2).unwrap(),
                x.narrow(3, hd / 2, hd / 2).unwrap(),
            );
            let rot = Tensor::cat(&[&x2.neg().unwrap(), &x1], 3).unwrap();
            (x.broadcast_mul(&c4).unwrap() + rot.broadcast_mul(&s4).unwrap()).unwrap()
        });
        close(&a, &b, 1e-5);
        close(&ga, &gb, 1e-5);
        // causal softmax with a window, more keys than queries (a cached prefix)
        let (t, s, window, scale) = (4, 7, 3, 0.7);
        let x = var(&[2, 3, t, s], 3);
        let (a, ga) = both(&x, |x| causal_softmax(x, scale, window).unwrap());
        let mut mask = vec![f32::NEG_INFINITY; t * s];
        for i in 0..t {
            let pos = s - t + i;
            for j in 0..s {
                if j <= pos && pos - j < window {
                    mask[i * s + j] = 0.0;
                }
            }
        }
        let mask = Tensor::from_vec(mask, (t, s), &Device::Cpu).unwrap();
        let (b, gb) = both(&x, |x| {
            let z = (x * scale).unwrap().broadcast_add(&mask).unwrap();
            let m = z.max_keepdim(D::Minus1).unwrap().detach();
            let e = z.broadcast_sub(&m).unwrap().exp().unwrap();
            e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap()
        });
        close(&a, &b, 1e-5);
        close(&ga, &gb, 1e-5);
        // swiglu, both operands
        let (ga_, up) = (var(&[4, 9], 5), var(&[4, 9], 6));
        let r = var(&[4, 9], 7);
        let grads = |fused: bool| {
            let y = if fused {
                swiglu(ga_.as_tensor(), up.as_tensor()).unwrap()
            } else {
                (ga_.as_tensor().silu().unwrap() * up.as_tensor()).unwrap()
            };
            let g = (&y * r.as_tensor())
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            (
                y,
                g.get(ga_.as_tensor()).unwrap().clone(),
                g.get(up.as_tensor()).unwrap().clone(),
            )
        };
        let ((a, da, ua), (b, db, ub)) = (grads(true), grads(false));
        close(&a, &b, 1e-5);
        close(&da, &db, 1e-5);
        close(&ua, &ub, 1e-5);
        // picked log-probabilities
        let x = var(&[5, 11], 4);
        let ids = vec![0u32, 10, 3, 3, 7];
        let (a, ga) = both(&x, |x| picked_logprobs(x, ids.clone()).unwrap());
        let idx = Tensor::from_vec(ids.clone(), (5, 1), &Device::Cpu).unwrap();
        let (b, gb) = both(&x, |x| {
            crate::train::decoder::log_softmax(x)
                .unwrap()
                .gather(&idx, 1)
                .unwrap()
                .squeeze(1)
                .unwrap()
        });
        close(&a, &b, 1e-5);
        close(&ga, &gb, 1e-5);
        assert!(picked_logprobs(x.as_tensor(), vec![0, 11, 0, 0, 0]).is_err());
    }
}
