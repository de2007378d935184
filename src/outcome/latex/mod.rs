//! LaTeX / plain text -> [`Expr`]: a precedence-climbing parser over [`lex`] tokens.
//!
//! Precedence, loosest first: `;` lists, `,`/`and`/`or` lists, relations (`= < \le \in`),
//! ratios (`:`), unions (`\cup`), sums (`+ - \pm`), products (`\cdot \times / \div` and
//! juxtaposition), unary signs, powers, postfix (`!`, `%`, degrees, subscripts).
//! Every recursion is depth-checked and every loop ticks the [`Meter`], so hostile input
//! ends in a [`BudgetError`], never a stack overflow or a hang.

mod atoms;

use super::budget::{BudgetError, Meter};
use super::expr::{Expr, RelOp};
use super::lex::{Tok, normalize, tokenize};
use super::units;
use atoms::{letter, number_expr};
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::Zero;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ParseError {
    #[error("unexpected {0}")]
    Unexpected(String),
    #[error("unexpected end of input")]
    End,
    #[error("{0}")]
    Budget(#[from] BudgetError),
}

/// Parse one answer. The input must already be within the length budget.
pub fn parse(s: &str, meter: &mut Meter) -> Result<Expr, ParseError> {
    let toks = tokenize(&normalize(s));
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
        abs_open: 0,
        meter,
    };
    let e = p.list_semi()?;
    if p.pos < p.toks.len() {
        return Err(ParseError::Unexpected(format!("{:?}", p.toks[p.pos].0)));
    }
    Ok(e)
}

struct Parser<'m> {
    toks: Vec<(Tok, bool)>,
    pos: usize,
    depth: usize,
    abs_open: usize,
    meter: &'m mut Meter,
}

/// Exact value of a decimal literal and its number of decimals.
pub fn decimal_value(lit: &str) -> Option<(BigRational, u32)> {
    let (mant, exp) = match lit.find(['e', 'E']) {
        Some(k) => (&lit[..k], lit[k + 1..].parse::<i64>().ok()?),
        None => (lit, 0),
    };
    let (ip, fp) = mant.split_once('.').unwrap_or((mant, ""));
    let digits = format!("{ip}{fp}");
    let n: BigInt = if digits.is_empty() {
        BigInt::zero()
    } else {
        digits.parse().ok()?
    };
    let mut v = BigRational::new(n, num_traits::pow(BigInt::from(10), fp.len()));
    if exp.unsigned_abs() > 400 {
        return None;
    }
    let p = BigRational::from_integer(num_traits::pow(
        BigInt::from(10),
        exp.unsigned_abs() as usize,
    ));
    if exp > 0 {
        v *= p;
    } else if exp < 0 {
        v /= p;
    }
    let decimals = (fp.len() as i64 - exp).max(0) as u32;
    Some((v, decimals))
}

