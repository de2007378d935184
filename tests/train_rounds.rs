//! `stepkto train` and `stepkto eval generate` end to end (issue 10): the real binary on a
//! tiny Llama checkpoint with a chat template. A Step-KTO round writes every file and each
//! loads; a run killed with SIGKILL (while sampling, then while training) and resumed ends
//! with the weights of a run never interrupted; bad inputs and a NaN loss are clear errors
//! that lose nothing; SFT that memorises a solution scores Pass@1 = 1 and, on a solution with
//! a wrong step, a flawed-step rate of 1.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use candle_core::Device;
use common::tiny;
use serde_json::Value;
use stepkto::train::decoder::Decoder;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_stepkto"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn ok(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const PROBLEMS: &str = r#"{"id": "a", "problem": "What is 2 + 3?", "answer": "5"}
{"id": "b", "problem": "What is 7 - 4?", "answer": "3"}
not json
{"id": "c", "problem": "What is 6 / 2?"}
{"id": "d", "problem": "What is 4 * 2?", "answer": 8}
{"id": "e", "problem": "What is 9 - 9?", "answer": "0"}
"#;

/// A tiny Llama with a chat template, problems and a config; returns (dir, config path).
fn setup(tag: &str, extra: &str) -> (PathBuf, PathBuf) {
    setup_with(tag, extra, &serde_json::json!({}))
}

/// As [`setup`], the checkpoint's config patched (a wider model runs long enough to kill).
fn setup_with(tag: &str, extra: &str, patch: &Value) -> (PathBuf, PathBuf) {
    let dir = tiny::temp_dir(tag);
    let model = dir.join("m0");
    tiny::write_checkpoint_with("rlhflow", &model, false, patch);
    std::fs::write(dir.join("problems.jsonl"), PROBLEMS).unwrap();
    std::fs::write(
        dir.join("eval.jsonl"),
        "{\"id\": \"x\", \"problem\": \"What is 1 + 1?\", \"answer\": \"2\"}\n",
    )
    .unwrap();
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        format!(
            r#"model = "m0"
output = "out"
problems = "problems.jsonl"
eval_problems = "eval.jsonl"
seed = 7
micro_batch = 3
save_every = 1
{extra}
[sample]
samples = 2
max_batch = 2
max_new_tokens = 10
temperature = 1.0
[eval]
samples = 2
max_new_tokens = 8
[optim]
learning_rate = 1e-3
[step]
lambda_step = 1.0
"#
        ),
    )
    .unwrap();
    (dir, cfg)
}

