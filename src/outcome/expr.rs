//! The expression tree every answer is parsed into, and its canonical text form.
//!
//! The tree keeps what was written where it matters for judging (a decimal literal remembers
//! its precision, a base-`b` numeral its digits) and nothing else: spacing, `\left`, `\dfrac`
//! versus `\frac` are gone by the time a tree exists.

use num_rational::BigRational;
use std::fmt;

/// Named constants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Const {
    Pi,
    E,
    I,
    Inf,
}

/// Relations that may appear in an answer (`x = 5`, `-2 \le x < 7`, `x \in [0, 1)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RelOp {
    Eq,
    Lt,
    Le,
    Gt,
    Ge,
    Ne,
    Approx,
    In,
}

impl RelOp {
    /// The same relation read right to left (`a < b` is `b > a`).
    pub fn flip(self) -> RelOp {
        match self {
            RelOp::Lt => RelOp::Gt,
            RelOp::Le => RelOp::Ge,
            RelOp::Gt => RelOp::Lt,
            RelOp::Ge => RelOp::Le,
            other => other,
        }
    }
    pub fn is_order(self) -> bool {
        matches!(self, RelOp::Lt | RelOp::Le | RelOp::Gt | RelOp::Ge)
    }
}

/// A unit of measure: the dimension it measures and its size in that dimension's base unit.
#[derive(Debug, Clone, PartialEq)]
pub struct Unit {
    /// Exponents of (length, mass, time, angle, money, volume-as-its-own, count) — money and
    /// angle are kept apart from SI so "3 dollars" never equals "3 m".
    pub dim: [i8; 6],
    /// Size in the base unit of the dimension (1 cm = 0.01 m).
    pub scale: f64,
    /// As written, for display.
    pub name: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// An exact number as written (integer or fraction literal).
    Num(BigRational),
    /// A decimal literal: its exact value and how many decimals were written.
    Dec(BigRational, u32),
    /// A numeral in another base (`204_5`): its digits and the base.
    Base(String, u32),
    Sym(String),
    Const(Const),
    Add(Vec<Expr>),
    Mul(Vec<Expr>),
    Neg(Box<Expr>),
    Div(Box<Expr>, Box<Expr>),
    Pow(Box<Expr>, Box<Expr>),
    /// `\sqrt[n]{x}` as (radicand, index).
    Root(Box<Expr>, Box<Expr>),
    /// A named function applied to arguments (`sin`, `log` with base, `abs`, `binom`, ...).
    Func(String, Vec<Expr>),
    Fact(Box<Expr>),
    /// `a \pm b`; a bare `\pm b` is `PlusMinus(0, b)`.
    PlusMinus(Box<Expr>, Box<Expr>),
    /// A bracketed sequence: tuple, or interval when it has two items (the brackets decide).
    Seq(char, char, Vec<Expr>),
    /// A set written with `\{ \}`.
    Set(Vec<Expr>),
    /// Several answers separated by commas, `and`, `or`, `;`.
    List(Vec<Expr>),
    Matrix(Vec<Vec<Expr>>),
    /// A chain `a op b op c`: `items.len() == ops.len() + 1`.
    Rel(Vec<Expr>, Vec<RelOp>),
    Union(Vec<Expr>),
    /// `a : b`.
    Ratio(Vec<Expr>),
    Percent(Box<Expr>),
    Degree(Box<Expr>),
    WithUnit(Box<Expr>, Unit),
    Text(String),
    EmptySet,
    Reals,
}

impl Expr {
    pub fn int(n: i64) -> Expr {
        Expr::Num(BigRational::from_integer(n.into()))
    }

    /// True when the expression names something rather than computing it: `x`, `a_3`,
    /// `f(x)`, `|AB|`, `NO/BO`, `A:B`, `(x, y)`. Such a left-hand side makes `lhs = value`
    /// an assignment whose value is the answer.
    pub fn is_label(&self) -> bool {
        match self {
            // Multi-letter words (`RPS`, `area`) parse as text; as names they label.
            Expr::Sym(_) | Expr::Text(_) => true,
            Expr::Mul(v) | Expr::Ratio(v) => v.iter().all(|e| e.is_label()),
            Expr::Div(a, b) => a.is_label() && b.is_label(),
            // `|AB|`, `\cos \angle RPS`, `\sin\theta`: functions of names are names.
            Expr::Func(_, args) => args.iter().all(|e| e.is_label()),
            Expr::Seq('(', ')', v) => v.iter().all(|e| matches!(e, Expr::Sym(_))),
            _ => false,
        }
    }

    /// Free symbols, sorted and deduplicated.
    pub fn symbols(&self, out: &mut Vec<String>) {
        self.walk(&mut |e| {
            if let Expr::Sym(s) = e {
                out.push(s.clone());
            }
        });
        out.sort();
        out.dedup();
    }

