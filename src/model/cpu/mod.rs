//! The decoder layers' forward on the CPU in f32, packed: the items of a batch lie end to end
//! as one `(tokens, hidden)` matrix with no padding, so every projection is one large matrix
//! product over real tokens only, and attention (`attention.rs`) keeps each item to itself.
//!
//! Why not candle ops here: a PRM forward on the CPU is compute-bound, and the op-by-op graph
//! pays for padding, for a copy at every head split / transpose, and for three q/k/v and two
//! gate/up products where one each will do. Here the weights of q, k, v (and of gate, up) are
//! concatenated once at load, products accumulate straight into the residual stream, rotary
//! positions and attention read the fused activations in place, and the last layer runs
//! only at the rows where scores are read (its keys and values are needed everywhere, its
//! queries, attention output and MLP only there).
//!
//! The products run on `gemm` in f32, on AMX tiles as bf16x3 (`amx.rs`), or on f32 panels
//! packed at load (`panel.rs`, the sampler's short products), as the loader asks ([`Engine`]):
//! each weight is kept in the one form its engine reads.
//!
//! The trainer borrows two pieces: the row kernels (`kernels.rs`, for `train::fused` and
//! `train::layer`) and checked strided products (`product.rs`, for `train::layer`'s forward
//! and backward), so that its code needs no `unsafe` of its own.

use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::ModelError;
use super::config::{ModelConfig, rotary_tables};
use attention::Heads;
use kernels::{matmul_wt, rms_norm, silu_mul};

pub mod alloc;
pub mod amx;
pub mod attention;
pub mod cached;
pub mod decode;
mod kernels;
mod mmap;
pub mod panel;
mod product;

#[cfg(test)]
pub(crate) use kernels::test_values;
/// The vectorised row kernels the trainer's fused ops share (`train::fused`).
pub use kernels::{
    normalize_grad_rows, normalize_rows, rope, softmax_grad_row, softmax_row, swiglu_grad,
    swiglu_rows,
};
pub use mmap::map_weights;
pub use product::{Strided, product};

/// How the packed CPU forward computes its matrix products (`--cpu-matmul`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CpuMatmul {
    /// `bf16x3` where the CPU has AMX, else `f32`.
    #[default]
    Auto,
    /// f32 on the vector units (the `gemm` crate): bit-for-bit the classic path.
    F32,
    /// AMX tiles, each f32 operand split into two bf16 (relative error ~2^-16 per product,
    /// scores move by about 1e-5); about twice the f32 rate on the same cores. An error on
    /// CPUs without AMX.
    Bf16x3,
}

impl std::str::FromStr for CpuMatmul {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(CpuMatmul::Auto),
            "f32" => Ok(CpuMatmul::F32),
            "bf16x3" => Ok(CpuMatmul::Bf16x3),
            _ => Err(format!("{s:?}: expected auto, f32 or bf16x3")),
        }
    }
}

impl CpuMatmul {
    /// `Auto` made concrete for this machine; `Bf16x3` where AMX is missing is an error.
    pub fn resolve(self) -> Result<CpuMatmul, ModelError> {
        let amx = amx::available();
        match self {
            CpuMatmul::Auto if amx => Ok(CpuMatmul::Bf16x3),
            CpuMatmul::Auto => Ok(CpuMatmul::F32),
            CpuMatmul::Bf16x3 if !amx => Err(ModelError::Load(
                "--cpu-matmul bf16x3 needs AMX (Intel Sapphire Rapids or later, Linux), which \
                 this CPU or OS does not offer; use f32 or auto"
                    .into(),
            )),
            m => Ok(m),
        }
    }

    /// The engine the PRM's layers load with.
    pub fn engine(self) -> Result<Engine, ModelError> {
        Ok(match self.resolve()? {
            CpuMatmul::Bf16x3 => Engine::Amx,
            _ => Engine::Gemm,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            CpuMatmul::Auto => "auto",
            CpuMatmul::F32 => "f32",
            CpuMatmul::Bf16x3 => "bf16x3",
        }
    }
}

/// Rows per parallel chunk in the row kernels.
const ROWS: usize = 16;

/// The engine of a layer stack's matrix products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// f32 on `gemm`, which packs both operands per call: large products (a PRM's prefill).
    Gemm,
    /// f32 on weights packed at load (`panel.rs`): short products (decoding). Needs AVX-512.
    Panels,
    /// bf16x3 on AMX tiles (`amx.rs`). Needs AMX.
    Amx,
}

impl Engine {
    /// The fastest f32 engine for short products on this CPU.
    pub fn for_decoding() -> Engine {
        match panel::available() {
            true => Engine::Panels,
            false => Engine::Gemm,
        }
    }
}

