//! The toy experiment's from-scratch model as a Hugging Face directory: a byte-level BPE
//! tokenizer (GPT-2's byte alphabet, so any text round-trips) whose merges spell the task's
//! fixed words whole, a ChatML chat template, and a random-init Llama (`config.json`,
//! `generation_config.json`, `model.safetensors`) that transformers, the judge and the
//! trainer load.
//!
//! Why merges for the words: the problems' words come from a short list, and a byte per
//! token would make a problem three times longer than its numbers need. Numbers up to
//! [`MAX_NUMBER_TOKEN`] are one token each (see [`tokenizer_json`] for why).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{Device, Tensor};
use serde_json::{Value, json};

use super::{GAIN, ITEMS, LOSS, NAMES, Rng};

/// The largest number spelt as one token: above any value a step reaches, a slip included.
pub const MAX_NUMBER_TOKEN: u32 = 299;

pub const IM_START: &str = "<|im_start|>";
pub const IM_END: &str = "<|im_end|>";
pub const END_OF_TEXT: &str = "<|endoftext|>";

pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// GPT-2's map from bytes to printable characters (what a byte-level BPE vocabulary spells).
fn byte_chars() -> Vec<char> {
    let printable = |b: u32| (33..=126).contains(&b) || (161..=172).contains(&b) || b >= 174;
    let mut extra = 0;
    (0..256u32)
        .map(|b| {
            if printable(b) {
                char::from_u32(b).expect("a Latin-1 code point")
            } else {
                extra += 1;
                char::from_u32(255 + extra).expect("a code point")
            }
        })
        .collect()
}

/// The words merged whole after a space (as they appear inside a sentence).
fn words() -> Vec<String> {
    let mut w: Vec<String> = [
        "has", "Then", "doubles", "triples", "them", "How", "many", "does", "have", "now", "more",
        "away",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for list in [NAMES, ITEMS, GAIN, LOSS] {
        for phrase in list {
            w.extend(
                phrase
                    .split(' ')
                    .filter(|s| s.chars().all(|c| c.is_ascii_alphabetic()))
                    .map(String::from),
            );
        }
    }
    w.sort();
    w.dedup();
    w
}

/// The words merged whole with no space before them: a problem's first name, a step's first
/// word (`Then`), the chat roles after `<|im_start|>`, and the answer line's words.
fn bare_words() -> Vec<String> {
    let mut w: Vec<String> = NAMES.iter().map(|s| s.to_string()).collect();
    w.push("Then".into());
    w.extend(["Answer", "boxed", "system", "user", "assistant"].map(String::from));
    w
}

/// The tokenizer: 256 byte tokens, a space joined to each digit, whole numbers, the merges
/// that spell [`words`] and [`bare_words`] (each word's prefixes in turn, so a merge only
/// ever extends a word from its first letter), then the special tokens.
pub fn tokenizer_json() -> Value {
    let bc = byte_chars();
    let mut vocab: BTreeMap<String, usize> = BTreeMap::new();
    let mut order: Vec<String> = bc.iter().map(|c| c.to_string()).collect();
    for (i, t) in order.iter().enumerate() {
        vocab.insert(t.clone(), i);
    }
    let mut merges: Vec<[String; 2]> = Vec::new();
    // a whole number is one token, with its space (`Ġ39`) or without (`39` in `\boxed{39}`):
    // copying an operand is then one token matched by what precedes it, and a step's
    // arithmetic a table. (Digit tokens were tried only with SFT at lr 3e-3, where whole
    // numbers failed as badly; the M0 the experiment uses was made with whole numbers.)
    let space = bc[b' ' as usize].to_string();
    for d in '0'..='9' {
        let joined = format!("{space}{d}");
        vocab.insert(joined.clone(), order.len());
        order.push(joined);
        merges.push([space.clone(), d.to_string()]);
    }
    for n in 10..=MAX_NUMBER_TOKEN {
        let (head, last) = (n / 10, n % 10);
        for pre in [space.as_str(), ""] {
            let joined = format!("{pre}{n}");
            vocab.insert(joined.clone(), order.len());
            order.push(joined);
            merges.push([format!("{pre}{head}"), last.to_string()]);
        }
    }
    // the spaced words' merges rank first: inside a pretoken `Ġword` they all start at the
    // `Ġ`, so a bare word's merge (`a s` of `assistant`) cannot split `Ġhas` first
    let spaced = words().into_iter().map(|w| format!("{space}{w}"));
    for spelled in spaced.chain(bare_words()) {
        let chars: Vec<char> = spelled.chars().collect();
        let mut prefix = chars[0].to_string();
        for c in &chars[1..] {
            let joined = format!("{prefix}{c}");
            if !vocab.contains_key(&joined) {
                vocab.insert(joined.clone(), order.len());
                order.push(joined.clone());
                merges.push([prefix.clone(), c.to_string()]);
            }
            prefix = joined;
        }
    }
    let specials: Vec<Value> = [END_OF_TEXT, IM_START, IM_END]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            vocab.insert(s.to_string(), order.len() + i);
            json!({"id": order.len() + i, "content": s, "single_word": false, "lstrip": false,
                   "rstrip": false, "normalized": false, "special": true})
        })
        .collect();
    let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                            "use_regex": true});
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": specials,
        "normalizer": null, "pre_tokenizer": byte_level, "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null,
                  "continuing_subword_prefix": null, "end_of_word_suffix": null,
                  "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                  "vocab": vocab, "merges": merges}
    })
}

