//! Steps of a solution: splitting a solution text into steps, and locating the math written
//! inside a step (math spans and plain-text arithmetic such as `48/2 = 24`).

use std::sync::LazyLock;

use regex::Regex;

use crate::outcome::extract::math_spans;

/// Split a whole solution into steps: paragraphs (blank-line separated), which is how
/// ProcessBench and most step-by-step prompts delimit them. Empty paragraphs are dropped.
pub fn split_solution(solution: &str) -> Vec<String> {
    step_ranges(solution)
        .into_iter()
        .map(|r| solution[r].replace("\r\n", "\n"))
        .collect()
}

/// Where each step of [`split_solution`] sits in `solution`, as byte ranges (trimmed): the
/// trainer maps these onto completion tokens, so its step spans are the judge's steps.
pub fn step_ranges(solution: &str) -> Vec<std::ops::Range<usize>> {
    // split on "\n\n" after CRLF -> LF, keeping where each byte came from
    let (mut norm, mut at) = (String::with_capacity(solution.len()), Vec::new());
    let bytes = solution.as_bytes();
    for (i, ch) in solution.char_indices() {
        if ch == '\r' && bytes.get(i + 1) == Some(&b'\n') {
            continue;
        }
        norm.push(ch);
        at.extend(std::iter::repeat_n(i, ch.len_utf8()));
    }
    at.push(solution.len());
    let mut out = Vec::new();
    let mut start = 0;
    for part in norm.split("\n\n") {
        let lead = part.len() - part.trim_start().len();
        let body = part.trim();
        if !body.is_empty() {
            let (a, b) = (start + lead, start + lead + body.len());
            // `b` is one past the last byte of a char; map that char's start, then step over it
            let last = at[b - 1];
            let end = last + solution[last..].chars().next().map_or(1, char::len_utf8);
            out.push(at[a]..end);
        }
        start += part.len() + 2;
    }
    out
}

/// A piece of math inside a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MathPiece {
    /// The math, as written (TeX for spans, plain text otherwise).
    pub text: String,
    /// The sentence around it (for cues such as "not" or "?").
    pub sentence: String,
    /// True for `$...$`-style spans, false for plain-text arithmetic.
    pub tex: bool,
    /// For plain-text runs: the word just before and just after (`of 40 = 20` reads
    /// differently from `is 40 = 20`).
    pub before: String,
    pub after: String,
    /// For math spans: the word before the span itself follows a value (a math span, a
    /// number, a percent), as in `$20\%$ of $...$`.
    pub before_is_value: bool,
    /// The run touches a letter on either side (`1st - 5 = 6th`): its ends are not numbers.
    pub glued: bool,
}

/// How far a sentence reaches on either side of a piece of math. Cues further away say
/// nothing about it, and the bound keeps a step of thousands of spans with no full stop
/// linear in time and memory (each piece keeps its own copy of its sentence).
const SENTENCE_REACH: usize = 300;

/// The sentence of `s` around byte range `a..b`, at most [`SENTENCE_REACH`] bytes each side.
fn sentence_around(s: &str, a: usize, b: usize) -> String {
    let is_end = |c: char| matches!(c, '.' | '!' | '?' | '\n');
    let mut lo = a.saturating_sub(SENTENCE_REACH);
    while !s.is_char_boundary(lo) {
        lo += 1;
    }
    let mut hi = (b + SENTENCE_REACH).min(s.len());
    while !s.is_char_boundary(hi) {
        hi -= 1;
    }
    let start = s[lo..a]
        .char_indices()
        .rev()
        .find(|(i, c)| is_end(*c) && !s[lo + i + 1..].starts_with(|d: char| d.is_ascii_digit()))
        .map(|(i, _)| lo + i + 1)
        .unwrap_or(lo);
    let end = s[b..hi]
        .char_indices()
        .find(|(i, c)| is_end(*c) && !s[b + i + 1..].starts_with(|d: char| d.is_ascii_digit()))
        .map(|(i, _)| b + i + 1)
        .unwrap_or(hi);
    s[start..end].to_string()
}

