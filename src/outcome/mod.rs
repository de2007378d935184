//! The outcome checker: is the final answer of a solution mathematically equal to the
//! reference? Pure and synchronous (no tokio, axum or sqlx here), so it runs the same in the
//! HTTP service, the CLI and benchmarks, on any thread.
//!
//! Pipeline: [`extract`] finds the answer in a solution; [`lex`] and [`latex`] parse answer
//! text into an [`expr::Expr`]; [`answer`] (with [`forms`] for relations, intervals and
//! matrix arithmetic, [`sets`] for unions and differences of intervals) types it; [`equiv`]
//! decides equality, with [`eval`] doing exact (then
//! floating) arithmetic and [`units`] the units and number words; everything runs under a
//! [`budget::Budget`].

pub mod answer;
pub mod budget;
pub mod equiv;
pub mod eval;
pub mod expr;
pub mod extract;
pub mod forms;
pub mod latex;
pub mod lex;
pub mod sets;
pub mod units;

use answer::Answer;
pub use budget::Budget;
use budget::{BudgetError, Meter};
use equiv::Cmp;
pub use equiv::Options;
use serde::{Deserialize, Serialize};

/// Bumped whenever a change can alter a verdict; part of every cache key.
pub const ENGINE_VERSION: &str = "outcome-5";

/// Everything that decides a verify verdict, in a canonical JSON form; the store hashes it
/// into the cache key (DESIGN §3: kind, engine version, inputs, options, budget).
pub fn key_material(
    reference: &str,
    candidate: &str,
    mode: Mode,
    options: &Options,
    budget: &Budget,
) -> serde_json::Value {
    serde_json::json!([
        "verify",
        ENGINE_VERSION,
        reference,
        candidate,
        mode,
        options,
        budget
    ])
}

/// How to read the candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The candidate is a bare final answer.
    Answer,
    /// The candidate is a whole solution: extract its final answer first.
    Solution,
    /// Decide from the text (boxes, "answer" phrases, prose).
    #[default]
    Auto,
}

/// Why a verdict is what it is: a stable machine tag and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reason {
    /// One of `equal_exact`, `equal_symbolic`, `equal_numeric`, `equal_precision`,
    /// `equal_units`, `equal_text`, `not_equal`, `no_answer`, `unparseable`, `budget`.
    pub tag: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Verdict {
    pub equivalent: bool,
    /// The candidate's final answer as found (null when there is none).
    pub extracted: Option<String>,
    pub reason: Reason,
}

fn verdict(eq: bool, extracted: Option<String>, tag: &str, message: impl Into<String>) -> Verdict {
    Verdict {
        equivalent: eq,
        extracted,
        reason: Reason {
            tag: tag.to_string(),
            message: message.into(),
        },
    }
}

static REMARK: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"\\(?:text|textnormal|mbox)\{\s*\([^{}()]*[a-z]{3}[^{}()]*\)\s*\}").unwrap()
});

/// `\\frac` written with a doubled backslash (an escaping accident) is `\frac`.
fn undouble(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && b.get(i + 1) == Some(&b'\\')
            && b.get(i + 2).is_some_and(u8::is_ascii_alphabetic)
            && (i == 0 || b[i - 1] != b'\\')
        {
            i += 1;
            continue;
        }
        let ch = s[i..].chars().next().unwrap();
        out.push(ch);
        i += ch.len_utf8();
    }
    out
}

/// `1.6\text{E}{-19}`, `2\mathrm{e}{+5}`: E-notation written with TeX, as `1.6e-19`.
static TEX_E: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
    regex::Regex::new(r"(\d)\s*\\(?:text|mathrm|rm)\s*\{\s*[eE]\s*\}\s*(?:\{\s*([+-]?)\s*(\d+)\s*\}|([+-]?)(\d+))")
        .unwrap()
});

