//! The trainable decoder: Llama, Qwen2 and Mistral causal LMs in f32, built from candle ops
//! that all have a backward pass, loaded from and saved as a Hugging Face directory.
//!
//! Why not candle-nn's fused `rms_norm`, `rope` or `softmax_last_dim`: they have no backward,
//! and a graph through them silently gets no gradient below them. Each is written here from
//! elementwise ops in the order transformers computes it (RMSNorm as
//! `w * (x * rsqrt(mean(x²) + eps))`, rotary as `x cos + rotate_half(x) sin`), so that
//! log-probabilities agree with transformers' to float rounding.
//!
//! Parameters are [`Var`]s under their Hugging Face names, in a sorted map, so the optimiser
//! visits them in one fixed order and [`Decoder::save`] writes names transformers reads.
//! A tied `lm_head` is the embedding itself (one `Var`, its gradient the sum of both uses) and
//! is not written on save, as transformers does.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};

use super::TrainError;
use super::fused;
use super::layer;
use crate::model::ModelError;
use crate::model::config::{ModelConfig, rotary_rows};
use crate::model::cpu::attention::causal_mask;
use crate::model::cpu::map_weights;
use crate::model::weights::{load_err, not_local, weight_files};

/// The architectures this decoder trains (`config.json`'s `architectures`).
pub const ARCHITECTURES: [&str; 3] = ["LlamaForCausalLM", "MistralForCausalLM", "Qwen2ForCausalLM"];

/// Files copied from the source directory on save, when present (the tokenizer and what
/// transformers and `stepkto judge` read besides the weights).
const SIDE_FILES: [&str; 6] = [
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
    "generation_config.json",
    "tokenizer.model",
];

/// A trainable causal LM.
pub struct Decoder {
    pub config: ModelConfig,
    /// `config.json` as read, written back on save (with `torch_dtype` float32).
    raw_config: serde_json::Value,
    /// Where the model was loaded from: the tokenizer files are copied from here on save.
    source: std::path::PathBuf,
    params: BTreeMap<String, Var>,
    inv_freq: Vec<f32>,
    device: Device,
    /// The layer op of [`layer`] on the CPU (None: the family's layer has parts it does not
    /// cover, or [`Decoder::set_op_by_op`] asked for the graph).
    layer: Option<layer::Layout>,
}

/// The parameter names and shapes of a checkpoint of `c`, in Hugging Face naming.
fn parameter_shapes(c: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (h, i, v) = (c.hidden_size, c.intermediate_size, c.vocab_size);
    let (q, kv) = (
        c.num_attention_heads * c.head_dim(),
        c.kv_heads() * c.head_dim(),
    );
    let llama_bias = c.model_type == "llama" && c.attention_bias;
    let mut out = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        for (n, o) in [("q", q), ("k", kv), ("v", kv)] {
            out.push((format!("{p}.self_attn.{n}_proj.weight"), vec![o, h]));
            if c.qkv_bias() {
                out.push((format!("{p}.self_attn.{n}_proj.bias"), vec![o]));
            }
        }
        out.push((format!("{p}.self_attn.o_proj.weight"), vec![h, q]));
        if llama_bias {
            out.push((format!("{p}.self_attn.o_proj.bias"), vec![h]));
        }
        for (n, shape) in [("gate", [i, h]), ("up", [i, h]), ("down", [h, i])] {
            out.push((format!("{p}.mlp.{n}_proj.weight"), shape.to_vec()));
            if c.mlp_bias {
                out.push((format!("{p}.mlp.{n}_proj.bias"), vec![shape[0]]));
            }
        }
        out.push((format!("{p}.input_layernorm.weight"), vec![h]));
        out.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
    }
    out.push(("model.norm.weight".into(), vec![h]));
    if !c.tie_word_embeddings {
        out.push(("lm_head.weight".into(), vec![v, h]));
    }
    out
}