    /// Visit every node, parents first.
    pub fn walk(&self, f: &mut dyn FnMut(&Expr)) {
        f(self);
        match self {
            Expr::Add(v)
            | Expr::Mul(v)
            | Expr::Seq(_, _, v)
            | Expr::Set(v)
            | Expr::List(v)
            | Expr::Union(v)
            | Expr::Ratio(v)
            | Expr::Func(_, v)
            | Expr::Rel(v, _) => v.iter().for_each(|e| e.walk(f)),
            Expr::Matrix(rows) => rows.iter().flatten().for_each(|e| e.walk(f)),
            Expr::Neg(a) | Expr::Fact(a) | Expr::Percent(a) | Expr::Degree(a) => a.walk(f),
            Expr::WithUnit(a, _) => a.walk(f),
            Expr::Div(a, b) | Expr::Pow(a, b) | Expr::Root(a, b) | Expr::PlusMinus(a, b) => {
                a.walk(f);
                b.walk(f)
            }
            _ => {}
        }
    }

    /// Number of nodes; used to refuse work on absurdly large trees.
    pub fn size(&self) -> usize {
        let mut n = 0;
        self.walk(&mut |_| n += 1);
        n
    }
}

fn join(f: &mut fmt::Formatter<'_>, v: &[Expr], sep: &str) -> fmt::Result {
    for (i, e) in v.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        write!(f, "{e}")?;
    }
    Ok(())
}

/// A canonical, unambiguous text form (fully parenthesised); used for structural equality,
/// cache keys and the `extracted` field's normalised form.
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::Num(q) => write!(f, "{q}"),
            Expr::Dec(q, d) => {
                write!(f, "{}", super::eval::decimal_string(q, *d))
            }
            Expr::Base(d, b) => write!(f, "{d}_{b}"),
            Expr::Sym(s) => f.write_str(s),
            Expr::Const(c) => f.write_str(match c {
                Const::Pi => "pi",
                Const::E => "e",
                Const::I => "i",
                Const::Inf => "oo",
            }),
            Expr::Add(v) => {
                f.write_str("(")?;
                join(f, v, " + ")?;
                f.write_str(")")
            }
            Expr::Mul(v) => {
                f.write_str("(")?;
                join(f, v, " * ")?;
                f.write_str(")")
            }
            Expr::Neg(a) => write!(f, "-({a})"),
            Expr::Div(a, b) => write!(f, "({a})/({b})"),
            Expr::Pow(a, b) => write!(f, "({a})^({b})"),
            Expr::Root(a, n) => write!(f, "root({a}, {n})"),
            Expr::Func(name, args) => {
                write!(f, "{name}(")?;
                join(f, args, ", ")?;
                f.write_str(")")
            }
            Expr::Fact(a) => write!(f, "({a})!"),
            Expr::PlusMinus(a, b) => write!(f, "({a} +- {b})"),
            Expr::Seq(o, c, v) => {
                write!(f, "{o}")?;
                join(f, v, ", ")?;
                write!(f, "{c}")
            }
            Expr::Set(v) => {
                f.write_str("{")?;
                join(f, v, ", ")?;
                f.write_str("}")
            }
            Expr::List(v) => join(f, v, ", "),
            Expr::Matrix(rows) => {
                f.write_str("[")?;
                for (i, r) in rows.iter().enumerate() {
                    if i > 0 {
                        f.write_str("; ")?;
                    }
                    join(f, r, ", ")?;
                }
                f.write_str("]")
            }
            Expr::Rel(items, ops) => {
                for (i, e) in items.iter().enumerate() {
                    if i > 0 {
                        let op = match ops[i - 1] {
                            RelOp::Eq => "=",
                            RelOp::Lt => "<",
                            RelOp::Le => "<=",
                            RelOp::Gt => ">",
                            RelOp::Ge => ">=",
                            RelOp::Ne => "!=",
                            RelOp::Approx => "~",
                            RelOp::In => "in",
                        };
                        write!(f, " {op} ")?;
                    }
                    write!(f, "{e}")?;
                }
                Ok(())
            }
            Expr::Union(v) => join(f, v, " U "),
            Expr::Ratio(v) => join(f, v, ":"),
            Expr::Percent(a) => write!(f, "{a}%"),
            Expr::Degree(a) => write!(f, "{a}deg"),
            Expr::WithUnit(a, u) => write!(f, "{a} {}", u.name),
            Expr::Text(t) => write!(f, "\"{t}\""),
            Expr::EmptySet => f.write_str("{}"),
            Expr::Reals => f.write_str("R"),
        }
    }
}
