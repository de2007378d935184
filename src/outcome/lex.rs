//! Text clean-up and tokens for the LaTeX / plain-text parser.
//!
//! [`normalize`] rewrites the spellings that mean the same thing into one (unicode
//! operators, `\dfrac`, thousands separators, spacing commands) so the parser sees a small
//! alphabet; [`tokenize`] then cuts the result into [`Tok`]ens.

/// One token, with whether whitespace came before it (units like "3 m" depend on it).
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// Digits with an optional decimal point (`12`, `0.5`, `.5`, `3.`), or scientific `3e8`.
    Num(String),
    /// A run of ASCII letters.
    Word(String),
    /// `\name`, or `\` plus one symbol (`\{`, `\\`).
    Cmd(String),
    /// `\text{...}` and friends: the literal content.
    Text(String),
    /// A list separator written as words (`\text{ and }`, `or`).
    Sep,
    Ch(char),
}

/// Replace unicode and TeX spelling variants with one form each.
pub fn normalize(s: &str) -> String {
    let mut t = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '−' | '–' | '—' => t.push('-'),
            '×' | '⋅' | '·' | '∙' => t.push_str("\\cdot "),
            '÷' => t.push_str("\\div "),
            '≤' | '⩽' => t.push_str("\\le "),
            '≥' | '⩾' => t.push_str("\\ge "),
            '≠' => t.push_str("\\ne "),
            '≈' => t.push_str("\\approx "),
            '∞' => t.push_str("\\infty "),
            'π' => t.push_str("\\pi "),
            '√' => t.push_str("\\sqrt "),
            '°' => t.push_str("\\degree "),
            '∈' => t.push_str("\\in "),
            '∪' => t.push_str("\\cup "),
            '∩' => t.push_str("\\cap "),
            '∅' => t.push_str("\\emptyset "),
            '±' => t.push_str("\\pm "),
            'ℝ' => t.push_str("\\mathbb{R}"),
            '²' => t.push_str("^2"),
            '³' => t.push_str("^3"),
            '½' => t.push_str("(1/2)"),
            '¼' => t.push_str("(1/4)"),
            '¾' => t.push_str("(3/4)"),
            '\u{a0}' | '\u{2009}' | '\u{202f}' | '\t' | '\r' | '\n' => t.push(' '),
            '€' | '£' | '¥' => t.push(' '),
            _ => t.push(c),
        }
    }
    let t = join_thousands(&t);
    let mut out = String::with_capacity(t.len());
    let b = t.as_bytes();
    let mut i = 0;
    // Commands dropped outright (sizing, spacing, style) and their replacements.
    const DROP: &[&str] = &[
        "\\displaystyle",
        "\\textstyle",
        "\\scriptstyle",
        "\\limits",
        "\\nolimits",
        "\\bigl",
        "\\bigr",
        "\\Bigl",
        "\\Bigr",
        "\\biggl",
        "\\biggr",
        "\\Biggl",
        "\\Biggr",
        "\\big",
        "\\Big",
        "\\bigg",
        "\\Bigg",
        "\\left",
        "\\right",
        "\\middle",
    ];
    const REPL: &[(&str, &str)] = &[
        ("\\dfrac", "\\frac"),
        ("\\tfrac", "\\frac"),
        ("\\cfrac", "\\frac"),
        ("\\dbinom", "\\binom"),
        ("\\tbinom", "\\binom"),
        ("^{\\circ}", "\\degree "),
        ("^\\circ", "\\degree "),
        ("^{\\prime}", "'"),
        ("\\circ", "\\degree "),
        ("\\%", "%"),
        ("\\$", " "),
        ("\\(", " "),
        ("\\)", " "),
        ("\\[", " "),
        ("\\]", " "),
        ("\\!", ""),
        ("\\,", " "),
        ("\\;", " "),
        ("\\:", " "),
        ("\\ ", " "),
        ("\\&", "&"),
    ];
    'outer: while i < b.len() {
        // A row break `\\` is kept whole (its second backslash must not start `\ `).
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'\\') {
            out.push_str("\\\\");
            i += 2;
            continue;
        }
        if b[i] == b'\\' {
            for d in DROP {
                if t[i..].starts_with(d) && !b.get(i + d.len()).is_some_and(u8::is_ascii_alphabetic)
                {
                    i += d.len();
                    // `\left.` / `\right.` are invisible delimiters.
                    if b.get(i) == Some(&b'.') {
                        i += 1;
                    }
                    continue 'outer;
                }
            }
        }
        for (from, to) in REPL {
            if t[i..].starts_with(from) {
                let alpha_cmd = from.as_bytes()[from.len() - 1].is_ascii_alphabetic();
                if !alpha_cmd || !b.get(i + from.len()).is_some_and(u8::is_ascii_alphabetic) {
                    out.push_str(to);
                    i += from.len();
                    continue 'outer;
                }
            }
        }
        match b[i] {
            b'$' | b'~' => out.push(' '),
            _ => {
                let ch = t[i..].chars().next().unwrap_or(' ');
                out.push(ch);
                i += ch.len_utf8();
                continue;
            }
        }
        i += 1;
    }
    out
}

