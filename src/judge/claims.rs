//! Finding the claims written in a step: relation chains (`a = b = c`, `\\approx`, `<`,
//! `\\le`) in math spans, with align environments flattened, and plain-text arithmetic
//! such as `48/2 = 24`, trimmed where the words around a run make its ends part of a larger
//! expression (`20% of 50 = 10`, `= 17 with a remainder of 9`).

use std::sync::LazyLock;

use regex::Regex;

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
    /// Both members are links inside a chain headed by a name (`E = A = B`: `A = B`, or a
    /// `&= ...` line continuing `x = ...`), so with variables they assert an identity rather
    /// than pose an equation to solve.
    pub(super) identity: bool,
}

/// A bare name: one letter or a Greek letter, with an optional subscript or prime (`E`,
/// `x_1`, `S_{n}`, `\theta`, `y'`).
pub(super) fn is_name(head: &str) -> bool {
    static NAME: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(r"^(?:[A-Za-z]|\\[a-zA-Z]+)(?:_\{?[A-Za-z0-9]+\}?)?'*$").unwrap()
    });
    let h: String = head.split_whitespace().collect();
    NAME.is_match(&h)
}

/// Words and TeX between two relations that end one chain and start another
/// (`a = 2 \implies b = 3`, `x = 1, y = 2`, `a = 2 \text{ and } b = 3`): without the break
/// `2 \implies b` would be read as one member.
static BREAKS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(concat!(
        r"\\(?:implies|Rightarrow|Longrightarrow|iff|Leftrightarrow|Longleftrightarrow|therefore|because|quad|qquad)(?:[^A-Za-z]|$)",
        r"|\\(?:text|textrm|mbox)\{\s*(?:and|or|so|thus|then|hence|where|for|if|since|because|with|when|i\.e\.)\s*,?\s*\}",
        r"|;|,\s+",
    ))
    .unwrap()
});

/// Cut a line at [`BREAKS`] outside brackets.
fn segments(line: &str) -> Vec<String> {
    let b = line.as_bytes();
    let mut depth = vec![0i32; b.len() + 1];
    let mut d = 0;
    for (i, c) in b.iter().enumerate() {
        match c {
            b'{' | b'(' | b'[' => d += 1,
            b'}' | b')' | b']' => d -= 1,
            _ => {}
        }
        depth[i + 1] = d;
    }
    let mut out = Vec::new();
    let mut start = 0;
    for m in BREAKS.find_iter(line) {
        // `\;` is a thin space, not a separator.
        let escaped = m.as_str() == ";" && line[..m.start()].ends_with('\\');
        if depth[m.start()] != 0 || m.start() < start || escaped {
            continue;
        }
        out.push(line[start..m.start()].to_string());
        start = m.end();
        // The class `(?:[^A-Za-z]|$)` after a command may have eaten one character.
        if start > m.start() && !line.is_char_boundary(start) {
            start -= 1;
        }
    }
    out.push(line[start..].to_string());
    out
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
        // A candidate under test, not an assertion.
        "test",
        "try ",
        "trying",
        "check if",
        "check whether",
        "see if",
        "simplifies to",
    ];
    CUES.iter().any(|c| has_cue(&s, c))
}

/// `cue` in `s` at the start of a word (`test` in "we test", not in "greatest"; a cue that
/// starts with punctuation, like `(false)` or `?`, anywhere).
pub(super) fn has_cue(s: &str, cue: &str) -> bool {
    let word = cue.starts_with(|c: char| c.is_alphanumeric());
    s.match_indices(cue).any(|(i, _)| {
        !word
            || s[..i]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric())
    })
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
    let lines: Vec<String> = text
        .split("\\\\")
        .flat_map(|l| segments(&l.replace('&', " ")))
        .collect();
    for line in &lines {
        let (mut members, ops) = split_chain(line);
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
            let link = continued || (k >= 1 && members.len() >= 3);
            let identity = *op == RelOp::Eq && link;
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
    // `total × \( \frac14 = ... \)`, `$20\%$ of $\$4 = 0.2 \times \$4$`: a span that
    // continues the prose before it (an operator or "of") does not start with a whole member;
    // one that the prose after it continues does not end with one.
    let bw = p.before.to_lowercase();
    let aw = p.after.to_lowercase();
    if !out.is_empty() && continues_before(&bw, p.before_is_value) {
        out.remove(0);
    }
    if !out.is_empty() && continues_after(&aw) {
        out.pop();
    }
    out
}

/// The prose before a span ends in an operator, or in a word that takes an operand right
/// after a value (`$20\%$ of $...$`, `5 times $...$`; not "a constant term of $...$").
fn continues_before(w: &str, after_value: bool) -> bool {
    const WORDS: &[&str] = &[
        "of",
        "times",
        "by",
        "plus",
        "minus",
        "per",
        "over",
        "than",
        "multiplied",
        "divided",
        "x",
    ];
    w.ends_with(['×', '*', '+', '-', '/', '·', '÷', '^', '−'])
        || w.ends_with("\\times")
        || w.ends_with("\\cdot")
        || (after_value && WORDS.contains(&w.trim_matches(|c: char| !c.is_alphanumeric())))
}

/// The prose after a span starts with an operator or a word that continues the expression.
fn continues_after(w: &str) -> bool {
    const WORDS: &[&str] = &[
        "more",
        "less",
        "times",
        "of",
        "percent",
        "plus",
        "minus",
        "divided",
        "multiplied",
        "squared",
        "cubed",
        "fewer",
    ];
    w.starts_with(['×', '*', '+', '/', '·', '÷', '^'])
        || WORDS.contains(&w.trim_matches(|c: char| !c.is_alphanumeric()))
}

/// Every relation chain in some TeX: its members and relations, lines and segments apart.
pub(super) fn relations(text: &str) -> Vec<(Vec<String>, Vec<RelOp>)> {
    text.split("\\\\")
        .flat_map(|l| segments(&l.replace('&', " ")))
        .map(|seg| split_chain(&seg))
        .filter(|(_, ops)| !ops.is_empty())
        .collect()
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