/// The prose right before byte `a` and right after byte `b` (the word, or the operator, a
/// math span continues: `total × \( \frac14 = ... \)`, `$20\%$ of $\$4 = ...$`).
fn neighbours(s: &str, a: usize, b: usize) -> (String, String, bool) {
    // A bounded window on each side, so that many spans cost linear time.
    let mut lo = a.saturating_sub(64);
    while !s.is_char_boundary(lo) {
        lo += 1;
    }
    let mut hi = (b + 64).min(s.len());
    while !s.is_char_boundary(hi) {
        hi -= 1;
    }
    let before = s[lo..a].trim_end();
    let after = s[b..hi].trim_start();
    let mut words = before.rsplit(char::is_whitespace);
    let w = words.next().unwrap_or("");
    let value = words
        .next()
        .is_some_and(|p| p.ends_with(['$', ')', '%']) || p.ends_with(|c: char| c.is_ascii_digit()));
    let next = after.split(char::is_whitespace).next().unwrap_or("");
    (w.to_string(), next.to_string(), value)
}

/// Math spans of a step, and the plain text between them (each span replaced by a marker so
/// plain-text runs never reach across it).
pub fn locate(step: &str) -> (Vec<MathPiece>, String) {
    let mut pieces = Vec::new();
    let mut plain = String::with_capacity(step.len());
    let mut last = 0;
    for (a, b, inner) in math_spans(step) {
        // `$3.5 * 4000 = $14,000`: a `$` right before a digit is a currency sign, so this
        // "span" is plain text.
        if step[..b].ends_with('$')
            && !step[..b].ends_with("$$")
            && step[b..].starts_with(|c: char| c.is_ascii_digit())
        {
            continue;
        }
        plain.push_str(&step[last..a]);
        plain.push_str(" \u{2016} ");
        last = b;
        let (before, after, before_is_value) = neighbours(step, a, b);
        pieces.push(MathPiece {
            text: inner,
            sentence: sentence_around(step, a, b),
            tex: true,
            before,
            after,
            before_is_value,
            glued: false,
        });
    }
    plain.push_str(&step[last..]);
    // Display environments written without `$`/`\[` delimiters.
    let mut rest = String::with_capacity(plain.len());
    let mut last = 0;
    for m in ENV.captures_iter(&plain) {
        let whole = m.get(0).unwrap();
        rest.push_str(&plain[last..whole.start()]);
        rest.push_str(" \u{2016} ");
        last = whole.end();
        pieces.push(MathPiece {
            text: m[1].to_string(),
            sentence: sentence_around(&plain, whole.start(), whole.end()),
            tex: true,
            before: String::new(),
            after: String::new(),
            before_is_value: false,
            glued: false,
        });
    }
    rest.push_str(&plain[last..]);
    (pieces, rest)
}

static ENV: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)\\begin\{(?:align|aligned|equation|eqnarray|gather)\*?\}(.*?)\\end\{(?:align|aligned|equation|eqnarray|gather)\*?\}")
        .unwrap()
});