/// Join digit groups split by thousands separators (`1,000`, `1\,000`, `1{,}000`,
/// `1\!000`, `12,\!000`, `1 000`), but only in proper 3-digit groups after a leading group of
/// 1-3 digits that does not start with 0, and never across a comma followed by a space
/// (`32, 349` is a list).
pub fn join_thousands(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < b.len() {
        if !b[i].is_ascii_digit() || (i > 0 && (b[i - 1].is_ascii_digit() || b[i - 1] == b'.')) {
            let ch = s[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
            continue;
        }
        // Leading digit run.
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        let lead = &s[start..i];
        out.push_str(lead);
        if lead.len() > 3 || (lead.starts_with('0')) {
            continue;
        }
        // Try to consume consistent separator + 3-digit groups.
        let mut groups: Vec<(usize, usize)> = Vec::new();
        let mut j = i;
        let mut sep_kind: Option<String> = None;
        while let Some((len, kind)) = separator_at(s, j) {
            if sep_kind.as_ref().is_some_and(|k| *k != kind) {
                break;
            }
            let d = j + len;
            let e = d + 3;
            if e > b.len()
                || !b[d..e].iter().all(u8::is_ascii_digit)
                || b.get(e).is_some_and(u8::is_ascii_digit)
            {
                break;
            }
            sep_kind = Some(kind);
            groups.push((d, e));
            j = e;
        }
        // A plain space only joins when the groups run on (`1 000 000`) or the whole
        // text is the number; "2 345" inside prose is left alone.
        if sep_kind.as_deref() == Some(" ") && groups.len() == 1 && s.trim() != &s[start..j] {
            groups.clear();
        }
        for (d, e) in &groups {
            out.push_str(&s[*d..*e]);
            i = *e;
        }
    }
    out
}

/// A thousands separator starting at `j`: its length and a kind tag (all groups of one
/// number must use the same kind).
fn separator_at(s: &str, j: usize) -> Option<(usize, String)> {
    let rest = &s[j..];
    for pat in ["{,}\\!", "{,}", ",\\!", "\\,", "\\!", "\\ "] {
        if let Some(after) = rest.strip_prefix(pat) {
            // `11,\! 111`: spaces after an explicit separator do not split the number.
            let spaces = after.len() - after.trim_start_matches(' ').len();
            return Some((pat.len() + spaces, pat.to_string()));
        }
    }
    // `14 {, }916`, `14{ , }916`
    let trimmed = rest.trim_start();
    if let Some(inner) = trimmed.strip_prefix('{') {
        let inner_t = inner.trim_start();
        if let Some(after) = inner_t.strip_prefix(',') {
            let after_t = after.trim_start();
            if let Some(tail) = after_t.strip_prefix('}') {
                let tail_t = tail.trim_start();
                let len = s.len() - j - tail_t.len();
                return Some((len, "{,}".into()));
            }
        }
    }
    if rest.starts_with(',') && rest[1..].starts_with(|c: char| c.is_ascii_digit()) {
        return Some((1, ",".into()));
    }
    if rest.starts_with(' ') && rest[1..].starts_with(|c: char| c.is_ascii_digit()) {
        return Some((1, " ".into()));
    }
    None
}

/// Commands whose (braced) argument is literal text rather than math.
const TEXT_CMDS: &[&str] = &[
    "text",
    "textbf",
    "textit",
    "textrm",
    "textnormal",
    "textsf",
    "texttt",
    "mbox",
    "mathrm",
    "mathbf",
    "mathit",
    "mathsf",
    "mathtt",
    "operatorname",
    "hbox",
    "emph",
    "textup",
];

/// Cut normalised text into tokens. Never fails: unknown characters become `Ch`.
pub fn tokenize(s: &str) -> Vec<(Tok, bool)> {
    let cs: Vec<char> = s.chars().collect();
    let mut out: Vec<(Tok, bool)> = Vec::new();
    let mut i = 0;
    let mut space = false;
    while i < cs.len() {
        let c = cs[i];
        if c.is_whitespace() {
            space = true;
            i += 1;
            continue;
        }
        let tok = if c.is_ascii_digit()
            || (c == '.' && cs.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            let st = i;
            while i < cs.len() && cs[i].is_ascii_digit() {
                i += 1;
            }
            if i < cs.len() && cs[i] == '.' && cs.get(i + 1).is_none_or(|d| *d != '.') {
                i += 1;
                while i < cs.len() && cs[i].is_ascii_digit() {
                    i += 1;
                }
            }
            // Scientific notation `3e8`, `1.5E-3`: only when no letter follows the exponent.
            if i < cs.len() && (cs[i] == 'e' || cs[i] == 'E') {
                let mut k = i + 1;
                if k < cs.len() && (cs[k] == '-' || cs[k] == '+') {
                    k += 1;
                }
                let ds = k;
                while k < cs.len() && cs[k].is_ascii_digit() {
                    k += 1;
                }
                if k > ds && !cs.get(k).is_some_and(|c| c.is_alphabetic()) {
                    i = k;
                }
            }
            Tok::Num(cs[st..i].iter().collect())
        } else if c.is_ascii_alphabetic() {
            let st = i;
            while i < cs.len() && cs[i].is_ascii_alphabetic() {
                i += 1;
            }
            let w: String = cs[st..i].iter().collect();
            // `1orW(x)` / `(7,11)and(11,7)`: a connector glued to what follows.
            let after_value =
                matches!(out.last(), Some((Tok::Num(_), _)) | Some((Tok::Ch(')'), _)));
            let glued = ["or", "and"].into_iter().find(|k| {
                after_value
                    && w.len() > k.len()
                    && w.starts_with(k)
                    && w[k.len()..].starts_with(|c: char| c.is_ascii_uppercase())
            });
            if let Some(k) = glued {
                out.push((Tok::Sep, space));
                out.push((Tok::Word(w[k.len()..].to_string()), false));
                space = false;
                continue;
            }
            match w.to_ascii_lowercase().as_str() {
                "and" | "or" => Tok::Sep,
                _ => Tok::Word(w),
            }
        } else if c == '\\' {
            i += 1;
            if i >= cs.len() {
                break;
            }
            if cs[i].is_ascii_alphabetic() {
                let st = i;
                while i < cs.len() && cs[i].is_ascii_alphabetic() {
                    i += 1;
                }
                let mut name: String = cs[st..i].iter().collect();
                if let Some(k) = split_runon(&name) {
                    i = st + k.len();
                    name = k.to_string();
                }
                if TEXT_CMDS.contains(&name.as_str()) {
                    let content = braced(&cs, &mut i);
                    let ct = content.trim();
                    let lower = ct.to_ascii_lowercase();
                    let lower = lower.trim_matches(|c: char| c == ',' || c.is_whitespace());
                    if matches!(lower, "and" | "or" | "and/or")
                        || (lower.is_empty() && content.contains(','))
                    {
                        Tok::Sep
                    } else if ct.is_empty() {
                        space = true;
                        continue;
                    } else {
                        Tok::Text(ct.to_string())
                    }
                } else {
                    Tok::Cmd(name)
                }
            } else {
                let c2 = cs[i];
                i += 1;
                Tok::Cmd(c2.to_string())
            }
        } else {
            i += 1;
            Tok::Ch(c)
        };
        out.push((tok, space));
        space = false;
    }
    out
}

/// A run-together command such as `\quadx` or `\cdotx`: the known command it starts with.
fn split_runon(name: &str) -> Option<&'static str> {
    const FULL: &[&str] = &["pmod", "pmb", "pmatrix", "divides", "timeswith"];
    if FULL.contains(&name) {
        return None;
    }
    [
        "qquad", "quad", "cdot", "times", "pm", "mp", "div", "infty", "pi",
    ]
    .into_iter()
    .find(|k| name.len() > k.len() && name.starts_with(k))
}

