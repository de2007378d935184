//! The symbolic step judge: decide the claims found in a step ([`super::claims`]) with the
//! outcome engine's exact arithmetic.
//!
//! A closed-form claim is **refuted** only when it is false beyond any rounding the step
//! states (a decimal with k places may be off by one unit in its k-th place, truncation
//! included; an integer may be a rounded non-integer). A claim with variables is judged only
//! as a link inside a chain (`E = A = B`: `A = B`, both sides with the same variables), where
//! it asserts an identity; it is refuted only when both sides evaluate exactly and differ at
//! two rational points while agreeing at none. Claims with words, substitutions (different
//! variables on each side), function applications (`f(2)`), or in a sentence that doubts them
//! ("not", "?", "suppose") are never refuted. A step is **verified** when it has at least one
//! claim and all hold.

use std::sync::LazyLock;

use regex::Regex;

use super::claims::{self, Claim, plain_claims, tex_claims};
use super::conditions::{self, Condition, Explained};
use super::{Status, SymbolicCheck};
use crate::outcome::budget::{Budget, Meter};
use crate::outcome::eval::{self, Val};
use crate::outcome::expr::{Const, Expr, RelOp};
use crate::outcome::{latex, units};
use crate::steps::{locate, plain_chains};

enum Decision {
    Holds,
    Refuted(String),
    Unknown,
}

/// Check every step of a solution. The problem and the steps before each one are its
/// context: a symbol they constrain (`ab = 2`, `\omega^3 = 1`) is not a free variable, so an
/// identity in it is never refuted.
pub fn check_solution(problem: &str, steps: &[String], budget: &Budget) -> Vec<SymbolicCheck> {
    let mut conds = Vec::new();
    let note = |text: &str, conds: &mut Vec<Condition>, budget: &Budget| {
        if text.len() <= budget.max_solution_len {
            let (pieces, _) = locate(text);
            conditions::collect(&pieces, conds, &mut Meter::new(*budget));
        }
    };
    // The time budget covers the whole solution, not each step: a solution of many steps
    // must not take many budgets.
    let deadline = std::time::Instant::now() + std::time::Duration::from_millis(budget.time_ms);
    note(problem, &mut conds, budget);
    let mut out = Vec::with_capacity(steps.len());
    for s in steps {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            out.push(SymbolicCheck {
                status: Status::Unknown,
                detail: format!(
                    "not checked: the time budget ({} ms) is spent",
                    budget.time_ms
                ),
            });
            continue;
        }
        let step_budget = Budget {
            time_ms: (left.as_millis() as u64).max(1),
            ..*budget
        };
        note(s, &mut conds, &step_budget);
        out.push(check_step_in(s, &conds, &step_budget));
    }
    out
}

/// Check one step on its own (no context: only the step's own relations constrain symbols).
pub fn check_step(step: &str, budget: &Budget) -> SymbolicCheck {
    check_solution("", std::slice::from_ref(&step.to_string()), budget)
        .pop()
        .expect("one step in, one check out")
}

/// Words with which a step takes back something it wrote ("This is not correct.",
/// "(False)"): its claims are then not assertions of the solution, whatever sentence they
/// are in.
fn retracts(step: &str) -> bool {
    const CUES: &[&str] = &[
        "not correct",
        "incorrect",
        "(false)",
        "is false",
        "not true",
        "wrong",
        "mistake",
        "error",
        "wait",
        "contradiction",
        "does not hold",
        "doesn't hold",
        "not equal",
        "recalculat",
        "recheck",
        "re-check",
        "oops",
        "redo",
        "miscalculat",
    ];
    let s = step.to_lowercase();
    CUES.iter().any(|c| claims::has_cue(&s, c))
}

/// `2√5 / 3√5`: a number juxtaposed with a radical after a slash is the whole denominator,
/// as its writer means it, not `(2√5 / 3)·√5`.
static JUXTAPOSED_DENOMINATOR: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"/\s*(\d+(?:\.\d+)?\s*(?:√\s*\d+|√\s*\([^()]*\)|\\sqrt\s*\{[^{}]*\}|\\sqrt\s*\d|\\pi\b))",
    )
    .unwrap()
});

