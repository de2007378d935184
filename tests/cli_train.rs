//! `stepkto generate` and `stepkto logprobs` end to end (issue 10): the real binary on a
//! tiny Llama checkpoint with a chat template (and one without), JSONL in and out, a bad line
//! answered with an error line while the run goes on.

mod common;

use std::process::Command;

use candle_core::{Device, Tensor};
use common::tiny;
use serde_json::Value;
use stepkto::train::decoder::Decoder;

fn run(args: &[&str]) -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_stepkto"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

const GENERATE: &str = r#"{"id": "p1", "problem": "What is 2+3?", "answer": "5"}
{"id": "p2", "prompt": "The sum of 4 and 4 is"}
{"id": "both", "problem": "x", "prompt": "y"}
not json
"#;

#[test]
fn generate_writes_samples_in_order_and_reproduces_with_a_seed() {
    let dir = tiny::temp_dir("rlhflow");
    tiny::write_checkpoint("rlhflow", &dir, false);
    let input = dir.join("in.jsonl");
    std::fs::write(&input, GENERATE).unwrap();
    let (m, i) = (dir.to_str().unwrap(), input.to_str().unwrap());
    let args = [
        "generate",
        "--model",
        m,
        "--input",
        i,
        "--samples",
        "2",
        "--max-new-tokens",
        "12",
        "--seed",
        "3",
    ];
    let a = run(&args);
    assert_eq!(a.len(), 6, "{a:?}");
    for (k, id) in ["p1", "p1", "p2", "p2"].iter().enumerate() {
        assert_eq!(a[k]["id"], *id);
        assert_eq!(a[k]["sample"], k % 2);
        assert!(a[k]["tokens"].as_u64().unwrap() <= 12);
        assert!(a[k]["completion"].is_string());
        assert!(["eos", "stop", "length"].contains(&a[k]["finish_reason"].as_str().unwrap()));
    }
    assert!(
        a[4]["error"].as_str().unwrap().contains("exactly one"),
        "{}",
        a[4]
    );
    assert!(
        a[5]["error"].as_str().unwrap().starts_with("bad line"),
        "{}",
        a[5]
    );
    assert_eq!(run(&args), a, "the same seed, the same samples");
    let greedy = run(&[
        "generate",
        "--model",
        m,
        "--input",
        i,
        "--temperature",
        "0",
        "--max-new-tokens",
        "5",
    ]);
    assert_eq!(greedy.len(), 4);
    // a model without a chat template: problems are refused per line, raw prompts still run
    let plain = tiny::temp_dir("math-shepherd-bpe");
    tiny::write_checkpoint("math-shepherd-bpe", &plain, false);
    let b = run(&[
        "generate",
        "--model",
        plain.to_str().unwrap(),
        "--input",
        i,
        "--max-new-tokens",
        "4",
    ]);
    assert!(
        b[0]["error"].as_str().unwrap().contains("no chat template"),
        "{}",
        b[0]
    );
    assert_eq!(b[1]["id"], "p2");
    assert!(b[1]["completion"].is_string());
    let _ = std::fs::remove_dir_all(dir);
    let _ = std::fs::remove_dir_all(plain);
}

#[test]
fn logprobs_sum_the_completion_tokens() {
    let dir = tiny::temp_dir("rlhflow");
    tiny::write_checkpoint("rlhflow", &dir, false);
    let input = dir.join("in.jsonl");
    std::fs::write(
        &input,
        "{\"id\": 1, \"prompt\": \"What is 2+3?\", \"completion\": \" The answer is 5.\"}\n\
         {\"id\": 2, \"prompt\": \"What is 2+3?\", \"completion\": \"\"}\n\
         {\"id\": 3, \"prompt\": \"x\"}\n",
    )
    .unwrap();
    let out = run(&[
        "logprobs",
        "--model",
        dir.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
    ]);
    assert_eq!(out.len(), 3);
    // the same sum from the library: tokens of prompt + completion after the prompt's
    let tok = tokenizers::Tokenizer::from_file(dir.join("tokenizer.json")).unwrap();
    let p = tok
        .encode("What is 2+3?", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let all = tok
        .encode("What is 2+3? The answer is 5.", false)
        .unwrap()
        .get_ids()
        .to_vec();
    let n = all.len() - p.len();
    let m = Decoder::load(&dir, &Device::Cpu).unwrap();
    let len = all.len();
    let lp: Vec<f32> = m
        .token_logprobs(&Tensor::from_vec(all, (1, len), &Device::Cpu).unwrap())
        .unwrap()
        .get(0)
        .unwrap()
        .to_vec1()
        .unwrap();
    let want: f64 = lp[len - 1 - n..].iter().map(|x| *x as f64).sum();
    let got = out[0]["logprob"].as_f64().unwrap();
    assert_eq!(out[0]["tokens"], n);
    assert!(got < 0.0 && (got - want).abs() < 1e-4, "{got} vs {want}");
    assert!(
        out[1]["error"]
            .as_str()
            .unwrap()
            .contains("at least one token"),
        "{}",
        out[1]
    );
    assert!(
        out[2]["error"].as_str().unwrap().starts_with("bad line"),
        "{}",
        out[2]
    );
    let _ = std::fs::remove_dir_all(dir);
}
