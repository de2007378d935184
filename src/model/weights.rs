//! A checkpoint's weight files (one `model.safetensors` or the shards of an index), their
//! identity (a SHA-256 over every byte, for cache keys), and the clear error for a directory
//! that is not there (a Hub id is not fetched: stepkto reads local directories only).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::ModelError;

pub fn load_err(dir: &Path, what: impl std::fmt::Display) -> ModelError {
    ModelError::Load(format!("{}: {what}", dir.display()))
}

/// The safetensors files of a checkpoint: one file or the shards of an index.
pub fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, ModelError> {
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
pub fn fingerprint(dir: &Path, files: &[PathBuf]) -> Result<String, ModelError> {
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
fn hash_segment(f: &Path, at: u64, n: u64) -> Result<[u8; 32], ModelError> {
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

pub fn not_local(dir: &Path) -> ModelError {
    let s = dir.display().to_string();
    let hint = if s.split('/').count() == 2 && !s.starts_with('.') {
        format!(
            " (this looks like a Hub id; stepkto reads local directories only: fetch it first, e.g. `huggingface-cli download {s} --local-dir DIR`)"
        )
    } else {
        String::new()
    };
    ModelError::Load(format!("model directory {s} does not exist{hint}"))
}