fn clean_answer(s: &str) -> String {
    let s = undouble(s).replace("\\\"", " ");
    let s = TEX_E.replace_all(&s, "${1}e${2}${4}${3}${5}");
    // `x = 2 \text{ (double root)}`: a parenthesised remark is not part of the answer.
    let s = REMARK.replace_all(&s, " ");
    let mut t = s.trim();
    loop {
        let before = t;
        t = t.trim_end_matches(['.', ',', ';', ' ', '\n']).trim();
        // `\boxed{\approx 3.14}`, `= 5`: a leading relation only introduces the value.
        for lead in ["\\approx", "≈", "="] {
            if let Some(rest) = t.strip_prefix(lead)
                && !rest.starts_with(|c: char| c.is_ascii_alphabetic())
            {
                t = rest.trim();
            }
        }
        t = t
            .strip_prefix("**")
            .and_then(|x| x.strip_suffix("**"))
            .unwrap_or(t);
        t = t
            .strip_prefix("$$")
            .and_then(|x| x.strip_suffix("$$"))
            .unwrap_or(t);
        t = t
            .strip_prefix('$')
            .and_then(|x| x.strip_suffix('$'))
            .unwrap_or(t);
        t = t.strip_suffix("\\end{align*}").unwrap_or(t).trim();
        if t == before {
            break;
        }
    }
    // A whole-answer box: `\boxed{...}`.
    if let Some(inner) = t.strip_prefix("\\boxed{").and_then(|x| x.strip_suffix('}'))
        && inner.matches('{').count() == inner.matches('}').count()
    {
        return clean_answer(inner);
    }
    t.to_string()
}

/// The reference's answer text: references are usually bare answers, but may be a whole
/// solution (with a box) as in MATH.
fn reference_text(r: &str) -> Option<String> {
    if extract::looks_like_solution(r) {
        extract::extract_with(r, true)
            .map(|x| x.0)
            .or_else(|| Some(r.to_string()))
    } else {
        Some(r.to_string())
    }
}

/// All readings of an answer (usually one; `1,22` is also 1.22; `1,000` also the list).
fn readings(text: &str, meter: &mut Meter) -> Result<Vec<Answer>, BudgetError> {
    let t = clean_answer(text);
    if t.len() > meter.budget.max_answer_len {
        return Err(BudgetError::TooLong {
            limit: meter.budget.max_answer_len,
        });
    }
    let mut out = Vec::new();
    if let Some(a) = answer::from_words(&t) {
        out.push(a);
    }
    // Plain words (`no`, `Even`) are also read as text, so `\text{No}` matches `no`.
    if t.len() >= 2 && t.chars().all(|c| c.is_ascii_alphabetic() || c == ' ') {
        out.push(Answer::Text(answer::plain_words(&t)));
    }
    let parse_one =
        |s: &str, meter: &mut Meter, out: &mut Vec<Answer>| -> Result<bool, BudgetError> {
            match latex::parse(s, meter) {
                Ok(e) => {
                    if e.size() > 20_000 {
                        return Err(BudgetError::TooLong {
                            limit: meter.budget.max_answer_len,
                        });
                    }
                    out.push(answer::classify(e, meter));
                    Ok(true)
                }
                Err(latex::ParseError::Budget(b)) => Err(b),
                Err(_) => Ok(false),
            }
        };
    let parsed = parse_one(&t, meter, &mut out)?;
    let prose = extract::has_prose(&t);
    // Prose around a number ("Soucis : 2,74 $"): also read the last number.
    let wordy = if parsed {
        out.iter().any(has_text)
    } else {
        out.is_empty()
    };
    if prose
        && wordy
        && let Some(n) = extract::last_number(&t)
    {
        parse_one(&n, meter, &mut out)?;
        if !n.contains(['.', ' ']) && n.matches(',').count() == 1 {
            parse_one(&n.replace(',', "."), meter, &mut out)?;
        }
    }
    // `(B) 5`, `\text{(B) } 5`: the choice letter is a reading too.
    if let Some((c, rest)) = choice_prefix(&t) {
        out.push(Answer::Choice(c));
        parse_one(&rest, meter, &mut out)?;
    }
    // Decimal comma (`1,22`, `0,111`, `1000,99`) as an alternative reading.
    let bare = t.trim_start_matches('-');
    if let Some((a, b)) = bare.split_once(',')
        && !a.is_empty()
        && !b.is_empty()
        && a.chars().all(|c| c.is_ascii_digit())
        && b.chars().all(|c| c.is_ascii_digit())
    {
        parse_one(&t.replace(',', "."), meter, &mut out)?;
        // `1,000`: also the list 1, 000 (never confused: both readings are kept).
        parse_one(&t.replace(',', ", "), meter, &mut out)?;
    }
    if out.is_empty() {
        // Unparseable: only an identical text (up to spacing and case) can match it.
        out.push(Answer::Text(
            t.split_whitespace().collect::<String>().to_lowercase(),
        ));
    }
    Ok(out)
}

