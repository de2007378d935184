//! PRM scores on tiny random-initialised checkpoints, one per recipe, against the scores
//! Hugging Face `transformers` gives for the same weights (tests/prm/make_tiny_prms.py
//! computed them; tests/data/prm/expected.json holds them). Also: a batch scores exactly
//! like its items alone, sharded checkpoints load, and bad inputs are refused clearly.

mod common;

use std::path::PathBuf;

use candle_core::Device;
use common::tiny;
use serde_json::Value;
use stepkto::judge::JudgeError;
use stepkto::judge::prm::{ModelSpec, Prm};
use stepkto::model::cpu::CpuMatmul;

fn load(recipe: &str, sharded: bool, named: bool) -> (Prm, PathBuf) {
    load_with(recipe, sharded, named, CpuMatmul::Auto)
}

fn load_with(recipe: &str, sharded: bool, named: bool, m: CpuMatmul) -> (Prm, PathBuf) {
    let dir = tiny::temp_dir(recipe);
    tiny::write_checkpoint(recipe, &dir, sharded);
    let spec = ModelSpec {
        name: Some(recipe.into()),
        dir: dir.clone(),
        recipe: named.then(|| recipe.to_string()),
        max_context: None,
        cpu_matmul: m,
    };
    (Prm::load(&spec, &Device::Cpu).unwrap(), dir)
}

/// The CPU product engines this machine has: f32 always, bf16x3 where there is AMX.
fn engines() -> Vec<CpuMatmul> {
    match CpuMatmul::Bf16x3.resolve() {
        Ok(m) => vec![CpuMatmul::F32, m],
        Err(e) => {
            if std::env::var("STEPKTO_REQUIRE_AMX").as_deref() == Ok("1") {
                panic!("STEPKTO_REQUIRE_AMX=1 but bf16x3 cannot run here: {e}");
            }
            eprintln!(
                "SKIPPED: bf16x3 not checked here ({e}); STEPKTO_REQUIRE_AMX=1 makes this a failure"
            );
            vec![CpuMatmul::F32]
        }
    }
}

