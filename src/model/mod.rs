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

/// The ids that end a generation: `generation_config.json`'s `eos_token_id` (a number or a
/// list), else `config.json`'s, else the tokenizer config's `eos_token` looked up in the
/// vocabulary. Empty when the checkpoint names none.
pub fn eos_ids(dir: &Path, tokenizer: &Tokenizer) -> Vec<u32> {
    let read = |f: &str| -> Option<serde_json::Value> {
        serde_json::from_str(&std::fs::read_to_string(dir.join(f)).ok()?).ok()
    };
    for f in ["generation_config.json", "config.json"] {
        match read(f).as_ref().and_then(|v| v.get("eos_token_id")) {
            Some(serde_json::Value::Number(n)) => {
                return n.as_u64().map(|x| x as u32).into_iter().collect();
            }
            Some(serde_json::Value::Array(a)) => {
                return a
                    .iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| x as u32)
                    .collect();
            }
            _ => {}
        }
    }
    let tok = read("tokenizer_config.json");
    let name = match tok.as_ref().and_then(|v| v.get("eos_token")) {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Object(o)) => {
            o.get("content").and_then(|c| c.as_str()).map(String::from)
        }
        _ => None,
    };
    name.and_then(|n| tokenizer.token_to_id(&n))
        .into_iter()
        .collect()
}
