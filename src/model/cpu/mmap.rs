//! Weight files memory-mapped into a candle `VarBuilder`: a checkpoint larger than half the
//! RAM still loads (reading it into a buffer first would hold it twice). Here, not in
//! `weights.rs`, because the mapping is `unsafe` and this folder is where `unsafe` lives.

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

use crate::model::ModelError;

/// The tensors of `files` (a checkpoint in `dir`) as `dtype` on `device`.
pub fn map_weights(
    dir: &Path,
    files: &[PathBuf],
    dtype: DType,
    device: &Device,
) -> Result<VarBuilder<'static>, ModelError> {
    // SAFETY: the files are mapped read-only and stepkto never writes a checkpoint it has
    // loaded; a user replacing weights under a running process is out of contract (the
    // trainer writes each round to a new directory for this reason).
    unsafe { VarBuilder::from_mmaped_safetensors(files, dtype, device) }
        .map_err(|e| ModelError::Load(format!("{}: {e}", dir.display())))
}
