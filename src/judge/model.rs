//! The decoder behind every PRM: the Llama / Mistral / Qwen2 family (RMSNorm, rotary
//! positions, grouped-query attention, SwiGLU MLP), read from a Hugging Face `config.json` and
//! safetensors with Hugging Face tensor names, plus the score heads.
//!
//! Why not candle-transformers' models: their Llama and Mistral forwards return only the last
//! token's vocabulary logits, and a PRM reads a score at every step, so it needs the hidden
//! states at chosen positions. One decoder covers the three families (they differ in biases,
//! rotary scaling and the sliding window).
//!
//! Two ways to run the layers, same weights and same scores: on the CPU in f32 the packed
//! kernels of `model::cpu` (items end to end, no padding), whose matrix products run in f32 or,
//! on CPUs with AMX, as bf16x3 (`model::cpu::amx`; [`CpuMatmul`]); elsewhere (CUDA, bf16) candle-nn
//! ops on right-padded batches, where with a causal mask a real token never sees the padding
//! after it, so a padded row computes exactly what the item alone would.

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};

use super::JudgeError;
use crate::model::config::{ModelConfig, rotary_tables};
use crate::model::cpu::CpuLayers;
pub use crate::model::cpu::CpuMatmul;

fn ld(e: candle_core::Error) -> JudgeError {
    JudgeError::Load(e.to_string())
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

struct Mlp {
    gate: Linear,
    up: Linear,
    down: Linear,
}

struct Layer {
    attn: Attention,
    mlp: Mlp,
    ln1: Tensor,
    ln2: Tensor,
}

fn linear(
    vb: &VarBuilder,
    i: usize,
    o: usize,
    bias: bool,
    name: &str,
) -> candle_core::Result<Linear> {
    let w = vb.get((o, i), &format!("{name}.weight"))?;
    let b = if bias {
        Some(vb.get(o, &format!("{name}.bias"))?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

/// The decoder stack without any output head.
pub struct Decoder {
    embed: Embedding,
    body: Body,
    device: Device,
    pub config: ModelConfig,
}

/// How the layers run: packed f32 kernels on the CPU (`model::cpu`), candle ops elsewhere.
enum Body {
    Packed(CpuLayers),
    Ops(OpsLayers),
}

/// The layers as candle tensors, run op by op with dense masked attention (CUDA, bf16).
struct OpsLayers {
    layers: Vec<Layer>,
    norm: Tensor,
    eps: f32,
    inv_freq: Vec<f32>,
    window: Option<usize>,
}

impl Decoder {
    /// `vb` is rooted at the base model (`model.`). CPU f32 runs the packed kernels, with
    /// products as `matmul` says.
    pub fn load(
        config: &ModelConfig,
        vb: VarBuilder,
        matmul: CpuMatmul,
    ) -> Result<Decoder, JudgeError> {
        let packed = vb.device().is_cpu() && vb.dtype() == DType::F32;
        Decoder::load_with(config, vb, packed.then_some(matmul))
    }

    /// As [`Decoder::load`], choosing the packed CPU kernels (`Some`, with their products) or
    /// candle ops (`None`).
    pub fn load_with(
        config: &ModelConfig,
        vb: VarBuilder,
        packed: Option<CpuMatmul>,
    ) -> Result<Decoder, JudgeError> {
        let c = config;
        let (h, hd) = (c.hidden_size, c.head_dim());
        let (nh, nkv) = (c.num_attention_heads, c.kv_heads());
        let embed = Embedding::new(
            vb.get((c.vocab_size, h), "embed_tokens.weight")
                .map_err(ld)?,
            h,
        );
        let body = if let Some(m) = packed {
            Body::Packed(CpuLayers::load(c, &vb, m.engine()?)?)
        } else {
            let mut layers = Vec::with_capacity(c.num_hidden_layers);
            for i in 0..c.num_hidden_layers {
                let l = vb.pp(format!("layers.{i}"));
                let a = l.pp("self_attn");
                let m = l.pp("mlp");
                let qkv_b = c.qkv_bias();
                let inter = c.intermediate_size;
                layers.push(Layer {
                    attn: Attention {
                        q: linear(&a, h, nh * hd, qkv_b, "q_proj").map_err(ld)?,
                        k: linear(&a, h, nkv * hd, qkv_b, "k_proj").map_err(ld)?,
                        v: linear(&a, h, nkv * hd, qkv_b, "v_proj").map_err(ld)?,
                        o: linear(&a, nh * hd, h, c.attention_bias, "o_proj").map_err(ld)?,
                        heads: nh,
                        kv_heads: nkv,
                        head_dim: hd,
                    },
                    mlp: Mlp {
                        gate: linear(&m, h, inter, false, "gate_proj").map_err(ld)?,
                        up: linear(&m, h, inter, false, "up_proj").map_err(ld)?,
                        down: linear(&m, inter, h, false, "down_proj").map_err(ld)?,
                    },
                    ln1: l.get(h, "input_layernorm.weight").map_err(ld)?,
                    ln2: l.get(h, "post_attention_layernorm.weight").map_err(ld)?,
                });
            }
            Body::Ops(OpsLayers {
                layers,
                norm: vb.get(h, "norm.weight").map_err(ld)?,
                eps: c.rms_norm_eps as f32,
                inv_freq: c.inv_freq()?,
                window: c.window(),
            })
        };
        Ok(Decoder {
            embed,
            body,
            device: vb.device().clone(),
            config: c.clone(),
        })
    }

    /// Whether items run packed end to end (no padding) on the CPU kernels.
    pub fn packed(&self) -> bool {
        matches!(self.body, Body::Packed(_))
    }

    /// The arithmetic of the layers' products: `f32`, `bf16x3` (AMX) or candle's dtype.
    pub fn numerics(&self) -> &'static str {
        match &self.body {
            Body::Packed(p) if p.amx() => CpuMatmul::Bf16x3.name(),
            Body::Packed(_) => CpuMatmul::F32.name(),
            Body::Ops(_) => match self.embed.embeddings().dtype() {
                DType::F32 => "f32",
                DType::F16 => "f16",
                _ => "bf16",
            },
        }
    }

    /// Parameter count (embeddings included), for `/v1/models`.
    pub fn params(&self) -> usize {
        let lin = |l: &Linear| l.weight().elem_count() + l.bias().map_or(0, |b| b.elem_count());
        let body = match &self.body {
            Body::Packed(p) => p.params(),
            Body::Ops(OpsLayers { layers, norm, .. }) => {
                let layers: usize = layers
                    .iter()
                    .map(|l| {
                        let a = &l.attn;
                        lin(&a.q)
                            + lin(&a.k)
                            + lin(&a.v)
                            + lin(&a.o)
                            + lin(&l.mlp.gate)
                            + lin(&l.mlp.up)
                            + lin(&l.mlp.down)
                            + l.ln1.elem_count()
                            + l.ln2.elem_count()
                    })
                    .sum();
                layers + norm.elem_count()
            }
        };
        body + self.embed.embeddings().elem_count()
    }

    pub fn embeddings(&self) -> &Tensor {
        self.embed.embeddings()
    }

    /// Hidden states after the final norm, `(reads.len(), hidden)`, at `reads` = (item,
    /// position) of the token rows `items`.
    pub fn forward_at(
        &self,
        items: &[&[u32]],
        reads: &[(usize, usize)],
    ) -> candle_core::Result<Tensor> {
        let h = self.config.hidden_size;
        match &self.body {
            Body::Packed(p) => {
                let flat: Vec<u32> = items.iter().flat_map(|r| r.iter().copied()).collect();
                let lens: Vec<usize> = items.iter().map(|r| r.len()).collect();
                let ids = Tensor::from_vec(flat, (1, lens.iter().sum::<usize>()), &self.device)?;
                let x = self.embed.forward(&ids)?.flatten_all()?.to_vec1::<f32>()?;
                let out = p.forward_at(x, &lens, reads);
                Tensor::from_vec(out, (reads.len(), h), &self.device)
            }
            Body::Ops(o) => self.forward_ops(o, items, reads),
        }
    }

    fn forward_ops(
        &self,
        o: &OpsLayers,
        items: &[&[u32]],
        reads: &[(usize, usize)],
    ) -> candle_core::Result<Tensor> {
        // Right-padded: with the causal mask a real token never sees the padding after it.
        let ids = ids_tensor(items, 0, &self.device)?;
        let (b, t) = ids.dims2()?;
        let (cos, sin) = self.rotary(&o.inv_freq, t)?;
        let dt = self.embed.embeddings().dtype();
        let mask =
            crate::model::cpu::attention::causal_mask(t, o.window, &self.device)?.to_dtype(dt)?;
        let mut x = self.embed.forward(&ids)?;
        for l in &o.layers {
            let y = candle_nn::ops::rms_norm(&x, &l.ln1, o.eps)?;
            let y = l.attn.forward(&y, &cos, &sin, &mask)?;
            let x1 = (x + y)?;
            let y = candle_nn::ops::rms_norm(&x1, &l.ln2, o.eps)?;
            x = (&x1 + l.mlp.forward(&y)?)?;
        }
        let flat: Vec<u32> = reads.iter().map(|&(i, p)| (i * t + p) as u32).collect();
        let idx = Tensor::new(flat, &self.device)?;
        let x = x
            .reshape((b * t, self.config.hidden_size))?
            .index_select(&idx, 0)?;
        candle_nn::ops::rms_norm(&x, &o.norm, o.eps)
    }

    fn rotary(&self, inv_freq: &[f32], t: usize) -> candle_core::Result<(Tensor, Tensor)> {
        let (cos, sin) = rotary_tables(inv_freq, t);
        let dt = self.embed.embeddings().dtype();
        let table =
            |v: Vec<f32>| Tensor::from_vec(v, (t, inv_freq.len()), &self.device)?.to_dtype(dt);
        Ok((table(cos)?, table(sin)?))
    }
}

impl Mlp {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        self.down
            .forward(&(self.gate.forward(x)?.silu()? * self.up.forward(x)?)?)
    }
}

impl Attention {
    /// Dense masked attention (the candle-ops path: CUDA, bf16).
    fn forward(
        &self,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (self.heads, self.kv_heads, self.head_dim);
        let split = |y: Tensor, n: usize| y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous();
        let q = split(self.q.forward(x)?, nh)?;
        let k = split(self.k.forward(x)?, nkv)?;
        let v = split(self.v.forward(x)?, nkv)?;
        let q = candle_nn::rotary_emb::rope(&q, cos, sin)?;
        let k = candle_nn::rotary_emb::rope(&k, cos, sin)?;
        // Grouped-query attention without copying k and v per head: the query heads that share
        // a kv head are adjacent, so they stack into one (rep * len) block per kv head.
        let rep = nh / nkv;
        let q = q.reshape((b, nkv, rep * t, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        let att = (q.matmul(&k.t()?)? * scale)?;
        let mask = if rep > 1 {
            mask.repeat((rep, 1))?
        } else {
            mask.clone()
        };
        let att = att.broadcast_add(&mask)?;
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let y = att.matmul(&v)?.reshape((b, nh, t, hd))?;
        let y = y.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        self.o.forward(&y)
    }
}

/// How a score is computed from the hidden state at a read position.
pub enum Head {
    /// Two vocabulary rows (good, bad) of the LM head: P = softmax(logits)[good].
    TokenPair { rows: Tensor },
    /// Qwen2.5-Math-PRM: Linear(h, h) -> ReLU -> Linear(h, 2), P = softmax[1].
    TwoClass { l1: Linear, l2: Linear },
    /// Linear(h, 1), P = sigmoid.
    Value { l: Linear },
}

impl Head {
    /// The LM head restricted to two token ids (tied to the embeddings when configured).
    pub fn token_pair(
        vb: &VarBuilder,
        dec: &Decoder,
        good: u32,
        bad: u32,
    ) -> Result<Head, JudgeError> {
        let c = &dec.config;
        let w = if c.tie_word_embeddings && !vb.contains_tensor("lm_head.weight") {
            dec.embeddings().clone()
        } else {
            vb.get((c.vocab_size, c.hidden_size), "lm_head.weight")
                .map_err(ld)?
        };
        let idx = Tensor::new(&[good, bad], w.device()).map_err(ld)?;
        Ok(Head::TokenPair {
            rows: w.index_select(&idx, 0).map_err(ld)?,
        })
    }

    pub fn two_class(vb: &VarBuilder, h: usize) -> Result<Head, JudgeError> {
        let s = vb.pp("score");
        Ok(Head::TwoClass {
            l1: linear(&s, h, h, true, "0").map_err(ld)?,
            l2: linear(&s, h, 2, true, "2").map_err(ld)?,
        })
    }

    pub fn value(vb: &VarBuilder, h: usize) -> Result<Head, JudgeError> {
        let s = vb.pp("v_head");
        let bias = s.contains_tensor("summary.bias");
        Ok(Head::Value {
            l: linear(&s, h, 1, bias, "summary").map_err(ld)?,
        })
    }

    /// P(step correct) for each row of `x` (`(n, hidden)`).
    pub fn scores(&self, x: &Tensor) -> candle_core::Result<Vec<f32>> {
        let p = match self {
            Head::TokenPair { rows } => {
                let logits = x.matmul(&rows.t()?)?;
                candle_nn::ops::softmax_last_dim(&logits)?.narrow(1, 0, 1)?
            }
            Head::TwoClass { l1, l2 } => {
                let y = l2.forward(&l1.forward(x)?.relu()?)?;
                candle_nn::ops::softmax_last_dim(&y)?.narrow(1, 1, 1)?
            }
            Head::Value { l } => candle_nn::ops::sigmoid(&l.forward(x)?)?,
        };
        p.flatten_all()?.to_dtype(DType::F32)?.to_vec1()
    }
}

/// Right-pad token rows to one `(batch, len)` tensor.
fn ids_tensor(rows: &[&[u32]], pad: u32, device: &Device) -> candle_core::Result<Tensor> {
    let t = rows.iter().map(|r| r.len()).max().unwrap_or(0).max(1);
    let mut flat = Vec::with_capacity(rows.len() * t);
    for r in rows {
        flat.extend_from_slice(r);
        flat.extend(std::iter::repeat_n(pad, t - r.len()));
    }
    Tensor::from_vec(flat, (rows.len(), t), device)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use candle_core::{DType, Device, Tensor};
    use candle_nn::VarBuilder;

    use super::{CpuMatmul, Decoder};
    use crate::model::config::ModelConfig;
    use crate::model::cpu::amx;

    /// Random weights under Hugging Face names for `c`.
    fn weights(c: &ModelConfig) -> HashMap<String, Tensor> {
        let dev = Device::Cpu;
        let (h, hd, i) = (c.hidden_size, c.head_dim(), c.intermediate_size);
        let (q, kv) = (c.num_attention_heads * hd, c.kv_heads() * hd);
        let mut m = HashMap::new();
        let mut put = |name: String, shape: &[usize], std: f64| {
            let t = Tensor::randn(0f32, std as f32, shape, &dev).unwrap();
            // norms near 1, like trained checkpoints
            let t = if name.contains("norm") {
                (t + 1.0).unwrap()
            } else {
                t
            };
            m.insert(name, t);
        };
        put("embed_tokens.weight".into(), &[c.vocab_size, h], 1.0);
        put("norm.weight".into(), &[h], 0.1);
        for l in 0..c.num_hidden_layers {
            let p = |n: &str| format!("layers.{l}.{n}");
            for (n, o) in [("q", q), ("k", kv), ("v", kv)] {
                put(p(&format!("self_attn.{n}_proj.weight")), &[o, h], 0.2);
                put(p(&format!("self_attn.{n}_proj.bias")), &[o], 0.2);
            }
            put(p("self_attn.o_proj.weight"), &[h, q], 0.2);
            put(p("self_attn.o_proj.bias"), &[h], 0.2);
            put(p("mlp.gate_proj.weight"), &[i, h], 0.2);
            put(p("mlp.up_proj.weight"), &[i, h], 0.2);
            put(p("mlp.down_proj.weight"), &[h, i], 0.2);
            put(p("input_layernorm.weight"), &[h], 0.1);
            put(p("post_attention_layernorm.weight"), &[h], 0.1);
        }
        m
    }

    /// The packed kernels give what candle's ops give (right-padded, dense masked attention)
    /// for each family's quirks: q/k/v biases (Qwen2), biases everywhere (Llama
    /// `attention_bias`), a sliding window (Mistral), grouped-query attention, items of mixed
    /// lengths and a read at every position of the longest.
    #[test]
    fn packed_kernels_match_candle_ops() {
        let families = [
            serde_json::json!({"model_type": "qwen2"}),
            serde_json::json!({"model_type": "llama", "attention_bias": true}),
            serde_json::json!({"model_type": "mistral", "sliding_window": 7}),
        ];
        for extra in families {
            let mut v = serde_json::json!({"vocab_size": 50, "hidden_size": 64,
                "intermediate_size": 96, "num_hidden_layers": 3, "num_attention_heads": 4,
                "num_key_value_heads": 2, "max_position_embeddings": 512, "rms_norm_eps": 1e-6});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            let c: ModelConfig = serde_json::from_value(v).unwrap();
            let w = weights(&c);
            let vb = || VarBuilder::from_tensors(w.clone(), DType::F32, &Device::Cpu);
            let ops = Decoder::load_with(&c, vb(), None).unwrap();
            assert!(!ops.packed());
            let items: Vec<Vec<u32>> = [150usize, 3, 70]
                .iter()
                .enumerate()
                .map(|(k, &n)| (0..n).map(|j| ((j * 7 + k * 13) % 50) as u32).collect())
                .collect();
            let rows: Vec<&[u32]> = items.iter().map(Vec::as_slice).collect();
            let mut reads: Vec<(usize, usize)> = (0..150).map(|p| (0, p)).collect();
            reads.extend([(1, 0), (1, 2), (2, 69), (2, 10)]);
            let b = ops.forward_at(&rows, &reads).unwrap();
            let scale = b.abs().unwrap().flatten_all().unwrap().max(0).unwrap();
            let scale = scale.to_scalar::<f32>().unwrap();
            for m in [CpuMatmul::F32, CpuMatmul::Bf16x3] {
                if m == CpuMatmul::Bf16x3
                    && amx::skip_without_amx("the bf16x3 part of packed_kernels_match_candle_ops")
                {
                    continue;
                }
                let packed = Decoder::load_with(&c, vb(), Some(m)).unwrap();
                assert!(packed.packed());
                assert_eq!(packed.numerics(), m.name());
                assert_eq!(packed.params(), ops.params());
                let a = packed.forward_at(&rows, &reads).unwrap();
                let d = (a - &b).unwrap().abs().unwrap().flatten_all().unwrap();
                let d = d.max(0).unwrap().to_scalar::<f32>().unwrap();
                // bf16x3 carries ~16 significant bits per product against f32's 24, and
                // these random weights amplify rounding ~40x over three layers (f32 lands
                // near 3e-6 of the largest hidden value, bf16x3 near 6e-5): its bound is
                // relative. A lost `lo` term or a misplaced tile is off by ~1e-2.
                let tol = match m {
                    CpuMatmul::Bf16x3 => 3e-4 * scale,
                    _ => 1e-4,
                };
                let name = m.name();
                eprintln!(
                    "{} {name}: max difference {d:e} (bound {tol:e})",
                    c.model_type
                );
                assert!(d < tol, "{} {name}: max difference {d}", c.model_type);
            }
        }
    }
}