impl Decoder {
    /// Load a Hugging Face directory (single or sharded safetensors) in f32 on `device`.
    pub fn load(dir: &Path, device: &Device) -> Result<Decoder, TrainError> {
        if !dir.is_dir() {
            return Err(not_local(dir).into());
        }
        let config = ModelConfig::read(dir)?;
        let raw_path = dir.join("config.json");
        let raw: serde_json::Value = std::fs::read_to_string(&raw_path)
            .map_err(|e| TrainError::io(&raw_path, e))
            .and_then(|s| serde_json::from_str(&s).map_err(|e| load_err(&raw_path, e).into()))?;
        if let Some(arch) = config.architectures.first()
            && !ARCHITECTURES.contains(&arch.as_str())
        {
            return Err(ModelError::Load(format!(
                "{}: architecture {arch} is not a causal LM this trainer supports ({})",
                dir.display(),
                ARCHITECTURES.join(", ")
            ))
            .into());
        }
        let files = weight_files(dir)?;
        let vb = map_weights(dir, &files, DType::F32, device)?;
        let mut params = BTreeMap::new();
        for (name, shape) in parameter_shapes(&config) {
            let t = vb
                .get(shape.as_slice(), &name)
                .map_err(|e| load_err(dir, format!("{name}: {e}")))?;
            // a copy: the Var must own its storage, not the mapped file
            params.insert(name, Var::from_tensor(&t.copy()?)?);
        }
        let inv_freq = config.inv_freq()?;
        let layer = layer::Layout::new(&config);
        Ok(Decoder {
            config,
            raw_config: raw,
            source: dir.to_path_buf(),
            params,
            inv_freq,
            device: device.clone(),
            layer,
        })
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Run each layer op by op (candle's graph with the fused row ops) instead of as one
    /// node (`layer`): the form the layer op is checked against. Other devices always do.
    pub fn set_op_by_op(&mut self, on: bool) {
        self.layer = if on {
            None
        } else {
            layer::Layout::new(&self.config)
        };
    }

    /// Every trainable parameter, by Hugging Face name, in sorted order.
    pub fn params(&self) -> &BTreeMap<String, Var> {
        &self.params
    }

    /// Number of trainable scalars (a tied head counted once).
    /// The parameters as plain tensors (no graph), by Hugging Face name: what the sampler's
    /// packed CPU forward is built from.
    pub fn tensors(&self) -> std::collections::HashMap<String, Tensor> {
        self.params
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().detach()))
            .collect()
    }

    pub fn num_params(&self) -> usize {
        self.params.values().map(|v| v.elem_count()).sum()
    }

    /// The parameters as tensors: tracked (gradients flow to the `Var`s) or detached (no
    /// graph is built: sampling and reference log-probabilities).
    fn weights(&self, grad: bool) -> Weights {
        Weights(
            self.params
                .iter()
                .map(|(n, v)| {
                    let t = v.as_tensor();
                    (n.clone(), if grad { t.clone() } else { t.detach() })
                })
                .collect(),
        )
    }

    fn check_ids(&self, ids: &Tensor) -> Result<(usize, usize), TrainError> {
        let (b, t) = ids.dims2()?;
        if t == 0 {
            return Err(TrainError::Input("an empty token row".into()));
        }
        let vocab = self.config.vocab_size as u32;
        if ids
            .flatten_all()?
            .to_vec1::<u32>()?
            .iter()
            .any(|&i| i >= vocab)
        {
            return Err(TrainError::Input(format!(
                "a token id is outside the vocabulary of {vocab}"
            )));
        }
        Ok((b, t))
    }

