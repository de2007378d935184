//! Finding the final answer in a whole solution.
//!
//! Order of evidence: the last brace-matched `\boxed{}` / `\fbox{}` (adjacent boxes joined
//! when only connectors separate them), then "final answer is ...", then `Answer:` lines and
//! bold answers, then the last math span, then the last number. Text after `</think>` wins
//! over text inside it; an unclosed `<think>` or an unclosed last `\boxed{` means the
//! solution was cut off and has no answer.

use std::sync::LazyLock;

use regex::Regex;

/// Where an answer was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Boxed,
    FinalAnswer,
    AnswerLine,
    Bold,
    MathSpan,
    LastNumber,
    Whole,
}

/// End-of-turn markers: anything after them is another turn, not this solution.
const TURN_MARKERS: &[&str] = &[
    "<|im_start|>",
    "<|im_end|>",
    "<|eot_id|>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<｜end▁of▁sentence｜>",
    "</s>",
];

/// The part of a model output that holds its final answer.
fn answer_region(s: &str) -> Option<&str> {
    let mut s = s;
    for m in TURN_MARKERS {
        if let Some(k) = s.find(m)
            && !s[..k].trim().is_empty()
        {
            s = &s[..k];
        }
    }
    if let Some(k) = s.rfind("</think>") {
        let after = &s[k + "</think>".len()..];
        if !after.trim().is_empty() {
            return Some(after);
        }
        return Some(&s[..k]);
    }
    if s.contains("<think>") {
        return None; // thinking never finished
    }
    Some(s)
}

/// All complete `\boxed{...}` / `\fbox{...}` contents with their byte spans; `None` when the
/// last one is unterminated.
fn boxes(s: &str) -> Option<Vec<(usize, usize, String)>> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(k) = find_box(s, i) {
        let (start, open) = k;
        let mut j = open;
        if b.get(j) == Some(&b'{') {
            let mut depth = 0i32;
            let mut end = None;
            while j < b.len() {
                match b[j] {
                    b'{' => depth += 1,
                    b'}' => {
                        depth -= 1;
                        if depth == 0 {
                            end = Some(j);
                            break;
                        }
                    }
                    b'\\' => j += 1,
                    _ => {}
                }
                j += 1;
            }
            match end {
                Some(e) => {
                    out.push((start, e + 1, s[open + 1..e].to_string()));
                    i = e + 1;
                }
                None => return None,
            }
        } else {
            // `\boxed 5`: the next token.
            let rest = &s[open..];
            let tok: String = rest
                .trim_start()
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '$')
                .collect();
            let skip = rest.len() - rest.trim_start().len();
            if !tok.is_empty() {
                out.push((start, open + skip + tok.len(), tok.clone()));
            }
            i = open + skip + tok.len().max(1);
        }
    }
    Some(out)
}

fn find_box(s: &str, from: usize) -> Option<(usize, usize)> {
    let r = s.get(from..)?;
    let a = r.find("\\boxed").map(|k| (k, 6));
    let f = r.find("\\fbox").map(|k| (k, 5));
    let (k, len) = match (a, f) {
        (Some(x), Some(y)) => {
            if x.0 < y.0 {
                x
            } else {
                y
            }
        }
        (Some(x), None) | (None, Some(x)) => x,
        (None, None) => return None,
    };
    let mut open = from + k + len;
    while s.as_bytes().get(open) == Some(&b' ') && s.as_bytes().get(open + 1) == Some(&b'{') {
        open += 1;
    }
    Some((from + k, open))
}

/// Text between two boxes that still reads as one answer: short, and either a connector
/// ("and", ",", "or", `\quad`) or no words at all. "\boxed{1} no no no \boxed{2}" is two.
fn joins(gap: &str) -> bool {
    if gap.len() > 48 || gap.contains('\n') && gap.trim().contains("\n\n") {
        return false;
    }
    let cleaned = gap
        .replace("\\text", " ")
        .replace("\\quad", " ")
        .replace("\\qquad", " ")
        .replace(['$', '{', '}', '\\', '(', ')', '[', ']'], " ");
    let words: Vec<&str> = cleaned
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .collect();
    if words.is_empty() {
        return !cleaned.contains('.');
    }
    words
        .iter()
        .any(|w| matches!(w.to_ascii_lowercase().as_str(), "and" | "or"))
}