const FUNCS: &[&str] = &[
    "sin", "cos", "tan", "sec", "csc", "cot", "arcsin", "arccos", "arctan", "sinh", "cosh", "tanh",
    "ln", "log", "lg", "exp", "det", "gcd", "lcm", "max", "min",
];

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }
    fn space_before(&self) -> bool {
        self.toks.get(self.pos).is_some_and(|t| t.1)
    }
    fn bump(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.0.clone());
        self.pos += 1;
        t
    }
    fn is_ch(&self, c: char) -> bool {
        self.peek() == Some(&Tok::Ch(c))
    }
    fn is_cmd(&self, name: &str) -> bool {
        matches!(self.peek(), Some(Tok::Cmd(n)) if n == name)
    }
    fn eat_ch(&mut self, c: char) -> bool {
        if self.is_ch(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn enter(&mut self) -> Result<(), ParseError> {
        self.depth += 1;
        self.meter.depth(self.depth)?;
        self.meter.tick()?;
        Ok(())
    }

    fn list_semi(&mut self) -> Result<Expr, ParseError> {
        let mut items = vec![self.list()?];
        while self.eat_ch(';') {
            if self.at_end_of_item() {
                continue;
            }
            items.push(self.list()?);
        }
        if items.len() == 1 {
            return Ok(items.pop().unwrap());
        }
        // `p=5,q=2; p=7,q=2`: each `;` group is one solution, an ordered tuple.
        Ok(Expr::List(
            items
                .into_iter()
                .map(|e| match e {
                    Expr::List(v) => Expr::Seq('(', ')', v),
                    other => other,
                })
                .collect(),
        ))
    }

    fn at_end_of_item(&self) -> bool {
        match self.peek() {
            None => true,
            Some(Tok::Ch(c)) => {
                matches!(c, ')' | ']' | '}' | ';' | ',' | '&') || (*c == '|' && self.abs_open > 0)
            }
            Some(Tok::Cmd(c)) => matches!(
                c.as_str(),
                "}" | "\\" | "end" | "rangle" | "rfloor" | "rceil"
            ),
            _ => false,
        }
    }

    fn is_sep(&self) -> bool {
        matches!(self.peek(), Some(Tok::Ch(',')) | Some(Tok::Sep))
            || matches!(self.peek(), Some(Tok::Cmd(c)) if c == "quad" || c == "qquad")
    }

    fn list(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        while self.is_sep() {
            self.pos += 1;
        }
        let mut items = Vec::new();
        if !self.at_end_of_item() {
            items.push(self.rel()?);
        }
        while self.is_sep() {
            while self.is_sep() {
                self.pos += 1;
            }
            if self.at_end_of_item() {
                break;
            }
            items.push(self.rel()?);
        }
        self.depth -= 1;
        Ok(match items.len() {
            0 => Expr::List(vec![]),
            1 => items.pop().unwrap(),
            _ => Expr::List(items),
        })
    }

    fn rel_op(&self) -> Option<(RelOp, usize)> {
        let t = self.peek()?;
        let next = self.toks.get(self.pos + 1).map(|t| &t.0);
        Some(match t {
            Tok::Ch('=') => (RelOp::Eq, 1),
            Tok::Ch('<') if next == Some(&Tok::Ch('=')) => (RelOp::Le, 2),
            Tok::Ch('>') if next == Some(&Tok::Ch('=')) => (RelOp::Ge, 2),
            Tok::Ch('!') if next == Some(&Tok::Ch('=')) => (RelOp::Ne, 2),
            Tok::Ch('<') => (RelOp::Lt, 1),
            Tok::Ch('>') => (RelOp::Gt, 1),
            Tok::Cmd(c) => match c.as_str() {
                "le" | "leq" | "leqslant" => (RelOp::Le, 1),
                "ge" | "geq" | "geqslant" => (RelOp::Ge, 1),
                "lt" => (RelOp::Lt, 1),
                "gt" => (RelOp::Gt, 1),
                "ne" | "neq" => (RelOp::Ne, 1),
                "approx" | "simeq" | "thickapprox" => (RelOp::Approx, 1),
                "in" => (RelOp::In, 1),
                "equiv" => (RelOp::Eq, 1),
                _ => return None,
            },
            _ => return None,
        })
    }

    fn rel(&mut self) -> Result<Expr, ParseError> {
        let first = self.ratio()?;
        let mut items = vec![first];
        let mut ops = Vec::new();
        while let Some((op, n)) = self.rel_op() {
            self.pos += n;
            ops.push(op);
            items.push(self.ratio()?);
        }
        Ok(if ops.is_empty() {
            items.pop().unwrap()
        } else {
            Expr::Rel(items, ops)
        })
    }

    /// `item (op item)*` for a one-token operator; a single item is returned as it is.
    fn chain(
        &mut self,
        item: fn(&mut Self) -> Result<Expr, ParseError>,
        is_op: fn(&Self) -> bool,
        wrap: fn(Vec<Expr>) -> Expr,
    ) -> Result<Expr, ParseError> {
        let mut items = vec![item(self)?];
        while is_op(self) {
            self.pos += 1;
            items.push(item(self)?);
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap()
        } else {
            wrap(items)
        })
    }

    fn ratio(&mut self) -> Result<Expr, ParseError> {
        self.chain(Self::union, |p| p.is_ch(':'), Expr::Ratio)
    }

    /// `A \cup B \setminus C`, read left to right; a difference is `Func("setminus", [a, b])`
    /// (sets are decided in `outcome::sets`, not evaluated).
    fn union(&mut self) -> Result<Expr, ParseError> {
        let mut items = vec![self.sum()?];
        loop {
            if self.is_cmd("cup") || self.is_ch('U') {
                self.pos += 1;
                items.push(self.sum()?);
            } else if self.is_cmd("setminus") || self.is_cmd("backslash") {
                self.pos += 1;
                let rhs = self.sum()?;
                let lhs = if items.len() == 1 {
                    items.pop().unwrap()
                } else {
                    Expr::Union(std::mem::take(&mut items))
                };
                items = vec![Expr::Func("setminus".into(), vec![lhs, rhs])];
            } else {
                break;
            }
        }
        Ok(if items.len() == 1 {
            items.pop().unwrap()
        } else {
            Expr::Union(items)
        })
    }

    fn sum(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let mut terms = vec![self.product()?];
        loop {
            self.meter.tick()?;
            if self.eat_ch('+') {
                terms.push(self.product()?);
            } else if self.is_ch('-') {
                self.pos += 1;
                terms.push(Expr::Neg(Box::new(self.product()?)));
            } else if self.is_cmd("pm") || self.is_cmd("mp") {
                self.pos += 1;
                let rhs = self.product()?;
                let lhs = if terms.len() == 1 {
                    terms.pop().unwrap()
                } else {
                    Expr::Add(std::mem::take(&mut terms))
                };
                terms = vec![Expr::PlusMinus(Box::new(lhs), Box::new(rhs))];
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(if terms.len() == 1 {
            terms.pop().unwrap()
        } else {
            Expr::Add(terms)
        })
    }

    /// Can the next token start a factor of an implicit product?
    fn starts_factor(&self) -> bool {
        match self.peek() {
            Some(Tok::Num(_)) => true,
            Some(Tok::Text(w)) | Some(Tok::Word(w)) => !units::is_percent_word(w.trim()),
            Some(Tok::Ch(c)) => matches!(c, '(' | '{') || (*c == '|' && self.abs_open == 0),
            Some(Tok::Cmd(c)) => !matches!(
                c.as_str(),
                "cdot"
                    | "times"
                    | "div"
                    | "pm"
                    | "mp"
                    | "cup"
                    | "setminus"
                    | "backslash"
                    | "cap"
                    | "le"
                    | "leq"
                    | "ge"
                    | "geq"
                    | "lt"
                    | "gt"
                    | "ne"
                    | "neq"
                    | "approx"
                    | "in"
                    | "quad"
                    | "qquad"
                    | "\\"
                    | "}"
                    | "end"
                    | "rangle"
                    | "rfloor"
                    | "rceil"
                    | "to"
                    | "rightarrow"
                    | "Rightarrow"
                    | "implies"
                    | "equiv"
                    | "simeq"
                    | "leqslant"
                    | "geqslant"
                    | "degree"
                    | "thickapprox"
                    | "ldots"
                    | "dots"
                    | "cdots"
            ),
            _ => false,
        }
    }

    fn product(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let mut f = vec![self.unary()?];
        loop {
            self.meter.tick()?;
            if self.is_ch('*') || self.is_cmd("cdot") || self.is_cmd("times") {
                self.pos += 1;
                f.push(self.unary()?);
            } else if self.is_ch('/') || self.is_cmd("div") {
                self.pos += 1;
                let d = self.unary()?;
                let n = if f.len() == 1 {
                    f.pop().unwrap()
                } else {
                    Expr::Mul(std::mem::take(&mut f))
                };
                f = vec![Expr::Div(Box::new(n), Box::new(d))];
            } else if let Some(u) = self.unit_here() {
                let n = if f.len() == 1 {
                    f.pop().unwrap()
                } else {
                    Expr::Mul(std::mem::take(&mut f))
                };
                f = vec![Expr::WithUnit(Box::new(n), u)];
            } else if let Some(mixed) = self.plain_mixed_number(&f) {
                f = vec![mixed];
            } else if self.starts_factor() {
                f.push(self.power()?);
            } else {
                break;
            }
        }
        self.depth -= 1;
        Ok(if f.len() == 1 {
            f.pop().unwrap()
        } else {
            Expr::Mul(f)
        })
    }

    /// `3 1/2` in plain text: a whole number, a space, then a proper fraction of integers.
    fn plain_mixed_number(&mut self, f: &[Expr]) -> Option<Expr> {
        let [Expr::Num(w)] = f else { return None };
        let prev_is_num = matches!(
            self.toks.get(self.pos.wrapping_sub(1)),
            Some((Tok::Num(_), _))
        );
        if !w.is_integer() || !prev_is_num || !self.space_before() {
            return None;
        }
        let (Some((Tok::Num(a), _)), Some((Tok::Ch('/'), _)), Some((Tok::Num(b), _))) = (
            self.toks.get(self.pos),
            self.toks.get(self.pos + 1),
            self.toks.get(self.pos + 2),
        ) else {
            return None;
        };
        let (a, b): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
        if b == 0 || a >= b || matches!(self.toks.get(self.pos + 3), Some((Tok::Num(_), false))) {
            return None;
        }
        self.pos += 3;
        Some(Expr::Num(
            w + BigRational::new(BigInt::from(a), BigInt::from(b)),
        ))
    }

    /// A unit after a quantity: `\text{ cm}`, `cm`, ` m` (single letters need a space),
    /// optionally squared or cubed.
    fn unit_here(&mut self) -> Option<super::expr::Unit> {
        let (word, spaced) = match self.peek()? {
            Tok::Text(t) => (t.clone(), true),
            Tok::Word(w) => (w.clone(), self.space_before()),
            _ => return None,
        };
        let mut u = units::lookup(word.trim())?;
        if word.trim().len() == 1 && !spaced {
            return None;
        }
        self.pos += 1;
        if self.is_ch('^') {
            if let Some((Tok::Num(n), _)) = self.toks.get(self.pos + 1) {
                if let Ok(k) = n.parse::<i8>() {
                    u = units::power(&u, k);
                    self.pos += 2;
                }
            } else if self.toks.get(self.pos + 1).map(|t| &t.0) == Some(&Tok::Ch('{'))
                && let (Some((Tok::Num(n), _)), Some((Tok::Ch('}'), _))) =
                    (self.toks.get(self.pos + 2), self.toks.get(self.pos + 3))
                && let Ok(k) = n.parse::<i8>()
            {
                u = units::power(&u, k);
                self.pos += 4;
            }
        }
        Some(u)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let r = if self.eat_ch('-') {
            Expr::Neg(Box::new(self.unary()?))
        } else if self.eat_ch('+') {
            self.unary()?
        } else if self.is_cmd("pm") || self.is_cmd("mp") {
            self.pos += 1;
            Expr::PlusMinus(Box::new(Expr::int(0)), Box::new(self.unary()?))
        } else {
            self.power()?
        };
        self.depth -= 1;
        Ok(r)
    }

    fn power(&mut self) -> Result<Expr, ParseError> {
        self.enter()?;
        let mut base = self.postfix()?;
        while self.is_ch('^') {
            self.pos += 1;
            let exp = self.tex_arg(true)?;
            base = Expr::Pow(Box::new(base), Box::new(exp));
            base = self.postfix_ops(base)?;
        }
        self.depth -= 1;
        Ok(base)
    }

    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let p = self.primary()?;
        self.postfix_ops(p)
    }

    fn postfix_ops(&mut self, mut e: Expr) -> Result<Expr, ParseError> {
        loop {
            self.meter.tick()?;
            match self.peek() {
                Some(Tok::Ch('!'))
                    if self.toks.get(self.pos + 1).map(|t| &t.0) != Some(&Tok::Ch('=')) =>
                {
                    self.pos += 1;
                    e = Expr::Fact(Box::new(e));
                }
                Some(Tok::Ch('%')) => {
                    self.pos += 1;
                    e = Expr::Percent(Box::new(e));
                }
                Some(Tok::Word(w) | Tok::Text(w)) if units::is_percent_word(w.trim()) => {
                    self.pos += 1;
                    e = Expr::Percent(Box::new(e));
                }
                Some(Tok::Cmd(c)) if c == "degree" => {
                    self.pos += 1;
                    e = Expr::Degree(Box::new(e));
                }
                Some(Tok::Ch('\'')) => {
                    self.pos += 1;
                    // `f'` is a name; `(x^2)'` is a derivative, which is not evaluated.
                    e = match e {
                        Expr::Sym(mut s) => {
                            s.push('\'');
                            Expr::Sym(s)
                        }
                        other => Expr::Func("derivative".into(), vec![other]),
                    };
                }
                Some(Tok::Ch('_')) => {
                    self.pos += 1;
                    let sub = self.tex_arg(false)?;
                    e = match e {
                        Expr::Sym(s) => Expr::Sym(format!("{s}_{sub}")),
                        Expr::Num(n) if n.is_integer() => {
                            let b = match &sub {
                                Expr::Num(b) if b.is_integer() => {
                                    b.to_integer().to_string().parse::<u32>().ok()
                                }
                                _ => None,
                            };
                            let digits = n.to_integer().to_string();
                            match b {
                                Some(b)
                                    if (2..=36).contains(&b)
                                        && BigInt::parse_bytes(digits.as_bytes(), b).is_some() =>
                                {
                                    Expr::Base(digits, b)
                                }
                                // `52_1`, `19_2`: not a numeral in that base; kept as written.
                                _ => Expr::Text(format!("{digits}_{sub}")),
                            }
                        }
                        // `0.0011_2`: a subscripted decimal is kept as written, not read as 0.0011.
                        Expr::Dec(v, k) => {
                            Expr::Text(format!("{}_{sub}", super::eval::decimal_string(&v, k)))
                        }
                        other => other,
                    };
                }
                _ => return Ok(e),
            }
        }
    }

    /// A TeX macro argument: `{...}`, or a single token (`\frac12` reads `1` then `2`).
    /// In an exponent a leading sign is allowed (`x^-1`).
    fn tex_arg(&mut self, exponent: bool) -> Result<Expr, ParseError> {
        self.enter()?;
        let r = match self.peek() {
            Some(Tok::Ch('{')) => {
                self.pos += 1;
                let e = self.list_semi()?;
                self.eat_ch('}');
                e
            }
            Some(Tok::Num(n)) => {
                let n = n.clone();
                // TeX reads one digit (`\frac12`, `\frac 59`).
                if n.len() > 1 && !exponent {
                    // Split `12` into `1` and a pushed-back `2`.
                    let (first, rest) = n.split_at(1);
                    self.toks[self.pos].0 = Tok::Num(rest.to_string());
                    self.toks[self.pos].1 = false;
                    decimal_value(first)
                        .map(|(v, _)| Expr::Num(v))
                        .ok_or(ParseError::End)?
                } else {
                    self.pos += 1;
                    number_expr(&n)?
                }
            }
            Some(Tok::Word(w)) if w.len() > 1 => {
                let w = w.clone();
                let (first, rest) = w.split_at(1);
                self.toks[self.pos].0 = Tok::Word(rest.to_string());
                self.toks[self.pos].1 = false;
                letter(first)
            }
            Some(Tok::Ch('-')) if exponent => {
                self.pos += 1;
                Expr::Neg(Box::new(self.tex_arg(true)?))
            }
            _ => self.primary()?,
        };
        self.depth -= 1;
        Ok(r)
    }
}
