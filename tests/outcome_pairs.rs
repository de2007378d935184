//! The Math-Verify / Qwen grader pairs (tests/data/pairs_mathverify.jsonl): every row whose
//! expectation is mathematics must agree; rows that encode that library's policy are listed
//! in `POLICY` with our decision, and must give *our* answer.

use serde_json::Value;
use stepkto::outcome::{Budget, Mode, Options, check};

/// (row, our verdict, why we differ from the row's expectation).
const POLICY: &[(usize, bool, &str)] = &[
    (
        31,
        true,
        "a newline inside $...$ is valid TeX; the library rejects it",
    ),
    (
        32,
        true,
        "a newline inside \\(...\\) is valid TeX; the library rejects it",
    ),
    (
        126,
        false,
        "a rounded decimal for an exact reference is rejected by default (issue 9; accept_rounded)",
    ),
    (
        133,
        false,
        "a rounded decimal for an exact reference is rejected by default (issue 9; accept_rounded)",
    ),
    (
        139,
        false,
        "2.6667 is a rounded 8/3: rejected by default (issue 9; accept_rounded)",
    ),
    (
        187,
        true,
        "x in [-2,7] and -2 <= x <= 7 are the same set; the library needs a flag",
    ),
    (
        189,
        true,
        "the gold string holds a TAB where \\t was meant; read as intended it is 13",
    ),
    (
        253,
        false,
        "f(x) and f(y) differ: variable names are significant (the row tests a non-strict mode)",
    ),
    (
        277,
        false,
        "a rounded decimal for an exact reference is rejected by default (issue 9; accept_rounded)",
    ),
    (
        263,
        false,
        "1 - 1/e != 1 + 1/e (the row pins a known false positive of the library)",
    ),
];