/// Text between two math spans that lists them as one answer: a comma, `and`, `or`, or
/// both, and nothing else (`$1$, $4$, or $9$`; not `$a = 2$, so $b = 3$`).
fn joins_spans(gap: &str) -> bool {
    let g = gap.trim();
    if g.is_empty() || g.len() > 12 {
        return false;
    }
    let words: Vec<&str> = g
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect();
    match words.as_slice() {
        [] => g.contains(','),
        [w] => matches!(*w, "and" | "or"),
        _ => false,
    }
}

static FINAL_IS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)final answer\s*(?:is|:)\s*[:\s]*|(?m)^\s*####\s*").unwrap());
static ANSWER_IS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:the )?answer is[:\s]+|(?m)^\s*\**\s*answer\s*\**\s*:\s*\**|答案[是为：:]\s*",
    )
    .unwrap()
});
static CONCLUDE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(?:therefore|thus|hence|so|in total|altogether|in all|the result is|we get)\b",
    )
    .unwrap()
});
static BOLD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\*\*([^*\n]{1,80})\*\*").unwrap());
static MATH: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|\$((?:[^$\\]|\\.)+?)\$").unwrap()
});
static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"-?\d[\d,]*(?:\.\d+)?(?:[eE][+-]?\d+\b)?(?:\s*/\s*\d+)?%?").unwrap()
});
static HOPE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i)\.?\s*(?:I hope|Hope this|This is the|Please let|\n\n|\[Note|Note:)").unwrap()
});

/// The answer text after a "final answer is" / "answer:" phrase.
fn after_phrase(s: &str, at: usize) -> Option<String> {
    let rest = &s[at..];
    let end = HOPE.find(rest).map(|m| m.start()).unwrap_or(rest.len());
    let mut t = rest[..end].trim().to_string();
    // "The volume of $V$ is 120." -> "120"
    if let Some(k) = t.rfind(" is ")
        && !t[..k].contains('=')
        && t[..k].matches('$').count().is_multiple_of(2)
    {
        t = t[k + 4..].to_string();
    }
    // `**Answer: 42**`: the bold markers around the whole line are not part of the answer.
    let t = t
        .trim()
        .trim_matches('*')
        .trim()
        .trim_end_matches(['.', ',', ';', '。', '，'])
        .trim();
    if t.is_empty() {
        return None;
    }
    // Prefer the math inside the phrase when there is exactly one span of it.
    let spans: Vec<String> = MATH.captures_iter(t).map(|c| span_text(&c)).collect();
    if spans.len() == 1 && t.trim_start().starts_with(['$', '\\']) {
        return Some(spans[0].clone());
    }
    if let Some(b) = boxes(t).and_then(|b| b.last().map(|x| x.2.clone())) {
        return Some(b);
    }
    Some(t.to_string())
}

fn span_text(c: &regex::Captures<'_>) -> String {
    (1..=4)
        .find_map(|i| c.get(i))
        .map(|m| m.as_str().trim().to_string())
        .unwrap_or_default()
}

/// Find the final answer of a solution. `None` means the solution has no answer.
pub fn extract(solution: &str) -> Option<(String, Source)> {
    extract_with(solution, false)
}