fn weights(dir: &Path) -> Vec<(String, Vec<f32>)> {
    let m = Decoder::load(dir, &Device::Cpu).unwrap();
    m.params()
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.as_tensor().flatten_all().unwrap().to_vec1().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_step_kto_round_writes_every_file_and_each_loads() {
    let (dir, cfg) = setup("round", "");
    let s = ok(&run(&[
        "train",
        "step-kto",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    let out = dir.join("out");
    // two bad problem lines are reported, with their line numbers, and the run went on
    let errs = s["input_errors"].as_array().unwrap();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!(errs[0]["line"], 3);
    assert_eq!(errs[1]["line"], 4);
    assert!(errs[1]["error"].as_str().unwrap().contains("answer"));
    // 4 usable problems x 2 samples, each with its outcome and step verdicts
    let samples = jsonl(&out.join("round-1/samples.jsonl"));
    assert_eq!(samples.len(), 8);
    for l in &samples {
        assert!(l["correct"].is_boolean() && l["steps"].is_array(), "{l}");
        assert!(["eos", "length", "stop"].contains(&l["finish_reason"].as_str().unwrap()));
        assert_eq!(
            l["token_ids"].as_array().unwrap().len() as u64,
            l["tokens"].as_u64().unwrap()
        );
        for st in l["steps"].as_array().unwrap() {
            // symbolic: verified / refuted steps are labelled, unknown ones are not
            let unknown = st["symbolic"] == "unknown";
            assert_eq!(st["correct"].is_null(), unknown, "{st}");
        }
    }
    // 8 examples in micro-batches of 3: three optimiser steps, TRL's names and the step term
    let metrics = jsonl(&out.join("metrics.jsonl"));
    assert_eq!(metrics.len(), 3);
    for (i, m) in metrics.iter().enumerate() {
        assert_eq!(m["round"], 1);
        assert_eq!(m["step"], i + 1);
        for k in ["loss", "kl", "grad_norm", "learning_rate", "step_term"] {
            assert!(m[k].as_f64().is_some_and(f64::is_finite), "{k} in {m}");
        }
    }
    // the model is a Hugging Face directory that moved, and the summary has M0 and M1
    let (before, after) = (
        weights(&dir.join("m0")),
        weights(&out.join("round-1/model")),
    );
    assert_eq!(before.len(), after.len());
    assert!(before.iter().zip(&after).any(|(a, b)| a.1 != b.1));
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        assert!(out.join("round-1/model").join(f).is_file(), "{f}");
    }
    let summary = json(&out.join("summary.json"));
    assert_eq!(summary, s);
    let rounds = summary["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 2);
    for r in rounds {
        let e = &r["eval"];
        assert_eq!(e["problems"], 1);
        assert!(
            (0.0..=1.0).contains(&e["pass_at_1"].as_f64().unwrap()),
            "{e}"
        );
        assert!(e["pass_at_k"]["2"].is_number(), "{e}");
    }
    let info = &rounds[1]["round_info"];
    assert_eq!(info["labels"]["samples"], 8);
    assert_eq!(info["optimizer_steps"], 3);
    for k in ["sampling", "judging", "training", "eval"] {
        assert!(info["seconds"][k].is_number(), "{k}: {info}");
    }
    assert!(
        !out.join("state.json").exists(),
        "the state goes once the round is saved"
    );
    // the same output again is refused unless resumed; resuming a finished run changes nothing
    let again = run(&["train", "step-kto", "--config", cfg.to_str().unwrap()]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("--resume"));
    let resumed = ok(&run(&[
        "train",
        "step-kto",
        "--config",
        cfg.to_str().unwrap(),
        "--resume",
    ]));
    assert_eq!(resumed, s);
    assert_eq!(weights(&out.join("round-1/model")), after);
}

/// Wait until `pred` holds, killing the child when it does; false if the run ended first.
fn kill_when(child: &mut std::process::Child, pred: impl Fn() -> bool) -> bool {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(300) {
        if pred() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return true;
        }
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("the run neither reached the point nor ended");
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

#[test]
fn a_run_killed_while_sampling_and_while_training_resumes_to_the_same_weights() {
    let extra = "rounds = 2\nepochs = 3\nproblems_per_round = 3\n";
    let wide =
        serde_json::json!({"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 4});
    let (a, cfg_a) = setup_with("resume-a", extra, &wide);
    let whole = ok(&run(&["train", "kto", "--config", cfg_a.to_str().unwrap()]));
    let (b, cfg_b) = setup_with("resume-b", extra, &wide);
    let cfg = cfg_b.to_str().unwrap();
    let out = b.join("out");
    // kill once while round 2 samples, once while it trains, then let it finish
    let mut child = bin()
        .args(["train", "kto", "--config", cfg])
        .spawn()
        .unwrap();
    let partial = out.join("round-2/samples.partial.jsonl");
    let killed_sampling = kill_when(&mut child, || lines(&partial) >= 1);
    let mut child = bin()
        .args(["train", "kto", "--config", cfg, "--resume"])
        .spawn()
        .unwrap();
    let metrics = out.join("metrics.jsonl");
    let first = lines(&metrics);
    let killed_training = kill_when(&mut child, || lines(&metrics) >= first + 2);
    eprintln!("killed while sampling: {killed_sampling}, while training: {killed_training}");
    assert!(
        killed_sampling && killed_training,
        "the run was not interrupted twice"
    );
    let resumed = ok(&run(&["train", "kto", "--config", cfg, "--resume"]));
    for r in 1..=2 {
        let m = format!("round-{r}/model");
        assert_eq!(
            weights(&a.join("out").join(&m)),
            weights(&out.join(&m)),
            "{m}"
        );
    }
    // every metric line once, byte for byte as the uninterrupted run wrote it
    assert_eq!(
        std::fs::read_to_string(a.join("out/metrics.jsonl")).unwrap(),
        std::fs::read_to_string(&metrics).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(a.join("out/round-2/samples.jsonl")).unwrap(),
        std::fs::read_to_string(out.join("round-2/samples.jsonl")).unwrap()
    );
    let evals = |s: &Value| -> Vec<Value> {
        s["rounds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["eval"].clone())
            .collect()
    };
    assert_eq!(evals(&whole), evals(&resumed));
}

fn fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(!out.status.success(), "{args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn bad_configs_and_inputs_are_clear_errors() {
    let (dir, cfg) = setup("bad", "");
    let c = cfg.to_str().unwrap();
    let text = std::fs::read_to_string(&cfg).unwrap();
    std::fs::write(&cfg, format!("{text}lambda = 2\n")).unwrap();
    let e = fails(&["train", "step-kto", "--config", c]);
    assert!(e.contains("unknown field") && e.contains("lambda"), "{e}");
    std::fs::write(&cfg, text.replace("seed = 7", "seed = \"seven\"")).unwrap();
    let e = fails(&["train", "step-kto", "--config", c]);
    assert!(e.contains("seed") && e.contains("invalid type"), "{e}");
    // JSON configs too
    let j = dir.join("run.json");
    std::fs::write(
        &j,
        r#"{"model": "m0", "output": "o", "problems": "problems.jsonl", "optim": {"lr": 1}}"#,
    )
    .unwrap();
    let e = fails(&["train", "kto", "--config", j.to_str().unwrap()]);
    assert!(e.contains("unknown field `lr`"), "{e}");
    // a directory of another architecture
    let bert = dir.join("bert");
    tiny::write_checkpoint("rlhflow", &bert, false);
    let mut conf = json(&bert.join("config.json"));
    conf["architectures"] = serde_json::json!(["BertForMaskedLM"]);
    conf["model_type"] = "bert".into();
    std::fs::write(bert.join("config.json"), conf.to_string()).unwrap();
    std::fs::write(&cfg, text.replace("model = \"m0\"", "model = \"bert\"")).unwrap();
    let e = fails(&["train", "step-kto", "--config", c]);
    assert!(e.to_lowercase().contains("bert"), "{e}");
    // no usable problem at all, and nothing to resume
    std::fs::write(&cfg, text.replace("output = \"out\"", "output = \"out2\"")).unwrap();
    std::fs::write(dir.join("problems.jsonl"), "{\"problem\": \"no answer\"}\n").unwrap();
    let e = fails(&["train", "step-kto", "--config", c]);
    assert!(e.contains("no usable problem"), "{e}");
    std::fs::write(&cfg, text.replace("output = \"out\"", "output = \"out3\"")).unwrap();
    let e = fails(&["train", "step-kto", "--config", c, "--resume"]);
    assert!(e.contains("nothing to resume"), "{e}");
    // sft needs a dataset
    let e = fails(&["train", "sft", "--config", c]);
    assert!(e.contains("dataset"), "{e}");
}

#[test]
fn a_nan_loss_stops_the_round_and_keeps_the_last_good_checkpoint() {
    let (dir, cfg) = setup("nan", "epochs = 4\n");
    let text = std::fs::read_to_string(&cfg).unwrap();
    // an absurd step makes the weights overflow after the first update
    std::fs::write(
        &cfg,
        text.replace(
            "learning_rate = 1e-3",
            "learning_rate = 1e30\nmax_grad_norm = 0.0",
        ),
    )
    .unwrap();
    let before = weights(&dir.join("m0"));
    let e = fails(&["train", "kto", "--config", cfg.to_str().unwrap()]);
    assert!(e.contains("round 1, optimiser step"), "{e}");
    assert!(e.contains("last good checkpoint"), "{e}");
    let out = dir.join("out");
    assert!(
        !out.join("round-1/model").exists(),
        "no model from a broken round"
    );
    assert_eq!(
        weights(&dir.join("m0")),
        before,
        "the starting model is untouched"
    );
    // the samples and the finite steps' metrics are kept
    assert_eq!(jsonl(&out.join("round-1/samples.jsonl")).len(), 8);
    let m = jsonl(&out.join("metrics.jsonl"));
    assert!(!m.is_empty());
    assert!(m.iter().all(|l| l["loss"].as_f64().unwrap().is_finite()));
    // the named checkpoint is whole and loads
    let st = json(&out.join("state.json"));
    let named = out.join(format!("state-1-{}/model", st["step"]));
    assert!(e.contains(&named.display().to_string()), "{e}");
    Decoder::load(&named, &Device::Cpu).unwrap();
}

#[test]
fn sft_memorises_a_solution_and_eval_scores_it() {
    let dir = tiny::temp_dir("sft");
    let model = dir.join("m0");
    tiny::write_checkpoint("rlhflow", &model, false);
    let problems = dir.join("p.jsonl");
    std::fs::write(
        &problems,
        "{\"id\": 1, \"problem\": \"What is 2 + 3?\", \"answer\": \"5\"}\n",
    )
    .unwrap();
    let train = |solution: &str, out: &str| {
        let data = dir.join(format!("{out}.jsonl"));
        let row = serde_json::json!({"problem": "What is 2 + 3?", "solution": solution});
        std::fs::write(&data, format!("{row}\nnot json\n")).unwrap();
        let cfg = dir.join(format!("{out}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "model = \"m0\"\noutput = \"{out}\"\ndataset = \"{out}.jsonl\"\nepochs = 60\n[optim]\nlearning_rate = 0.01\n"
            ),
        )
        .unwrap();
        let s = ok(&run(&["train", "sft", "--config", cfg.to_str().unwrap()]));
        assert_eq!(s["input_errors"].as_array().unwrap().len(), 1, "{s}");
        dir.join(out).join("round-1/model")
    };
    let eval = |m: &Path| {
        ok(&run(&[
            "eval",
            "generate",
            "--model",
            m.to_str().unwrap(),
            "--input",
            problems.to_str().unwrap(),
            "--samples",
            "4",
            "--temperature",
            "0.01",
            "--max-new-tokens",
            "40",
            "--judge",
            "symbolic",
        ]))
    };
    let good = eval(&train("2 + 3 = 5\n\nThe answer is \\boxed{5}.", "good"));
    assert_eq!(good["pass_at_1"], 1.0, "{good}");
    assert_eq!(good["maj_at_k"], 1.0, "{good}");
    assert_eq!(good["pass_at_k"]["4"], 1.0, "{good}");
    assert_eq!(good["flawed_step_rate"], 0.0, "{good}");
    // the right answer through a wrong step is a flawed solution
    let flawed = eval(&train(
        "2 + 3 = 6\n\n6 - 1 = 5\n\nThe answer is \\boxed{5}.",
        "flawed",
    ));
    assert_eq!(flawed["pass_at_1"], 1.0, "{flawed}");
    assert_eq!(flawed["flawed_step_rate"], 1.0, "{flawed}");
    let base = eval(&model);
    assert_eq!(base["problems"], 1);
    assert_eq!(base["greedy_correct"], 0, "{base}");
}

#[test]
fn offline_kto_takes_trls_unpaired_rows_with_steps() {
    let dir = tiny::temp_dir("offline");
    tiny::write_checkpoint("rlhflow", &dir.join("m0"), false);
    let rows = [
        serde_json::json!({"prompt": "Q: 2+3?\nA:", "completion": " 2 + 3 = 5\n\nSo 5.", "label": true,
            "steps": ["2 + 3 = 5", "So 5."], "step_labels": [true, true]}),
        serde_json::json!({"prompt": "Q: 2+3?\nA:", "completion": " 2 + 3 = 6\n\nSo 6.", "label": false,
            "steps": ["2 + 3 = 6", "So 6."], "step_labels": [false, false]}),
        serde_json::json!({"prompt": "Q: 7-4?\nA:", "completion": " 7 - 4 = 3\n\nSo 3.", "label": true}),
        serde_json::json!({"prompt": "Q: 1+1?\nA:", "completion": " 2", "label": true,
            "steps": ["3"], "step_labels": [true]}),
        serde_json::json!({"prompt": "Q: 1+1?\nA:", "completion": " 2"}),
    ];
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(dir.join("rows.jsonl"), text).unwrap();
    let cfg = dir.join("run.toml");
    std::fs::write(
        &cfg,
        "model = \"m0\"\noutput = \"out\"\ndataset = \"rows.jsonl\"\nmicro_batch = 3\n[optim]\nlearning_rate = 1e-3\n",
    )
    .unwrap();
    let s = ok(&run(&[
        "train",
        "step-kto",
        "--config",
        cfg.to_str().unwrap(),
    ]));
    // the row without a label is a line error; the row whose step is not in its completion
    // is skipped with its reason
    assert_eq!(s["input_errors"].as_array().unwrap().len(), 1, "{s}");
    let info = &s["rounds"][0]["round_info"];
    assert_eq!(info["labels"]["samples"], 3, "{info}");
    let skipped = info["skipped_rows"].as_array().unwrap();
    assert_eq!(skipped.len(), 1);
    assert!(
        skipped[0]["error"]
            .as_str()
            .unwrap()
            .contains("not in the completion")
    );
    let m = jsonl(&dir.join("out/metrics.jsonl"));
    assert_eq!(m.len(), 1);
    assert!(m[0]["step_term"].as_f64().unwrap() > 0.0, "{:?}", m[0]);
    Decoder::load(&dir.join("out/round-1/model"), &Device::Cpu).unwrap();
}
