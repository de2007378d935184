//! Step-KTO training: a trainable decoder for the Llama / Qwen2 / Mistral families
//! ([`decoder`]), the sampler ([`sample`]), the losses ([`loss`]), the optimiser ([`optim`]),
//! one optimiser step ([`step`]), a decoder layer as one CPU autograd node ([`layer`]), rewards ([`label`]), examples ([`examples`]), evaluation
//! ([`eval`]), run configs ([`run`]) and the rounds with their files and resume ([`rounds`]).
//! Everything here runs on candle tensors with gradients; the judge's inference kernels are
//! not used, because they have no backward.

pub mod control;
pub mod decoder;
pub mod eval;
pub mod examples;
pub mod fused;
pub mod label;
pub mod layer;
pub mod loss;
pub mod optim;
pub mod rounds;
pub mod run;
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
    /// A loss or gradient became NaN or infinite: nothing is updated.
    #[error("{0}")]
    NonFinite(String),
    /// A run config (or the output it names) cannot be used; the message names the field.
    #[error("config: {0}")]
    Config(String),
    /// The step judge failed (a PRM that cannot load or run).
    #[error("judge: {0}")]
    Judge(String),
    /// A round stopped on a non-finite loss; the message says which checkpoint is good.
    #[error("{0}")]
    Stopped(String),
    /// The caller asked the run to stop ([`control::Control`]); saved states are kept.
    #[error("cancelled")]
    Cancelled,
}

impl TrainError {
    pub(crate) fn io(path: &std::path::Path, source: std::io::Error) -> TrainError {
        TrainError::Io {
            path: path.display().to_string(),
            source,
        }
    }
}