    /// Logits `(b, t, vocab)` of token rows `ids` `(b, t)`, with gradient. Rows may be
    /// right-padded: with the causal mask a real token never sees the padding after it.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor, TrainError> {
        self.forward_with(ids, true)
    }

    fn forward_with(&self, ids: &Tensor, grad: bool) -> Result<Tensor, TrainError> {
        let (_, t) = self.check_ids(ids)?;
        if self.device.is_cpu() {
            // one pass per norm, rotary and softmax instead of a dozen (`fused`)
            let (cos, sin) = rotary_rows(&self.inv_freq, 0..t);
            let f = Fused {
                cos: std::sync::Arc::new(cos),
                sin: std::sync::Arc::new(sin),
                window: self.config.window().unwrap_or(usize::MAX),
                grad,
            };
            let none = Tensor::zeros(0, candle_core::DType::F32, &self.device)?;
            return Ok(self.run_with(
                &self.weights(grad),
                ids,
                (&none, &none, &none),
                None,
                Some(&f),
            )?);
        }
        let (cos, sin) = self.rotary(&(0..t).collect::<Vec<_>>())?;
        let mask = causal_mask(t, self.config.window(), &self.device)?;
        Ok(self.run(&self.weights(grad), ids, &cos, &sin, &mask, None)?)
    }

    /// The decoder stack on `ids` `(b, t)`: rotary tables broadcastable to `(b, heads, t,
    /// head_dim)`, a mask broadcastable to `(b, heads, t, keys)`. With a cache the new keys
    /// and values are appended to it (and attention reads it all).
    fn run(
        &self,
        w: &Weights,
        ids: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
        mask: &Tensor,
        cache: Option<&mut KvCache>,
    ) -> candle_core::Result<Tensor> {
        self.run_with(w, ids, (cos, sin, mask), cache, None)
    }

    /// [`Decoder::run`], with the fused CPU ops when `fused` is given (no cache then: the
    /// rows are whole sequences from position 0).
    fn run_with(
        &self,
        w: &Weights,
        ids: &Tensor,
        (cos, sin, mask): (&Tensor, &Tensor, &Tensor),
        mut cache: Option<&mut KvCache>,
        fused: Option<&Fused>,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (b, t) = ids.dims2()?;
        let eps = c.rms_norm_eps;
        let embed = w.get("model.embed_tokens.weight");
        let mut x = embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, c.hidden_size))?;
        let norm = |x: &Tensor, name: &str| match fused {
            Some(_) => fused::normalize(x, eps)?.broadcast_mul(w.get(name)),
            None => w.rms_norm(x, name, eps),
        };
        for l in 0..c.num_hidden_layers {
            if let (Some(f), Some(lay)) = (fused, self.layer) {
                // the whole layer as one node: its weights as one flat tensor
                let parts: Vec<Tensor> = lay
                    .names(l)
                    .iter()
                    .map(|n| w.get(n).flatten_all())
                    .collect::<candle_core::Result<_>>()?;
                let flat = Tensor::cat(&parts, 0)?;
                let op = layer::LayerOp::new(lay, f.cos.clone(), f.sin.clone(), f.grad);
                x = x.contiguous()?.apply_op2(&flat, op)?;
                continue;
            }
            let p = format!("model.layers.{l}");
            let h = norm(&x, &format!("{p}.input_layernorm.weight"))?;
            let kv = cache.as_deref_mut().map(|c| &mut c.layers[l]);
            x = (x + self.attention(w, &h, &p, (cos, sin, mask), kv, fused)?)?;
            let h = norm(&x, &format!("{p}.post_attention_layernorm.weight"))?;
            let gate = w.linear(&h, &format!("{p}.mlp.gate_proj"))?;
            let up = w.linear(&h, &format!("{p}.mlp.up_proj"))?;
            let act = match fused {
                Some(_) => fused::swiglu(&gate, &up)?,
                None => (gate.silu()? * up)?,
            };
            x = (x + w.linear(&act, &format!("{p}.mlp.down_proj"))?)?;
        }
        let x = norm(&x, "model.norm.weight")?;
        let head = w.opt("lm_head.weight").unwrap_or(embed);
        x.reshape((b * t, c.hidden_size))?
            .matmul(&head.t()?)?
            .reshape((b, t, c.vocab_size))
    }

    /// Full-width rotary tables `(positions, head_dim)`: the half tables twice, as
    /// transformers concatenates them.
    fn rotary(&self, positions: &[usize]) -> candle_core::Result<(Tensor, Tensor)> {
        let (cos, sin) = rotary_rows(&self.inv_freq, positions.iter().copied());
        let half = self.inv_freq.len();
        let table = |v: Vec<f32>| -> candle_core::Result<Tensor> {
            let h = Tensor::from_vec(v, (positions.len(), half), &self.device)?;
            Tensor::cat(&[&h, &h], 1)
        };
        Ok((table(cos)?, table(sin)?))
    }

    /// One layer's self-attention; (cos, sin, mask) as [`Decoder::run`] takes them.
    fn attention(
        &self,
        w: &Weights,
        x: &Tensor,
        p: &str,
        (cos, sin, mask): (&Tensor, &Tensor, &Tensor),
        cache: Option<&mut Option<(Tensor, Tensor)>>,
        fused: Option<&Fused>,
    ) -> candle_core::Result<Tensor> {
        let c = &self.config;
        let (b, t, _) = x.dims3()?;
        let (nh, nkv, hd) = (c.num_attention_heads, c.kv_heads(), c.head_dim());
        let split = |y: Tensor, n: usize| y.reshape((b, t, n, hd));
        let q = split(w.linear(x, &format!("{p}.self_attn.q_proj"))?, nh)?;
        let k = split(w.linear(x, &format!("{p}.self_attn.k_proj"))?, nkv)?;
        let mut v = split(w.linear(x, &format!("{p}.self_attn.v_proj"))?, nkv)?.transpose(1, 2)?;
        let (q, mut k) = match fused {
            Some(f) => (
                fused::rope(&q, f.cos.clone(), f.sin.clone())?.transpose(1, 2)?,
                fused::rope(&k, f.cos.clone(), f.sin.clone())?
                    .transpose(1, 2)?
                    .contiguous()?,
            ),
            None => (
                rope(&q.transpose(1, 2)?, cos, sin)?,
                rope(&k.transpose(1, 2)?, cos, sin)?,
            ),
        };
        if let Some(slot) = cache {
            if let Some((pk, pv)) = slot.as_ref() {
                k = Tensor::cat(&[pk, &k], 2)?;
                v = Tensor::cat(&[pv, &v], 2)?;
            }
            *slot = Some((k.clone(), v.clone()));
        }
        // grouped-query attention without copying keys and values per query head: the `rep`
        // query heads of each key/value head are stacked along the rows, (b, nkv, rep t, hd)
        let rep = nh / nkv;
        let s = k.dim(2)?;
        let q = q.contiguous()?.reshape((b, nkv, rep * t, hd))?;
        let scale = 1.0 / (hd as f64).sqrt();
        if let Some(f) = fused {
            let scores = q.matmul(&k.t()?)?.reshape((b, nkv, rep, t, s))?;
            let probs = fused::causal_softmax(&scores, scale, f.window)?;
            let out = probs
                .reshape((b, nkv, rep * t, s))?
                .matmul(&v.contiguous()?)?
                .reshape((b, nh, t, hd))?;
            let out = out.transpose(1, 2)?.reshape((b, t, nh * hd))?;
            return w.linear(&out, &format!("{p}.self_attn.o_proj"));
        }
        let scores = (q.matmul(&k.t()?)? * scale)?;
        let scores = scores.reshape((b, nkv, rep, t, s))?;
        // the mask is (t, s) or (b, 1, t, s): it broadcasts over kv heads and groups as
        // (t, s) or (b, 1, 1, t, s)
        let mask = match mask.rank() {
            4 => mask.unsqueeze(2)?,
            _ => mask.clone(),
        };
        let probs = softmax(&scores.broadcast_add(&mask)?)?.reshape((b, nkv, rep * t, s))?;
        let out = probs.matmul(&v.contiguous()?)?.reshape((b, nh, t, hd))?;
        let out = out.transpose(1, 2)?.reshape((b, t, nh * hd))?;
        w.linear(&out, &format!("{p}.self_attn.o_proj"))
    }

    /// Prefill for sampling (no graph): `ids` `(b, t)` right-padded, `lens` each row's real
    /// length. Returns each row's next-token logits `(b, vocab)` (at its last real token)
    /// and the cache holding the t prompt slots.
    pub fn prefill(&self, ids: &Tensor, lens: &[usize]) -> Result<(Tensor, KvCache), TrainError> {
        let (b, t) = self.check_ids(ids)?;
        if lens.len() != b || lens.iter().any(|&l| l == 0 || l > t) {
            return Err(TrainError::Input(
                "each row needs a length in 1..=width".into(),
            ));
        }
        let (cos, sin) = self.rotary(&(0..t).collect::<Vec<_>>())?;
        let mask = causal_mask(t, self.config.window(), &self.device)?;
        let mut cache = KvCache {
            layers: vec![None; self.config.num_hidden_layers],
            width: t,
            lens: lens.to_vec(),
            generated: 0,
        };
        let logits = self.run(
            &self.weights(false),
            ids,
            &cos,
            &sin,
            &mask,
            Some(&mut cache),
        )?;
        let rows = lens
            .iter()
            .enumerate()
            .map(|(i, &l)| logits.get(i)?.get(l - 1))
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok((Tensor::stack(&rows, 0)?, cache))
    }

    /// One decoding step (no graph): `next` holds one new token per row of the cache; returns
    /// the logits `(b, vocab)` after it. Row i's new token is at position `lens[i] +
    /// generated`; its keys see the row's prompt and what it generated, never the padding.
    pub fn decode(&self, next: &[u32], cache: &mut KvCache) -> Result<Tensor, TrainError> {
        let b = cache.lens.len();
        if next.len() != b {
            return Err(TrainError::Input(format!(
                "{} tokens for {b} rows",
                next.len()
            )));
        }
        let ids = Tensor::from_slice(next, (b, 1), &self.device)?;
        self.check_ids(&ids)?;
        let g = cache.generated;
        let positions: Vec<usize> = cache.lens.iter().map(|l| l + g).collect();
        let (cos, sin) = self.rotary(&positions)?;
        let hd = self.config.head_dim();
        let (cos, sin) = (cos.reshape((b, 1, 1, hd))?, sin.reshape((b, 1, 1, hd))?);
        // keys: the prompt's slots (padding past each row's length), then the generated ones
        let slots = cache.width + g + 1;
        let window = self.config.window().unwrap_or(usize::MAX);
        let mut mask = Vec::with_capacity(b * slots);
        for (&len, &pos) in cache.lens.iter().zip(&positions) {
            for s in 0..slots {
                let key = if s < cache.width {
                    (s < len).then_some(s)
                } else {
                    Some(len + s - cache.width)
                };
                let seen = key.is_some_and(|k| k <= pos && pos - k < window);
                mask.push(if seen { 0f32 } else { f32::NEG_INFINITY });
            }
        }
        let mask = Tensor::from_vec(mask, (b, 1, 1, slots), &self.device)?;
        let logits = self.run(&self.weights(false), &ids, &cos, &sin, &mask, Some(cache))?;
        cache.generated += 1;
        Ok(logits.squeeze(1)?)
    }

    /// Log-probability of each next token: `(b, t - 1)`, entry `j` = log p(ids[j + 1] |
    /// ids[..=j]), with gradient.
    pub fn token_logprobs(&self, ids: &Tensor) -> Result<Tensor, TrainError> {
        self.token_logprobs_with(ids, true)
    }

    /// As [`Decoder::token_logprobs`] without a graph (the reference model's, once a round).
    pub fn token_logprobs_detached(&self, ids: &Tensor) -> Result<Tensor, TrainError> {
        self.token_logprobs_with(ids, false)
    }

    fn token_logprobs_with(&self, ids: &Tensor, grad: bool) -> Result<Tensor, TrainError> {
        let (b, t) = ids.dims2()?;
        if t < 2 {
            return Err(TrainError::Input(
                "a row needs two tokens for a log-probability".into(),
            ));
        }
        let logits = self.forward_with(ids, grad)?.narrow(1, 0, t - 1)?;
        if self.device.is_cpu() {
            let v = logits.dim(2)?;
            let next: Vec<u32> = ids.narrow(1, 1, t - 1)?.flatten_all()?.to_vec1()?;
            let lp = fused::picked_logprobs(&logits.reshape((b * (t - 1), v))?, next)?;
            return Ok(lp.reshape((b, t - 1))?);
        }
        let lp = log_softmax(&logits)?;
        let next = ids.narrow(1, 1, t - 1)?.contiguous()?.unsqueeze(2)?;
        Ok(lp.gather(&next, 2)?.reshape((b, t - 1))?)
    }

    /// Write a Hugging Face directory transformers, `stepkto judge` and [`Decoder::load`]
    /// read: `config.json`, the tokenizer files of the source, `model.safetensors`. Written
    /// into a temporary sibling and renamed, so `dir` is never half written; `dir` may be
    /// the directory the model was loaded from.
    pub fn save(&self, dir: &Path) -> Result<(), TrainError> {
        let name = dir
            .file_name()
            .ok_or_else(|| TrainError::Input(format!("{}: not a directory name", dir.display())))?;
        let parent = dir.parent().unwrap_or(Path::new("."));
        let tmp = parent.join(format!(".{}.partial", name.to_string_lossy()));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| TrainError::io(&tmp, e))?;
        let mut config = self.raw_config.clone();
        config["torch_dtype"] = "float32".into();
        if config.get("dtype").is_some() {
            config["dtype"] = "float32".into();
        }
        let text = serde_json::to_string_pretty(&config).expect("a JSON value serialises");
        let cfg_path = tmp.join("config.json");
        std::fs::write(&cfg_path, text).map_err(|e| TrainError::io(&cfg_path, e))?;
        for f in SIDE_FILES {
            let src = self.source.join(f);
            if src.is_file() {
                std::fs::copy(&src, tmp.join(f)).map_err(|e| TrainError::io(&src, e))?;
            }
        }
        let tensors: std::collections::HashMap<String, Tensor> = self
            .params
            .iter()
            .map(|(n, v)| (n.clone(), v.as_tensor().clone()))
            .collect();
        candle_core::safetensors::save(&tensors, tmp.join("model.safetensors"))?;
        // an existing directory is moved aside, not deleted, until the new one is in place:
        // a crash in between leaves one of the two whole
        let old = parent.join(format!(".{}.old", name.to_string_lossy()));
        let _ = std::fs::remove_dir_all(&old);
        if dir.exists() {
            std::fs::rename(dir, &old).map_err(|e| TrainError::io(dir, e))?;
        }
        std::fs::rename(&tmp, dir).map_err(|e| TrainError::io(dir, e))?;
        let _ = std::fs::remove_dir_all(&old);
        Ok(())
    }
}

