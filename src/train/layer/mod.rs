//! One decoder layer of the trainable model as a single autograd node on the CPU, forward and
//! backward written out: RMSNorm, the q/k/v products (with Qwen2's biases), rotary positions,
//! causal grouped-query attention (with Mistral's sliding window), the output product and
//! residual, RMSNorm, SwiGLU and the down product and residual.
//!
//! Why one node: built from candle ops, a layer was some forty graph nodes, and candle's
//! backward gives every node's input a zero tensor and then adds the incoming gradient to it,
//! a transposed weight's gradient through a strided copy; on two cores that bookkeeping made
//! the backward three times the forward. Here a layer's forward keeps what its backward needs
//! (the normalised inputs, rotated queries and keys, values, attention output, gate and up),
//! and the backward is the products `dX = dY W`, `dW = dYᵀ X` on strided views
//! (`model::cpu::product`) and one pass per row kernel. Attention probabilities are not kept:
//! the backward recomputes them per head (`t x t` at a time), so memory grows with the
//! sequence, not its square.
//!
//! The layer's weights reach the op as one flat tensor, the concatenation of its parameters
//! in [`Layout`]'s order (candle's `cat` backward hands each parameter its part of the
//! gradient). Formulas (rows r, `n = x / rms(x)`):
//! - `h1 = n(x) ∘ w₁`; `qkv = h1 Wqkvᵀ + b`; q, k rotated; `P = softmax(scale q kᵀ)` causal
//!   and within the window; `a = P v`; `x2 = x + a Woᵀ`;
//! - `h2 = n(x2) ∘ w₂`; `g, u = h2 Wgᵀ, h2 Wuᵀ`; `s = silu(g) u`; `y = x2 + s Wdᵀ`;
//! - backward: `dWd = dyᵀ s`, `ds = dy Wd`, `dg, du` by the SwiGLU rule, `dWgu = dguᵀ h2`,
//!   `dh2 = dgu Wgu`, `dw₂ = Σ_r dh2 ∘ n(x2)`, `dx2 = dy + n'(x2)(dh2 ∘ w₂)`, `dWo = dx2ᵀ a`,
//!   `da = dx2 Wo`; per head `dP = da vᵀ`, `dS = scale P ∘ (dP - Σ dP ∘ P)`, `dq = dS k`,
//!   `dk = dSᵀ q`, `dv = Pᵀ da` (summed over a key/value head's query heads), q and k turned
//!   back; `db = Σ_r dqkv`, `dWqkv = dqkvᵀ h1`, `dh1 = dqkv Wqkv`, `dw₁ = Σ_r dh1 ∘ n(x)`,
//!   `dx = dx2 + n'(x)(dh1 ∘ w₁)`.
//!
//! Every sum over rows is taken in fixed chunks added in order, and the products split
//! columns in fixed chunks: a step gives the same bits run after run.

use std::sync::{Arc, Mutex};

use candle_core::{CpuStorage, CustomOp2, Layout as CLayout, Shape, Tensor};
use rayon::prelude::*;

mod attention;

use crate::model::config::ModelConfig;
use crate::model::cpu::{
    Strided, normalize_grad_rows, normalize_rows, product, rope, swiglu_grad, swiglu_rows,
};

/// The shape of a layer, and where each weight sits in its flat tensor: `ln1 (h)`,
/// `wqkv ((q + 2 kv) x h)` (q, k and v stacked), `bqkv (q + 2 kv)` when the family has
/// biases, `wo (h x q)`, `ln2 (h)`, `wgu (2 i x h)` (gate, then up), `wd (h x i)`.
#[derive(Clone, Copy, Debug)]
pub struct Layout {
    pub h: usize,
    pub nh: usize,
    pub nkv: usize,
    pub hd: usize,
    pub inter: usize,
    pub bias: bool,
    pub eps: f32,
    pub window: usize,
}

/// Offsets of the weights in the flat tensor.
struct At {
    ln1: usize,
    wqkv: usize,
    bqkv: Option<usize>,
    wo: usize,
    ln2: usize,
    wgu: usize,
    wd: usize,
    len: usize,
}

