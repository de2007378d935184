//! The sampler: batches of many prompts × N samples per prompt with a KV cache (prefill
//! once, then one token per live row per step; a finished row drops out), on the CPU through
//! the packed inference forward (`model::cpu::decode`, built from the trainable decoder's
//! current weights), elsewhere through the decoder's graph; greedy or with temperature,
//! top-k and top-p; stops a row on an EOS id, on a stop string, at `max_new_tokens`, or at
//! the model's context (`max_position_embeddings`), whichever comes first.
//!
//! Reproducibility: each row draws from its own generator seeded by (seed, prompt index,
//! sample index), so a sample is the same whatever batch it runs in or how many other rows
//! there are. Greedy decoding takes the first largest logit, as `torch.argmax` does.

use candle_core::Tensor;
use tokenizers::Tokenizer;

use super::TrainError;
use super::decoder::{Decoder, KvCache};
use crate::model::config::ModelConfig;
use crate::model::cpu::decode::{CpuLm, LmState};

#[derive(Debug, Clone, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampleConfig {
    /// 0 is greedy.
    pub temperature: f64,
    /// 1.0 keeps every token.
    pub top_p: f64,
    /// 0 keeps every token.
    pub top_k: usize,
    pub max_new_tokens: usize,
    pub seed: u64,
    /// Text that ends a completion (not included in it).
    pub stop: Vec<String>,
    /// Rows decoded together at most (prompts × samples are split into such batches).
    pub max_batch: usize,
    /// Memory a batch may hold, in MiB: its KV cache at full length plus the prefill's
    /// activations (see [`row_bytes`]). Batches are cut smaller to fit; a single row that
    /// does not fit is an error before anything runs.
    pub max_memory_mb: usize,
}

/// The default sampling memory budget: an eighth of a 32 GB machine.
pub const DEFAULT_MAX_MEMORY_MB: usize = 4096;

/// The most bytes one row of a sampling batch holds: its keys and values for every layer at
/// full length (prompt + new tokens), and, during the prefill, per prompt token the packed
/// forward's activations (residual, normed copy, q/k/v, attention output, gate/up and the
/// activated MLP row) and its scores against the prompt, plus one row of logits. An upper
/// bound for the packed CPU forward; the graph path (CUDA) holds the same order.
pub fn row_bytes(c: &ModelConfig, prompt: usize, new: usize) -> u64 {
    let (h, hd) = (c.hidden_size as u64, c.head_dim() as u64);
    let (q, kv) = (c.num_attention_heads as u64 * hd, c.kv_heads() as u64 * hd);
    let inter = c.intermediate_size as u64;
    let (prompt, len) = (prompt as u64, (prompt + new) as u64);
    // keys are kept in tiles of 32 positions (`model::cpu::cached`): up to 31 more
    let cache = c.num_hidden_layers as u64 * kv * (2 * len + 32);
    let per_token = 2 * h + (q + 2 * kv) + q + 3 * inter + c.num_attention_heads as u64 * prompt;
    4 * (cache + prompt * per_token + c.vocab_size as u64)
}

/// Cut `rows` (in order) into batches of at most `max_batch` rows that fit the budget. A
/// batch's cache is as long as its longest row for every row (`generate_batch`), so a batch
/// is charged its row count times its dearest row ([`row_bytes`] grows with the prompt): one
/// long prompt among short ones is paid for by each of them.
fn batches(
    rows: &[(usize, usize)],
    cost: impl Fn(usize) -> u64,
    cfg: &SampleConfig,
) -> Result<Vec<std::ops::Range<usize>>, TrainError> {
    let budget = (cfg.max_memory_mb as u64).saturating_mul(1 << 20);
    let (mut out, mut start, mut dearest) = (Vec::new(), 0, 0u64);
    for (i, &(p, _)) in rows.iter().enumerate() {
        let c = cost(p);
        if c > budget {
            return Err(TrainError::Input(format!(
                "prompt {p} needs {} MiB to sample (its KV cache at full length and its \
                 prefill), over the sampling memory budget of {} MiB: raise max_memory_mb, or \
                 lower max_new_tokens",
                c.div_ceil(1 << 20),
                cfg.max_memory_mb
            )));
        }
        let n = (i - start + 1) as u64;
        if i > start
            && (i - start >= cfg.max_batch.max(1) || n.saturating_mul(dearest.max(c)) > budget)
        {
            out.push(start..i);
            (start, dearest) = (i, 0);
        }
        dearest = dearest.max(c);
    }
    if start < rows.len() {
        out.push(start..rows.len());
    }
    Ok(out)
}