fn items(e: &Value) -> Vec<(String, Vec<String>)> {
    e["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|it| {
            let steps = it["steps"].as_array().unwrap();
            (
                it["problem"].as_str().unwrap().to_string(),
                steps
                    .iter()
                    .map(|s| s.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect()
}

/// Max |ours - reference| over all steps of all items, scoring each item alone, with each
/// CPU product engine.
fn check_recipe(recipe: &str, named: bool, sharded: bool) {
    for m in engines() {
        check_recipe_with(recipe, named, sharded, m);
    }
}

fn check_recipe_with(recipe: &str, named: bool, sharded: bool, m: CpuMatmul) {
    check_fixture_with(recipe, recipe, named, sharded, m)
}

/// The checkpoint of fixture `fixture` read with recipe `recipe`.
fn check_fixture_with(fixture: &str, recipe: &str, named: bool, sharded: bool, m: CpuMatmul) {
    let e = tiny::expected();
    let dir = tiny::temp_dir(fixture);
    tiny::write_checkpoint(fixture, &dir, sharded);
    let spec = ModelSpec {
        name: Some(fixture.into()),
        dir: dir.clone(),
        recipe: named.then(|| recipe.to_string()),
        max_context: None,
        cpu_matmul: m,
    };
    let prm = Prm::load(&spec, &Device::Cpu).unwrap();
    assert_eq!(prm.recipe.name, recipe);
    assert_eq!(prm.numerics(), m.name());
    let want = e["recipes"][fixture].as_array().unwrap();
    let mut worst = 0f64;
    for ((problem, steps), w) in items(&e).iter().zip(want) {
        let t = prm.tokenize(problem, steps).unwrap();
        let got = prm.score(&[&t]).unwrap().remove(0);
        let w: Vec<f64> = w
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert_eq!(got.len(), w.len(), "{recipe}: one score per step");
        for (g, w) in got.iter().zip(&w) {
            worst = worst.max((*g as f64 - w).abs());
        }
    }
    let m = m.name();
    eprintln!("{fixture} ({m}): max |stepkto - transformers| = {worst:.2e}");
    assert!(
        worst <= 1e-4,
        "{fixture} ({m}): max difference {worst} > 1e-4"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn qwen_prm_matches_transformers_and_is_detected_from_config() {
    check_recipe("qwen-prm", false, false);
}

#[test]
fn math_shepherd_matches_transformers() {
    check_recipe("math-shepherd", true, false);
}

/// Issue 9, class 5: a Llama-shaped Math-Shepherd PRM whose byte-level BPE tokenizer holds
/// the tag only as `" ки"` (one added token, leading space) while `"ки"` alone is four byte
/// tokens, and where `"+ -"` encodes to `+` and `Ġ-`: the tag is found in context and the
/// `+`/`-` ids are each encoded alone.
#[test]
fn class_5_math_shepherd_on_a_bpe_tokenizer_with_a_spaced_tag() {
    for m in engines() {
        check_fixture_with("math-shepherd-bpe", "math-shepherd", true, false, m);
    }
}

#[test]
fn rlhflow_one_pass_matches_one_pass_per_step() {
    check_recipe("rlhflow", true, false);
}

#[test]
fn value_head_matches_transformers() {
    check_recipe("value-head", true, false);
}

#[test]
fn sharded_checkpoint_loads_the_same_weights() {
    check_recipe("qwen-prm", false, true);
}

#[test]
fn a_batch_scores_like_its_items_alone() {
    let e = tiny::expected();
    let runs = engines()
        .into_iter()
        .flat_map(|m| ["qwen-prm", "math-shepherd", "rlhflow", "value-head"].map(|r| (m, r)));
    for (m, recipe) in runs {
        let (prm, dir) = load_with(recipe, false, true, m);
        let toks: Vec<_> = items(&e)
            .iter()
            .map(|(p, s)| prm.tokenize(p, s).unwrap())
            .collect();
        let lens: Vec<usize> = toks.iter().map(|t| t.ids.len()).collect();
        assert!(
            lens.iter().min() < lens.iter().max(),
            "items of different lengths pad"
        );
        let refs: Vec<_> = toks.iter().collect();
        let batched = prm.score(&refs).unwrap();
        for (t, b) in toks.iter().zip(&batched) {
            let alone = prm.score(&[t]).unwrap().remove(0);
            for (x, y) in alone.iter().zip(b) {
                let m = m.name();
                assert!(
                    (x - y).abs() <= 1e-5,
                    "{recipe} ({m}): alone {x} vs batched {y}"
                );
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn over_long_inputs_are_refused_with_the_limit() {
    let dir = tiny::checkpoint("qwen-prm");
    let spec = ModelSpec {
        name: None,
        dir: dir.clone(),
        recipe: None,
        max_context: Some(64),
        cpu_matmul: Default::default(),
    };
    let prm = Prm::load(&spec, &Device::Cpu).unwrap();
    assert_eq!(prm.max_context, 64);
    let err = prm
        .tokenize("What is 1+1? ".repeat(20).as_str(), &["2".into()])
        .unwrap_err();
    assert!(
        matches!(err, JudgeError::TooLong { limit: 64, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("limit of 64 tokens"), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn a_step_marker_inside_the_text_is_refused() {
    let (prm, dir) = load("qwen-prm", false, false);
    let err = prm
        .tokenize("Is <extra_0> a token?", &["yes".into()])
        .unwrap_err();
    assert!(matches!(err, JudgeError::Input(_)), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn loading_errors_say_what_is_wrong() {
    let missing = ModelSpec::parse("Qwen/Qwen2.5-Math-PRM-7B");
    let err = Prm::load(&missing, &Device::Cpu).err().unwrap().to_string();
    assert!(
        err.contains("does not exist") && err.contains("local directories"),
        "{err}"
    );

    // A causal LM does not say which recipe it wants.
    let dir = tiny::checkpoint("rlhflow");
    let spec = ModelSpec::parse(dir.to_str().unwrap());
    let err = Prm::load(&spec, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("pass --recipe"), "{err}");
    let spec = ModelSpec {
        recipe: Some("nope".into()),
        ..spec
    };
    let err = Prm::load(&spec, &Device::Cpu).err().unwrap().to_string();
    assert!(
        err.contains("unknown recipe") && err.contains("math-shepherd"),
        "{err}"
    );
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    let spec = ModelSpec {
        recipe: Some("rlhflow".into()),
        ..spec
    };
    let err = Prm::load(&spec, &Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("no model.safetensors"), "{err}");
    std::fs::remove_file(dir.join("tokenizer.json")).unwrap();
    std::fs::write(dir.join("tokenizer.model"), b"sp").unwrap();
    let err = Prm::load(&spec, &Device::Cpu).err().unwrap().to_string();
    assert!(
        err.contains("no tokenizer.json") && err.contains("save_pretrained"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn name_equals_dir_is_parsed() {
    let s = ModelSpec::parse("prm=/models/x");
    assert_eq!(s.name.as_deref(), Some("prm"));
    assert_eq!(s.dir, PathBuf::from("/models/x"));
    assert_eq!(ModelSpec::parse("/models/x").name, None);
}

/// The checkpoint in `dir`, its recipe from its config, products in plain f32.
fn load_f32(dir: &std::path::Path) -> Prm {
    let spec = ModelSpec {
        name: Some("t".into()),
        dir: dir.to_path_buf(),
        recipe: None,
        max_context: None,
        cpu_matmul: CpuMatmul::F32,
    };
    Prm::load(&spec, &Device::Cpu).unwrap()
}

/// Issue 9, class 9: the cache fingerprint covers every byte of the weights. Two checkpoints
/// that differ in one byte that 16 evenly spaced 64 KiB samples (the old fingerprint) never
/// read get different fingerprints; an identical copy gets the same one.
#[test]
fn class_9_fingerprint_covers_every_weight_byte() {
    let patch = serde_json::json!({"intermediate_size": 4096});
    let load_fp = |dir: &PathBuf| load_f32(dir).fingerprint;
    let a = tiny::temp_dir("fp-a");
    tiny::write_checkpoint_with("qwen-prm", &a, false, &patch);
    let b = tiny::temp_dir("fp-b");
    tiny::write_checkpoint_with("qwen-prm", &b, false, &patch);
    assert_eq!(load_fp(&a), load_fp(&b), "identical checkpoints");
    let w = b.join("model.safetensors");
    let mut bytes = std::fs::read(&w).unwrap();
    let len = bytes.len() as u64;
    assert!(
        len > 2 << 20,
        "the checkpoint must be larger than 16 x 64 KiB"
    );
    // Just past the 8th of the old samples (each 64 KiB, at (len - 64 KiB) * k / 15).
    let at = ((len - 65_536) * 7 / 15 + 65_536 + 4_096) as usize;
    assert!(
        at < ((len - 65_536) * 8 / 15) as usize,
        "the byte lies between two samples"
    );
    bytes[at] ^= 0x01;
    std::fs::write(&w, bytes).unwrap();
    assert_ne!(load_fp(&a), load_fp(&b), "one changed weight byte");
    let _ = std::fs::remove_dir_all(a);
    let _ = std::fs::remove_dir_all(b);
}

/// Max and median absolute differences between two score lists.
fn spread(a: &[f64], b: &[f64]) -> (f64, f64) {
    let mut d: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
    d.sort_by(f64::total_cmp);
    (d[d.len() - 1], d[d.len() / 2])
}

/// stepkto's f32 scores on `expected[key]`'s items (fixture `recipe`) with transformers' sdpa,
/// eager and float64 scores of the same items; every item must be over `min_tokens`.
fn numerics(key: &str, recipe: &str, min_tokens: usize) -> [Vec<f64>; 4] {
    let e = tiny::expected();
    let long = &e[key];
    let dir = tiny::temp_dir(recipe);
    tiny::write_checkpoint(recipe, &dir, false);
    let prm = load_f32(&dir);
    let flat = |k: &str| -> Vec<f64> {
        long[k]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
            .collect()
    };
    let mut ours = Vec::new();
    for (problem, steps) in items(long) {
        let t = prm.tokenize(&problem, &steps).unwrap();
        assert!(t.ids.len() > min_tokens, "{} tokens", t.ids.len());
        ours.extend(
            prm.score(&[&t])
                .unwrap()
                .remove(0)
                .into_iter()
                .map(f64::from),
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    let [sdpa, eager, f64s] = ["sdpa", "eager", "f64"].map(flat);
    assert_eq!(ours.len(), f64s.len());
    for (name, v) in [("stepkto", &ours), ("sdpa", &sdpa), ("eager", &eager)] {
        let (max, med) = spread(v, &f64s);
        eprintln!("{key}: {name} f32 vs float64: max {max:.2e}, median {med:.2e}");
    }
    for (name, v) in [("stepkto", &ours), ("eager", &eager)] {
        let (max, med) = spread(v, &sdpa);
        eprintln!("{key}: {name} vs sdpa: max {max:.2e}, median {med:.2e}");
    }
    [ours, sdpa, eager, f64s]
}

/// Issue 9, class 6: stepkto's f32 scores are as accurate as transformers' own f32 paths
/// (sdpa, eager), both measured against transformers run in float64: the worst and the median
/// error within 1.5x of transformers' larger one. (Against sdpa itself no f32 code can be
/// within the sdpa-vs-eager spread without rounding exactly as MKL does; that spread is what
/// each path's own f32 error looks like from the other.)
fn assert_as_accurate(ours: &[f64], sdpa: &[f64], eager: &[f64], f64s: &[f64]) {
    let (us, s, e) = (spread(ours, f64s), spread(sdpa, f64s), spread(eager, f64s));
    assert!(
        us.0 <= 1.5 * s.0.max(e.0),
        "worst: stepkto {:.2e} vs transformers {:.2e}",
        us.0,
        s.0.max(e.0)
    );
    assert!(
        us.1 <= 1.5 * s.1.max(e.1),
        "median: stepkto {:.2e} vs transformers {:.2e}",
        us.1,
        s.1.max(e.1)
    );
}

/// Issue 9, class 6, on a weight-sensitive model (hidden 256, 6 layers, projections x3) and
/// items of 1,247 to 2,028 tokens. Measured (max / median vs float64): stepkto 5.18e-6 /
/// 1.69e-6, transformers sdpa 4.15e-6 / 1.74e-6, eager 4.80e-6 / 1.22e-6. Before the products
/// summed k in blocks of 128 (`kernels::K_BLOCK`) stepkto was at 1.06e-5; before the rotary
/// frequencies were computed as transformers computes them, at 2.16e-5.
#[test]
fn class_6_f32_scores_on_long_items_are_as_accurate_as_transformers() {
    let [ours, sdpa, eager, f64s] = numerics("long", "qwen-prm-long", 1_000);
    assert_as_accurate(&ours, &sdpa, &eager, &f64s);
}

/// Issue 9, class 6, on the shape the gap was first measured on (hidden 512, 8 layers, head
/// dim 64, 25M parameters, default init) and twelve items of 600 to 5,800 characters (276 to
/// 2,028 tokens). Measured: stepkto 2.31e-7 / 4.59e-8, sdpa 1.74e-7 / 3.96e-8, eager 1.71e-7 /
/// 3.36e-8 (f32's spacing at these scores, 0.8 to 0.94, is 6e-8).
#[test]
fn class_6_f32_scores_on_the_wide_model() {
    let [ours, sdpa, eager, f64s] = numerics("wide", "qwen-prm-wide", 250);
    assert_as_accurate(&ours, &sdpa, &eager, &f64s);
}