impl Layout {
    /// The layout of `c`'s layers, or None for a layer this op does not cover (Llama's
    /// biases on o and the MLP: those run op by op).
    pub fn new(c: &ModelConfig) -> Option<Layout> {
        if c.mlp_bias || (c.model_type == "llama" && c.attention_bias) {
            return None;
        }
        Some(Layout {
            h: c.hidden_size,
            nh: c.num_attention_heads,
            nkv: c.kv_heads(),
            hd: c.head_dim(),
            inter: c.intermediate_size,
            bias: c.qkv_bias(),
            eps: c.rms_norm_eps as f32,
            window: c.window().unwrap_or(usize::MAX),
        })
    }

    /// Query width `nh hd`.
    fn q(&self) -> usize {
        self.nh * self.hd
    }

    /// A row of q, k and v: `(nh + 2 nkv) hd`.
    fn w(&self) -> usize {
        (self.nh + 2 * self.nkv) * self.hd
    }

    fn at(&self) -> At {
        let (h, w) = (self.h, self.w());
        let ln1 = 0;
        let wqkv = ln1 + h;
        let mut next = wqkv + w * h;
        let bqkv = self.bias.then(|| {
            next += w;
            next - w
        });
        let wo = next;
        let ln2 = wo + h * self.q();
        let wgu = ln2 + h;
        let wd = wgu + 2 * self.inter * h;
        At {
            ln1,
            wqkv,
            bqkv,
            wo,
            ln2,
            wgu,
            wd,
            len: wd + h * self.inter,
        }
    }

    /// Elements of the flat weight tensor.
    pub fn weights(&self) -> usize {
        self.at().len
    }

    /// The Hugging Face parameter names of layer `l`, in flat order (suffixes `.weight` /
    /// `.bias` included).
    pub fn names(&self, l: usize) -> Vec<String> {
        let p = format!("model.layers.{l}");
        let mut n = vec![format!("{p}.input_layernorm.weight")];
        for x in ["q", "k", "v"] {
            n.push(format!("{p}.self_attn.{x}_proj.weight"));
        }
        if self.bias {
            for x in ["q", "k", "v"] {
                n.push(format!("{p}.self_attn.{x}_proj.bias"));
            }
        }
        n.push(format!("{p}.self_attn.o_proj.weight"));
        n.push(format!("{p}.post_attention_layernorm.weight"));
        for x in ["gate", "up", "down"] {
            n.push(format!("{p}.mlp.{x}_proj.weight"));
        }
        n
    }
}

/// What the backward needs from the forward (rows `r = b t`). What one pass remakes is not
/// kept (`h = n ∘ w`, `silu(g) u`): on a 360M-parameter model that is a third of a layer's
/// activations.
struct Saved {
    /// `n(x)` (r x h).
    n1: Vec<f32>,
    /// q and k after rotary, v (r x w).
    qkv: Vec<f32>,
    /// Attention output before `Wo` (r x q).
    att: Vec<f32>,
    /// The residual after attention and `n(x2)` (r x h).
    x2: Vec<f32>,
    n2: Vec<f32>,
    /// Gate then up per row (r x 2i).
    gu: Vec<f32>,
}

/// A layer over `(b, t, h)` rows of whole sequences from position 0, as a candle op on
/// `(x, flat weights)`. `keep` saves what the backward needs (a forward without gradient
/// keeps nothing).
pub struct LayerOp {
    pub layout: Layout,
    /// Rotary tables for positions `0..t`, `(t, hd / 2)`.
    pub cos: Arc<Vec<f32>>,
    pub sin: Arc<Vec<f32>>,
    pub keep: bool,
    saved: Mutex<Option<Saved>>,
}

impl LayerOp {
    pub fn new(layout: Layout, cos: Arc<Vec<f32>>, sin: Arc<Vec<f32>>, keep: bool) -> LayerOp {
        LayerOp {
            layout,
            cos,
            sin,
            keep,
            saved: Mutex::new(None),
        }
    }
}

fn threads() -> usize {
    rayon::current_num_threads()
}

