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
//! kernels of `cpu.rs` (items end to end, no padding), whose matrix products run in f32 or,
//! on CPUs with AMX, as bf16x3 (`amx.rs`; [`CpuMatmul`]); elsewhere (CUDA, bf16) candle-nn
//! ops on right-padded batches, where with a causal mask a real token never sees the padding
//! after it, so a padded row computes exactly what the item alone would.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};
use candle_nn::{Embedding, Linear, VarBuilder};
use serde::Deserialize;

use super::JudgeError;
use super::cpu::CpuLayers;
pub use super::cpu::CpuMatmul;

/// The subset of `config.json` the decoder needs.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelConfig {
    #[serde(default)]
    pub architectures: Vec<String>,
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default)]
    pub head_dim: Option<usize>,
    pub max_position_embeddings: usize,
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default)]
    pub rope_scaling: Option<RopeScaling>,
    /// transformers >= 5 writes `rope_theta` and the scaling together under this key.
    #[serde(default)]
    pub rope_parameters: Option<RopeParameters>,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    /// Llama: bias on q, k, v and o.
    #[serde(default)]
    pub attention_bias: bool,
    /// Mistral: each token sees at most this many previous positions.
    #[serde(default)]
    pub sliding_window: Option<usize>,
    /// Qwen2 keeps `sliding_window` in its config but only uses it when this is true.
    #[serde(default)]
    pub use_sliding_window: bool,
    #[serde(default)]
    pub hidden_act: Option<String>,
}

fn default_theta() -> f64 {
    10000.0
}

