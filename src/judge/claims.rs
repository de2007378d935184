//! Finding the claims written in a step: relation chains (`a = b = c`, `\\approx`, `<`,
//! `\\le`) in math spans, with align environments flattened, and plain-text arithmetic
//! such as `48/2 = 24`, trimmed where the words around a run make its ends part of a larger
//! expression (`20% of 50 = 10`, `= 17 with a remainder of 9`).

use crate::outcome::expr::RelOp;
use crate::steps::MathPiece;

/// One relation between two members of a chain, as written.
#[derive(Debug, Clone)]
pub(super) struct Claim {
    pub(super) lhs: String,
    pub(super) rhs: String,
    pub(super) op: RelOp,
    /// Claims in a sentence with a negation cue are never refuted.
    pub(super) guarded: bool,
    /// Both members are links inside a chain (`x = A = B`: `A = B`), so with variables they
    /// assert an identity rather than pose an equation.
    pub(super) identity: bool,
}

/// Words that make a sentence's equations not plain assertions.
fn guarded(sentence: &str) -> bool {
    let s = sentence.to_lowercase();
    const CUES: &[&str] = &[
        "not ",
        "n't",
        "\\neq",
        "\\ne ",
        "≠",
        "?",
        "false",
        "incorrect",
        "wrong",
        "mistake",
        "contradict",
        "impossible",
        "invalid",
        "error",
        "instead",
        "suppose",
        "assume",
        "if we",
        "would",
        "should be",
        "correct",
        "recheck",
        "re-evaluat",
        "reconsider",
        "typo",
        "actually",
    ];
    CUES.iter().any(|c| s.contains(c))
}

const RELS: &[(&str, RelOp)] = &[
    ("\\approx", RelOp::Approx),
    ("\\leq", RelOp::Le),
    ("\\geq", RelOp::Ge),
    ("\\le", RelOp::Le),
    ("\\ge", RelOp::Ge),
    ("\\neq", RelOp::Ne),
    ("\\ne", RelOp::Ne),
    ("≈", RelOp::Approx),
    ("=", RelOp::Eq),
    ("<", RelOp::Lt),
    (">", RelOp::Gt),
];

/// Split `text` at relations outside brackets: members and the relations between them.
fn split_chain(text: &str) -> (Vec<String>, Vec<RelOp>) {
    let b = text.as_bytes();
    let mut members = Vec::new();
    let mut ops = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    let mut i = 0;
    'scan: while i < b.len() {
        match b[i] {
            b'{' | b'(' | b'[' => depth += 1,
            b'}' | b')' | b']' => depth -= 1,
            _ => {}
        }
        if depth == 0 {
            for (tok, op) in RELS {
                if text[i..].starts_with(tok)
                    && !(tok.starts_with('\\')
                        && text[i + tok.len()..].starts_with(|c: char| c.is_ascii_alphabetic()))
                {
                    members.push(text[start..i].to_string());
                    ops.push(*op);
                    i += tok.len();
                    start = i;
                    continue 'scan;
                }
            }
        }
        i += text[i..].chars().next().map(char::len_utf8).unwrap_or(1);
    }
    members.push(text[start..].to_string());
    (members, ops)
}

/// Claims in a math span: align environments are flattened, `&= ...` lines continue the
/// chain above them.
pub(super) fn tex_claims(p: &MathPiece) -> Vec<Claim> {
    let g = guarded(&p.sentence);
    if p.text.contains("\\pmod") || p.text.contains("\\mod") || p.text.contains("\\equiv") {
        return vec![];
    }
    let mut text = p.text.clone();
    for env in [
        "align*",
        "align",
        "aligned",
        "eqnarray*",
        "eqnarray",
        "gather*",
        "gather",
        "split",
        "cases",
    ] {
        text = text
            .replace(&format!("\\begin{{{env}}}"), " ")
            .replace(&format!("\\end{{{env}}}"), " ");
    }
    let mut out = Vec::new();
    let mut prev_last: Option<String> = None;
    for line in text.split("\\\\") {
        let line = line.replace('&', " ");
        let (mut members, ops) = split_chain(&line);
        if ops.is_empty() {
            prev_last = Some(members.pop().unwrap_or_default());
            continue;
        }
        // A line that starts with a relation continues the previous line's chain.
        let continued = members[0].trim().is_empty();
        if continued {
            match &prev_last {
                Some(p) => members[0] = p.clone(),
                None => {
                    prev_last = members.last().cloned();
                    continue;
                }
            }
        }
        for (k, op) in ops.iter().enumerate() {
            let identity = *op == RelOp::Eq && (continued || (k >= 1 && members.len() >= 3));
            out.push(Claim {
                lhs: members[k].clone(),
                rhs: members[k + 1].clone(),
                op: *op,
                guarded: g,
                identity,
            });
        }
        prev_last = members.last().cloned();
    }
    out
}

/// Words before a plain-text run that make its first number part of a larger expression.
const BEFORE_DENY: &[&str] = &[
    "of",
    "times",
    "by",
    "plus",
    "minus",
    "per",
    "over",
    "from",
    "than",
    "each",
    "every",
    "and",
    "to",
    "with",
    "into",
    "x",
    "multiplied",
    "divided",
    "add",
    "subtract",
    "remaining",
    "extra",
];
/// Words after a run that make its last number part of a larger expression.
const AFTER_DENY: &[&str] = &[
    "more",
    "less",
    "times",
    "of",
    "percent",
    "remainder",
    "with",
    "r",
    "fewer",
    "greater",
    "x",
    "to",
    "per",
    "plus",
    "minus",
    "divided",
    "multiplied",
    "squared",
    "cubed",
    "dozen",
    "hundred",
    "thousand",
    "million",
    "billion",
    "and",
];

/// Claims in a plain-text run like `48/2 = 24`.
pub(super) fn plain_claims(p: &MathPiece) -> Vec<Claim> {
    let g = guarded(&p.sentence);
    if p.glued {
        return vec![];
    }
    let (mut members, mut ops) = split_chain(&p.text);
    if ops.is_empty() {
        return vec![];
    }
    let bw = p.before.to_lowercase();
    let bw = bw.trim_matches(|c: char| !c.is_alphanumeric());
    let aw = p.after.to_lowercase();
    let aw = aw.trim_matches(|c: char| !c.is_alphanumeric());
    // `apples - 5 = ...`: after a word, even `-` is a binary operator of a larger expression.
    let after_word = bw.chars().any(|c| c.is_alphabetic());
    let starts_binary = members[0]
        .trim_start()
        .starts_with(['+', '*', '/', '×', '÷', '^'])
        || (after_word && members[0].trim_start().starts_with('-'));
    if starts_binary || BEFORE_DENY.contains(&bw) || members[0].trim().is_empty() {
        members.remove(0);
        ops.remove(0);
    }
    if !ops.is_empty()
        && (AFTER_DENY.contains(&aw) || members.last().is_some_and(|m| m.trim().is_empty()))
    {
        members.pop();
        ops.pop();
    }
    ops.iter()
        .enumerate()
        .map(|(k, op)| Claim {
            lhs: members[k].clone(),
            rhs: members[k + 1].clone(),
            op: *op,
            guarded: g,
            identity: false,
        })
        .collect()
}
