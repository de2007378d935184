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

impl Source {
    pub fn tag(self) -> &'static str {
        match self {
            Source::Boxed => "boxed",
            Source::FinalAnswer => "final_answer",
            Source::AnswerLine => "answer_line",
            Source::Bold => "bold",
            Source::MathSpan => "math_span",
            Source::LastNumber => "last_number",
            Source::Whole => "whole",
        }
    }
}

/// End-of-turn markers: anything after them is another turn, not this solution.
const TURN_MARKERS: &[&str] = &["<|im_start|>", "<|im_end|>", "<|eot_id|>", "<|endoftext|>", "<|end_of_text|>", "<｜end▁of▁sentence｜>", "</s>"];

/// The part of a model output that holds its final answer.
fn answer_region(s: &str) -> Option<&str> {
    let mut s = s;
    for m in TURN_MARKERS {
        if let Some(k) = s.find(m) {
            if !s[..k].trim().is_empty() {
                s = &s[..k];
            }
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
                None => return if out.is_empty() { Some(out) } else { None },
            }
        } else {
            // `\boxed 5`: the next token.
            let rest = &s[open..];
            let tok: String = rest.trim_start().chars().take_while(|c| !c.is_whitespace() && *c != '$').collect();
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
        (Some(x), Some(y)) => if x.0 < y.0 { x } else { y },
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
    let words: Vec<&str> = cleaned.split(|c: char| !c.is_alphabetic()).filter(|w| !w.is_empty()).collect();
    if words.is_empty() {
        return !cleaned.contains('.');
    }
    words.iter().any(|w| matches!(w.to_ascii_lowercase().as_str(), "and" | "or"))
}

static FINAL_IS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)final answer\s*(?:is|:)\s*[:\s]*").unwrap());
static ANSWER_IS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)(?:the )?answer is[:\s]+|(?m)^\s*\**\s*answer\s*\**\s*:\s*\**").unwrap());
static BOLD: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\*\*([^*\n]{1,80})\*\*").unwrap());
static MATH: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?s)\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|\$([^$]+?)\$").unwrap());
static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"-?\d[\d,]*(?:\.\d+)?(?:\s*/\s*\d+)?%?").unwrap());
static HOPE: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(?i)\.?\s*(?:I hope|Hope this|This is the|Please let|\n\n|\[Note|Note:)").unwrap());

/// The answer text after a "final answer is" / "answer:" phrase.
fn after_phrase(s: &str, at: usize) -> Option<String> {
    let rest = &s[at..];
    let end = HOPE.find(rest).map(|m| m.start()).unwrap_or(rest.len());
    let mut t = rest[..end].trim().to_string();
    // "The volume of $V$ is 120." -> "120"
    if let Some(k) = t.rfind(" is ") {
        if !t[..k].contains('=') && t[..k].matches('$').count() % 2 == 0 {
            t = t[k + 4..].to_string();
        }
    }
    let t = t.trim().trim_end_matches(['.', ',', ';']).trim();
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
    (1..=4).find_map(|i| c.get(i)).map(|m| m.as_str().trim().to_string()).unwrap_or_default()
}

/// Find the final answer of a solution. `None` means the solution has no answer.
pub fn extract(solution: &str) -> Option<(String, Source)> {
    let s = answer_region(solution)?;
    // 1. Boxes.
    let bx = boxes(s)?;
    if let Some(last) = bx.last() {
        let mut parts = vec![last.2.clone()];
        let mut k = bx.len() - 1;
        while k > 0 && joins(&s[bx[k - 1].1..bx[k].0]) {
            k -= 1;
            parts.insert(0, bx[k].2.clone());
        }
        return Some((parts.join(", "), Source::Boxed));
    }
    // 2. "final answer is".
    if let Some(m) = FINAL_IS.find_iter(s).last() {
        if let Some(a) = after_phrase(s, m.end()) {
            return Some((a, Source::FinalAnswer));
        }
    }
    // 3. "the answer is", "Answer:".
    if let Some(m) = ANSWER_IS.find_iter(s).last() {
        if let Some(a) = after_phrase(s, m.end()) {
            return Some((a, Source::AnswerLine));
        }
    }
    // 4. A bold answer near the end.
    if let Some(c) = BOLD.captures_iter(s).last() {
        let m = c.get(0).unwrap();
        if s.len() - m.end() < 200 {
            let inner = c[1].trim().trim_end_matches([':', '.']);
            if !inner.is_empty() && !inner.to_ascii_lowercase().contains("answer") && !inner.to_ascii_lowercase().contains("step") {
                return Some((inner.to_string(), Source::Bold));
            }
        }
    }
    // 5. The last math span.
    if let Some(c) = MATH.captures_iter(s).last() {
        let t = span_text(&c);
        if !t.is_empty() {
            return Some((t, Source::MathSpan));
        }
    }
    // 6. The last number.
    last_number(s).map(|n| (n, Source::LastNumber))
}

/// The last number written in prose ("... is 1,000.99€" -> "1,000.99").
pub fn last_number(s: &str) -> Option<String> {
    NUMBER.find_iter(s).last().map(|m| m.as_str().trim_end_matches(',').to_string())
}

/// Does this text read as a whole solution (rather than a bare answer)?
pub fn looks_like_solution(s: &str) -> bool {
    if s.contains("\\boxed") || s.contains("\\fbox") || s.contains("</think>") || s.contains("<think>") {
        return true;
    }
    let lower = s.to_ascii_lowercase();
    if lower.contains("answer") {
        return true;
    }
    // Prose: many plain words outside math.
    let outside: String = MATH.replace_all(s, " ").into_owned();
    let words = outside.split_whitespace().filter(|w| w.len() >= 3 && w.chars().all(|c| c.is_alphabetic())).count();
    words >= 8
}

/// Is there prose in a text (words that are not TeX commands)?
pub fn has_prose(s: &str) -> bool {
    let mut prev_backslash = false;
    for w in s.split(|c: char| !c.is_alphabetic() && c != '\\') {
        let _ = prev_backslash;
        prev_backslash = false;
        if w.len() >= 3 && !w.starts_with('\\') && w.chars().all(|c| c.is_alphabetic()) {
            return true;
        }
    }
    false
}