fn check_step_in(step: &str, conds: &[Condition], budget: &Budget) -> SymbolicCheck {
    let mut meter = Meter::new(*budget);
    if step.len() > budget.max_solution_len {
        return SymbolicCheck {
            status: Status::Unknown,
            detail: "step over the length budget".into(),
        };
    }
    let retracted = retracts(step);
    // `25% of 80 = 20`: "of" after a percent is a product.
    let step = PERCENT_OF.replace_all(step, "${p} * ");
    let step = JUXTAPOSED_DENOMINATOR.replace_all(&step, "/(${1})");
    let (pieces, plain) = locate(&step);
    let mut claims = Vec::new();
    for p in &pieces {
        claims.extend(tex_claims(p));
    }
    for p in plain_chains(&plain) {
        claims.extend(plain_claims(&p));
    }
    let (mut held, mut doubted) = (0, 0);
    for (k, c) in claims.iter().enumerate() {
        if meter.tick().is_err() {
            // A step is verified only when every claim holds: a partial check says nothing.
            return SymbolicCheck {
                status: Status::Unknown,
                detail: format!(
                    "stopped at the time budget ({} ms) after {k} of {} claims",
                    budget.time_ms,
                    claims.len()
                ),
            };
        }
        match decide(c, conds, &mut meter) {
            Decision::Holds => held += 1,
            Decision::Refuted(why) if !c.guarded && !retracted => {
                return SymbolicCheck {
                    status: Status::Refuted,
                    detail: why,
                };
            }
            Decision::Refuted(_) => doubted += 1,
            Decision::Unknown => {}
        }
    }
    if doubted > 0 {
        SymbolicCheck {
            status: Status::Unknown,
            detail: "a claim is false, but the step doubts or takes it back".into(),
        }
    } else if held > 0 {
        let s = if held == 1 { "" } else { "s" };
        SymbolicCheck {
            status: Status::Verified,
            detail: format!("{held} claim{s} checked"),
        }
    } else {
        SymbolicCheck {
            status: Status::Unknown,
            detail: "no closed-form claim to check".into(),
        }
    }
}

/// `\text{ books}`-style count words are dropped from a member; a member with any other
/// text (`\text{Naomi's points}`, `\text{ dozen}`) or with a physical unit (`4 \text{ hours}`
/// = 240 minutes) is not a plain number, so `None`.
fn strip_words(s: &str) -> Option<String> {
    let mut t = s.to_string();
    for cmd in ["\\text", "\\mbox", "\\textbf", "\\textrm", "\\mathrm"] {
        while let Some(k) = t.find(&format!("{cmd}{{")) {
            let open = k + cmd.len();
            let mut depth = 0;
            let mut end = t.len();
            for (j, c) in t[open..].char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = open + j + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            let inner = t[open..end]
                .trim_start_matches('{')
                .trim_end_matches('}')
                .trim()
                .to_string();
            match units::lookup(&inner) {
                Some(u) if u.dim == [0; 6] => t.replace_range(k..end, " "),
                _ if inner.is_empty() => t.replace_range(k..end, " "),
                _ => return None,
            }
        }
    }
    Some(
        t.replace("\\$", " ")
            .replace('$', " ")
            .trim()
            .trim_end_matches(['.', ':'])
            .to_string(),
    )
}

/// A closed-form member: parsed, no free symbols, no words.
fn closed(s: &str, meter: &mut Meter) -> Option<Expr> {
    let e = algebraic(s, meter)?;
    let mut syms = Vec::new();
    e.symbols(&mut syms);
    syms.is_empty().then_some(e)
}

/// A member that is a plain expression (free variables allowed), with no words or structures.
fn algebraic(s: &str, meter: &mut Meter) -> Option<Expr> {
    let t = strip_words(s)?;
    if t.is_empty() || t.len() > meter.budget.max_answer_len || t.contains("\\boxed") {
        return None;
    }
    let e = latex::parse(&t, meter).ok()?;
    let mut bad = false;
    e.walk(&mut |x| {
        bad |= matches!(x, Expr::WithUnit(_, u) if u.dim != [0; 6]);
        // In working, a bare `e` or `i` is as often a variable (a digit, an index) as a constant.
        bad |= matches!(x, Expr::Const(Const::E | Const::I));
        bad |= matches!(
            x,
            Expr::Text(_)
                | Expr::List(_)
                | Expr::Set(_)
                | Expr::Seq(..)
                | Expr::Matrix(_)
                | Expr::Rel(..)
                | Expr::Ratio(_)
                | Expr::PlusMinus(..)
                | Expr::Union(_)
                | Expr::EmptySet
                | Expr::Reals
                | Expr::Base(..)
                | Expr::Degree(_)
        )
    });
    (!bad).then_some(e)
}

