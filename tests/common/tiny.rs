//! Tiny random-initialised PRM checkpoints for tests and benchmarks. The fixtures in
//! tests/data/prm/<recipe>/ hold config.json and the tokenizer; this writes the weights,
//! every tensor derived from its name exactly as tests/prm/make_tiny_prms.py derives it
//! (splitmix64 seeded by FNV-1a of the name), so the reference scores that script computed
//! with `transformers` apply to the checkpoint written here.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

fn fnv1a(name: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01B3);
    }
    h
}

/// The values of tensor `name` with `shape`, bit-identical to the Python generator.
pub fn values(name: &str, shape: &[usize]) -> Vec<f32> {
    let n: usize = shape.iter().product();
    let seed = fnv1a(name);
    let fan_in = *shape.last().unwrap() as f64;
    (1..=n as u64)
        .map(|i| {
            let mut z = seed.wrapping_add(i.wrapping_mul(GOLDEN));
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let u = (z >> 40) as f64 / 16_777_216.0;
            let c = 2.0 * u - 1.0;
            let v = if name.contains("norm") {
                1.0 + 0.2 * c
            } else if name.ends_with("bias") {
                0.2 * c
            } else if name.contains("embed_tokens") || name.contains("lm_head") {
                0.5 * c
            } else {
                c * (1.5 / fan_in.sqrt())
            };
            v as f32
        })
        .collect()
}

pub fn fixture(recipe: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/prm")
        .join(recipe)
}

/// tests/data/prm/expected.json: the items and, per recipe, transformers' step scores.
pub fn expected() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("expected.json")).unwrap()).unwrap()
}

/// A fresh temporary checkpoint for `recipe` (one safetensors file).
pub fn checkpoint(recipe: &str) -> PathBuf {
    let dir = temp_dir(recipe);
    write_checkpoint(recipe, &dir, false);
    dir
}

/// Tensor names and shapes of a checkpoint with `config` for `recipe`, as Hugging Face
/// names them.
pub fn tensors(recipe: &str, config: &serde_json::Value) -> Vec<(String, Vec<usize>)> {
    let g = |k: &str| config[k].as_u64().unwrap() as usize;
    let (h, inter, v) = (g("hidden_size"), g("intermediate_size"), g("vocab_size"));
    let nh = g("num_attention_heads");
    let nkv = config["num_key_value_heads"]
        .as_u64()
        .map_or(nh, |x| x as usize);
    let hd = config["head_dim"].as_u64().map_or(h / nh, |x| x as usize);
    let qwen = config["model_type"] == "qwen2";
    let tied = config["tie_word_embeddings"].as_bool().unwrap_or(false);
    let mut t = vec![("model.embed_tokens.weight".to_string(), vec![v, h])];
    for i in 0..g("num_hidden_layers") {
        let p = format!("model.layers.{i}");
        for (n, o) in [("q", nh * hd), ("k", nkv * hd), ("v", nkv * hd)] {
            t.push((format!("{p}.self_attn.{n}_proj.weight"), vec![o, h]));
            if qwen {
                t.push((format!("{p}.self_attn.{n}_proj.bias"), vec![o]));
            }
        }
        t.push((format!("{p}.self_attn.o_proj.weight"), vec![h, nh * hd]));
        t.push((format!("{p}.mlp.gate_proj.weight"), vec![inter, h]));
        t.push((format!("{p}.mlp.up_proj.weight"), vec![inter, h]));
        t.push((format!("{p}.mlp.down_proj.weight"), vec![h, inter]));
        t.push((format!("{p}.input_layernorm.weight"), vec![h]));
        t.push((format!("{p}.post_attention_layernorm.weight"), vec![h]));
    }
    t.push(("model.norm.weight".into(), vec![h]));
    match recipe {
        r if r.starts_with("qwen-prm") => {
            t.push(("score.0.weight".into(), vec![h, h]));
            t.push(("score.0.bias".into(), vec![h]));
            t.push(("score.2.weight".into(), vec![2, h]));
            t.push(("score.2.bias".into(), vec![2]));
        }
        "value-head" => {
            t.push(("v_head.summary.weight".into(), vec![1, h]));
            t.push(("v_head.summary.bias".into(), vec![1]));
        }
        _ if !tied => t.push(("lm_head.weight".into(), vec![v, h])),
        _ => {}
    }
    t
}

/// Copy the fixture for `recipe` to `dest` and write its weights there: one
/// model.safetensors, or two shards and an index when `sharded`.
pub fn write_checkpoint(recipe: &str, dest: &Path, sharded: bool) {
    write_checkpoint_with(recipe, dest, sharded, &serde_json::json!({}));
}

/// Like [`write_checkpoint`], with config.json keys replaced by those in `patch` (a larger
/// model for benchmarks, say).
pub fn write_checkpoint_with(recipe: &str, dest: &Path, sharded: bool, patch: &serde_json::Value) {
    std::fs::create_dir_all(dest).unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture(recipe).join(f), dest.join(f)).unwrap();
    }
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture(recipe).join("config.json")).unwrap(),
    )
    .unwrap();
    for (k, v) in patch.as_object().unwrap() {
        config[k] = v.clone();
    }
    std::fs::write(dest.join("config.json"), config.to_string()).unwrap();
    // `stepkto_test_init_scale` (ignored by transformers) multiplies the projection
    // weights, as the Python generator does: a sensitive model for numerics tests.
    let scale = config["stepkto_test_init_scale"].as_f64().unwrap_or(1.0) as f32;
    let all: BTreeMap<String, Tensor> = tensors(recipe, &config)
        .into_iter()
        .map(|(n, s)| {
            let mut v = values(&n, &s);
            if n.contains("proj.weight") {
                v.iter_mut().for_each(|x| *x *= scale);
            }
            let t = Tensor::from_vec(v, s.as_slice(), &Device::Cpu).unwrap();
            (n, t)
        })
        .collect();
    if !sharded {
        let all: HashMap<_, _> = all.into_iter().collect();
        candle_core::safetensors::save(&all, dest.join("model.safetensors")).unwrap();
        return;
    }
    let all: BTreeMap<_, _> = all;
    let (mut a, mut b) = (HashMap::new(), HashMap::new());
    let mut map = serde_json::Map::new();
    for (i, (n, t)) in all.into_iter().enumerate() {
        let file = if i % 2 == 0 {
            a.insert(n.clone(), t);
            "model-00001-of-00002.safetensors"
        } else {
            b.insert(n.clone(), t);
            "model-00002-of-00002.safetensors"
        };
        map.insert(n, file.into());
    }
    candle_core::safetensors::save(&a, dest.join("model-00001-of-00002.safetensors")).unwrap();
    candle_core::safetensors::save(&b, dest.join("model-00002-of-00002.safetensors")).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    std::fs::write(dest.join("model.safetensors.index.json"), index.to_string()).unwrap();
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(tag: &str) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let d = std::env::temp_dir()
        .join("stepkto-tests")
        .join(format!("{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
