//! The atoms of the parser: brackets, numbers, words, `\\commands`, functions and
//! environments (matrices). The precedence levels above them live in `latex/mod.rs`.

use super::{FUNCS, ParseError, Parser, decimal_value};
use crate::outcome::expr::{Const, Expr};
use crate::outcome::lex::Tok;
use crate::outcome::units;
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Zero};

impl Parser<'_> {
    pub(super) fn group(&mut self, close: char) -> Result<Expr, ParseError> {
        let e = self.list_semi()?;
        if !self.eat_ch(close) {
            return Err(match self.peek() {
                None => ParseError::End,
                Some(t) => ParseError::Unexpected(format!("{t:?}")),
            });
        }
        Ok(e)
    }

    pub(super) fn primary(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let tok = self.bump().ok_or(ParseError::End)?;
        let r = match tok {
            Tok::Num(n) => {
                let mut e = number_expr(&n)?;
                // Repeating decimal: `0.\overline{3}`, `0.1\overline{6}`.
                if self.is_cmd("overline") && !self.space_before() && n.contains('.') {
                    self.pos += 1;
                    // The digits as written: `\overline{027}` keeps its leading zero.
                    let digits = match (
                        self.toks.get(self.pos),
                        self.toks.get(self.pos + 1),
                        self.toks.get(self.pos + 2),
                    ) {
                        (
                            Some((Tok::Ch('{'), _)),
                            Some((Tok::Num(d), _)),
                            Some((Tok::Ch('}'), _)),
                        ) if d.chars().all(|c| c.is_ascii_digit()) => {
                            let d = d.clone();
                            self.pos += 3;
                            Some(d)
                        }
                        (Some((Tok::Num(d), _)), _, _) if d.chars().all(|c| c.is_ascii_digit()) => {
                            let d = d[..1].to_string();
                            self.tex_arg(true)?;
                            Some(d)
                        }
                        _ => {
                            self.tex_arg(true)?;
                            None
                        }
                    };
                    if let Some(digits) = digits {
                        e = repeating(&n, &digits).map(Expr::Num).unwrap_or(e);
                    }
                }
                // Mixed number: `2\frac{1}{2}`.
                if self.is_cmd("frac") && n.chars().all(|c| c.is_ascii_digit()) {
                    let save = self.pos;
                    self.pos += 1;
                    let a = self.tex_arg(false)?;
                    let b = self.tex_arg(false)?;
                    match (&a, &b) {
                        (Expr::Num(x), Expr::Num(y))
                            if x.is_integer() && y.is_integer() && !y.is_zero() && x < y =>
                        {
                            if let Expr::Num(w) = &e {
                                e = Expr::Num(w + x / y);
                            }
                        }
                        _ => self.pos = save,
                    }
                }
                e
            }
            Tok::Word(w) => self.word(w)?,
            Tok::Text(t) => text_expr(&t),
            Tok::Sep => return Err(ParseError::Unexpected("separator".into())),
            Tok::Ch('(') => {
                let e = self.list_semi()?;
                match self.bump() {
                    Some(Tok::Ch(c @ (')' | ']'))) => seq('(', c, e),
                    Some(t) => return Err(ParseError::Unexpected(format!("{t:?}"))),
                    None => return Err(ParseError::End),
                }
            }
            Tok::Ch('[') => {
                let e = self.list_semi()?;
                match self.bump() {
                    Some(Tok::Ch(c @ (')' | ']'))) => seq('[', c, e),
                    Some(t) => return Err(ParseError::Unexpected(format!("{t:?}"))),
                    None => return Err(ParseError::End),
                }
            }
            Tok::Ch('{') => {
                let e = self.group('}')?;
                match e {
                    Expr::List(v) => Expr::Set(v),
                    other => other,
                }
            }
            Tok::Ch('|') => {
                self.abs_open += 1;
                let e = self.sum()?;
                self.abs_open -= 1;
                if !self.eat_ch('|') {
                    return Err(ParseError::End);
                }
                Expr::Func("abs".into(), vec![e])
            }
            Tok::Cmd(c) => self.command(&c)?,
            Tok::Ch(c) => return Err(ParseError::Unexpected(c.to_string())),
        };
        self.depth -= 1;
        Ok(r)
    }

    pub(super) fn word(&mut self, w: String) -> Result<Expr, ParseError> {
        let lower = w.to_ascii_lowercase();
        if FUNCS.contains(&lower.as_str()) || lower == "sqrt" {
            return self.function(&lower);
        }
        Ok(match lower.as_str() {
            "pi" => Expr::Const(Const::Pi),
            "inf" | "infinity" | "infty" => Expr::Const(Const::Inf),
            _ if w.len() == 1 => letter(&w),
            // `ab^2` is a * b^2: read one letter, push the other back as the next factor.
            _ if w.len() == 2 => {
                self.toks
                    .insert(self.pos, (Tok::Word(w[1..].to_string()), false));
                letter(&w[..1])
            }
            _ => match units::number_word(&lower) {
                Some(n) => Expr::int(n),
                None => Expr::Text(w),
            },
        })
    }

    /// `\sin x`, `\sin^2(x)`, `\log_2 8`, `\sqrt[3]{x}`.
    pub(super) fn function(&mut self, name: &str) -> Result<Expr, ParseError> {
        if name == "sqrt" {
            let index = if self.eat_ch('[') {
                let i = self.sum()?;
                self.eat_ch(']');
                Some(i)
            } else {
                None
            };
            // `√16` / `\sqrt 16` (a spaced number) is the whole number; `\sqrt16` is TeX's √1·6.
            let arg = match self.peek() {
                Some(Tok::Num(_)) if self.space_before() => self.tex_arg(true)?,
                _ => self.tex_arg(false)?,
            };
            return Ok(match index {
                Some(i) => Expr::Root(Box::new(arg), Box::new(i)),
                None => Expr::Root(Box::new(arg), Box::new(Expr::int(2))),
            });
        }
        let mut base = None;
        let mut power = None;
        for _ in 0..2 {
            if self.eat_ch('_') {
                base = Some(self.tex_arg(false)?);
            } else if self.eat_ch('^') {
                power = Some(self.tex_arg(true)?);
            }
        }
        let arg = if self.is_ch('(') {
            self.pos += 1;
            let e = self.list()?;
            self.eat_ch(')');
            e
        } else {
            // `\sin 2x` reads the whole product `2x`, but stops at the next function.
            let mut f = vec![self.power()?];
            while self.starts_factor() && !self.next_is_function() && !self.is_ch('(') {
                f.push(self.power()?);
            }
            if f.len() == 1 {
                f.pop().unwrap()
            } else {
                Expr::Mul(f)
            }
        };
        let mut args = match arg {
            Expr::List(v) if matches!(name, "gcd" | "lcm" | "max" | "min") => v,
            a => vec![a],
        };
        let name = match name {
            "lg" => "log".to_string(),
            n => n.to_string(),
        };
        if let Some(b) = base {
            args.push(b);
        }
        let f = Expr::Func(name, args);
        Ok(match power {
            // `\sin^{-1} x` is arcsin.
            Some(Expr::Neg(p)) if *p == Expr::int(1) => match &f {
                Expr::Func(n, a) if matches!(n.as_str(), "sin" | "cos" | "tan") => {
                    Expr::Func(format!("arc{n}"), a.clone())
                }
                _ => Expr::Pow(Box::new(f), Box::new(Expr::Neg(p))),
            },
            Some(p) => Expr::Pow(Box::new(f), Box::new(p)),
            None => f,
        })
    }

    fn next_is_function(&self) -> bool {
        match self.peek() {
            Some(Tok::Cmd(c)) | Some(Tok::Word(c)) => FUNCS.contains(&c.as_str()),
            _ => false,
        }
    }

    pub(super) fn command(&mut self, c: &str) -> Result<Expr, ParseError> {
        Ok(match c {
            "frac" | "over" => {
                let a = self.tex_arg(false)?;
                let b = self.tex_arg(false)?;
                Expr::Div(Box::new(a), Box::new(b))
            }
            "binom" | "choose" => {
                let a = self.tex_arg(false)?;
                let b = self.tex_arg(false)?;
                Expr::Func("binom".into(), vec![a, b])
            }
            "sqrt" => self.function("sqrt")?,
            "boxed" | "fbox" | "mathbb" | "overline" | "underline" | "hat" | "vec" | "mathcal"
            | "bar" | "widehat" | "overrightarrow" | "mathbf" | "bm" | "boldsymbol" => {
                let e = self.tex_arg(false)?;
                match (c, &e) {
                    ("mathbb", Expr::Sym(s)) if s == "R" => Expr::Reals,
                    _ => e,
                }
            }
            "pi" => Expr::Const(Const::Pi),
            "infty" | "infinity" => Expr::Const(Const::Inf),
            "emptyset" | "varnothing" => Expr::EmptySet,
            "R" | "Reals" => Expr::Reals,
            "{" => {
                // Set-builder `\{x \mid x > 2\}` / `\{x : ...\}` / `\{x | ...\}`: the condition.
                if let Some(bar) = self.set_builder_bar() {
                    self.pos = bar + 1;
                    let cond = self.list_semi()?;
                    if !self.is_cmd("}") {
                        return Err(ParseError::End);
                    }
                    self.pos += 1;
                    return Ok(cond);
                }
                let e = self.list_semi()?;
                if !(self.is_cmd("}")) {
                    return Err(ParseError::End);
                }
                self.pos += 1;
                match e {
                    Expr::List(v) => Expr::Set(v),
                    Expr::Rel(..) => Expr::Set(vec![e]),
                    other => Expr::Set(vec![other]),
                }
            }
            "lfloor" | "lceil" => {
                let e = self.sum()?;
                self.pos += 1; // the matching \rfloor / \rceil
                Expr::Func(if c == "lfloor" { "floor" } else { "ceil" }.into(), vec![e])
            }
            "langle" => {
                let e = self.list()?;
                self.pos += 1;
                seq('(', ')', e)
            }
            "lvert" | "vert" | "mid" => {
                let e = self.sum()?;
                self.pos += 1;
                Expr::Func("abs".into(), vec![e])
            }
            "begin" => self.environment()?,
            "ldots" | "dots" | "cdots" => Expr::Text("...".into()),
            "degree" => Expr::Degree(Box::new(Expr::int(1))),
            name if FUNCS.contains(&name) => self.function(name)?,
            "arcsec" | "arccsc" | "arccot" | "operatorname" => self.function(c)?,
            name if name.len() > 1 && name.chars().all(|c| c.is_ascii_alphabetic()) => {
                Expr::Sym(name.to_string())
            }
            other => return Err(ParseError::Unexpected(format!("\\{other}"))),
        })
    }

    /// The position of the `|`, `:` or `\mid` of a set-builder, if the set at `self.pos` is
    /// one: a short name part (at most 8 tokens), then the bar, before the closing `\}`.
    fn set_builder_bar(&self) -> Option<usize> {
        for k in self.pos..(self.pos + 9).min(self.toks.len()) {
            match &self.toks[k].0 {
                Tok::Ch('|') | Tok::Ch(':') => return (k > self.pos).then_some(k),
                Tok::Cmd(c) if c == "mid" => return (k > self.pos).then_some(k),
                Tok::Cmd(c) if c == "}" => return None,
                _ => {}
            }
        }
        None
    }

    /// `\begin{pmatrix} a & b \\ c & d \end{pmatrix}` (also bmatrix, matrix, array, ...).
    fn environment(&mut self) -> Result<Expr, ParseError> {
        // The environment name arrives as `{ Word }`.
        let mut name = String::new();
        if self.eat_ch('{') {
            while let Some(t) = self.bump() {
                match t {
                    Tok::Ch('}') => break,
                    Tok::Word(w) => name.push_str(&w),
                    Tok::Ch('*') => name.push('*'),
                    _ => {}
                }
            }
        }
        if name == "array" && self.is_ch('{') {
            // Column spec `{cc}`.
            while let Some(t) = self.bump() {
                if t == Tok::Ch('}') {
                    break;
                }
            }
        }
        let mut rows: Vec<Vec<Expr>> = vec![vec![]];
        loop {
            self.meter.tick()?;
            if self.is_cmd("end") {
                self.pos += 1;
                if self.eat_ch('{') {
                    while let Some(t) = self.bump() {
                        if t == Tok::Ch('}') {
                            break;
                        }
                    }
                }
                break;
            }
            if self.peek().is_none() {
                return Err(ParseError::End);
            }
            if self.is_cmd("\\") {
                self.pos += 1;
                rows.push(vec![]);
                continue;
            }
            if self.eat_ch('&') {
                continue;
            }
            let cell = self.list()?;
            rows.last_mut().unwrap().push(cell);
        }
        rows.retain(|r| !r.is_empty());
        if name.contains("matrix") || name == "array" {
            let is_det = name == "vmatrix";
            let m = Expr::Matrix(rows);
            return Ok(if is_det {
                Expr::Func("det".into(), vec![m])
            } else {
                m
            });
        }
        // align/cases and others: keep the last row's content.
        Ok(rows
            .pop()
            .and_then(|mut r| r.pop())
            .unwrap_or(Expr::List(vec![])))
    }
}

