//! Regressions for issue 9 on the stepwise judge, one test per failure class the issue names
//! (4: false refutations of the symbolic checks; 7: budgets; 10: tests that check nothing),
//! with cases written for this project. The HTTP side of class 7 (memory and time of the
//! served binary under hostile inputs) is in `tests/issue9_hostile.rs`.

use std::time::{Duration, Instant};

use stepkto::judge::Status;
use stepkto::judge::symbolic::{check_solution, check_step};
use stepkto::outcome::Budget;

/// Class 4: what a step does not assert is not refuted (retractions, substitutions under
/// test, equations to solve, identities that hold under the problem's conditions, angles in a
/// stated quadrant, overflow, `2√5 / 3√5`, bullets, spans that continue the prose), while
/// genuine errors, including identities false under the stated condition, still are.
#[test]
fn class_4_false_refutations_and_kept_catches() {
    let table: &[(&str, &str, Status)] = &[
        (
            "p",
            "So $3 \\times 7 = 24$. This is not correct.",
            Status::Unknown,
        ),
        (
            "p",
            "We check: $2 + 5 = 8$ (False). Let me recompute.",
            Status::Unknown,
        ),
        (
            "p",
            "Then $12 \\div 4 = 4$. Wait, that is wrong: $12 \\div 4 = 3$.",
            Status::Unknown,
        ),
        (
            "p",
            "Substituting $x=9$ gives 2 + 3 * 9 = 30, which simplifies to 29, less than 30.",
            Status::Unknown,
        ),
        (
            "p",
            "Plugging in $n = 4$: $4^2 + 1 = 18$, which does not work.",
            Status::Unknown,
        ),
        (
            "p",
            "Setting the distances equal, $\\sqrt{(x-1)^2 + y^2} = \\sqrt{(x-5)^2 + y^2} \\implies (x-1)^2 + y^2 = (x-5)^2 + y^2$.",
            Status::Unknown,
        ),
        (
            "p",
            "$PA = PB \\Rightarrow (x-1)^2 + y^2 = (x-5)^2 + y^2$",
            Status::Unknown,
        ),
        (
            "p",
            "\\[ (x-1)^2 + y^2 = (x-5)^2 + y^2 = 2x \\]",
            Status::Unknown,
        ),
        (
            "Let $\\omega$ be a complex number with $\\omega^3 = 1$ and $\\omega \\neq 1$.",
            "Then $S = \\omega^4 + \\omega^5 = \\omega + \\omega^2$.",
            Status::Unknown,
        ),
        (
            "Suppose $ab = 2$.",
            "So $E = a^2 b^2 + 1 = 5$.",
            Status::Unknown,
        ),
        (
            "p",
            "Since $ab = 2$, we get $E = a^2b^2 + 1 = 5$.",
            Status::Unknown,
        ),
        (
            "p",
            "The angle is $\\theta = \\arctan(-\\sqrt{3}) = \\frac{2\\pi}{3}$ since the point is in the second quadrant.",
            Status::Unknown,
        ),
        (
            "p",
            "So $\\arcsin(1/2) = \\frac{5\\pi}{6}$ in the second quadrant.",
            Status::Unknown,
        ),
        (
            "p",
            "$\\log_{10}(5 \\cdot 100^{20000}) = \\log_{10}5 + \\log_{10}100^{20000}$",
            Status::Unknown,
        ),
        ("p", "Simplify: 2√5 / 3√5 = 2 / 3.", Status::Verified),
        ("p", "So $2\\sqrt{5} / 3\\sqrt{5} = 2/3$.", Status::Verified),
        ("p", "- 6 = 2 * 3\n- 10 = 2 * 5", Status::Verified),
        ("p", "* 12 = 3 * 4", Status::Verified),
        (
            "p",
            "The share is total × \\( \\frac{1}{4} = \\frac{5}{4} \\times \\frac{1}{4} \\) = 5/16.",
            Status::Unknown,
        ),
        (
            "p",
            "Tax is $20\\%$ of $\\$4.00 = 0.20 \\times \\$4.00$ = $0.80.",
            Status::Unknown,
        ),
        ("p", "So $3 \\times 7 = 24$ apples.", Status::Refuted),
        ("p", "Then $E = (t+2)(t-1) = t^2 - t - 2$.", Status::Refuted),
        (
            "p",
            "We find $17 + 26 = 42$, so the total is 42.",
            Status::Refuted,
        ),
        ("p", "Thus 15 * 4 = 50 dollars.", Status::Refuted),
        ("p", "- 6 = 2 * 4", Status::Refuted),
        (
            "p",
            "So $\\frac{0.0001}{3} = 0.0002$ exactly.",
            Status::Refuted,
        ),
        (
            "Let $\\omega$ be a complex number with $\\omega^3 = 1$ and $\\omega \\neq 1$.",
            "Then $S = \\omega^4 + \\omega^5 = \\omega + 1$.",
            Status::Refuted,
        ),
        (
            "Suppose $ab = 2$.",
            "Then $E = a^2b^2 + 2ab = a^2b^2 + 4$.",
            Status::Unknown,
        ),
        (
            "Suppose $ab = 2$.",
            "Then $E = a^2b^2 + 2ab = a^2b^2 + 5$.",
            Status::Refuted,
        ),
        (
            "Suppose $x + y = 10$.",
            "Then $T = x^2 + xy + y^2 = 10x + y^2$.",
            Status::Unknown,
        ),
        (
            "Suppose $x + y = 10$.",
            "Then $T = x^2 + xy + y^2 = 11x + y^2$.",
            Status::Refuted,
        ),
        (
            "p",
            "Try $n = 3$: then $3^2 + 1 = 11$, too big.",
            Status::Unknown,
        ),
        (
            "p",
            "The greatest common divisor: $\\frac{33 \\div 33}{663 \\div 33} = \\frac{1}{21}$",
            Status::Refuted,
        ),
        (
            "p",
            "So $355\\div 6=58\\;\\mathrm{R}\\;5$.",
            Status::Unknown,
        ),
    ];
    let mut bad = Vec::new();
    for (problem, step, want) in table {
        let got = check_solution(problem, &[step.to_string()], &Budget::default()).remove(0);
        if got.status != *want {
            bad.push(format!(
                "{step:?} (problem {problem:?}): want {want:?}, got {got:?}"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "{} cases failed:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

/// Class 4: a refutation shows significant digits, never `0.000000` for both sides.
#[test]
fn class_4_refutation_details_show_significant_digits() {
    let got = check_step("So $\\frac{1}{30000} = 0.0004$.", &Budget::default());
    assert_eq!(got.status, Status::Refuted, "{got:?}");
    assert!(
        got.detail.contains("0.000033333333") && got.detail.contains("0.0004"),
        "{}",
        got.detail
    );
    let got = check_step("So $2^{-40} = 10^{-12}$.", &Budget::default());
    assert_eq!(got.status, Status::Refuted, "{got:?}");
    assert!(
        got.detail.contains("e-13") && got.detail.contains("e-12"),
        "{}",
        got.detail
    );
}

/// Class 7: a 200 kB step of repeated claims, and a solution of many steps, finish within
/// twice the time budget, which covers the whole solution.
#[test]
fn class_7_long_steps_and_many_steps_hold_the_time_budget() {
    let budget = Budget {
        time_ms: 300,
        ..Budget::default()
    };
    let long = "$2 \\cdot 3 = 6$ and 4 + 5 = 9, ".repeat(6_700);
    assert!(long.len() > 190_000);
    let many: Vec<String> = (0..3_000)
        .map(|k| format!("So ${k} + 1 = {}$.", k + 1))
        .collect();
    for steps in [vec![long], many] {
        let t = Instant::now();
        let out = check_solution("p", &steps, &budget);
        let took = t.elapsed();
        assert_eq!(out.len(), steps.len());
        assert!(
            took < Duration::from_millis(2 * budget.time_ms),
            "{} steps took {took:?}",
            steps.len()
        );
        assert!(out.iter().all(|c| c.status != Status::Refuted));
    }
}