/// A `Linear` weight `(out, in)`, in the form its product engine reads.
enum Weight {
    F32(Vec<f32>),
    Panels(panel::Panels),
    Amx(amx::Packed),
}

struct Linear {
    out: usize,
    inp: usize,
    w: Weight,
}

impl Linear {
    fn new(w: Vec<f32>, out: usize, engine: Engine) -> Linear {
        let inp = w.len() / out;
        let w = match engine {
            Engine::Amx => Weight::Amx(amx::Packed::new(&w, out, inp)),
            Engine::Panels => Weight::Panels(panel::Panels::new(&w, out, inp)),
            Engine::Gemm => Weight::F32(w),
        };
        Linear { out, inp, w }
    }
}

/// The q, k, v projections: stacked into one product, except in the last layer, which
/// computes keys and values at every row and queries only at the read rows.
enum Qkv {
    Fused(Linear),
    Split { q: Linear, kv: Linear },
}

struct Layer {
    /// q, k, v weights, `((nq + 2 nkv) hd, hidden)` stacked.
    qkv: Qkv,
    /// q, k, v biases, stacked.
    bqkv: Option<Vec<f32>>,
    wo: Linear,
    bo: Option<Vec<f32>>,
    /// gate and up weights stacked: `(2 inter, hidden)`.
    wgu: Linear,
    wd: Linear,
    ln1: Vec<f32>,
    ln2: Vec<f32>,
}

pub struct CpuLayers {
    layers: Vec<Layer>,
    norm: Vec<f32>,
    eps: f32,
    inv_freq: Vec<f32>,
    h: usize,
    inter: usize,
    heads: Heads,
    amx: bool,
}

fn get(vb: &VarBuilder, shape: &[usize], name: &str) -> Result<Vec<f32>, ModelError> {
    let load = |e: candle_core::Error| ModelError::Load(format!("{name}: {e}"));
    vb.get(shape, name)
        .and_then(|t| t.flatten_all()?.to_vec1::<f32>())
        .map_err(load)
}

/// Row `i` of `m`, whose rows are `w` wide.
fn row(m: &[f32], w: usize, i: usize) -> &[f32] {
    &m[i * w..(i + 1) * w]
}

/// Rows of `src` picked by `idx`.
fn gather(src: &[f32], w: usize, idx: &[usize]) -> Vec<f32> {
    idx.iter().flat_map(|&i| row(src, w, i)).copied().collect()
}

fn threads() -> usize {
    rayon::current_num_threads()
}

/// `dst (rows x out) (+)= x (rows x in) · wᵀ`, with a bias first when given (`accumulate`:
/// onto what `dst` holds, else replacing it).
fn project(x: &[f32], w: &Linear, bias: Option<&[f32]>, dst: &mut [f32], accumulate: bool) {
    assert_eq!(dst.len(), x.len() / w.inp * w.out);
    project_into(x, w, bias, dst, w.out, accumulate);
}

/// As [`project`] into rows of stride `dst_rs` from the start of `dst` (a column range of a
/// wider matrix: `dst` starts at the range's first column).
fn project_into(
    x: &[f32],
    w: &Linear,
    bias: Option<&[f32]>,
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
) {
    let (out, inp) = (w.out, w.inp);
    let rows = x.len() / inp;
    assert!(x.len() == rows * inp && dst_rs >= out);
    assert!(rows == 0 || dst.len() >= (rows - 1) * dst_rs + out);
    let mut acc = accumulate;
    if let Some(b) = bias {
        for d in dst.chunks_mut(dst_rs).take(rows) {
            if acc {
                d[..out].iter_mut().zip(b).for_each(|(d, b)| *d += b);
            } else {
                d[..out].copy_from_slice(&b[..out]);
            }
        }
        acc = true;
    }
    match &w.w {
        Weight::Amx(p) => amx::matmul(x, p, dst, dst_rs, acc),
        Weight::Panels(p) => panel::matmul(x, p, dst, dst_rs, acc, threads()),
        Weight::F32(w) => matmul_wt(x, w, out, dst, dst_rs, acc, threads()),
    }
}

/// Below this many values a row kernel runs on the calling thread: a decoding step's rows
/// take a few microseconds, less than waking the pool (which cost a tenth of a step).
const SERIAL: usize = 1 << 18;

/// RMSNorm of every `h`-wide row, in parallel chunks.
fn norm_rows(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let h = w.len();
    if x.len() <= SERIAL {
        return rms_norm(x, w, eps, out);
    }
    x.par_chunks(ROWS * h)
        .zip(out.par_chunks_mut(ROWS * h))
        .for_each(|(x, o)| rms_norm(x, w, eps, o));
}