pub(super) fn letter(w: &str) -> Expr {
    match w {
        "e" => Expr::Const(Const::E),
        "i" => Expr::Const(Const::I),
        _ => Expr::Sym(w.to_string()),
    }
}

pub(super) fn number_expr(n: &str) -> Result<Expr, ParseError> {
    let (v, d) = decimal_value(n).ok_or_else(|| ParseError::Unexpected(n.to_string()))?;
    Ok(if n.contains(['.', 'e', 'E']) && d > 0 {
        Expr::Dec(v, d)
    } else {
        Expr::Num(v)
    })
}

/// `0.1\overline{6}` = 1/6.
fn repeating(lit: &str, rep: &str) -> Option<BigRational> {
    let (ip, fp) = lit.split_once('.')?;
    let ip = if ip.is_empty() { "0" } else { ip };
    let all: BigInt = format!("{ip}{fp}{rep}").parse().ok()?;
    let head: BigInt = format!("{ip}{fp}").parse().ok()?;
    let ten = BigInt::from(10);
    let den =
        (num_traits::pow(ten.clone(), rep.len()) - BigInt::one()) * num_traits::pow(ten, fp.len());
    Some(BigRational::new(all - head, den))
}

fn seq(open: char, close: char, inner: Expr) -> Expr {
    match inner {
        Expr::List(v) => Expr::Seq(open, close, v),
        // A single bracketed item is grouping (also `\left[ matrix \right]`).
        other if open == '(' && close == ')' => other,
        m @ Expr::Matrix(_) => m,
        other => Expr::Seq(open, close, vec![other]),
    }
}

/// `\text{...}` content: a number, a letter choice, or literal text.
fn text_expr(t: &str) -> Expr {
    let t = t.trim();
    if let Some((v, d)) = decimal_value(t) {
        return if d > 0 { Expr::Dec(v, d) } else { Expr::Num(v) };
    }
    let lower = t.to_ascii_lowercase();
    if let Some(n) = units::number_word(&lower) {
        return Expr::int(n);
    }
    if t.len() == 1 && t.chars().all(|c| c.is_ascii_alphabetic()) {
        return Expr::Sym(t.to_string());
    }
    Expr::Text(t.to_string())
}
