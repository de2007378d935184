//! Writes a tiny random-init causal LM as a Hugging Face directory, for trying the CLI
//! without downloading a model: Llama-shaped, a byte-level BPE tokenizer and a chat template
//! (the test fixture `tests/data/prm/rlhflow`, weights derived from their names as the tests
//! derive them). Its text is noise. Usage:
//! `cargo run --release --example tiny_lm -- /tmp/tiny-llama`.

#[path = "../tests/common/tiny.rs"]
mod tiny;

fn main() {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/tmp/tiny-llama".into());
    let dir = std::path::PathBuf::from(dir);
    tiny::write_checkpoint("rlhflow", &dir, false);
    println!("wrote {}", dir.display());
}
