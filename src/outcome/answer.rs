//! Typed answers: what kind of mathematical object an answer string denotes.
//!
//! The parser gives a tree; this module decides what it *means*: a number or expression, a
//! set of alternatives, an ordered tuple, intervals, a matrix, an equation, an assignment
//! (`x = 5`, whose value is the answer), a multiple-choice letter, or text (with synonyms:
//! "no solution" / empty set / DNE, "all real numbers" / R).

use std::sync::LazyLock;

use regex::Regex;

use super::budget::Meter;
use super::expr::{Const, Expr, RelOp, Unit};
use super::forms::{matrix_value, relation};

/// One scalar with the decorations that change how it is compared.
#[derive(Debug, Clone, PartialEq)]
pub struct Scalar {
    pub expr: Expr,
    pub percent: bool,
    pub degree: bool,
    pub unit: Option<Unit>,
}

/// An interval endpoint-pair; a single point `{a}` is `[a, a]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Interval {
    pub lo: Expr,
    pub hi: Expr,
    pub lo_closed: bool,
    pub hi_closed: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Scalar(Scalar),
    /// Unordered alternatives: `1, -2`, `\{1, 2\}`, `x = 1 or x = 2`, `\pm`.
    Set(Vec<Answer>),
    /// Ordered: `(1, 2, 3)`. `pair` marks `(a, b)`, which may also be an open interval.
    Tuple(Vec<Answer>, bool),
    /// A union of intervals (an inequality in one variable becomes one).
    Intervals(Vec<Interval>),
    Matrix(Vec<Vec<Expr>>),
    /// `lhs = rhs` where the left side is not a name: equal up to a nonzero factor.
    Equation(Expr, Expr),
    /// `name = value`: the value is the answer.
    Assign(Expr, Box<Answer>),
    /// A relation that is not an interval (`f(2) < f(1) < f(4)`, `x \ne 3`).
    Relation(Vec<Expr>, Vec<RelOp>),
    Ratio(Vec<Expr>),
    Choice(char),
    Text(String),
    NoSolution,
    AllReals,
}

impl Answer {
    /// What kind of answer this is, for messages ("an interval", "a number").
    pub fn kind(&self) -> &'static str {
        match self {
            Answer::Scalar(s) if s.unit.as_ref().is_some_and(|u| u.dim != [0; 6]) => {
                "a quantity with a unit"
            }
            Answer::Scalar(_) => "a number or expression",
            Answer::Set(_) => "several answers",
            Answer::Tuple(..) => "an ordered tuple",
            Answer::Intervals(_) => "an interval or union of intervals",
            Answer::Matrix(_) => "a matrix",
            Answer::Equation(..) => "an equation",
            Answer::Assign(_, v) => v.kind(),
            Answer::Relation(..) => "a relation",
            Answer::Ratio(_) => "a ratio",
            Answer::Choice(_) => "a choice letter",
            Answer::Text(_) => "text",
            Answer::NoSolution => "\"no solution\"",
            Answer::AllReals => "\"all real numbers\"",
        }
    }
}

/// Lower-cased words of a text answer, without TeX wrappers and punctuation.
pub fn plain_words(s: &str) -> String {
    let mut t = s.to_string();
    for w in [
        "\\text",
        "\\mathrm",
        "\\textbf",
        "\\mbox",
        "\\textnormal",
        "\\operatorname",
        "\\mathbf",
        "\\boxed",
    ] {
        t = t.replace(w, " ");
    }
    let t: String = t
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '(' || c == ')' {
                c.to_ascii_lowercase()
            } else {
                ' '
            }
        })
        .collect();
    let words: Vec<&str> = t.split_whitespace().collect();
    // `a parabola`, `the circle`: an article before a text answer is not part of it.
    let skip = usize::from(words.len() >= 2 && matches!(words[0], "a" | "an" | "the"));
    words[skip..].join(" ")
}

/// Paraphrases of "there is no solution": `no real solutions exist`, `there are no such
/// x`, `the equation has no solution`, `none`. Every accepted form says *no* and names what
/// does not exist; a bare `no` stays a yes/no answer.
fn says_no_solution(w: &str) -> bool {
    static NONE: LazyLock<Regex> = LazyLock::new(|| {
        Regex::new(concat!(
            r"^(?:(?:so|thus|hence|therefore) )?",
            r"(?:there (?:is|are|exists?) |(?:(?:the|this|it|which) )?(?:\w+ )?(?:has|have) |we have |we get )?",
            r"no (?:(?:real|integer|integral|rational|positive|negative|natural|complex|such|possible|valid|solution) )*",
            r"(?:solutions?|roots?|values?|answers?|numbers?|integers?|pairs?|triples?|points?|intersections?|(?:such )?[a-z])",
            r"(?: (?:of|for|to) (?:the )?\w+)?",
            r"(?: (?:exists?|is possible|are possible|satisf(?:y|ies) \w+(?: \w+)?|works?|can be found))?$",
        ))
        .unwrap()
    });
    NONE.is_match(w)
}