/// A leading `(B)` / `\text{(B)}` / `B)` choice marker followed by more text.
fn choice_prefix(t: &str) -> Option<(char, String)> {
    let s = t.trim_start();
    let s = s
        .strip_prefix("\\text{")
        .or_else(|| s.strip_prefix("\\textbf{"))
        .or_else(|| s.strip_prefix("\\mathrm{"))
        .unwrap_or(s);
    let s = s.strip_prefix('(').unwrap_or(s);
    let mut cs = s.chars();
    let c = cs.next()?;
    let rest: String = cs.collect();
    if ('A'..='E').contains(&c) && rest.starts_with(')') && rest.len() > 1 {
        let rest = rest[1..]
            .trim_start()
            .trim_start_matches('}')
            .trim()
            .to_string();
        // `(C) + 1` is arithmetic on a letter, not a labelled choice.
        if rest.is_empty() || rest.starts_with(['+', '-', '*', '/', '^', '=']) {
            return None;
        }
        Some((c, rest))
    } else {
        None
    }
}

/// Signs that a solution was cut off: an unclosed box or an unfinished `<think>`.
fn truncated(s: &str) -> bool {
    (s.contains("<think>") && !s.contains("</think>"))
        || s.contains("\\boxed")
        || s.contains("\\fbox")
}

fn has_text(a: &Answer) -> bool {
    match a {
        Answer::Text(_) => true,
        Answer::Scalar(s) => {
            let mut t = false;
            s.expr.walk(&mut |e| t |= matches!(e, expr::Expr::Text(_)));
            t
        }
        Answer::Set(v) | Answer::Tuple(v, _) => v.iter().any(has_text),
        Answer::Ratio(v) => v.iter().any(|e| {
            let mut t = false;
            e.walk(&mut |x| t |= matches!(x, expr::Expr::Text(_)));
            t
        }),
        _ => false,
    }
}

fn budget_verdict(extracted: Option<String>, e: BudgetError) -> Verdict {
    verdict(false, extracted, "budget", format!("over budget: {e}"))
}

/// Compare a candidate (answer or solution) with a reference answer.
pub fn check(
    reference: &str,
    candidate: &str,
    mode: Mode,
    opts: &Options,
    budget: &Budget,
) -> Verdict {
    check_inner(reference, candidate, mode, opts, &mut Meter::new(*budget))
}

/// [`check`] under a clock of at most `clock`: `None` when that clock ran out first. The
/// clock is the only input that the budget's time changes (every other limit is a count),
/// so a check that finishes inside it gives the verdict [`check`] gives. The server runs
/// one-sample requests this way on its async threads, without the hop to a blocking
/// thread, and sends the few that need longer to the blocking pool.
pub fn check_within(
    reference: &str,
    candidate: &str,
    mode: Mode,
    opts: &Options,
    budget: &Budget,
    clock: std::time::Duration,
) -> Option<Verdict> {
    let mut meter = Meter::with_clock(*budget, clock);
    let v = check_inner(reference, candidate, mode, opts, &mut meter);
    (!meter.timed_out).then_some(v)
}

