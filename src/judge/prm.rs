//! A loaded process reward model: a local Hugging Face directory turned into a tokenizer,
//! a chat template, a [`Decoder`], a [`Head`] and the [`Recipe`] that ties them together.
//! [`Prm::tokenize`] runs on request threads; [`Prm::score`] runs a batch on the model's
//! inference thread (see `batcher`).

use std::path::PathBuf;

use candle_core::{DType, Device};
use tokenizers::Tokenizer;

use super::JudgeError;
use super::model::{CpuMatmul, Decoder, Head};
use super::recipe::{self, ChatTemplate, HeadKind, Recipe, RecipeIds, Tokenized};
use crate::model::config::ModelConfig;
use crate::model::cpu::map_weights;
use crate::model::load_tokenizer;
use crate::model::weights::{fingerprint, load_err, not_local, weight_files};

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

impl Prm {
    pub fn load(spec: &ModelSpec, device: &Device) -> Result<Prm, JudgeError> {
        let dir = &spec.dir;
        if !dir.is_dir() {
            return Err(not_local(dir).into());
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
            return Err(load_err(dir, format!("no tokenizer.json{hint}")).into());
        }
        let tokenizer = load_tokenizer(dir)?;
        let chat = ChatTemplate::load(dir, recipe.fallback_template)?;
        let ids = recipe.ids(&tokenizer)?;
        let files = weight_files(dir)?;
        let fingerprint = fingerprint(dir, &files)?;
        let dtype = if device.is_cpu() {
            DType::F32
        } else {
            DType::BF16
        };
        let vb = map_weights(dir, &files, dtype, device)?;
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