/// Answers recognised from their words alone, before any parsing.
pub fn from_words(s: &str) -> Option<Answer> {
    let w = plain_words(s);
    let w = w.strip_prefix("the ").unwrap_or(&w).to_string();
    const NONE: &[&str] = &[
        "no solution",
        "no solutions",
        "no real solution",
        "no real solutions",
        "none",
        "dne",
        "does not exist",
        "no such",
        "empty set",
        "emptyset",
        "varnothing",
        "no real roots",
        "no roots",
        "there is no solution",
        "no answer",
        "no value",
        "no values",
        "not possible",
        "impossible",
    ];
    const ALL: &[&str] = &[
        "all real numbers",
        "all reals",
        "r",
        "mathbb r",
        "mathbb{r}",
        "all real values",
        "every real number",
        "all real x",
        "any real number",
        "x in r",
        "x in mathbb r",
        "infinity infinity",
    ];
    if NONE.contains(&w.as_str()) || says_no_solution(&w) {
        return Some(Answer::NoSolution);
    }
    if ALL.contains(&w.as_str()) {
        return Some(Answer::AllReals);
    }
    let letters = w.replace(['(', ')'], "");
    let letters = letters.trim();
    for pre in ["option ", "choice ", "answer ", ""] {
        if let Some(rest) = letters.strip_prefix(pre)
            && rest.len() == 1
            && rest.chars().all(|c| ('a'..='e').contains(&c))
            && (pre.is_empty() && (w.contains('(') || s.contains("text")) || !pre.is_empty())
        {
            return Some(Answer::Choice(
                rest.chars().next().unwrap().to_ascii_uppercase(),
            ));
        }
    }
    if let Some(n) = super::units::parse_number_words(&w)
        && w.chars().all(|c| c.is_ascii_alphabetic() || c == ' ')
    {
        return Some(Answer::Scalar(Scalar::plain(Expr::int(n))));
    }
    None
}

impl Scalar {
    pub fn plain(expr: Expr) -> Scalar {
        Scalar {
            expr,
            percent: false,
            degree: false,
            unit: None,
        }
    }
}

/// Expand `\pm` into both signs (at most 16 combinations).
fn expand_pm(e: &Expr) -> Vec<Expr> {
    let mut n = 0;
    e.walk(&mut |x| {
        if matches!(x, Expr::PlusMinus(..)) {
            n += 1
        }
    });
    if n == 0 || n > 4 {
        return vec![e.clone()];
    }
    let mut out = Vec::new();
    for mask in 0..(1u32 << n) {
        let mut k = 0;
        out.push(replace_pm(e, mask, &mut k));
    }
    out
}

fn replace_pm(e: &Expr, mask: u32, k: &mut u32) -> Expr {
    let r = |x: &Expr, k: &mut u32| replace_pm(x, mask, k);
    match e {
        Expr::PlusMinus(a, b) => {
            let a2 = r(a, k);
            let b2 = r(b, k);
            let neg = mask & (1 << *k) != 0;
            *k += 1;
            let b2 = if neg { Expr::Neg(Box::new(b2)) } else { b2 };
            if a2 == Expr::int(0) {
                b2
            } else {
                Expr::Add(vec![a2, b2])
            }
        }
        Expr::Add(v) => Expr::Add(v.iter().map(|x| r(x, k)).collect()),
        Expr::Mul(v) => Expr::Mul(v.iter().map(|x| r(x, k)).collect()),
        Expr::Neg(a) => Expr::Neg(Box::new(r(a, k))),
        Expr::Div(a, b) => {
            let a = r(a, k);
            Expr::Div(Box::new(a), Box::new(r(b, k)))
        }
        Expr::Pow(a, b) => {
            let a = r(a, k);
            Expr::Pow(Box::new(a), Box::new(r(b, k)))
        }
        other => other.clone(),
    }
}

fn is_inf(e: &Expr) -> Option<bool> {
    match e {
        Expr::Const(Const::Inf) => Some(true),
        Expr::Neg(a) if **a == Expr::Const(Const::Inf) => Some(false),
        _ => None,
    }
}