fn check_inner(
    reference: &str,
    candidate: &str,
    mode: Mode,
    opts: &Options,
    meter: &mut Meter,
) -> Verdict {
    let budget = meter.budget;
    for s in [reference, candidate] {
        if s.len() > budget.max_solution_len {
            return budget_verdict(
                None,
                BudgetError::TooLong {
                    limit: budget.max_solution_len,
                },
            );
        }
    }
    let Some(ref_text) = reference_text(reference) else {
        return verdict(false, None, "unparseable", "the reference has no answer");
    };
    let solution = match mode {
        Mode::Answer => false,
        Mode::Solution => true,
        Mode::Auto => extract::looks_like_solution(candidate),
    };
    let mut marked = false;
    let cand_text = if solution {
        match extract::extract(candidate) {
            Some((a, src)) => {
                use extract::Source as S;
                marked = matches!(src, S::Boxed | S::FinalAnswer | S::AnswerLine | S::Bold);
                a
            }
            // In auto mode a short text with no answer markers is read as the answer itself.
            None if mode == Mode::Auto && !truncated(candidate) => candidate.to_string(),
            None => {
                return verdict(
                    false,
                    None,
                    "no_answer",
                    "no final answer found (the solution may be truncated)",
                );
            }
        }
    } else {
        candidate.to_string()
    };
    let extracted = Some(clean_answer(&cand_text));
    if cand_text.trim().is_empty() {
        return verdict(false, None, "no_answer", "the candidate is empty");
    }
    let rs = match readings(&ref_text, meter) {
        Ok(r) => r,
        Err(e) => return budget_verdict(extracted, e),
    };
    let cs = match readings(&cand_text, meter) {
        Ok(r) => r,
        Err(e) => return budget_verdict(extracted, e),
    };
    tracing::debug!(reference = ?rs, candidate = ?cs, "readings");
    let mut ctx = equiv::Ctx { meter, opts: *opts };
    let mut saw_budget = false;
    for r in &rs {
        for c in &cs {
            match ctx.answers(r, c) {
                Cmp::Equal(how) => {
                    let msg = match how {
                        "exact" => "equal by exact arithmetic",
                        "symbolic" => {
                            "equal as expressions (identical at exact rational test points)"
                        }
                        "numeric" => {
                            "equal numerically (floating point, relative error below 1e-10)"
                        }
                        "precision" => "equal at the precision the decimal states",
                        "units" => "equal after unit conversion",
                        _ => "equal as text",
                    };
                    return verdict(true, extracted, &format!("equal_{how}"), msg);
                }
                Cmp::Budget => saw_budget = true,
                Cmp::NotEqual => {}
            }
        }
    }
    // A word answer stated in the closing sentence (`so the arrow ends up pointing north.`),
    // when the extraction found no marked answer (box, answer phrase, bold) to prefer.
    if solution
        && !marked
        && let [Answer::Text(words)] = rs.as_slice()
        && !words.is_empty()
        && let Some(tail) = extract::closing_words(candidate, words.split(' ').count())
        && answer::plain_words(&tail) == *words
    {
        return verdict(
            true,
            Some(tail),
            "equal_text",
            "the closing sentence states the word answer",
        );
    }
    if normalized(&clean_answer(&ref_text)) == normalized(extracted.as_deref().unwrap_or("")) {
        return verdict(
            true,
            extracted,
            "equal_text",
            "identical after normalisation",
        );
    }
    if saw_budget {
        return verdict(
            false,
            extracted,
            "budget",
            "could not be decided within the budget (size, exponent or time)",
        );
    }
    if rs.iter().chain(&cs).all(|a| matches!(a, Answer::Text(_))) {
        return verdict(false, extracted, "not_equal", "different text answers");
    }
    let (rk, ck) = (rs[0].kind(), cs[0].kind());
    if rk != ck {
        return verdict(
            false,
            extracted,
            "not_equal",
            format!("the reference is {rk}, the candidate {ck}"),
        );
    }
    verdict(
        false,
        extracted,
        "not_equal",
        format!("different values ({rk})"),
    )
}

/// Text for the last-resort identity test: `$` dropped, and whitespace dropped except between
/// two letters or digits (`2 3` must not become `23`).
fn normalized(s: &str) -> String {
    let cs: Vec<char> = s.chars().filter(|c| *c != '$').collect();
    let mut out = String::with_capacity(cs.len());
    for (i, c) in cs.iter().enumerate() {
        if c.is_whitespace() {
            let prev = out.chars().last();
            let next = cs[i + 1..].iter().find(|c| !c.is_whitespace());
            if let (Some(p), Some(n)) = (prev, next)
                && p.is_alphanumeric()
                && n.is_alphanumeric()
                && !out.ends_with(' ')
            {
                out.push(' ');
            }
            continue;
        }
        out.push(*c);
    }
    out
}
