//! A loaded process reward model: a local Hugging Face directory turned into a tokenizer,
//! a chat template, a [`Decoder`], a [`Head`] and the [`Recipe`] that ties them together.
//! [`Prm::tokenize`] runs on request threads; [`Prm::score`] runs a batch on the model's
//! inference thread (see `batcher`).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use sha2::{Digest, Sha256};
use tokenizers::Tokenizer;

use super::JudgeError;
use super::model::{CpuMatmul, Decoder, Head, ModelConfig};
use super::recipe::{self, ChatTemplate, HeadKind, Recipe, RecipeIds, Tokenized};

/// What `--model [NAME=]DIR` and `--recipe` name.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// The id clients use; the directory's name when absent.
    pub name: Option<String>,
    pub dir: PathBuf,
    /// Recipe name; detected from config.json when absent.
    pub recipe: Option<String>,
    /// Cap on tokens per item, below the model's own context; the model's when absent.
    pub max_context: Option<usize>,
    /// How the CPU computes the layers' products.
    pub cpu_matmul: CpuMatmul,
}

impl ModelSpec {
    /// Parse `[NAME=]DIR`.
    pub fn parse(s: &str) -> ModelSpec {
        let (name, dir) = match s.split_once('=') {
            Some((n, d)) if !n.is_empty() && !n.contains('/') => (Some(n.to_string()), d),
            _ => (None, s),
        };
        ModelSpec {
            name,
            dir: PathBuf::from(dir),
            recipe: None,
            max_context: None,
            cpu_matmul: CpuMatmul::Auto,
        }
    }
}

pub struct Prm {
    pub id: String,
    pub recipe: &'static Recipe,
    /// SHA-256 over config, tokenizer and a sample of the weights; part of every cache key.
    pub fingerprint: String,
    /// Most tokens one item may have; longer inputs are rejected, never truncated.
    pub max_context: usize,
    pub params: usize,
    tokenizer: Tokenizer,
    chat: Option<ChatTemplate>,
    ids: RecipeIds,
    decoder: Decoder,
    head: Head,
}

fn load_err(dir: &Path, what: impl std::fmt::Display) -> JudgeError {
    JudgeError::Load(format!("{}: {what}", dir.display()))
}

/// The safetensors files of a checkpoint: one file or the shards of an index.
fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, JudgeError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let index = dir.join("model.safetensors.index.json");
    let s = std::fs::read_to_string(&index)
        .map_err(|_| load_err(dir, "no model.safetensors or model.safetensors.index.json"))?;
    let v: serde_json::Value = serde_json::from_str(&s).map_err(|e| load_err(&index, e))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| load_err(&index, "no weight_map"))?;
    let mut files: Vec<String> = map
        .values()
        .filter_map(|f| f.as_str().map(String::from))
        .collect();
    files.sort();
    files.dedup();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// Bytes per segment of a weight file hashed on its own (so that segments hash in parallel).
const SEGMENT: u64 = 64 << 20;

/// The checkpoint's identity for the cache: SHA-256 over the config, the tokenizer and every
/// byte of every weight file. Successive training rounds of one model differ anywhere in
/// their tensors, so sampling parts of the files would let them share verdicts. Each file is
/// hashed as the SHA-256 of its size and its 64 MiB segments' SHA-256s, segments in parallel:
/// every byte counts, and a 486 MB checkpoint takes about 0.25 s on two cores (SHA-NI).
fn fingerprint(dir: &Path, files: &[PathBuf]) -> Result<String, JudgeError> {
    use rayon::prelude::*;
    let mut h = Sha256::new();
    for f in ["config.json", "tokenizer.json"] {
        h.update(std::fs::read(dir.join(f)).map_err(|e| load_err(&dir.join(f), e))?);
    }
    for f in files {
        let len = std::fs::metadata(f).map_err(|e| load_err(f, e))?.len();
        let segments: Vec<u64> = (0..len.div_ceil(SEGMENT).max(1)).collect();
        let digests = segments
            .par_iter()
            .map(|&k| hash_segment(f, k * SEGMENT, SEGMENT.min(len - (k * SEGMENT).min(len))))
            .collect::<Result<Vec<_>, _>>()?;
        h.update(len.to_le_bytes());
        for d in digests {
            h.update(d);
        }
    }
    Ok(format!("{:x}", h.finalize()))
}