impl Default for SampleConfig {
    fn default() -> Self {
        SampleConfig {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            max_new_tokens: 256,
            seed: 0,
            stop: Vec::new(),
            max_batch: 64,
            max_memory_mb: DEFAULT_MAX_MEMORY_MB,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Eos,
    Stop,
    Length,
}

#[derive(Debug, Clone)]
pub struct Sample {
    pub prompt: usize,
    pub sample: usize,
    /// Generated token ids (an EOS id included; tokens past a stop string removed).
    pub tokens: Vec<u32>,
    /// The decoded completion (cut before a stop string), when a tokenizer was given.
    pub text: Option<String>,
    pub finish_reason: FinishReason,
}

/// splitmix64: a small, fast generator with good statistics, one per row.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, prompt: u64, sample: usize) -> Rng {
        let mut r = Rng(seed ^ 0x9E37_79B9_7F4A_7C15);
        r.0 ^= r.next().wrapping_add(prompt);
        r.0 ^= r.next().wrapping_add((sample as u64) << 32);
        Rng(r.next())
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The next token from one row of logits.
fn pick(logits: &[f32], cfg: &SampleConfig, rng: &mut Rng) -> u32 {
    let argmax = || {
        let mut best = 0;
        for (i, &x) in logits.iter().enumerate() {
            if x > logits[best] {
                best = i;
            }
        }
        best as u32
    };
    if cfg.temperature <= 0.0 {
        return argmax();
    }
    // candidates by descending logit (ties by id, as a stable sort gives)
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    if cfg.top_k > 0 {
        order.truncate(cfg.top_k);
    }
    let top = logits[order[0]] as f64;
    let mut p: Vec<f64> = order
        .iter()
        .map(|&i| ((logits[i] as f64 - top) / cfg.temperature).exp())
        .collect();
    let z: f64 = p.iter().sum();
    p.iter_mut().for_each(|x| *x /= z);
    if cfg.top_p < 1.0 {
        // the smallest prefix whose mass reaches top_p (at least one token)
        let mut mass = 0.0;
        let mut keep = p.len();
        for (k, x) in p.iter().enumerate() {
            mass += x;
            if mass >= cfg.top_p {
                keep = k + 1;
                break;
            }
        }
        p.truncate(keep);
        let z: f64 = p.iter().sum();
        p.iter_mut().for_each(|x| *x /= z);
    }
    let u = rng.uniform();
    let mut acc = 0.0;
    for (k, x) in p.iter().enumerate() {
        acc += x;
        if u < acc {
            return order[k] as u32;
        }
    }
    order[p.len() - 1] as u32
}

/// Where a stop string first occurs in `text`, if one does.
fn stop_at(text: &str, stop: &[String]) -> Option<usize> {
    stop.iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| text.find(s.as_str()))
        .min()
}

/// Sample `n` completions of every prompt (token ids). `eos` ends a row; `tokenizer` is
/// needed for stop strings and for the texts. Prompt i's samples are seeded by (seed, i).
pub fn generate(
    model: &Decoder,
    prompts: &[Vec<u32>],
    n: usize,
    eos: &[u32],
    tokenizer: Option<&Tokenizer>,
    cfg: &SampleConfig,
) -> Result<Vec<Sample>, TrainError> {
    let keys: Vec<u64> = (0..prompts.len() as u64).collect();
    generate_keyed(model, prompts, &keys, n, eos, tokenizer, cfg)
}

/// As [`generate`], prompt i's samples seeded by (seed, `keys[i]`): a caller that samples a
/// file in parts keys each prompt by its line, so that a sample does not depend on which
/// part it was in or on the lines before it.
pub fn generate_keyed(
    model: &Decoder,
    prompts: &[Vec<u32>],
    keys: &[u64],
    n: usize,
    eos: &[u32],
    tokenizer: Option<&Tokenizer>,
    cfg: &SampleConfig,
) -> Result<Vec<Sample>, TrainError> {
    if keys.len() != prompts.len() {
        return Err(TrainError::Input(format!(
            "{} keys for {} prompts",
            keys.len(),
            prompts.len()
        )));
    }
    if !cfg.stop.is_empty() && tokenizer.is_none() {
        return Err(TrainError::Input("stop strings need the tokenizer".into()));
    }
    let valid = cfg.top_p > 0.0 && cfg.top_p <= 1.0 && cfg.temperature.is_finite();
    if !valid || cfg.temperature < 0.0 {
        return Err(TrainError::Input(
            "temperature must be >= 0 and top_p in (0, 1]".into(),
        ));
    }
    if let Some((i, _)) = prompts.iter().enumerate().find(|(_, p)| p.is_empty()) {
        return Err(TrainError::Input(format!("prompt {i} is empty")));
    }
    let context = model.config.max_position_embeddings;
    if let Some((i, p)) = prompts.iter().enumerate().find(|(_, p)| p.len() >= context) {
        return Err(TrainError::Input(format!(
            "prompt {i} has {} tokens, the model's context is {context}",
            p.len()
        )));
    }
    let vocab = model.config.vocab_size;
    if let Some((i, _)) = prompts
        .iter()
        .enumerate()
        .find(|(_, p)| p.iter().any(|&t| t as usize >= vocab))
    {
        return Err(TrainError::Input(format!(
            "prompt {i} has a token id outside the model's vocabulary of {vocab}"
        )));
    }
    let rows: Vec<(usize, usize)> = (0..prompts.len())
        .flat_map(|p| (0..n).map(move |s| (p, s)))
        .collect();
    // a row's cache stops at the model's context (prompts are shorter, checked above)
    let cost = |p: usize| {
        let len = prompts[p].len();
        row_bytes(&model.config, len, cfg.max_new_tokens.min(context - len))
    };
    let parts = batches(&rows, cost, cfg)?;
    // the packed CPU forward, built once for all batches (a copy of the weights)
    let packed = match model.device().is_cpu() {
        true => Some(CpuLm::from_tensors(&model.config, model.tensors())?),
        false => None,
    };
    // The loop runs on a pool thread, so that each product's parallel part is a join among
    // the workers; called from outside the pool, every one of a step's ~50 parallel parts
    // parked this thread until the pool finished (two context switches each, a tenth of
    // the sampler's time on two cores).
    let packed = packed.as_ref();
    rayon::scope(|_| {
        let mut out = Vec::with_capacity(rows.len());
        for part in parts {
            out.extend(generate_batch(
                model,
                packed,
                prompts,
                keys,
                &rows[part],
                eos,
                tokenizer,
                cfg,
            )?);
        }
        Ok(out)
    })
}

/// How a batch's next-token logits are computed: the packed CPU forward (`model::cpu::decode`)
/// on the CPU, the decoder's candle graph with its KV cache elsewhere (CUDA). Both give
/// row-major `(rows, vocab)` logits.
enum Forward<'a> {
    Packed(&'a CpuLm, LmState),
    Graph(&'a Decoder, Option<KvCache>),
}

impl Forward<'_> {
    /// Logits after each whole prompt.
    fn start(&mut self, prompts: &[&[u32]]) -> Result<Vec<f32>, TrainError> {
        match self {
            Forward::Packed(lm, st) => {
                let rows: Vec<usize> = (0..prompts.len()).collect();
                Ok(lm.extend(&rows, prompts, st))
            }
            Forward::Graph(model, cache) => {
                let lens: Vec<usize> = prompts.iter().map(|p| p.len()).collect();
                let width = *lens.iter().max().expect("a batch has rows");
                let flat: Vec<u32> = prompts
                    .iter()
                    .flat_map(|p| {
                        p.iter()
                            .copied()
                            .chain(std::iter::repeat_n(0, width - p.len()))
                    })
                    .collect();
                let ids = Tensor::from_vec(flat, (prompts.len(), width), model.device())?;
                let (logits, c) = model.prefill(&ids, &lens)?;
                *cache = Some(c);
                Ok(logits.flatten_all()?.to_vec1()?)
            }
        }
    }

    /// Logits after `next[i]` is appended to row `rows[i]` (the live rows).
    fn step(&mut self, rows: &[usize], next: &[u32], b: usize) -> Result<Vec<f32>, TrainError> {
        match self {
            Forward::Packed(lm, st) => {
                let toks: Vec<&[u32]> = next.chunks(1).collect();
                Ok(lm.extend(rows, &toks, st))
            }
            Forward::Graph(model, cache) => {
                // the graph decodes every row; finished ones take a placeholder
                let mut all = vec![0u32; b];
                for (&r, &t) in rows.iter().zip(next) {
                    all[r] = t;
                }
                let cache = cache.as_mut().expect("started");
                let logits: Vec<Vec<f32>> = model.decode(&all, cache)?.to_vec2()?;
                Ok(rows
                    .iter()
                    .flat_map(|&r| logits[r].iter().copied())
                    .collect())
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn generate_batch(
    model: &Decoder,
    packed: Option<&CpuLm>,
    prompts: &[Vec<u32>],
    keys: &[u64],
    rows: &[(usize, usize)],
    eos: &[u32],
    tokenizer: Option<&Tokenizer>,
    cfg: &SampleConfig,
) -> Result<Vec<Sample>, TrainError> {
    let b = rows.len();
    let lens: Vec<usize> = rows.iter().map(|&(p, _)| prompts[p].len()).collect();
    let context = model.config.max_position_embeddings;
    let mut fwd = match packed {
        Some(lm) => {
            let cap = lens.iter().max().expect("a batch has rows") + cfg.max_new_tokens;
            Forward::Packed(lm, lm.state(b, cap.min(context)))
        }
        None => Forward::Graph(model, None),
    };
    let mut rngs: Vec<Rng> = rows
        .iter()
        .map(|&(p, s)| Rng::new(cfg.seed, keys[p], s))
        .collect();
    let mut done: Vec<Option<FinishReason>> = vec![None; b];
    let mut tokens: Vec<Vec<u32>> = vec![Vec::new(); b];
    let mut texts: Vec<Option<String>> = vec![None; b];
    if cfg.max_new_tokens == 0 {
        done.iter_mut()
            .for_each(|d| *d = Some(FinishReason::Length));
    }
    let firsts: Vec<&[u32]> = rows.iter().map(|&(p, _)| prompts[p].as_slice()).collect();
    let vocab = model.config.vocab_size;
    let mut logits = fwd.start(&firsts)?;
    // the rows whose logits `logits` holds, in order
    let mut live: Vec<usize> = (0..b).collect();
    while done.iter().any(Option::is_none) {
        let (mut rows_next, mut next) = (Vec::new(), Vec::new());
        for (j, &i) in live.iter().enumerate() {
            if done[i].is_some() {
                continue;
            }
            let t = pick(&logits[j * vocab..(j + 1) * vocab], cfg, &mut rngs[i]);
            tokens[i].push(t);
            if eos.contains(&t) {
                done[i] = Some(FinishReason::Eos);
            } else if let Some(tok) = tokenizer.filter(|_| !cfg.stop.is_empty()) {
                let text = tok
                    .decode(&tokens[i], true)
                    .map_err(|e| TrainError::Input(format!("decode: {e}")))?;
                if let Some(at) = stop_at(&text, &cfg.stop) {
                    texts[i] = Some(text[..at].to_string());
                    done[i] = Some(FinishReason::Stop);
                }
            }
            // `max_new_tokens` is the budget, and no row grows past the model's context
            let full = lens[i] + tokens[i].len() >= context;
            if done[i].is_none() && (tokens[i].len() >= cfg.max_new_tokens || full) {
                done[i] = Some(FinishReason::Length);
            }
            if done[i].is_none() {
                rows_next.push(i);
                next.push(t);
            }
        }
        if rows_next.is_empty() {
            break;
        }
        logits = fwd.step(&rows_next, &next, b)?;
        live = rows_next;
    }
    let mut out = Vec::with_capacity(b);
    for (i, &(p, s)) in rows.iter().enumerate() {
        let text = match (texts[i].take(), tokenizer) {
            (Some(t), _) => Some(t),
            (None, Some(tok)) => Some(
                tok.decode(&tokens[i], true)
                    .map_err(|e| TrainError::Input(format!("decode: {e}")))?,
            ),
            (None, None) => None,
        };
        out.push(Sample {
            prompt: p,
            sample: s,
            tokens: std::mem::take(&mut tokens[i]),
            text,
            finish_reason: done[i].expect("every row finished"),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_k_and_top_p_keep_only_their_tokens() {
        let logits = [0.0f32, 3.0, 2.0, 1.0, -1.0];
        let cfg = |k, p| SampleConfig {
            temperature: 1.0,
            top_k: k,
            top_p: p,
            ..SampleConfig::default()
        };
        let mut rng = Rng::new(1, 0, 0);
        for _ in 0..500 {
            assert!([1, 2].contains(&pick(&logits, &cfg(2, 1.0), &mut rng)));
            // p(1) = 0.64, p(2) = 0.23: top-p 0.7 keeps two tokens
            assert!([1, 2].contains(&pick(&logits, &cfg(0, 0.7), &mut rng)));
            assert_eq!(pick(&logits, &cfg(0, 0.1), &mut rng), 1);
        }
        let greedy = SampleConfig {
            temperature: 0.0,
            ..SampleConfig::default()
        };
        assert_eq!(
            pick(&[1.0, 5.0, 5.0], &greedy, &mut rng),
            1,
            "first of equal maxima"
        );
        // frequencies follow the softmax
        let mut hits = [0usize; 5];
        for _ in 0..20_000 {
            hits[pick(&logits, &cfg(0, 1.0), &mut rng) as usize] += 1;
        }
        let z: f64 = logits.iter().map(|&x| (x as f64).exp()).sum();
        for (i, &h) in hits.iter().enumerate() {
            let want = (logits[i] as f64).exp() / z;
            assert!((h as f64 / 20_000.0 - want).abs() < 0.015, "token {i}: {h}");
        }
    }

    /// Batches keep row order, hold at most `max_batch` rows and the budget's bytes, and a
    /// row over the budget alone is an error.
    #[test]
    fn batches_fit_the_memory_budget() {
        let rows: Vec<(usize, usize)> = (0..5).flat_map(|p| (0..2).map(move |s| (p, s))).collect();
        let mib = 1u64 << 20;
        let cost = |p: usize| [mib / 2, mib / 2, mib, mib / 4, 3 * mib / 4][p];
        let cfg = SampleConfig {
            max_batch: 3,
            max_memory_mb: 1,
            ..SampleConfig::default()
        };
        let parts = batches(&rows, cost, &cfg).unwrap();
        assert_eq!(parts, vec![0..2, 2..4, 4..5, 5..6, 6..8, 8..9, 9..10]);
        for r in &parts {
            assert!(
                r.len() <= 3 && rows[r.clone()].iter().map(|&(p, _)| cost(p)).sum::<u64>() <= mib
            );
        }
        // one dear row among cheap ones: every row of its batch holds a cache as long as its
        // own, so the batch is charged the dear row's cost per row, not the sum
        let mixed = |p: usize| if p == 0 { 3 * mib / 4 } else { mib / 16 };
        let cut = batches(&[(0, 0), (1, 0), (2, 0), (3, 0)], mixed, &cfg).unwrap();
        assert_eq!(cut, vec![0..1, 1..4]);
        // a budget too large to hold in bytes is no budget, not a wrapped small one
        let huge = SampleConfig {
            max_memory_mb: usize::MAX,
            ..cfg.clone()
        };
        assert_eq!(batches(&rows, cost, &huge).unwrap().len(), 4);
        let tight = SampleConfig {
            max_memory_mb: 0,
            ..cfg.clone()
        };
        let err = batches(&rows, cost, &tight).unwrap_err().to_string();
        assert!(
            err.contains("prompt 0 needs 1 MiB") && err.contains("budget of 0 MiB"),
            "{err}"
        );
        let wide = SampleConfig {
            max_memory_mb: 100,
            ..cfg
        };
        assert_eq!(
            batches(&rows, cost, &wide).unwrap(),
            vec![0..3, 3..6, 6..9, 9..10]
        );
    }
}