/// The parameters of one forward, by name.
struct Weights(BTreeMap<String, Tensor>);

impl Weights {
    fn get(&self, name: &str) -> &Tensor {
        self.0
            .get(name)
            .unwrap_or_else(|| panic!("parameter {name} is loaded with the model"))
    }

    fn opt(&self, name: &str) -> Option<&Tensor> {
        self.0.get(name)
    }

    /// `x (b, t, in) · Wᵀ + bias`.
    fn linear(&self, x: &Tensor, name: &str) -> candle_core::Result<Tensor> {
        let w = self.get(&format!("{name}.weight"));
        let (b, t, i) = x.dims3()?;
        let y = x.reshape((b * t, i))?.matmul(&w.t()?)?;
        let y = match self.opt(&format!("{name}.bias")) {
            Some(bias) => y.broadcast_add(bias)?,
            None => y,
        };
        y.reshape((b, t, w.dim(0)?))
    }

    /// transformers' RMSNorm: `w * (x * rsqrt(mean(x²) + eps))`.
    fn rms_norm(&self, x: &Tensor, name: &str, eps: f64) -> candle_core::Result<Tensor> {
        let var = x.sqr()?.mean_keepdim(D::Minus1)?;
        let inv = (var + eps)?.sqrt()?.recip()?;
        x.broadcast_mul(&inv)?.broadcast_mul(self.get(name))
    }
}

