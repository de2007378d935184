//! What the judge and the trainer share about a Hugging Face checkpoint: its `config.json`
//! ([`config`]), its weight files and their identity ([`weights`]), its tokenizer and chat
//! template ([`chat`], [`load_tokenizer`]), and the CPU inference kernels ([`cpu`], the one
//! folder of the crate that holds `unsafe`). Nothing here knows what a PRM or a loss is.

pub mod chat;
pub mod config;
pub mod cpu;
pub mod weights;

use std::path::Path;

use tokenizers::Tokenizer;

/// Why a checkpoint cannot be read or a template cannot be rendered.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// A file is missing or malformed, or the architecture is not supported.
    #[error("{0}")]
    Load(String),
    /// The chat template failed on this input (it may raise on purpose).
    #[error("chat template: {0}")]
    Template(String),
}

/// `tokenizer.json` of `dir` (the only tokenizer file stepkto reads).
pub fn load_tokenizer(dir: &Path) -> Result<Tokenizer, ModelError> {
    let p = dir.join("tokenizer.json");
    Tokenizer::from_file(&p).map_err(|e| ModelError::Load(format!("{}: {e}", p.display())))
}