/// Plain-text arithmetic chains in `plain` (text outside math spans): maximal runs of
/// numbers, operators and `=` / `≈`, with the sentence around each.
pub fn plain_chains(plain: &str) -> Vec<MathPiece> {
    let cs: Vec<(usize, char)> = plain.char_indices().collect();
    let allowed = |c: char| c.is_ascii_digit() || " .,$%+-*/×÷^()=≈x√²³−·".contains(c);
    let mut out = Vec::new();
    let mut i = 0;
    while i < cs.len() {
        if !allowed(cs[i].1) || cs[i].1 == 'x' {
            i += 1;
            continue;
        }
        let st = i;
        while i < cs.len() && allowed(cs[i].1) && (cs[i].1 != 'x' || times_x(&cs, i)) {
            i += 1;
        }
        let a = cs[st].0;
        let b = if i < cs.len() { cs[i].0 } else { plain.len() };
        let run = plain[a..b].trim_end_matches([',', '.', ' ']);
        let mut run_t = run.trim_start();
        // A markdown bullet `- 6 = 2 * 3` at the start of a line is not a minus sign.
        let line_start = plain[..a + (run.len() - run_t.len())]
            .trim_end_matches([' ', '\t'])
            .ends_with('\n')
            || plain[..a].trim().is_empty();
        if line_start
            && (run_t.starts_with("- ") || run_t.starts_with("* ") || run_t.starts_with("+ "))
        {
            run_t = run_t[2..].trim_start();
        }
        // A list enumerator `2. ` before the arithmetic is not part of it.
        if let Some(k) = run_t.find(". ")
            && run_t[..k].chars().all(|c| c.is_ascii_digit())
            && k > 0
        {
            run_t = run_t[k + 2..].trim_start();
        }
        if (run_t.contains('=') || run_t.contains('≈')) && run_t.chars().any(|c| c.is_ascii_digit())
        {
            let a2 = a + (run.len() - run_t.len());
            let before = plain[..a2].trim_end();
            let after = plain[a2 + run_t.len()..].trim_start();
            // `3 x 4` is a product.
            let text: String = run_t
                .char_indices()
                .map(|(k, c)| {
                    // Binary search: a linear scan per character is quadratic in the run.
                    let idx = cs.binary_search_by_key(&(a2 + k), |p| p.0).unwrap_or(0);
                    if c == 'x' && times_x(&cs, idx) {
                        '*'
                    } else {
                        c
                    }
                })
                .collect();
            out.push(MathPiece {
                text,
                sentence: sentence_around(plain, a2, a2 + run_t.len()),
                tex: false,
                before: last_word(before),
                after: first_word(after),
                before_is_value: false,
                glued: plain[..a2].ends_with(|c: char| c.is_alphabetic())
                    || plain[a2 + run_t.len()..].starts_with(|c: char| c.is_alphabetic()),
            });
        }
    }
    out
}

/// `x` as a multiplication sign: between two numbers (`3 x 4`, `3x4`).
fn times_x(cs: &[(usize, char)], i: usize) -> bool {
    let prev = cs[..i].iter().rev().find(|c| c.1 != ' ').map(|c| c.1);
    let next = cs[i + 1..].iter().find(|c| c.1 != ' ').map(|c| c.1);
    prev.is_some_and(|c| c.is_ascii_digit() || c == ')')
        && next.is_some_and(|c| c.is_ascii_digit() || c == '(' || c == '$')
}

fn last_word(s: &str) -> String {
    s.rsplit(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("")
        .to_string()
}

fn first_word(s: &str) -> String {
    s.split(|c: char| c.is_whitespace())
        .next()
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_ranges_are_the_split_steps() {
        for text in [
            "First, $2+2=4$.\n\nThen 48/2 = 24 clips.\n\n\n",
            "\r\n\r\n  Ünïcode ½ step\r\nsame step é\r\n\r\n\r\nnext → 3 \n \n\nlast",
            "",
            "\n\n\n",
            "one",
        ] {
            let old: Vec<String> = text
                .replace("\r\n", "\n")
                .split("\n\n")
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(String::from)
                .collect();
            let ranges = step_ranges(text);
            let got: Vec<String> = ranges
                .iter()
                .map(|r| text[r.clone()].replace("\r\n", "\n"))
                .collect();
            assert_eq!(got, old, "{text:?}");
            assert_eq!(split_solution(text), old);
        }
    }

    #[test]
    fn splits_paragraphs_and_finds_math() {
        let steps = split_solution("First, $2+2=4$.\n\nThen 48/2 = 24 clips.\n\n\n");
        assert_eq!(steps.len(), 2);
        let (pieces, plain) = locate(&steps[0]);
        assert_eq!(pieces[0].text, "2+2=4");
        assert!(plain.contains('\u{2016}'));
        let chains = plain_chains(&locate(&steps[1]).1);
        assert_eq!(chains.len(), 1);
        assert_eq!(chains[0].text, "48/2 = 24");
        assert_eq!(chains[0].before, "Then");
        assert_eq!(chains[0].after, "clips.");
        let chains = plain_chains("so 3 x 4 = 12 and six = 6");
        assert!(chains[0].text.contains("3 * 4 = 12"));
    }
}