/// `dst[r] = f(r)` over rows of width `w` in parallel, chunks of rows per task.
fn each_row(dst: &mut [f32], w: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let per = (16384 / w.max(1)).max(1);
    dst.par_chunks_mut(per * w).enumerate().for_each(|(c, o)| {
        for (i, r) in o.chunks_exact_mut(w).enumerate() {
            f(c * per + i, r)
        }
    });
}

/// `Σ_r f(r)` of `w`-wide rows, `rows` of them: fixed chunks summed in order.
fn row_sum(rows: usize, w: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    const CHUNK: usize = 64;
    let parts: Vec<Vec<f32>> = (0..rows.div_ceil(CHUNK))
        .into_par_iter()
        .map(|c| {
            let mut acc = vec![0f32; w];
            for r in c * CHUNK..rows.min((c + 1) * CHUNK) {
                f(r, &mut acc)
            }
            acc
        })
        .collect();
    let mut out = vec![0f32; w];
    for p in parts {
        out.iter_mut().zip(p).for_each(|(o, v)| *o += v);
    }
    out
}

/// `y = n(x) ∘ w` per row; returns (n, y).
fn norm(x: &[f32], w: &[f32], eps: f32) -> (Vec<f32>, Vec<f32>) {
    let h = w.len();
    let mut n = vec![0f32; x.len()];
    each_row(&mut n, h, |r, o| {
        normalize_rows(&x[r * h..][..h], h, eps, o)
    });
    let y = scaled(&n, w);
    (n, y)
}

/// `n ∘ w` per row.
fn scaled(n: &[f32], w: &[f32]) -> Vec<f32> {
    let h = w.len();
    let mut y = vec![0f32; n.len()];
    each_row(&mut y, h, |r, o| {
        o.iter_mut()
            .zip(&n[r * h..][..h])
            .zip(w)
            .for_each(|((o, n), w)| *o = n * w)
    });
    y
}

/// `silu(g) u` per row of gate-then-up rows `gu` (r x 2i).
fn swiglu(gu: &[f32], i: usize) -> Vec<f32> {
    let mut act = vec![0f32; gu.len() / 2];
    each_row(&mut act, i, |r, o| {
        let row = &gu[r * 2 * i..][..2 * i];
        swiglu_rows(&row[..i], &row[i..], o)
    });
    act
}

/// The backward of [`norm`] from `dy`: adds `dx` into `dx_acc`, returns `dw`.
fn norm_back(
    x: &[f32],
    n: &[f32],
    w: &[f32],
    dy: &[f32],
    eps: f32,
    dx_acc: &mut [f32],
) -> Vec<f32> {
    let h = w.len();
    let rows = x.len() / h;
    let dw = row_sum(rows, h, |r, acc| {
        acc.iter_mut()
            .zip(&dy[r * h..][..h])
            .zip(&n[r * h..][..h])
            .for_each(|((a, g), n)| *a += g * n)
    });
    each_row(dx_acc, h, |r, o| {
        let g: Vec<f32> = dy[r * h..][..h].iter().zip(w).map(|(g, w)| g * w).collect();
        let mut d = vec![0f32; h];
        normalize_grad_rows(&x[r * h..][..h], &g, h, eps, &mut d);
        o.iter_mut().zip(&d).for_each(|(o, d)| *o += d);
    });
    dw
}

/// The backward of `y = x Wᵀ` (`rows x inp` by a row-major `(out, inp)` weight): writes
/// `dW = dyᵀ x` into the start of `dw` and returns `dx = dy W` (`rows x inp`).
fn linear_back(
    (rows, out, inp): (usize, usize, usize),
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    dw: &mut [f32],
    th: usize,
) -> Vec<f32> {
    let dyv = Strided::rows(dy, out);
    product(
        out,
        inp,
        rows,
        dyv.t(),
        Strided::rows(x, inp),
        dw,
        inp,
        false,
        th,
    );
    let mut dx = vec![0f32; rows * inp];
    product(
        rows,
        inp,
        out,
        dyv,
        Strided::rows(w, inp),
        &mut dx,
        inp,
        false,
        th,
    );
    dx
}

