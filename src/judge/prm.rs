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

/// A fingerprint of the checkpoint that is cheap for multi-gigabyte weights: the config and
/// tokenizer in full, and per weight file its size and 16 evenly spaced 64 KiB samples (the
/// first one starts with the safetensors header). Two fine-tunes of one architecture differ
/// in every sample.
fn fingerprint(dir: &Path, files: &[PathBuf]) -> Result<String, JudgeError> {
    let mut h = Sha256::new();
    for f in ["config.json", "tokenizer.json"] {
        h.update(std::fs::read(dir.join(f)).map_err(|e| load_err(&dir.join(f), e))?);
    }
    let mut buf = vec![0u8; 64 * 1024];
    for f in files {
        let mut file = std::fs::File::open(f).map_err(|e| load_err(f, e))?;
        let len = file.metadata().map_err(|e| load_err(f, e))?.len();
        h.update(len.to_le_bytes());
        for k in 0..16u64 {
            let at = len.saturating_sub(buf.len() as u64) * k / 15;
            file.seek(SeekFrom::Start(at)).map_err(|e| load_err(f, e))?;
            let n = file.read(&mut buf).map_err(|e| load_err(f, e))?;
            h.update(&buf[..n]);
        }
    }
    Ok(format!("{:x}", h.finalize()))
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