/// SHA-256 of `n` bytes of `f` from byte `at`, streamed in 1 MiB reads.
fn hash_segment(f: &Path, at: u64, n: u64) -> Result<[u8; 32], JudgeError> {
    let mut file = std::fs::File::open(f).map_err(|e| load_err(f, e))?;
    file.seek(SeekFrom::Start(at)).map_err(|e| load_err(f, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = n;
    while left > 0 {
        let want = buf.len().min(left as usize);
        let got = file.read(&mut buf[..want]).map_err(|e| load_err(f, e))?;
        if got == 0 {
            return Err(load_err(
                f,
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "file shrank while hashing",
                ),
            ));
        }
        h.update(&buf[..got]);
        left -= got as u64;
    }
    Ok(h.finalize().into())
}

fn not_local(dir: &Path) -> JudgeError {
    let s = dir.display().to_string();
    let hint = if s.split('/').count() == 2 && !s.starts_with('.') {
        format!(
            " (this looks like a Hub id; stepkto reads local directories only: fetch it first, e.g. `huggingface-cli download {s} --local-dir DIR`)"
        )
    } else {
        String::new()
    };
    JudgeError::Load(format!("model directory {s} does not exist{hint}"))
}

impl Prm {
    pub fn load(spec: &ModelSpec, device: &Device) -> Result<Prm, JudgeError> {
        let dir = &spec.dir;
        if !dir.is_dir() {
            return Err(not_local(dir));
        }
        let config = ModelConfig::read(dir)?;
        let recipe = recipe::resolve(spec.recipe.as_deref(), &config.architectures)?;
        let tok_path = dir.join("tokenizer.json");
        if !tok_path.is_file() {
            let hint = if dir.join("tokenizer.model").is_file() {
                " (only a sentencepiece tokenizer.model is there: write tokenizer.json once with \
                 `AutoTokenizer.from_pretrained(DIR).save_pretrained(DIR)` from transformers)"
            } else {
                ""
            };
            return Err(load_err(dir, format!("no tokenizer.json{hint}")));
        }
        let tokenizer = Tokenizer::from_file(&tok_path).map_err(|e| load_err(&tok_path, e))?;
        let chat = ChatTemplate::load(dir, recipe.fallback_template)?;
        let ids = recipe.ids(&tokenizer)?;
        let files = weight_files(dir)?;
        let fingerprint = fingerprint(dir, &files)?;
        let dtype = if device.is_cpu() {
            DType::F32
        } else {
            DType::BF16
        };
        // SAFETY: the files are memory-mapped read-only; stepkto does not write them while
        // serving (a user replacing weights under a running server is out of contract).
        let vb = unsafe { VarBuilder::from_mmaped_safetensors(&files, dtype, device) }
            .map_err(|e| load_err(dir, e))?;
        let decoder = Decoder::load(&config, vb.pp("model"), spec.cpu_matmul)?;
        let h = config.hidden_size;
        let head = match recipe.head {
            HeadKind::TwoClass => Head::two_class(&vb, h)?,
            HeadKind::Value => Head::value(&vb, h)?,
            HeadKind::TokenPair { .. } => {
                let (g, b) = ids.pair.ok_or_else(|| load_err(dir, "no token pair"))?;
                Head::token_pair(&vb, &decoder, g, b)?
            }
        };
        let max_context = spec
            .max_context
            .unwrap_or(config.max_position_embeddings)
            .min(config.max_position_embeddings);
        let id = spec.name.clone().unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "model".into())
        });
        Ok(Prm {
            id,
            recipe,
            fingerprint,
            max_context,
            params: decoder.params(),
            tokenizer,
            chat,
            ids,
            decoder,
            head,
        })
    }

    /// Tokens and read positions of one item, or why it cannot be scored.
    pub fn tokenize(&self, problem: &str, steps: &[String]) -> Result<Tokenized, JudgeError> {
        if steps.is_empty() {
            // Nothing to score; the batcher answers it without a forward pass.
            return Ok(Tokenized {
                ids: Vec::new(),
                reads: Vec::new(),
            });
        }
        let t = self.recipe.tokenize(
            &self.tokenizer,
            self.chat.as_ref(),
            &self.ids,
            problem,
            steps,
        )?;
        if t.ids.len() > self.max_context {
            return Err(JudgeError::TooLong {
                tokens: t.ids.len(),
                limit: self.max_context,
            });
        }
        Ok(t)
    }

    /// Scores of each item's steps, all items in one forward pass.
    pub fn score(&self, batch: &[&Tokenized]) -> Result<Vec<Vec<f32>>, JudgeError> {
        let be = |e: candle_core::Error| JudgeError::Backend(e.to_string());
        if batch.iter().all(|t| t.reads.is_empty()) {
            return Ok(batch.iter().map(|_| Vec::new()).collect());
        }
        // Items without steps take no part in the pass.
        let live: Vec<&Tokenized> = batch
            .iter()
            .copied()
            .filter(|t| !t.reads.is_empty())
            .collect();
        let rows: Vec<&[u32]> = live.iter().map(|t| &t.ids[..used(t)]).collect();
        let reads: Vec<(usize, usize)> = live
            .iter()
            .enumerate()
            .flat_map(|(b, t)| t.reads.iter().map(move |&p| (b, p)))
            .collect();
        let hidden = self.decoder.forward_at(&rows, &reads).map_err(be)?;
        let scores = self.head.scores(&hidden).map_err(be)?;
        let mut it = scores.into_iter();
        Ok(batch
            .iter()
            .map(|t| it.by_ref().take(t.reads.len()).collect())
            .collect())
    }

    /// The arithmetic of the layers' products (`f32`, `bf16x3`, `bf16`).
    pub fn numerics(&self) -> &'static str {
        self.decoder.numerics()
    }

    /// Whether a batch runs packed end to end (no padding).
    pub fn packed(&self) -> bool {
        self.decoder.packed()
    }

    /// Token rows one forward pass computes for `batch`: the real tokens when items are
    /// packed end to end (CPU f32), else the padded rectangle.
    pub fn computed_tokens(&self, batch: &[&Tokenized]) -> usize {
        let real = batch.iter().map(|t| used(t)).sum();
        if self.decoder.packed() {
            real
        } else {
            batch.iter().map(|t| used(t)).max().unwrap_or(0) * batch.len()
        }
    }
}

/// Tokens of an item a forward pass needs: up to its last read position (attention is
/// causal, so later tokens cannot change a score).
fn used(t: &Tokenized) -> usize {
    t.reads.iter().max().map_or(0, |&p| p + 1)
}