/// The unit of the last stated place of a literal member: 10^-k for a k-place decimal,
/// 1 for an integer literal.
fn stated_unit(e: &Expr) -> Option<f64> {
    match e {
        Expr::Neg(a) | Expr::WithUnit(a, _) => stated_unit(a),
        Expr::Dec(_, k) => Some(10f64.powi(-(*k as i32))),
        Expr::Num(q) if q.is_integer() => Some(1.0),
        _ => None,
    }
}

/// `A = B` inside a chain, both with the same variables: an identity, tested exactly at
/// rational points. Refuted only when both sides evaluate exactly and differ at two points
/// while agreeing at none.
fn decide_identity(c: &Claim, conds: &[Condition], meter: &mut Meter) -> Decision {
    // `f(g^{-1}(x))`, `p(2)`: a function name applied, not a product.
    if FUNCTION_CALL.is_match(&c.lhs) || FUNCTION_CALL.is_match(&c.rhs) {
        return Decision::Unknown;
    }
    let (Some(a), Some(b)) = (algebraic(&c.lhs, meter), algebraic(&c.rhs, meter)) else {
        return Decision::Unknown;
    };
    let (mut sa, mut sb) = (Vec::new(), Vec::new());
    a.symbols(&mut sa);
    b.symbols(&mut sb);
    if sa.is_empty() || sa != sb || sa.len() > 6 {
        return Decision::Unknown;
    }

    const PTS: [(i64, i64); 6] = [(2, 3), (-5, 7), (11, 5), (7, 2), (-13, 11), (17, 9)];
    let (mut same, mut differ) = (0, 0);
    for t in 0..PTS.len() {
        let env: Vec<(String, Val)> = sa
            .iter()
            .enumerate()
            .map(|(j, s)| {
                let (n, d) = PTS[(t + 2 * j) % PTS.len()];
                (s.clone(), Val::real(eval::rat(n + j as i64, d)))
            })
            .collect();
        match (eval::eval(&a, &env, meter), eval::eval(&b, &env, meter)) {
            (Ok(x @ Val::Q(..)), Ok(y @ Val::Q(..))) => {
                if x == y {
                    same += 1
                } else {
                    differ += 1
                }
            }
            (Ok(x), Ok(y)) if eval::same(&x, &y, 1e-9) == Some(true) => same += 1,
            _ => {}
        }
    }
    if differ >= 2 && same == 0 {
        // Not an identity for free variables; it may still hold under a condition the
        // problem or the working states (`\omega^3 = 1`, `ab = 2`).
        match conditions::explains(&a, &b, &sa, conds, meter) {
            Explained::No => {}
            Explained::Yes | Explained::CannotTell => return Decision::Unknown,
        }
        Decision::Refuted(format!(
            "`{} = {}` is not an identity: the sides differ at exact test points",
            c.lhs.trim(),
            c.rhs.trim()
        ))
    } else if same >= 3 && differ == 0 {
        Decision::Holds
    } else {
        Decision::Unknown
    }
}

static PERCENT_OF: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?P<p>\\?%)\s*(?:\\text\{\s*of\s*\}|of)\s+").unwrap());

static FUNCTION_CALL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[^A-Za-z\\])[fghpqFGHPQT](?:\^\{?-1\}?)?\s*(?:\\left)?\(").unwrap()
});