impl LayerOp {
    /// Rows `r` at position `r % t` turn their first `heads` heads by the tables (with `-sin`
    /// when `back`).
    fn turn(&self, qkv: &mut [f32], t: usize, heads: usize, back: bool) {
        let (l, half) = (self.layout, self.layout.hd / 2);
        let neg: Vec<f32>;
        let sin: &[f32] = if back {
            neg = self.sin.iter().map(|s| -s).collect();
            &neg
        } else {
            &self.sin
        };
        each_row(qkv, l.w(), |r, row| {
            let p = r % t;
            rope(
                row,
                heads,
                &self.cos[p * half..][..half],
                &sin[p * half..][..half],
            )
        });
    }

    /// The forward on `x (b t, h)` with the flat weights `p`; returns `y` and what the
    /// backward needs.
    fn forward(&self, x: &[f32], p: &[f32], b: usize, t: usize) -> (Vec<f32>, Saved) {
        let (l, at, th) = (self.layout, self.layout.at(), threads());
        let (h, w, a, i2) = (l.h, l.w(), l.q(), 2 * l.inter);
        let rows = b * t;
        let (n1, h1) = norm(x, &p[at.ln1..][..h], l.eps);
        let mut qkv = vec![0f32; rows * w];
        if let Some(bq) = at.bqkv {
            each_row(&mut qkv, w, |_, r| r.copy_from_slice(&p[bq..][..w]));
        }
        let wqkv = Strided::rows(&p[at.wqkv..][..w * h], h);
        product(
            rows,
            w,
            h,
            Strided::rows(&h1, h),
            wqkv.t(),
            &mut qkv,
            w,
            at.bqkv.is_some(),
            th,
        );
        self.turn(&mut qkv, t, l.nh + l.nkv, false);
        let att = self.attend(&qkv, b, t);
        let mut x2 = x.to_vec();
        let wo = Strided::rows(&p[at.wo..][..h * a], a);
        product(
            rows,
            h,
            a,
            Strided::rows(&att, a),
            wo.t(),
            &mut x2,
            h,
            true,
            th,
        );
        let (n2, h2) = norm(&x2, &p[at.ln2..][..h], l.eps);
        let mut gu = vec![0f32; rows * i2];
        let wgu = Strided::rows(&p[at.wgu..][..i2 * h], h);
        product(
            rows,
            i2,
            h,
            Strided::rows(&h2, h),
            wgu.t(),
            &mut gu,
            i2,
            false,
            th,
        );
        let act = swiglu(&gu, l.inter);
        let mut y = x2.clone();
        let wd = Strided::rows(&p[at.wd..][..h * l.inter], l.inter);
        product(
            rows,
            h,
            l.inter,
            Strided::rows(&act, l.inter),
            wd.t(),
            &mut y,
            h,
            true,
            th,
        );
        let saved = Saved {
            n1,
            qkv,
            att,
            x2,
            n2,
            gu,
        };
        (y, saved)
    }