fn default_rope_type() -> String {
    "default".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct RopeParameters {
    #[serde(default)]
    pub rope_theta: Option<f64>,
    #[serde(flatten)]
    pub scaling: RopeScaling,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RopeScaling {
    #[serde(alias = "type")]
    #[serde(default = "default_rope_type")]
    pub rope_type: String,
    #[serde(default)]
    pub factor: Option<f64>,
    #[serde(default)]
    pub low_freq_factor: Option<f64>,
    #[serde(default)]
    pub high_freq_factor: Option<f64>,
    #[serde(default)]
    pub original_max_position_embeddings: Option<usize>,
}

impl ModelConfig {
    pub fn read(dir: &Path) -> Result<ModelConfig, JudgeError> {
        let p = dir.join("config.json");
        let s = std::fs::read_to_string(&p)
            .map_err(|e| JudgeError::Load(format!("{}: {e}", p.display())))?;
        let mut c: ModelConfig = serde_json::from_str(&s)
            .map_err(|e| JudgeError::Load(format!("{}: {e}", p.display())))?;
        if let Some(rp) = c.rope_parameters.take() {
            if let Some(theta) = rp.rope_theta {
                c.rope_theta = theta;
            }
            if c.rope_scaling.is_none() {
                c.rope_scaling = Some(rp.scaling);
            }
        }
        if !matches!(c.model_type.as_str(), "llama" | "mistral" | "qwen2") {
            return Err(JudgeError::Load(format!(
                "model_type {:?} is not supported (llama, mistral, qwen2)",
                c.model_type
            )));
        }
        if let Some(act) = &c.hidden_act
            && act != "silu"
        {
            return Err(JudgeError::Load(format!(
                "hidden_act {act:?} is not supported (silu)"
            )));
        }
        if !c.num_attention_heads.is_multiple_of(c.kv_heads()) {
            return Err(JudgeError::Load(
                "num_attention_heads must be a multiple of num_key_value_heads".into(),
            ));
        }
        Ok(c)
    }

    pub(super) fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub(super) fn head_dim(&self) -> usize {
        self.head_dim
            .unwrap_or(self.hidden_size / self.num_attention_heads)
    }

    /// Bias on q/k/v (Qwen2 always; Llama when `attention_bias`), and on o (Llama only).
    pub(super) fn qkv_bias(&self) -> bool {
        self.model_type == "qwen2" || self.attention_bias
    }

    pub(super) fn window(&self) -> Option<usize> {
        match self.model_type.as_str() {
            "mistral" => self.sliding_window,
            "qwen2" if self.use_sliding_window => self.sliding_window,
            _ => None,
        }
    }

    /// Inverse rotary frequencies, computed in f32 operation by operation as transformers
    /// computes them (`1.0 / base ** (arange(0, d, 2).float() / d)`, the llama3 blend on f32
    /// tensors). Rounding matters here: an ulp of difference in a frequency is an angle error
    /// of position × 6e-8 rad, 1.7e-4 rad at position 2,800, which a deep model amplifies
    /// into score differences ten times transformers' own sdpa-vs-eager spread.
    pub(super) fn inv_freq(&self) -> Result<Vec<f32>, JudgeError> {
        let d = self.head_dim();
        let theta = self.rope_theta as f32;
        let base: Vec<f32> = (0..d / 2)
            .map(|i| 1.0f32 / theta.powf((2 * i) as f32 / d as f32))
            .collect();
        let Some(s) = &self.rope_scaling else {
            return Ok(base);
        };
        let factor = s.factor.unwrap_or(1.0) as f32;
        match s.rope_type.as_str() {
            "default" => Ok(base),
            "linear" => Ok(base.iter().map(|f| f / factor).collect()),
            "llama3" => {
                let old = s.original_max_position_embeddings.unwrap_or(8192) as f32;
                let (lo, hi) = (
                    s.low_freq_factor.unwrap_or(1.0) as f32,
                    s.high_freq_factor.unwrap_or(4.0) as f32,
                );
                let (lo_wave, hi_wave) = (old / lo, old / hi);
                Ok(base
                    .iter()
                    .map(|&f| {
                        let wave = 2.0 * std::f32::consts::PI / f;
                        let scaled = if wave > lo_wave { f / factor } else { f };
                        let smooth = (old / wave - lo) / (hi - lo);
                        let blended = (1.0 - smooth) * scaled / factor + smooth * scaled;
                        // transformers' `~(wavelen < high) * ~(wavelen > low)`; wave is
                        // never NaN (f > 0), so the plain comparisons say the same.
                        let medium = wave >= hi_wave && wave <= lo_wave;
                        if medium { blended } else { scaled }
                    })
                    .collect())
            }
            other => Err(JudgeError::Load(format!(
                "rope_scaling type {other:?} is not supported (default, linear, llama3)"
            ))),
        }
    }
}

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

/// How the layers run: packed f32 kernels on the CPU (`cpu.rs`), candle ops elsewhere.
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
            Body::Packed(CpuLayers::load(c, &vb, m.resolve()? == CpuMatmul::Bf16x3)?)
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
        let mask = super::attention::causal_mask(t, o.window, &self.device)?.to_dtype(dt)?;
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

/// Rotary cos and sin tables `(len, inv_freq.len())`, row-major; the angle is the f32
/// product position * inv_freq, as the reference computes it.
pub(super) fn rotary_tables(inv_freq: &[f32], len: usize) -> (Vec<f32>, Vec<f32>) {
    let ang: Vec<f32> = (0..len)
        .flat_map(|p| inv_freq.iter().map(move |f| p as f32 * f))
        .collect();
    (
        ang.iter().map(|a| (*a as f64).cos() as f32).collect(),
        ang.iter().map(|a| (*a as f64).sin() as f32).collect(),
    )
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
    use super::*;

    fn config(extra: serde_json::Value) -> ModelConfig {
        let mut v = serde_json::json!({"model_type": "llama", "vocab_size": 10, "hidden_size": 8,
            "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2,
            "max_position_embeddings": 64, "rms_norm_eps": 1e-6});
        for (k, x) in extra.as_object().unwrap() {
            v[k] = x.clone();
        }
        let dir = std::env::temp_dir().join(format!(
            "stepkto-cfg-{}-{}",
            std::process::id(),
            v.to_string().len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), v.to_string()).unwrap();
        let c = ModelConfig::read(&dir).unwrap();
        let _ = std::fs::remove_dir_all(dir);
        c
    }

    /// Issue 9, class 6: the rotary frequencies are bit-identical to transformers' f32 values
    /// (an ulp off is an angle error of 1.7e-4 rad at position 2,800). Reference bits from
    /// transformers 5.23 / torch 2.15: `1.0 / (base ** (torch.arange(0, d, 2).float() / d))`
    /// and `ROPE_INIT_FUNCTIONS["llama3"]`.
    #[test]
    fn class_6_rotary_frequencies_match_transformers_bit_for_bit() {
        let c = config(
            serde_json::json!({"hidden_size": 512, "num_attention_heads": 8, "rope_theta": 10000.0}),
        );
        let want: [u32; 32] = [
            1065353216, 1061157137, 1058010522, 1054337179, 1050798235, 1047712803, 1043732615,
            1040747895, 1036831949, 1033475085, 1030116802, 1026341397, 1023510243, 1019364175,
            1016180025, 1012562930, 1008981770, 1005959600, 1001931932, 998911607, 995049016,
            991652109, 988353832, 984533390, 981668463, 977573004, 974350870, 970790693, 967166816,
            964208661, 960132947, 957076594,
        ];
        let got: Vec<u32> = c.inv_freq().unwrap().iter().map(|f| f.to_bits()).collect();
        assert_eq!(got, want);
        let c = config(
            serde_json::json!({"hidden_size": 1024, "num_attention_heads": 8,
            "rope_theta": 500000.0, "max_position_embeddings": 131072, "rope_scaling": {"rope_type": "llama3",
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8192}}),
        );
        let want: [u32; 64] = [
            1065353216, 1062243009, 1059709382, 1057645444, 1054963644, 1052224381, 1049992931,
            1047774305, 1044812720, 1042400160, 1040434848, 1037480348, 1034871981, 1032747160,
            1030233703, 1027413636, 1025116360, 1023079743, 1020030793, 1017547065, 1015523779,
            1012729580, 1010044269, 1007856767, 1005516623, 1002613366, 1000248322, 998321717,
            995260192, 990772486, 984863005, 979408798, 973706706, 967045384, 960179666, 952658054,
            950223245, 948239807, 945335425, 942703001, 940558584, 938099311, 935253236, 932934773,
            930956739, 927879669, 925373035, 923331087, 920588484, 917878407, 915670731, 913386368,
            910456336, 908069481, 906125108, 903112712, 900532135, 898429952, 895853901, 893063879,
            890791079, 888686786, 885670320, 883213055,
        ];
        let got: Vec<u32> = c.inv_freq().unwrap().iter().map(|f| f.to_bits()).collect();
        assert_eq!(got, want);
    }

    /// transformers 5 nests theta and scaling under `rope_parameters`; both spellings agree.
    #[test]
    fn rope_parameters_read_like_rope_theta_and_scaling() {
        let old = config(
            serde_json::json!({"rope_theta": 500000.0, "rope_scaling": {"rope_type": "llama3",
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
        );
        let new = config(
            serde_json::json!({"rope_parameters": {"rope_theta": 500000.0, "rope_type": "llama3",
            "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}}),
        );
        assert_eq!(new.rope_theta, 500000.0);
        assert_eq!(old.inv_freq().unwrap(), new.inv_freq().unwrap());
        let plain = config(
            serde_json::json!({"rope_parameters": {"rope_theta": 1000.0, "rope_type": "default"}}),
        );
        assert_eq!(plain.rope_theta, 1000.0);
        assert_eq!(plain.inv_freq().unwrap()[0], 1.0);
    }
}