/// Read `{...}` (brace-matched) at `i`, or a single character when no brace follows.
fn braced(cs: &[char], i: &mut usize) -> String {
    while *i < cs.len() && cs[*i] == ' ' {
        *i += 1;
    }
    if *i >= cs.len() {
        return String::new();
    }
    if cs[*i] != '{' {
        let c = cs[*i];
        *i += 1;
        return c.to_string();
    }
    let mut depth = 0usize;
    let st = *i + 1;
    while *i < cs.len() {
        match cs[*i] {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    let s: String = cs[st..*i].iter().collect();
                    *i += 1;
                    return s;
                }
            }
            _ => {}
        }
        *i += 1;
    }
    cs[st..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::join_thousands;

    #[test]
    fn thousands_groups_join_only_when_consistent() {
        assert_eq!(join_thousands("1,000,000"), "1000000");
        assert_eq!(join_thousands("12,\\! 000"), "12000");
        assert_eq!(join_thousands("1{,}000"), "1000");
        assert_eq!(join_thousands("14 {, }916"), "14916");
        // Lists and decimals stay as they are.
        assert_eq!(join_thousands("32, 349"), "32, 349");
        assert_eq!(join_thousands("1,22"), "1,22");
        assert_eq!(join_thousands("0,111"), "0,111");
        assert_eq!(join_thousands("1234,567"), "1234,567");
        assert_eq!(join_thousands("1,0000"), "1,0000");
        // A spaced group joins only when the whole text is the number.
        assert_eq!(join_thousands("1 000"), "1000");
        assert_eq!(join_thousands("x = 2 345 y"), "x = 2 345 y");
    }
}