/// Classify a parsed expression.
pub fn classify(e: Expr, meter: &mut Meter) -> Answer {
    match e {
        Expr::EmptySet => Answer::NoSolution,
        Expr::Reals => Answer::AllReals,
        Expr::Set(v) if v.is_empty() => Answer::NoSolution,
        Expr::Set(v) => flatten_set(v.into_iter().map(|x| classify(x, meter)).collect()),
        Expr::List(v) if v.is_empty() => Answer::Text(String::new()),
        Expr::List(v) => {
            let items: Vec<Answer> = v.into_iter().map(|x| classify(x, meter)).collect();
            // A list of intervals is their union.
            if items.len() > 1 && items.iter().all(|a| matches!(a, Answer::Intervals(_))) {
                return Answer::Intervals(
                    items
                        .into_iter()
                        .flat_map(|a| {
                            if let Answer::Intervals(v) = a {
                                v
                            } else {
                                vec![]
                            }
                        })
                        .collect(),
                );
            }
            flatten_set(items)
        }
        Expr::Seq(o, c, v) => {
            // `[a, b]`, `[a, b)`, `(a, b]` are intervals (a vector would use parentheses), and
            // so is `(-\infty, 3)`: only an interval has infinite endpoints.
            let bracket = o == '[' || c == ']';
            let infinite =
                v.len() == 2 && (is_inf(&v[0]) == Some(false) || is_inf(&v[1]) == Some(true));
            if v.len() == 2 && (bracket || infinite) {
                let mut it = v.into_iter();
                let (lo, hi) = (it.next().unwrap(), it.next().unwrap());
                return Answer::Intervals(vec![Interval {
                    lo,
                    hi,
                    lo_closed: o == '[',
                    hi_closed: c == ']',
                }]);
            }
            let pair = v.len() == 2 && o == '(' && c == ')';
            Answer::Tuple(v.into_iter().map(|x| classify(x, meter)).collect(), pair)
        }
        Expr::Union(v) => {
            let mut ivs = Vec::new();
            for x in v {
                match classify(x, meter) {
                    Answer::Intervals(i) => ivs.extend(i),
                    Answer::Tuple(t, true) => {
                        let mut it = t.into_iter();
                        if let (Some(Answer::Scalar(a)), Some(Answer::Scalar(b))) =
                            (it.next(), it.next())
                        {
                            ivs.push(Interval {
                                lo: a.expr,
                                hi: b.expr,
                                lo_closed: false,
                                hi_closed: false,
                            });
                        }
                    }
                    Answer::Scalar(s) => ivs.push(Interval {
                        lo: s.expr.clone(),
                        hi: s.expr,
                        lo_closed: true,
                        hi_closed: true,
                    }),
                    Answer::Set(items) => {
                        for a in items {
                            if let Answer::Scalar(s) = a {
                                ivs.push(Interval {
                                    lo: s.expr.clone(),
                                    hi: s.expr,
                                    lo_closed: true,
                                    hi_closed: true,
                                });
                            }
                        }
                    }
                    Answer::AllReals => ivs.push(Interval {
                        lo: Expr::Neg(Box::new(Expr::Const(Const::Inf))),
                        hi: Expr::Const(Const::Inf),
                        lo_closed: false,
                        hi_closed: false,
                    }),
                    _ => {}
                }
            }
            Answer::Intervals(ivs)
        }
        Expr::Func(name, mut args) if name == "setminus" && args.len() == 2 => {
            let b = classify(args.pop().unwrap(), meter);
            let a = classify(args.pop().unwrap(), meter);
            super::sets::difference(&a, &b, meter)
                .unwrap_or_else(|| Answer::Text(format!("{a:?} \\setminus {b:?}")))
        }
        Expr::Matrix(rows) => Answer::Matrix(rows),
        Expr::Rel(items, ops) => relation(items, ops, meter),
        Expr::Ratio(v) => Answer::Ratio(v),
        Expr::Text(t) => from_words(&t).unwrap_or(Answer::Text(plain_words(&t))),
        Expr::Sym(s) if s.len() == 1 && ('A'..='E').contains(&s.chars().next().unwrap()) => {
            Answer::Choice(s.chars().next().unwrap())
        }
        e => {
            if let Some(m) = matrix_value(&e) {
                return Answer::Matrix(m);
            }
            let alts = expand_pm(&e);
            if alts.len() > 1 {
                return Answer::Set(
                    alts.into_iter()
                        .map(|x| Answer::Scalar(scalar(x)))
                        .collect(),
                );
            }
            Answer::Scalar(scalar(e))
        }
    }
}

fn flatten_set(items: Vec<Answer>) -> Answer {
    let mut out = Vec::new();
    for a in items {
        match a {
            Answer::Set(v) => out.extend(v),
            Answer::Assign(l, v) if matches!(*v, Answer::Set(_)) => {
                if let Answer::Set(inner) = *v {
                    out.extend(
                        inner
                            .into_iter()
                            .map(|x| Answer::Assign(l.clone(), Box::new(x))),
                    );
                }
            }
            a => out.push(a),
        }
    }
    if out.len() == 1 {
        out.pop().unwrap()
    } else {
        Answer::Set(out)
    }
}

/// Strip percent, degree and unit decorations off the top of an expression.
pub fn scalar(mut e: Expr) -> Scalar {
    let mut s = Scalar::plain(Expr::int(0));
    loop {
        e = match e {
            Expr::Percent(a) => {
                s.percent = true;
                *a
            }
            Expr::Degree(a) => {
                s.degree = true;
                *a
            }
            Expr::WithUnit(a, u) => {
                s.unit = Some(u);
                *a
            }
            // `3 \text{ cm}` parsed as a product with a unit factor.
            Expr::Mul(mut v)
                if v.len() == 2 && matches!(v[1], Expr::Degree(ref x) if **x == Expr::int(1)) =>
            {
                s.degree = true;
                v.swap_remove(0)
            }
            other => {
                s.expr = other;
                return s;
            }
        };
    }
}