fn swiglu(gu: &[f32], inter: usize, out: &mut [f32]) {
    if gu.len() <= 2 * SERIAL {
        return silu_mul(gu, inter, out);
    }
    gu.par_chunks(ROWS * 2 * inter)
        .zip(out.par_chunks_mut(ROWS * inter))
        .for_each(|(g, o)| silu_mul(g, inter, o));
}

impl CpuLayers {
    /// The layers, final norm and rotary angles; `vb` is rooted at the base model (`model.`).
    /// The products run on `engine` (the caller checked the CPU has what it needs).
    pub fn load(c: &ModelConfig, vb: &VarBuilder, engine: Engine) -> Result<CpuLayers, ModelError> {
        let amx = engine == Engine::Amx;
        let h = c.hidden_size;
        let heads = Heads {
            nq: c.num_attention_heads,
            nkv: c.kv_heads(),
            hd: c.head_dim(),
            window: c.window().unwrap_or(usize::MAX),
        };
        let (q, kv) = (heads.nq * heads.hd, heads.nkv * heads.hd);
        let inter = c.intermediate_size;
        let mut layers = Vec::with_capacity(c.num_hidden_layers);
        for i in 0..c.num_hidden_layers {
            let l = vb.pp(format!("layers.{i}"));
            let (a, m) = (l.pp("self_attn"), l.pp("mlp"));
            let mut wq = get(&a, &[q, h], "q_proj.weight")?;
            let mut wkv = get(&a, &[kv, h], "k_proj.weight")?;
            wkv.extend(get(&a, &[kv, h], "v_proj.weight")?);
            let qkv = if i + 1 < c.num_hidden_layers {
                wq.extend(wkv);
                Qkv::Fused(Linear::new(wq, q + 2 * kv, engine))
            } else {
                Qkv::Split {
                    q: Linear::new(wq, q, engine),
                    kv: Linear::new(wkv, 2 * kv, engine),
                }
            };
            let bqkv = if c.qkv_bias() {
                let mut b = get(&a, &[q], "q_proj.bias")?;
                b.extend(get(&a, &[kv], "k_proj.bias")?);
                b.extend(get(&a, &[kv], "v_proj.bias")?);
                Some(b)
            } else {
                None
            };
            let mut wgu = get(&m, &[inter, h], "gate_proj.weight")?;
            wgu.extend(get(&m, &[inter, h], "up_proj.weight")?);
            layers.push(Layer {
                qkv,
                bqkv,
                wo: Linear::new(get(&a, &[h, q], "o_proj.weight")?, h, engine),
                bo: match c.attention_bias {
                    true => Some(get(&a, &[h], "o_proj.bias")?),
                    false => None,
                },
                wgu: Linear::new(wgu, 2 * inter, engine),
                wd: Linear::new(get(&m, &[h, inter], "down_proj.weight")?, h, engine),
                ln1: get(&l, &[h], "input_layernorm.weight")?,
                ln2: get(&l, &[h], "post_attention_layernorm.weight")?,
            });
        }
        Ok(CpuLayers {
            layers,
            norm: get(vb, &[h], "norm.weight")?,
            eps: c.rms_norm_eps as f32,
            inv_freq: c.inv_freq()?,
            h,
            inter,
            heads,
            amx,
        })
    }

    /// Whether the products run on AMX (bf16x3).
    pub fn amx(&self) -> bool {
        self.amx
    }

    /// Parameters held here (all but the embeddings).
    pub fn params(&self) -> usize {
        let opt = |b: &Option<Vec<f32>>| b.as_ref().map_or(0, Vec::len);
        let lin = |w: &Linear| w.out * w.inp;
        let layers: usize = self
            .layers
            .iter()
            .map(|l| {
                let qkv = match &l.qkv {
                    Qkv::Fused(w) => lin(w),
                    Qkv::Split { q, kv } => lin(q) + lin(kv),
                };
                qkv + opt(&l.bqkv)
                    + lin(&l.wo)
                    + opt(&l.bo)
                    + lin(&l.wgu)
                    + lin(&l.wd)
                    + l.ln1.len()
                    + l.ln2.len()
            })
            .sum();
        layers + self.norm.len()
    }