/// As [`extract`]; `lenient` (used for references) takes an unterminated last box's text
/// instead of declaring the solution truncated.
pub fn extract_with(solution: &str, lenient: bool) -> Option<(String, Source)> {
    let s = answer_region(solution)?;
    // 1. Boxes.
    let bx = match boxes(s) {
        Some(b) => b,
        None if lenient => {
            let (start, open) = last_box_start(s)?;
            let _ = start;
            return Some((s[open..].trim_start_matches('{').to_string(), Source::Boxed));
        }
        None => return None,
    };
    let final_phrase = FINAL_IS.find_iter(s).last();
    if let Some(last) = bx.last() {
        // A "final answer is" written after the last box overrides it.
        let phrase_later = final_phrase.is_some_and(|m| m.start() > last.1);
        if !phrase_later {
            let mut parts = vec![last.2.clone()];
            let mut k = bx.len() - 1;
            while k > 0 && joins(&s[bx[k - 1].1..bx[k].0]) {
                k -= 1;
                parts.insert(0, bx[k].2.clone());
            }
            return Some((parts.join(", "), Source::Boxed));
        }
    }
    // 2. "final answer is".
    if let Some(m) = final_phrase
        && let Some(a) = after_phrase(s, m.end())
    {
        return Some((a, Source::FinalAnswer));
    }
    // 3. "the answer is", "Answer:".
    if let Some(m) = ANSWER_IS.find_iter(s).last()
        && let Some(a) = after_phrase(s, m.end())
    {
        return Some((a, Source::AnswerLine));
    }
    // 4. A bold answer near the end.
    if let Some(c) = BOLD.captures_iter(s).last() {
        let m = c.get(0).unwrap();
        if s.len() - m.end() < 200 {
            let inner = c[1].trim().trim_end_matches([':', '.']);
            if !inner.is_empty()
                && !inner.to_ascii_lowercase().contains("answer")
                && !inner.to_ascii_lowercase().contains("step")
            {
                return Some((inner.to_string(), Source::Bold));
            }
        }
    }
    // 5. The last math span, unless a concluding sentence after it states a number
    //    ("... $d = 90/n$ ... Therefore, there are 12 sequences.").
    let spans = math_spans(s);
    if let Some(last) = spans.last() {
        let tail = &s[last.1..];
        if let Some(k) = CONCLUDE.find_iter(tail).last()
            && let Some(n) = last_number(&tail[k.end()..])
        {
            return Some((n, Source::LastNumber));
        }
        // `so $x = 1$, $x = 4$, or $x = 9$.`: spans joined only by connectors are one answer.
        let mut k = spans.len() - 1;
        while k > 0 && joins_spans(&s[spans[k - 1].1..spans[k].0]) {
            k -= 1;
        }
        let parts: Vec<&str> = spans[k..]
            .iter()
            .map(|x| x.2.as_str())
            .filter(|t| !t.is_empty())
            .collect();
        if !parts.is_empty() {
            return Some((parts.join(", "), Source::MathSpan));
        }
    }
    // 6. The last number.
    last_number(s).map(|n| (n, Source::LastNumber))
}

fn last_box_start(s: &str) -> Option<(usize, usize)> {
    let mut at = None;
    let mut i = 0;
    while let Some(k) = find_box(s, i) {
        at = Some(k);
        i = k.1;
    }
    at
}

/// Every math span (`$..$`, `$$..$$`, `\(..\)`, `\[..\]`) as (start, end, inner text).
pub fn math_spans(s: &str) -> Vec<(usize, usize, String)> {
    MATH.captures_iter(s)
        .map(|c| {
            let m = c.get(0).unwrap();
            (m.start(), m.end(), span_text(&c))
        })
        .collect()
}

/// The closing sentence's last `n` words, for a reference that is a word answer (`so the
/// arrow ends up pointing north.`); `None` when that sentence negates (`not north`) or holds
/// math, where the word is not the answer.
pub fn closing_words(solution: &str, n: usize) -> Option<String> {
    let s = answer_region(solution)?.trim();
    let s = s.trim_end_matches(['.', '!', ' ', '\n', '*']);
    let start = s
        .rfind(['.', '!', '?', '\n', ':'])
        .map(|k| k + 1)
        .unwrap_or(0);
    let sentence = &s[start..];
    if sentence.len() > 300 {
        return None;
    }
    // Only the prose after the sentence's last math span can hold the word answer.
    let prose = match math_spans(sentence).last() {
        Some(m) => &sentence[m.1..],
        None => sentence,
    };
    if prose.contains(['$', '\\']) {
        return None;
    }
    let all: Vec<String> = sentence
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_ascii_lowercase()
        })
        .collect();
    let words: Vec<String> = prose
        .split_whitespace()
        .map(|w| {
            w.trim_matches(|c: char| !c.is_alphanumeric())
                .to_ascii_lowercase()
        })
        .filter(|w| !w.is_empty())
        .collect();
    const NEGATIONS: &[&str] = &["not", "no", "never", "neither", "nor", "instead", "rather"];
    if all
        .iter()
        .any(|w| NEGATIONS.contains(&w.as_str()) || w.ends_with("n't"))
        || words.len() < n + 1
    {
        return None;
    }
    Some(words[words.len() - n..].join(" "))
}

/// The last number written in prose ("... is 1,000.99€" -> "1,000.99").
pub fn last_number(s: &str) -> Option<String> {
    NUMBER
        .find_iter(s)
        .last()
        .map(|m| m.as_str().trim_end_matches(',').to_string())
}