    /// The backward: `(dx, dp)` from `dy`.
    fn backward(
        &self,
        s: &Saved,
        x: &[f32],
        p: &[f32],
        dy: &[f32],
        b: usize,
        t: usize,
    ) -> (Vec<f32>, Vec<f32>) {
        let (l, at, th) = (self.layout, self.layout.at(), threads());
        let (h, w, a, i, i2) = (l.h, l.w(), l.q(), l.inter, 2 * l.inter);
        let rows = b * t;
        let mut dp = vec![0f32; at.len];
        // down: dWd = dyᵀ act, dact = dy Wd
        let act = swiglu(&s.gu, i);
        let dact = linear_back(
            (rows, h, i),
            dy,
            &act,
            &p[at.wd..][..h * i],
            &mut dp[at.wd..],
            th,
        );
        drop(act);
        // SwiGLU
        let mut dgu = vec![0f32; rows * i2];
        each_row(&mut dgu, i2, |r, o| {
            let (gate, up) = s.gu[r * i2..][..i2].split_at(i);
            let g = &dact[r * i..][..i];
            let (dg, du) = o.split_at_mut(i);
            swiglu_grad(gate, up, g, true, dg);
            swiglu_grad(gate, up, g, false, du);
        });
        drop(dact);
        let h2 = scaled(&s.n2, &p[at.ln2..][..h]);
        let dh2 = linear_back(
            (rows, i2, h),
            &dgu,
            &h2,
            &p[at.wgu..][..i2 * h],
            &mut dp[at.wgu..],
            th,
        );
        drop(h2);
        drop(dgu);
        let mut dx2 = dy.to_vec();
        let dw2 = norm_back(&s.x2, &s.n2, &p[at.ln2..][..h], &dh2, l.eps, &mut dx2);
        dp[at.ln2..][..h].copy_from_slice(&dw2);
        drop(dh2);
        // attention output: dWo = dx2ᵀ att, da = dx2 Wo
        let da = linear_back(
            (rows, h, a),
            &dx2,
            &s.att,
            &p[at.wo..][..h * a],
            &mut dp[at.wo..],
            th,
        );
        let mut dqkv = self.attend_back(&s.qkv, &da, b, t);
        drop(da);
        self.turn(&mut dqkv, t, l.nh + l.nkv, true);
        if let Some(bq) = at.bqkv {
            let db = row_sum(rows, w, |r, acc| {
                acc.iter_mut()
                    .zip(&dqkv[r * w..][..w])
                    .for_each(|(a, g)| *a += g)
            });
            dp[bq..][..w].copy_from_slice(&db);
        }
        let h1 = scaled(&s.n1, &p[at.ln1..][..h]);
        let dh1 = linear_back(
            (rows, w, h),
            &dqkv,
            &h1,
            &p[at.wqkv..][..w * h],
            &mut dp[at.wqkv..],
            th,
        );
        drop(dqkv);
        let mut dx = dx2;
        let dw1 = norm_back(x, &s.n1, &p[at.ln1..][..h], &dh1, l.eps, &mut dx);
        dp[at.ln1..][..h].copy_from_slice(&dw1);
        (dx, dp)
    }
}

fn slice<'a>(s: &'a CpuStorage, l: &CLayout) -> candle_core::Result<&'a [f32]> {
    let (a, b) = l
        .contiguous_offsets()
        .ok_or_else(|| candle_core::Error::Msg("layer: needs contiguous tensors".into()))?;
    match s {
        CpuStorage::F32(v) => Ok(&v[a..b]),
        _ => candle_core::bail!("layer: needs f32"),
    }
}

impl CustomOp2 for LayerOp {
    fn name(&self) -> &'static str {
        "decoder-layer"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &CLayout,
        s2: &CpuStorage,
        l2: &CLayout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let &[b, t, h] = l1.dims() else {
            candle_core::bail!("layer: needs (b, t, hidden)")
        };
        let (x, p) = (slice(s1, l1)?, slice(s2, l2)?);
        let l = self.layout;
        if h != l.h || p.len() != l.weights() || self.cos.len() != t * (l.hd / 2) {
            candle_core::bail!(
                "layer: input (b, {t}, {h}) or weights ({}) do not fit",
                p.len()
            )
        }
        let (y, saved) = self.forward(x, p, b, t);
        if self.keep {
            *self.saved.lock().unwrap_or_else(|e| e.into_inner()) = Some(saved);
        }
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        p: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (b, t, _) = x.dims3()?;
        let saved = self
            .saved
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .ok_or_else(|| {
                candle_core::Error::Msg(
                    "layer: backward twice, or of a forward without gradient".into(),
                )
            })?;
        let xs: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let ps: Vec<f32> = p.flatten_all()?.to_vec1()?;
        let dys: Vec<f32> = dy.flatten_all()?.to_vec1()?;
        let (dx, dp) = self.backward(&saved, &xs, &ps, &dys, b, t);
        Ok((
            Some(Tensor::from_vec(dx, x.shape(), x.device())?),
            Some(Tensor::from_vec(dp, p.shape(), p.device())?),
        ))
    }
}