/// What the fused CPU ops need: rotary tables for positions 0..t (`(t, hd / 2)`) and the
/// sliding window.
struct Fused {
    cos: std::sync::Arc<Vec<f32>>,
    sin: std::sync::Arc<Vec<f32>>,
    window: usize,
    /// Whether a backward will follow (the layer op keeps its activations).
    grad: bool,
}

/// Keys and values of every layer for a batch being sampled: `width` prompt slots (row i
/// real in its first `lens[i]`), then one slot per generated token.
pub struct KvCache {
    layers: Vec<Option<(Tensor, Tensor)>>,
    width: usize,
    lens: Vec<usize>,
    generated: usize,
}

impl KvCache {
    /// Tokens generated so far (per row).
    pub fn generated(&self) -> usize {
        self.generated
    }
}

/// `x cos + rotate_half(x) sin` on `(b, heads, t, head_dim)`, rotate_half = `[-x2, x1]`.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
    let hd = x.dim(D::Minus1)?;
    let (x1, x2) = (
        x.narrow(D::Minus1, 0, hd / 2)?,
        x.narrow(D::Minus1, hd / 2, hd / 2)?,
    );
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(cos)? + rotated.broadcast_mul(sin)?
}

/// Softmax over the last axis from differentiable ops; the max subtracted is detached (the
/// softmax does not depend on it), masked scores are -inf and get probability 0.
fn softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// Log-softmax over the last axis: `x - max - log(sum(exp(x - max)))`.
pub fn log_softmax(x: &Tensor) -> candle_core::Result<Tensor> {
    let m = x.max_keepdim(D::Minus1)?.detach();
    let z = x.broadcast_sub(&m)?;
    z.broadcast_sub(&z.exp()?.sum_keepdim(D::Minus1)?.log()?)
}