/// The model's shape (Llama: RMSNorm, SwiGLU, rotary, grouped-query attention, tied
/// embeddings).
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub intermediate: usize,
}

/// `n` draws from N(0, std²) (Box-Muller on the seeded generator).
fn normal(rng: &mut Rng, n: usize, std: f64) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let u = rng.unit().max(1e-300);
            let v = rng.unit();
            (std * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

/// Write the tokenizer, chat template and a random-init model of `shape` to `dir`: weights
/// N(0, 0.02²) as transformers initialises Llama, the residual outputs (o and down) scaled by
/// 1/sqrt(2 layers) so a deep stack starts near the identity, norms 1.
pub fn write_model(dir: &Path, shape: Shape, seed: u64) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let tok = tokenizer_json();
    let vocab = tok["model"]["vocab"].as_object().map_or(0, |v| v.len());
    let id = |s: &str| tok["model"]["vocab"][s].as_u64().expect("a special token");
    let (eos, bos) = (id(IM_END), id(END_OF_TEXT));
    std::fs::write(dir.join("tokenizer.json"), tok.to_string())?;
    std::fs::write(dir.join("chat_template.jinja"), CHAT_TEMPLATE)?;
    let tok_cfg = json!({"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 1024,
                         "bos_token": END_OF_TEXT, "eos_token": IM_END, "pad_token": END_OF_TEXT});
    std::fs::write(dir.join("tokenizer_config.json"), tok_cfg.to_string())?;
    let hd = shape.hidden / shape.heads;
    let config = json!({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": vocab,
        "hidden_size": shape.hidden, "intermediate_size": shape.intermediate,
        "num_hidden_layers": shape.layers, "num_attention_heads": shape.heads,
        "num_key_value_heads": shape.kv_heads, "head_dim": hd, "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "tie_word_embeddings": true,
        "hidden_act": "silu", "attention_bias": false, "mlp_bias": false,
        "bos_token_id": bos, "eos_token_id": eos, "torch_dtype": "float32"
    });
    std::fs::write(dir.join("config.json"), config.to_string())?;
    std::fs::write(
        dir.join("generation_config.json"),
        json!({"bos_token_id": bos, "eos_token_id": eos}).to_string(),
    )?;
    let (h, i, kv) = (shape.hidden, shape.intermediate, shape.kv_heads * hd);
    let resid = 0.02 / (2.0 * shape.layers as f64).sqrt();
    let mut rng = Rng::new(seed);
    let mut t: HashMap<String, Tensor> = HashMap::new();
    let mut put = |name: String, dims: &[usize], v: Vec<f32>| {
        let x = Tensor::from_vec(v, dims, &Device::Cpu).expect("shape matches");
        t.insert(name, x);
    };
    put(
        "model.embed_tokens.weight".into(),
        &[vocab, h],
        normal(&mut rng, vocab * h, 0.02),
    );
    for l in 0..shape.layers {
        let p = format!("model.layers.{l}");
        for (n, r, c, std) in [
            ("self_attn.q_proj", h, h, 0.02),
            ("self_attn.k_proj", kv, h, 0.02),
            ("self_attn.v_proj", kv, h, 0.02),
            ("self_attn.o_proj", h, h, resid),
            ("mlp.gate_proj", i, h, 0.02),
            ("mlp.up_proj", i, h, 0.02),
            ("mlp.down_proj", h, i, resid),
        ] {
            put(
                format!("{p}.{n}.weight"),
                &[r, c],
                normal(&mut rng, r * c, std),
            );
        }
        put(format!("{p}.input_layernorm.weight"), &[h], vec![1.0; h]);
        put(
            format!("{p}.post_attention_layernorm.weight"),
            &[h],
            vec![1.0; h],
        );
    }
    put("model.norm.weight".into(), &[h], vec![1.0; h]);
    candle_core::safetensors::save(&t, dir.join("model.safetensors"))
        .map_err(|e| std::io::Error::other(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    #[test]
    fn the_tokenizer_round_trips_and_spells_words_whole() {
        let tok = tokenizers::Tokenizer::from_str(&tokenizer_json().to_string()).unwrap();
        let text =
            "Ann has 48 apples. Then Ann gives away 15.\n\n48 - 15 = 33\n\nAnswer: \\boxed{33} é";
        let enc = tok.encode(text, false).unwrap();
        assert_eq!(tok.decode(enc.get_ids(), false).unwrap(), text);
        let toks = enc.get_tokens();
        assert!(toks.iter().any(|t| t == "Ġapples"), "{toks:?}");
        assert!(toks.iter().any(|t| t == "Ġ48"), "{toks:?}");
        assert!(toks.windows(3).any(|w| w == ["{", "33", "}"]), "{toks:?}");
        let big = tok.encode(" 299 300 7", false).unwrap();
        assert_eq!(big.get_tokens(), ["Ġ299", "Ġ30", "0", "Ġ7"]);
        // every word and every number of every problem and solution is one token
        let mut rng = Rng::new(5);
        for _ in 0..300 {
            let p = super::super::draw_problem(&mut rng);
            use super::super::Kind::{Correct, Flawed, Slip};
            let sols = [Correct, Slip, Flawed].map(|k| super::super::solve(&p, k, &mut rng).text());
            for text in std::iter::once(p.text.clone()).chain(sols) {
                let enc = tok.encode(text.as_str(), false).unwrap();
                // tokens holding a character of the class, against the class's runs in the text
                let count = |class: fn(&char) -> bool| {
                    let tokens = enc.get_tokens();
                    let holding = tokens.iter().filter(|t| t.chars().any(|c| class(&c)));
                    let runs = text.split(|c: char| !class(&c)).filter(|w| !w.is_empty());
                    (holding.count(), runs.count())
                };
                let (lettered, words) = count(char::is_ascii_alphabetic);
                assert_eq!(lettered, words, "{text}: {:?}", enc.get_tokens());
                let (numeric, numbers) = count(char::is_ascii_digit);
                assert_eq!(numeric, numbers, "{text}: {:?}", enc.get_tokens());
            }
        }
        let im = tok.encode("<|im_start|>user\nx<|im_end|>", false).unwrap();
        assert_eq!(im.get_tokens()[0], IM_START);
        assert_eq!(im.get_tokens().last().unwrap(), IM_END);
    }
}
