//! Step-KTO training: a trainable decoder for the Llama / Qwen2 / Mistral families
//! ([`decoder`]), and (as they land) the sampler, the losses, the optimiser and the rounds.
//! Everything here runs on candle tensors with gradients; the judge's inference kernels are
//! not used, because they have no backward.

pub mod decoder;
pub mod loss;
pub mod optim;
pub mod sample;
pub mod step;

/// Why training or loading a trainable model failed.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The checkpoint cannot be loaded or saved (missing file, another architecture).
    #[error("{0}")]
    Model(#[from] crate::model::ModelError),
    /// A tensor operation failed (a shape mismatch is a bug; an allocation failure is not).
    #[error("tensor: {0}")]
    Tensor(#[from] candle_core::Error),
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    /// The input cannot be used (an empty sequence, a token id outside the vocabulary).
    #[error("{0}")]
    Input(String),
}

impl TrainError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> TrainError {
        TrainError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