fn decide(c: &Claim, conds: &[Condition], meter: &mut Meter) -> Decision {
    if c.op == RelOp::Ne || c.op == RelOp::In {
        return Decision::Unknown;
    }
    let (Some(a), Some(b)) = (closed(&c.lhs, meter), closed(&c.rhs, meter)) else {
        return if c.identity {
            decide_identity(c, conds, meter)
        } else {
            Decision::Unknown
        };
    };
    // `\arctan(-\sqrt3) = \frac{2\pi}{3}`: an inverse trigonometric value written as the angle
    // in the quadrant the problem fixes differs from the principal value by design.
    let multivalued = [&a, &b].iter().any(|e| {
        let mut m = false;
        e.walk(&mut |x| m |= matches!(x, Expr::Func(n, _) if n.starts_with("arc")));
        m
    });
    let (Ok(va), Ok(vb)) = (eval::eval(&a, &[], meter), eval::eval(&b, &[], meter)) else {
        return Decision::Unknown;
    };
    let shown = format!("{} {} {}", c.lhs.trim(), op_str(c.op), c.rhs.trim());
    let mut exact_equal = eval::same(&va, &vb, 1e-12) == Some(true);
    // `\frac{2}{4} \times 100 = 50\%`: a percent on one side may stand for its number.
    if !exact_equal && (is_percent(&a) != is_percent(&b)) {
        let strip = |e: &Expr| match e {
            Expr::Percent(x) => (**x).clone(),
            other => other.clone(),
        };
        if let (Ok(x), Ok(y)) = (
            eval::eval(&strip(&a), &[], meter),
            eval::eval(&strip(&b), &[], meter),
        ) {
            exact_equal = eval::same(&x, &y, 1e-12) == Some(true);
        }
    }
    let (Some(fa), Some(fb)) = (va.as_real_f(), vb.as_real_f()) else {
        // Complex values: only exact (in)equality is decided.
        return match (&va, &vb, c.op) {
            (Val::Q(..), Val::Q(..), RelOp::Eq) if !exact_equal => {
                Decision::Refuted(format!("`{shown}` is false"))
            }
            _ if exact_equal => Decision::Holds,
            _ => Decision::Unknown,
        };
    };
    let diff = (fa - fb).abs();
    let unit = stated_unit(&a)
        .into_iter()
        .chain(stated_unit(&b))
        .fold(0.0f64, f64::max);
    let exact = matches!((&va, &vb), (Val::Q(..), Val::Q(..)));
    let value = |v: f64| significant(v, 8);
    let refute = || {
        if multivalued {
            return Decision::Unknown;
        }
        Decision::Refuted(format!(
            "`{shown}` is false: the left side is {}, the right side {}",
            value(fa),
            value(fb)
        ))
    };
    match c.op {
        RelOp::Eq => {
            if exact_equal || (!exact && diff <= 1e-9 * fa.abs().max(fb.abs())) {
                return Decision::Holds;
            }
            // Stated rounding: a decimal may be off by one unit in its last place; an integer
            // may be a rounded non-integer.
            let dec_unit = [&a, &b]
                .iter()
                .filter_map(|e| match e {
                    Expr::Dec(..) | Expr::Neg(_) | Expr::WithUnit(..) => {
                        stated_unit(e).filter(|u| *u < 1.0)
                    }
                    _ => None,
                })
                .fold(0.0f64, f64::max);
            if dec_unit > 0.0 && diff <= dec_unit * (1.0 + 1e-9) {
                return Decision::Holds;
            }
            let other_is_fraction = (stated_unit(&b) == Some(1.0) && fa.fract() != 0.0)
                || (stated_unit(&a) == Some(1.0) && fb.fract() != 0.0);
            if other_is_fraction && diff < 1.0 {
                return Decision::Unknown;
            }
            if !exact && diff <= 1e-6 * fa.abs().max(fb.abs()) {
                return Decision::Unknown;
            }
            refute()
        }
        RelOp::Approx => {
            let tol = if unit > 0.0 {
                unit
            } else {
                1e-9 * fa.abs().max(fb.abs())
            };
            if diff <= tol * (1.0 + 1e-9) {
                Decision::Holds
            } else if diff <= (5.0 * tol).max(0.02 * fb.abs().max(fa.abs())) {
                Decision::Unknown
            } else {
                refute()
            }
        }
        RelOp::Lt | RelOp::Le | RelOp::Gt | RelOp::Ge => {
            let margin = if exact {
                0.0
            } else {
                1e-9 * fa.abs().max(fb.abs())
            };
            let holds = match c.op {
                RelOp::Lt => fa < fb - margin || (exact && fa < fb),
                RelOp::Le => fa <= fb + margin,
                RelOp::Gt => fa > fb + margin || (exact && fa > fb),
                _ => fa >= fb - margin,
            };
            let clearly_false = match c.op {
                RelOp::Lt | RelOp::Le => fa > fb + margin.max(unit),
                _ => fa < fb - margin.max(unit),
            };
            if holds {
                Decision::Holds
            } else if clearly_false {
                refute()
            } else {
                Decision::Unknown
            }
        }
        _ => Decision::Unknown,
    }
}

