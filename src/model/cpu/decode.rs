//! The sampler's forward on the CPU: the packed layers of `model::cpu` (fused q/k/v and
//! gate/up products on weights packed at load, `panel.rs`; the row kernels) with a KV cache
//! and attention against it (`cached.rs`),
//! so that prefill and each decoding step are a handful of large products over the live
//! rows only. The trainer's candle graph computes the same function, op by op, and is what
//! gradients flow through; sampling needs no gradient, and op by op it spent most of a step
//! outside the products.
//!
//! Rows are sequences; [`LmState`] keeps each row's keys and values (after rotary) up to a
//! fixed capacity. [`CpuLm::extend`] appends new tokens to chosen rows (a whole prompt, or
//! one token) and returns the next-token logits at each chosen row's last new token.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::cached::{LayerCache, attend};
use super::kernels::rope;
use super::{CpuLayers, Engine, Linear, ModelError, Qkv, SERIAL, norm_rows, project, project_into};
use crate::model::config::{ModelConfig, rotary_tables};

/// A causal LM's weights in the packed CPU form.
pub struct CpuLm {
    layers: CpuLayers,
    /// `(vocab, hidden)`.
    embed: Vec<f32>,
    head: Linear,
    vocab: usize,
}

/// Keys and values of every layer for `rows` sequences of at most `cap` tokens.
pub struct LmState {
    layers: Vec<LayerCache>,
    cap: usize,
    /// Rotary cos and sin for positions `0..cap` (`(cap, hd / 2)`), made once per batch: a
    /// step computing the table up to its longest row spent more on sines than on attention.
    cos: Vec<f32>,
    sin: Vec<f32>,
    /// Tokens held per row.
    len: Vec<usize>,
}

impl CpuLm {
    /// From Hugging Face-named tensors (`model.…`, `lm_head.weight` unless tied).
    pub fn from_tensors(
        c: &ModelConfig,
        tensors: HashMap<String, Tensor>,
    ) -> Result<CpuLm, ModelError> {
        let head = tensors
            .get("lm_head.weight")
            .or_else(|| tensors.get("model.embed_tokens.weight"))
            .ok_or_else(|| ModelError::Load("no lm_head or embedding weights".into()))?
            .clone();
        let flat = |t: &Tensor| -> Result<Vec<f32>, ModelError> {
            t.flatten_all()
                .and_then(|t| t.to_vec1::<f32>())
                .map_err(|e| ModelError::Load(e.to_string()))
        };
        let embed = flat(
            tensors
                .get("model.embed_tokens.weight")
                .ok_or_else(|| ModelError::Load("no model.embed_tokens.weight".into()))?,
        )?;
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        let engine = Engine::for_decoding();
        let layers = CpuLayers::load(c, &vb.pp("model"), engine)?;
        Ok(CpuLm {
            layers,
            embed,
            head: Linear::new(flat(&head)?, c.vocab_size, engine),
            vocab: c.vocab_size,
        })
    }

    /// An empty cache for `rows` sequences of up to `cap` tokens each.
    pub fn state(&self, rows: usize, cap: usize) -> LmState {
        let n = self.layers.layers.len();
        let (cos, sin) = rotary_tables(&self.layers.inv_freq, cap);
        LmState {
            cos,
            sin,
            layers: (0..n)
                .map(|_| LayerCache::new(rows, cap, self.layers.heads))
                .collect(),
            cap,
            len: vec![0; rows],
        }
    }

    /// Append `tokens[i]` to row `rows[i]` of `st` (rows distinct); returns the logits
    /// `(rows.len(), vocab)` after each row's last new token. Token ids must be below the
    /// vocabulary and each row must stay within the capacity (checked: a caller's bug).
    pub fn extend(&self, rows: &[usize], tokens: &[&[u32]], st: &mut LmState) -> Vec<f32> {
        let l = &self.layers;
        let (h, d) = (l.h, l.heads);
        let (a, kvw) = (d.nq * d.hd, d.nkv * d.hd);
        let w = d.stride();
        assert_eq!(rows.len(), tokens.len());
        // every new token: (row, position)
        let mut at: Vec<(usize, usize)> = Vec::new();
        for (&r, t) in rows.iter().zip(tokens) {
            assert!(
                !t.is_empty() && st.len[r] + t.len() <= st.cap,
                "row {r} over its capacity"
            );
            at.extend((0..t.len()).map(|j| (r, st.len[r] + j)));
        }
        let n = at.len();
        let mut x = Vec::with_capacity(n * h);
        for t in tokens.iter().flat_map(|t| t.iter()) {
            let t = *t as usize;
            assert!(t < self.vocab, "token {t} outside the vocabulary");
            x.extend_from_slice(&self.embed[t * h..(t + 1) * h]);
        }
        let (cos, sin) = (&st.cos, &st.sin);
        let half = d.hd / 2;
        let turn = |buf: &mut [f32], width: usize, from: usize, heads: usize| {
            let one = |(r, &(_, p)): (&mut [f32], &(usize, usize))| {
                let (c, s) = (&cos[p * half..][..half], &sin[p * half..][..half]);
                rope(&mut r[from..], heads, c, s)
            };
            // a decoding step's few rows: on this thread (see `SERIAL`)
            match buf.len() <= SERIAL {
                true => buf.chunks_mut(width).zip(&at).for_each(one),
                false => buf.par_chunks_mut(width).zip(&at).for_each(one),
            }
        };
        let (mut y, mut qkv) = (vec![0f32; n * h], vec![0f32; n * w]);
        let mut att = vec![0f32; n * a];
        let (mut gu, mut act) = (vec![0f32; n * 2 * l.inter], vec![0f32; n * l.inter]);
        for (li, layer) in l.layers.iter().enumerate() {
            norm_rows(&x, &layer.ln1, l.eps, &mut y);
            match &layer.qkv {
                Qkv::Fused(wqkv) => project(&y, wqkv, layer.bqkv.as_deref(), &mut qkv, false),
                Qkv::Split { q, kv } => {
                    let b = layer.bqkv.as_deref();
                    project_into(&y, q, b.map(|b| &b[..a]), &mut qkv, w, false);
                    project_into(&y, kv, b.map(|b| &b[a..]), &mut qkv[a..], w, false);
                }
            }
            // rotary on q and k heads (adjacent at the start of each row)
            turn(&mut qkv, w, 0, d.nq + d.nkv);
            let cache = &mut st.layers[li];
            for (row, &(r, p)) in qkv.chunks_exact(w).zip(&at) {
                cache.store(d, r, p, &row[a..a + kvw], &row[a + kvw..a + 2 * kvw]);
            }
            let q: Vec<f32> = qkv.chunks_exact(w).flat_map(|r| &r[..a]).copied().collect();
            attend(&q, cache, &at, d, &mut att);
            project(&att, &layer.wo, layer.bo.as_deref(), &mut x, true);
            l.mlp(layer, &mut x, &mut y, &mut gu, &mut act);
        }
        for (&r, t) in rows.iter().zip(tokens) {
            st.len[r] += t.len();
        }
        // the last new token of each row
        let mut last = Vec::with_capacity(rows.len());
        let mut end = 0;
        for t in tokens {
            end += t.len();
            last.push(end - 1);
        }
        let xl: Vec<f32> = last
            .iter()
            .flat_map(|&i| &x[i * h..(i + 1) * h])
            .copied()
            .collect();
        let mut yl = vec![0f32; last.len() * h];
        norm_rows(&xl, &l.norm, l.eps, &mut yl);
        let mut logits = vec![0f32; last.len() * self.vocab];
        project(&yl, &self.head, None, &mut logits, false);
        logits
    }
}
