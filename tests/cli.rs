//! `stepkto check` end to end: the real binary over a JSONL file.

use std::process::Command;

fn tmp(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join("stepkto-tests");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!(
        "{}-{}-{name}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ))
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stepkto"))
        .args(args)
        .output()
        .unwrap()
}

const INPUT: &str = r#"{"id": "a", "reference": "\\frac{1}{2}", "candidate": "Thus $\\boxed{0.5}$.", "mode": "solution"}
not json
{"id": "c", "reference": "3 m", "candidate": "3 cm", "mode": "answer"}
{"id": "d", "reference": "5"}
{"id": 5, "reference": "x \\in [-2, 7]", "candidate": "-2 \\le x \\le 7"}
"#;

#[test]
fn check_writes_one_line_per_input_line_in_order() {
    let input = tmp("in.jsonl");
    let output = tmp("out.jsonl");
    std::fs::write(&input, INPUT).unwrap();
    let out = run(&[
        "check",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
        "--threads",
        "2",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&output)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["id"], "a");
    assert_eq!(lines[0]["equivalent"], true);
    assert_eq!(lines[0]["extracted"], "0.5");
    assert!(lines[1]["error"].as_str().unwrap().starts_with("line 2"));
    assert_eq!(lines[2]["equivalent"], false);
    assert_eq!(lines[3]["id"], "d");
    assert!(lines[3]["error"].as_str().unwrap().contains("candidate"));
    assert_eq!(lines[4]["id"], 5);
    assert_eq!(lines[4]["equivalent"], true);
}

#[test]
fn check_uses_the_cache_only_when_asked() {
    let input = tmp("in2.jsonl");
    let db = tmp("cache.db");
    std::fs::write(&input, INPUT).unwrap();
    let url = format!("sqlite://{}", db.display());
    let first = run(&[
        "check",
        "-i",
        input.to_str().unwrap(),
        "--cache",
        "--database-url",
        &url,
    ]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let second = run(&[
        "check",
        "-i",
        input.to_str().unwrap(),
        "--cache",
        "--database-url",
        &url,
    ]);
    let a: Vec<serde_json::Value> = String::from_utf8_lossy(&first.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let b: Vec<serde_json::Value> = String::from_utf8_lossy(&second.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(a[0]["cached"], false);
    assert_eq!(b[0]["cached"], true);
    assert_eq!(a[0]["equivalent"], b[0]["equivalent"]);
    // Without --cache no database file is created.
    let db2 = tmp("never.db");
    let out = run(&[
        "check",
        "-i",
        input.to_str().unwrap(),
        "--database-url",
        &format!("sqlite://{}", db2.display()),
    ]);
    assert!(out.status.success());
    assert!(!db2.exists());
}

#[test]
fn bad_arguments_fail_clearly() {
    let out = run(&["check", "--input", "/definitely/not/here.jsonl"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read"));
    let out = run(&["check", "--input", "x.jsonl", "--max-depth", "0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--max-depth"));
    let out = run(&["serve", "--addr", "nonsense"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--addr"));
}