/// `v` with `digits` significant digits, trailing zeros dropped: `0.00012345679`, `1.5e-12`,
/// `333.33333`, `12` (never `0.000000` for a small value).
fn significant(v: f64, digits: i32) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    if v.fract() == 0.0 && v.abs() < 1e15 {
        return format!("{v:.0}");
    }
    let mag = v.abs().log10().floor() as i32;
    if !(-5..15).contains(&mag) {
        return format!("{v:.*e}", (digits - 1) as usize);
    }
    let places = (digits - 1 - mag).max(0) as usize;
    let s = format!("{v:.places$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn is_percent(e: &Expr) -> bool {
    matches!(e, Expr::Percent(_))
}

fn op_str(op: RelOp) -> &'static str {
    match op {
        RelOp::Eq => "=",
        RelOp::Approx => "≈",
        RelOp::Lt => "<",
        RelOp::Le => "≤",
        RelOp::Gt => ">",
        RelOp::Ge => "≥",
        RelOp::Ne => "≠",
        RelOp::In => "∈",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(s: &str) -> Status {
        check_step(s, &Budget::default()).status
    }

    #[test]
    fn decides_closed_form_claims() {
        assert_eq!(
            status("So \\(18 - 6 = 12\\) flamingos are left."),
            Status::Verified
        );
        assert_eq!(
            status("So \\(18 - 6 = 13\\) flamingos are left."),
            Status::Refuted
        );
        assert_eq!(status("She sold 48/2 = 24 clips in May."), Status::Verified);
        assert_eq!(status("She sold 48/2 = 25 clips in May."), Status::Refuted);
        assert_eq!(status("Total = $3.5 * 4000 = $14,000."), Status::Verified);
        assert_eq!(status("Then $\\sqrt{2} \\approx 1.41$."), Status::Verified);
        assert_eq!(
            status("Then $\\frac{2}{3} = 0.67$ roughly."),
            Status::Verified
        );
        assert_eq!(
            status("Then $\\frac{2}{3} = 0.66$ (truncated)."),
            Status::Verified
        );
        assert_eq!(status("About 1000/3 = 333 people."), Status::Unknown);
        assert_eq!(status("\\[ x = 2 + 3 \\\\ &= 6 \\]"), Status::Refuted);
        assert_eq!(
            status("\\begin{align*} a &= 2 \\cdot 3 \\\\ &= 6 \\end{align*}"),
            Status::Verified
        );
    }

    #[test]
    fn never_refutes_what_is_not_asserted() {
        assert_eq!(status("We have $6c = 5$, so $c = 5/6$."), Status::Unknown);
        assert_eq!(
            status("If $2 + 2 = 5$ were true, we would get nonsense."),
            Status::Unknown
        );
        assert_eq!(status("Is $3 \\cdot 4 = 13$? No."), Status::Unknown);
        assert_eq!(
            status("194 ÷ 11 = 17 with a remainder of 9."),
            Status::Unknown
        );
        assert_eq!(status("20% of 50 = 10 apples."), Status::Verified);
        assert_eq!(status("20% of 50 = 12 apples."), Status::Refuted);
        assert_eq!(
            status("Then $25\\% \\text{ of } 80 = 20$."),
            Status::Verified
        );
        assert_eq!(status("He has 5 apples + 3 = 8 more."), Status::Unknown);
        assert_eq!(status("$129 \\equiv -3 \\pmod{11}$"), Status::Unknown);
        // A substitution is not an identity: `3x + 2 = 3(4) + 2` has different variables.
        assert_eq!(status("$y = 3x + 2 = 3(4) + 2 = 14$"), Status::Verified);
        assert_eq!(status("$f(g^{-1}(5)) = f(2) = 7$"), Status::Unknown);
    }

    #[test]
    fn identities_inside_chains() {
        assert_eq!(
            status("\\[ E = (t+2)(t-1) = t^2 + t - 2 \\]"),
            Status::Verified
        );
        assert_eq!(
            status("\\[ E = (t+2)(t-1) = t^2 - t - 2 \\]"),
            Status::Refuted
        );
        assert_eq!(
            status("\\[ a(a^2 - b + ab^2) = a^3 - ab + a^2b^2 \\]"),
            Status::Unknown
        );
        assert_eq!(
            status("\\[ x = a(a + b) \\\\ &= a^2 + ab \\]"),
            Status::Verified
        );
    }
}