    /// The layer's second half on the rows of `x`, in place: `x += down(silu(gate(y)) *
    /// up(y))` with `y = norm(x)`; `y`, `gu` and `act` are scratch of the same rows.
    fn mlp(&self, l: &Layer, x: &mut [f32], y: &mut [f32], gu: &mut [f32], act: &mut [f32]) {
        norm_rows(x, &l.ln2, self.eps, y);
        project(y, &l.wgu, None, gu, false);
        swiglu(gu, self.inter, act);
        project(act, &l.wd, None, x, true);
    }

    /// Hidden states after the final norm, `(reads.len(), hidden)`, at `reads` = (item,
    /// position); `x` holds the embeddings of the items of `lens`, end to end.
    pub fn forward_at(
        &self,
        mut x: Vec<f32>,
        lens: &[usize],
        reads: &[(usize, usize)],
    ) -> Vec<f32> {
        let (h, inter, d) = (self.h, self.inter, self.heads);
        let n: usize = lens.iter().sum();
        assert_eq!(x.len(), n * h);
        let starts: Vec<usize> = lens
            .iter()
            .scan(0, |s, &l| {
                *s += l;
                Some(*s - l)
            })
            .collect();
        // position of each row within its item
        let pos: Vec<usize> = lens.iter().flat_map(|&l| 0..l).collect();
        let half = d.hd / 2;
        let (cos, sin) = rotary_tables(&self.inv_freq, lens.iter().copied().max().unwrap_or(0));
        // rotary on `heads` heads from column `from` of each `w`-wide row of `buf`
        let rot = |buf: &mut [f32], w: usize, from: usize, heads: usize, positions: &[usize]| {
            buf.par_chunks_mut(w).zip(positions).for_each(|(r, &p)| {
                let (c, s) = (&cos[p * half..][..half], &sin[p * half..][..half]);
                rope(&mut r[from..], heads, c, s)
            });
        };
        let (w, a) = (d.stride(), d.nq * d.hd);
        let idx: Vec<usize> = reads.iter().map(|&(i, p)| starts[i] + p).collect();
        let r = reads.len();
        let mut yr = vec![0f32; r * h];
        let Some((last, rest)) = self.layers.split_last() else {
            norm_rows(&gather(&x, h, &idx), &self.norm, self.eps, &mut yr);
            return yr;
        };
        let mut y = vec![0f32; n * h];
        let mut qkv = vec![0f32; n * w];
        {
            let mut att = vec![0f32; n * a];
            let mut gu = vec![0f32; n * 2 * inter];
            let mut act = vec![0f32; n * inter];
            for l in rest {
                let Qkv::Fused(wqkv) = &l.qkv else {
                    unreachable!("only the last layer splits q from k, v")
                };
                norm_rows(&x, &l.ln1, self.eps, &mut y);
                project(&y, wqkv, l.bqkv.as_deref(), &mut qkv, false);
                // rotary on the q and k heads, which are adjacent at the start of each row
                rot(&mut qkv, w, 0, d.nq + d.nkv, &pos);
                attention::causal(&qkv, lens, d, &mut att, self.amx);
                project(&att, &l.wo, l.bo.as_deref(), &mut x, true);
                self.mlp(l, &mut x, &mut y, &mut gu, &mut act);
            }
        }
        // The last layer: keys and values at every row, the rest at the read rows.
        let l = last;
        let Qkv::Split { q: wq, kv: wkv } = &l.qkv else {
            unreachable!("the last layer keeps q apart from k, v")
        };
        norm_rows(&x, &l.ln1, self.eps, &mut y);
        let kv_b = l.bqkv.as_ref().map(|b| &b[a..]);
        project_into(&y, wkv, kv_b, &mut qkv[a..], w, false);
        // rotary on the k heads only (the q columns of qkv are unused here)
        rot(&mut qkv, w, a, d.nkv, &pos);
        let rows: Vec<(usize, usize)> = reads.iter().map(|&(i, p)| (starts[i], p)).collect();
        let mut q = vec![0f32; r * a];
        let q_b = l.bqkv.as_ref().map(|b| &b[..a]);
        project(&gather(&y, h, &idx), wq, q_b, &mut q, false);
        let read_pos: Vec<usize> = reads.iter().map(|&(_, p)| p).collect();
        rot(&mut q, a, 0, d.nq, &read_pos);
        let mut att = vec![0f32; r * a];
        attention::rows(&q, &qkv, &rows, d, &mut att);
        let mut xr = gather(&x, h, &idx);
        project(&att, &l.wo, l.bo.as_deref(), &mut xr, true);
        let (mut gu, mut act) = (vec![0f32; r * 2 * inter], vec![0f32; r * inter]);
        self.mlp(l, &mut xr, &mut yr, &mut gu, &mut act);
        norm_rows(&xr, &self.norm, self.eps, &mut yr);
        yr
    }
}