/// Does this text read as a whole solution (rather than a bare answer)? Boxes, "answer"
/// phrases, thinking tags, or prose: a word of three or more letters outside math and
/// `\text{}` that is not a unit, a number word, a function or a connector.
pub fn looks_like_solution(s: &str) -> bool {
    if s.contains("\\boxed")
        || s.contains("\\fbox")
        || s.contains("</think>")
        || s.contains("<think>")
    {
        return true;
    }
    let lower = s.to_ascii_lowercase();
    if lower.contains("answer") || s.contains("答案") {
        return true;
    }
    has_prose(&MATH.replace_all(s, " "))
}

/// Is there a prose word in the text (outside TeX commands and their braced arguments)?
pub fn has_prose(s: &str) -> bool {
    const NOT_PROSE: &[&str] = &[
        "and",
        "sin",
        "cos",
        "tan",
        "sec",
        "csc",
        "cot",
        "log",
        "exp",
        "sqrt",
        "frac",
        "pmatrix",
        "bmatrix",
        "matrix",
        "array",
        "begin",
        "end",
        "infty",
        "infinity",
        "pct",
        "percent",
        "percentage",
        "arcsin",
        "arccos",
        "arctan",
        "sinh",
        "cosh",
        "tanh",
        "gcd",
        "lcm",
        "max",
        "min",
        "det",
    ];
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' {
            // Skip a command and, for text commands, its argument.
            let st = i + 1;
            i += 1;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            let name = &s[st..i];
            if (name.starts_with("text")
                || name.starts_with("math")
                || name == "mbox"
                || name == "operatorname")
                && b.get(i) == Some(&b'{')
            {
                let mut depth = 0;
                while i < b.len() {
                    match b[i] {
                        b'{' => depth += 1,
                        b'}' => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                        }
                        _ => {}
                    }
                    i += 1;
                }
            }
            i += 1;
            continue;
        }
        if b[i].is_ascii_alphabetic() {
            let st = i;
            while i < b.len() && b[i].is_ascii_alphabetic() {
                i += 1;
            }
            let w = &s[st..i];
            // Glued to digits or brackets (`1orW(x)`, `2x`) is algebra, not prose.
            let glued = (st > 0
                && (b[st - 1].is_ascii_digit() || b[st - 1] == b')' || b[st - 1] == b'('))
                || b.get(i)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'(' || *c == b'_' || *c == b'^');
            let lw = w.to_ascii_lowercase();
            if w.len() >= 3
                && !glued
                && !NOT_PROSE.contains(&lw.as_str())
                && super::units::lookup(w).is_none()
                && super::units::number_word(&lw).is_none()
            {
                return true;
            }
            continue;
        }
        i += 1;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_brace_matched_and_joined_by_connectors() {
        assert_eq!(
            extract("so \\boxed{\\frac{1}{2}}.").unwrap().0,
            "\\frac{1}{2}"
        );
        assert_eq!(extract("\\boxed{1} and \\boxed{2}").unwrap().0, "1, 2");
        assert_eq!(extract("\\boxed{1} no no no \\boxed{2}").unwrap().0, "2");
        assert_eq!(
            extract("\\fbox{7}").unwrap(),
            ("7".to_string(), Source::Boxed)
        );
        assert_eq!(
            extract("\\boxed 5$"),
            Some(("5".to_string(), Source::Boxed))
        );
        assert_eq!(extract("x = \\boxed{3"), None);
    }

    #[test]
    fn thinking_and_turn_markers() {
        assert_eq!(
            extract("<think>\\boxed{1}</think> then \\boxed{2}")
                .unwrap()
                .0,
            "2"
        );
        assert_eq!(extract("<think>maybe \\boxed{1}"), None);
        assert_eq!(extract("it is 4. <|im_start|>user say 5").unwrap().0, "4");
    }

    #[test]
    fn phrases_spans_and_numbers() {
        assert_eq!(
            extract("The final answer is $28\\%$. I hope it is correct.")
                .unwrap()
                .0,
            "28\\%"
        );
        assert_eq!(extract("Answer: 12").unwrap().0, "12");
        assert_eq!(
            extract("We get $x = 3$ and so on").unwrap(),
            ("x = 3".to_string(), Source::MathSpan)
        );
        assert_eq!(
            extract("there were 17 apples").unwrap(),
            ("17".to_string(), Source::LastNumber)
        );
        assert!(looks_like_solution("Therefore $x$ is 3"));
        assert!(!looks_like_solution("\\frac{1}{2}"));
        assert!(!looks_like_solution("125 miles"));
    }
}