fn rows() -> Vec<Value> {
    include_str!("data/pairs_mathverify.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_mathematical_row_agrees() {
    let mut failures = Vec::new();
    let mut checked = 0;
    for (i, row) in rows().iter().enumerate() {
        let gold = row["gold"].as_str().unwrap();
        let pred = row["prediction"].as_str().unwrap();
        let got = check(
            gold,
            pred,
            Mode::Auto,
            &Options::default(),
            &Budget::default(),
        );
        let want = match POLICY.iter().find(|p| p.0 == i) {
            Some(p) => p.1,
            None => match row["expected_equal"].as_bool() {
                Some(b) => b,
                None => continue, // rows whose truth depends on a rounding policy
            },
        };
        checked += 1;
        if got.equivalent != want {
            failures.push(format!(
                "row {i}: gold {gold:?} pred {:?} -> {got:?}, want {want}",
                pred.chars().take(120).collect::<String>()
            ));
        }
    }
    assert!(checked > 270, "only {checked} rows checked");
    assert!(
        failures.is_empty(),
        "{} rows disagree:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn policy_rows_really_differ_from_the_library() {
    // Keeps POLICY honest: each listed row must be one where we disagree with the file.
    let rows = rows();
    for (i, ours, why) in POLICY {
        let expected = rows[*i]["expected_equal"].as_bool();
        assert_ne!(
            expected,
            Some(*ours),
            "row {i} is listed as policy ({why}) but agrees with the file"
        );
    }
}

#[test]
fn math500_solutions_match_their_answers() {
    for line in include_str!("data/math500_head60.jsonl").lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        let (answer, solution) = (
            row["answer"].as_str().unwrap(),
            row["solution"].as_str().unwrap(),
        );
        let v = check(
            answer,
            solution,
            Mode::Solution,
            &Options::default(),
            &Budget::default(),
        );
        assert!(
            v.equivalent,
            "{}: answer {answer:?}, extracted {:?}, {:?}",
            row["unique_id"], v.extracted, v.reason
        );
    }
}

#[test]
fn math500_answers_do_not_match_other_solutions() {
    let rows: Vec<Value> = include_str!("data/math500_head60.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut false_pos = Vec::new();
    for (i, r) in rows.iter().enumerate() {
        for k in 1..4 {
            let o = &rows[(i + k * 7) % rows.len()];
            let (a, b) = (r["answer"].as_str().unwrap(), o["answer"].as_str().unwrap());
            if a.replace(' ', "") == b.replace(' ', "") {
                continue;
            }
            let v = check(
                a,
                o["solution"].as_str().unwrap(),
                Mode::Solution,
                &Options::default(),
                &Budget::default(),
            );
            if v.equivalent {
                false_pos.push(format!("{a:?} vs extracted {:?}", v.extracted));
            }
        }
    }
    assert!(false_pos.is_empty(), "false positives: {false_pos:?}");
}

/// Real model outputs: ProcessBench (MATH split) solutions to MATH-500 problems, judged
/// against the MATH-500 answer and compared with ProcessBench's `final_answer_correct`.
#[test]
fn processbench_model_outputs_agree_with_their_labels() {
    // math-392 leaves `1/(sin x cos x) - tan x` unsimplified; it equals the reference `cot x`,
    // so we call it equal although the label (simplification required) says wrong.
    const EQUAL_BUT_LABELLED_WRONG: &[&str] = &["math-392"];
    let mut bad = Vec::new();
    let mut n = 0;
    for line in include_str!("data/processbench_math500.jsonl").lines() {
        let row: Value = serde_json::from_str(line).unwrap();
        let id = row["id"].as_str().unwrap();
        let want = row["final_answer_correct"].as_bool().unwrap()
            || EQUAL_BUT_LABELLED_WRONG.contains(&id);
        let v = check(
            row["reference"].as_str().unwrap(),
            row["solution"].as_str().unwrap(),
            Mode::Solution,
            &Options::default(),
            &Budget::default(),
        );
        n += 1;
        if v.equivalent != want {
            bad.push(format!(
                "{id}: want {want}, extracted {:?}, {:?}",
                v.extracted, v.reason
            ));
        }
    }
    assert_eq!(n, 112);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

/// `check_within` (the server's lone check on its async thread) gives `check`'s verdict
/// whenever it answers, on every row and under a clock short enough to cut some checks off;
/// a check that needs longer than its clock is `None` (the server then runs it on the
/// blocking pool with the whole budget), never a `budget` verdict that the full budget would
/// not give.
#[test]
fn check_within_gives_checks_verdict_or_none() {
    use std::time::Duration;
    use stepkto::outcome::check_within;
    let b = Budget::default();
    let o = Options::default();
    let mut cut = 0;
    for (i, row) in rows().iter().enumerate() {
        let gold = row["gold"].as_str().unwrap();
        let pred = row["prediction"].as_str().unwrap();
        let full = check(gold, pred, Mode::Auto, &o, &b);
        for clock in [Duration::from_secs(10), Duration::from_micros(20)] {
            match check_within(gold, pred, Mode::Auto, &o, &b, clock) {
                Some(v) => assert_eq!(
                    (v.equivalent, &v.reason.tag, &v.extracted),
                    (full.equivalent, &full.reason.tag, &full.extracted),
                    "row {i} under {clock:?}"
                ),
                None if clock == Duration::from_secs(10) => panic!("row {i} took 10 s"),
                None => cut += 1,
            }
        }
    }
    // 2000! against 2000!+1 takes milliseconds of exact arithmetic and is decidable
    let slow = check_within(
        "2000!",
        "2000!+1",
        Mode::Answer,
        &o,
        &b,
        Duration::from_micros(50),
    );
    assert!(slow.is_none(), "{slow:?}");
    let v = check("2000!", "2000!+1", Mode::Answer, &o, &b);
    assert_eq!((v.equivalent, v.reason.tag.as_str()), (false, "not_equal"));
    // a clock longer than the budget's own time is the budget's time
    let tight = Budget { time_ms: 1, ..b };
    let capped = check_within(
        "2000!",
        "2000!+1",
        Mode::Answer,
        &o,
        &tight,
        Duration::from_secs(10),
    );
    assert!(capped.is_none(), "{capped:?}");
    println!(
        "{cut} of {} rows were cut off by a 20 µs clock",
        rows().len()
    );
}
