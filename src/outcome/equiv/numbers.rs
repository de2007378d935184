//! Equivalence of scalars: decorations (units, percent, degrees, base numerals, stated
//! decimal precision), then plain expressions: structure, exact value, identity at exact
//! rational points, floating point confirmed with pi and e as indeterminates, and equations
//! up to a nonzero factor.

use super::{Cmp, Ctx, eq_if};
use crate::outcome::answer::Scalar;
use crate::outcome::budget::BudgetError;
use crate::outcome::eval::{self, EvalError, Val};
use crate::outcome::expr::{Const, Expr};
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

impl Ctx<'_> {
    /// Scalars with their decorations (percent, degrees, units, decimal precision).
    pub fn scalars(&mut self, r: &Scalar, c: &Scalar) -> Cmp {
        // Units: compared by dimension when both sides state one.
        if let (Some(u), Some(v)) = (&r.unit, &c.unit) {
            if u.dim != v.dim {
                return Cmp::NotEqual;
            }
            if u.dim != [0; 6] && (u.scale - v.scale).abs() > 1e-12 * u.scale.abs() {
                let (Ok(x), Ok(y)) = (
                    eval::eval(&r.expr, &[], self.meter),
                    eval::eval(&c.expr, &[], self.meter),
                ) else {
                    return Cmp::NotEqual;
                };
                let (Some(x), Some(y)) = (x.as_real_f(), y.as_real_f()) else {
                    return Cmp::NotEqual;
                };
                return eq_if(
                    ((x * u.scale) - (y * v.scale)).abs() <= 1e-9 * (x * u.scale).abs().max(1e-300),
                    "units",
                );
            }
        } else if (r.unit.is_some() || c.unit.is_some()) && !self.opts.allow_missing_unit {
            return Cmp::NotEqual;
        }
        // Percent: p% = p/100 always; = p as well under the flexible policy.
        if r.percent != c.percent {
            let (p, other) = if r.percent { (r, c) } else { (c, r) };
            let hundredth = Expr::Div(Box::new(p.expr.clone()), Box::new(Expr::int(100)));
            let as_frac = if r.percent {
                self.exprs(&hundredth, &other.expr)
            } else {
                self.exprs(&other.expr, &hundredth)
            };
            if as_frac.is_eq() || !self.opts.percent_flexible {
                return as_frac;
            }
        }
        // Degrees: 90° equals 90 and pi/2.
        if r.degree != c.degree {
            let (d, _) = if r.degree { (r, c) } else { (c, r) };
            let rad = Expr::Div(
                Box::new(Expr::Mul(vec![d.expr.clone(), Expr::Const(Const::Pi)])),
                Box::new(Expr::int(180)),
            );
            let res = if r.degree {
                self.exprs(&rad, &c.expr)
            } else {
                self.exprs(&r.expr, &rad)
            };
            if res.is_eq() {
                return res;
            }
        }
        // A base-b reference: a candidate that omits the subscript is read in base b.
        if let (Expr::Base(d, b), Expr::Num(n)) = (&r.expr, &c.expr)
            && n.is_integer()
            && !n.is_negative()
        {
            let digits = n.to_integer().to_string();
            return eq_if(
                digits == *d
                    || BigInt::parse_bytes(digits.as_bytes(), *b)
                        == BigInt::parse_bytes(d.as_bytes(), *b),
                "exact",
            );
        }
        // A decimal reference with enough significant digits to be a rounded value (`33.3`,
        // `16386.17`) is matched at the precision it states; a short one (`0.5`) exactly.
        if let Expr::Dec(rv, k) = strip_neg(&r.expr).0 {
            let rv = if strip_neg(&r.expr).1 {
                -rv.clone()
            } else {
                rv.clone()
            };
            if sig_digits(&rv, *k) >= self.opts.min_sig_digits {
                return self.at_precision(&rv, *k, &c.expr);
            }
        }
        // A decimal candidate against an exact reference: equal only when exactly equal,
        // unless rounded candidates are accepted (then at the candidate's precision).
        if let Expr::Dec(cv, k) = strip_neg(&c.expr).0 {
            let cv = if strip_neg(&c.expr).1 {
                -cv.clone()
            } else {
                cv.clone()
            };
            let sig = sig_digits(&cv, *k);
            if let Ok(rv) = eval::eval(&r.expr, &[], self.meter) {
                if rv.as_real_q().is_some_and(|q| *q == cv) {
                    return Cmp::Equal("exact");
                }
                if self.opts.accept_rounded && sig >= self.opts.min_sig_digits {
                    return self.at_precision(&cv, *k, &r.expr);
                }
                return Cmp::NotEqual;
            }
        }
        self.exprs(&r.expr, &c.expr)
    }

    /// |value(other) - x| <= half a unit in the k-th decimal.
    fn at_precision(&mut self, x: &BigRational, k: u32, other: &Expr) -> Cmp {
        let v = match eval::eval(other, &[], self.meter) {
            Ok(v) => v,
            Err(EvalError::Budget(_)) => return Cmp::Budget,
            Err(_) => return Cmp::NotEqual,
        };
        let half = BigRational::new(
            BigInt::one(),
            BigInt::from(2) * num_traits::pow(BigInt::from(10), k as usize),
        );
        match &v {
            Val::Q(re, im) if im.is_zero() => {
                if re == x {
                    return Cmp::Equal("exact");
                }
                eq_if((re - x).abs() <= half, "precision")
            }
            _ => match v.as_real_f() {
                Some(f) => {
                    let h = half.to_f64().unwrap_or(0.0);
                    let xf = x.to_f64().unwrap_or(f64::NAN);
                    eq_if((f - xf).abs() <= h * (1.0 + 1e-9), "precision")
                }
                None => Cmp::NotEqual,
            },
        }
    }

    /// Plain expressions: structure, exact value, identity at random points.
    pub fn exprs(&mut self, a: &Expr, b: &Expr) -> Cmp {
        if a == b || a.to_string() == b.to_string() {
            return Cmp::Equal("exact");
        }
        let mut syms = Vec::new();
        a.symbols(&mut syms);
        b.symbols(&mut syms);
        syms.sort();
        syms.dedup();
        if syms.is_empty() {
            let (x, y) = (
                eval::eval(a, &[], self.meter),
                eval::eval(b, &[], self.meter),
            );
            return match (x, y) {
                (Ok(x), Ok(y)) => match eval::same(&x, &y, 1e-10) {
                    Some(true) if matches!((&x, &y), (Val::Q(..), Val::Q(..))) => {
                        Cmp::Equal("exact")
                    }
                    // Floating point agreed. Where pi and e only enter through arithmetic, they
                    // are transcendental, so the identity must also hold with pi and e as
                    // variables: that catches `\pi + 10^{-12}` against `\pi`.
                    Some(true) => match (as_indeterminates(a), as_indeterminates(b)) {
                        (Some(a2), Some(b2)) if a2 != *a || b2 != *b => {
                            let syms = vec![PI_SYM.to_string(), E_SYM.to_string()];
                            match self.identity(&a2, &b2, &syms) {
                                Cmp::NotEqual => Cmp::NotEqual,
                                _ => Cmp::Equal("numeric"),
                            }
                        }
                        _ => Cmp::Equal("numeric"),
                    },
                    Some(false) => Cmp::NotEqual,
                    None => Cmp::Budget,
                },
                (Err(EvalError::Budget(_)), _) | (_, Err(EvalError::Budget(_))) => Cmp::Budget,
                _ => Cmp::NotEqual,
            };
        }
        if syms.len() > 12 {
            return Cmp::NotEqual;
        }
        self.identity(a, b, &syms)
    }

    /// Equal at (at least) 4 random rational points, evaluated exactly where possible.
    pub(super) fn identity(&mut self, a: &Expr, b: &Expr, syms: &[String]) -> Cmp {
        let mut ok = 0;
        let mut exact = true;
        for t in 0..12u64 {
            let env = point(syms, t);
            let (x, y) = (
                eval::eval(a, &env, self.meter),
                eval::eval(b, &env, self.meter),
            );
            match (x, y) {
                (Ok(x), Ok(y)) => {
                    exact &= matches!((&x, &y), (Val::Q(..), Val::Q(..)));
                    match eval::same(&x, &y, 1e-8) {
                        Some(true) => ok += 1,
                        Some(false) => return Cmp::NotEqual,
                        None => {}
                    }
                }
                (Err(EvalError::Budget(BudgetError::Time { .. })), _)
                | (_, Err(EvalError::Budget(BudgetError::Time { .. }))) => return Cmp::Budget,
                (Ok(_), Err(EvalError::Undefined)) | (Err(EvalError::Undefined), Ok(_)) => {}
                (Err(EvalError::NotScalar), _) | (_, Err(EvalError::NotScalar)) => {
                    return Cmp::NotEqual;
                }
                _ => {}
            }
            if ok >= 5 {
                break;
            }
        }
        if ok >= 3 {
            Cmp::Equal(if exact { "symbolic" } else { "numeric" })
        } else {
            Cmp::NotEqual
        }
    }

    /// `l1 = r1` and `l2 = r2` describe the same set: (l1 - r1) = k (l2 - r2), k != 0.
    pub(super) fn equations(&mut self, l1: &Expr, r1: &Expr, l2: &Expr, r2: &Expr) -> Cmp {
        let f = Expr::Add(vec![l1.clone(), Expr::Neg(Box::new(r1.clone()))]);
        let g = Expr::Add(vec![l2.clone(), Expr::Neg(Box::new(r2.clone()))]);
        let mut syms = Vec::new();
        f.symbols(&mut syms);
        g.symbols(&mut syms);
        syms.sort();
        syms.dedup();
        if syms.len() > 12 {
            return Cmp::NotEqual;
        }
        let mut ratio: Option<Val> = None;
        let mut ok = 0;
        for t in 0..12u64 {
            let env = point(&syms, t);
            let (Ok(x), Ok(y)) = (
                eval::eval(&f, &env, self.meter),
                eval::eval(&g, &env, self.meter),
            ) else {
                continue;
            };
            if x.is_zero() && y.is_zero() {
                continue;
            }
            if y.is_zero() || x.is_zero() {
                return Cmp::NotEqual;
            }
            let Ok(k) = eval::div(x, y) else { continue };
            match &ratio {
                None => ratio = Some(k),
                Some(r) => {
                    if eval::same(r, &k, 1e-8) != Some(true) {
                        return Cmp::NotEqual;
                    }
                }
            }
            ok += 1;
            if ok >= 5 {
                break;
            }
        }
        eq_if(ok >= 3, "symbolic")
    }
}

const PI_SYM: &str = "\u{1d70b}";
const E_SYM: &str = "\u{1d452}";

/// The expression with `pi` and `e` as variables, when they occur only in arithmetic (not
/// inside functions or exponents, where their values matter: `e^{i\pi} = -1`).
fn as_indeterminates(e: &Expr) -> Option<Expr> {
    Some(match e {
        Expr::Const(Const::Pi) => Expr::Sym(PI_SYM.into()),
        Expr::Const(Const::E) => Expr::Sym(E_SYM.into()),
        Expr::Add(v) => Expr::Add(v.iter().map(as_indeterminates).collect::<Option<_>>()?),
        Expr::Mul(v) => Expr::Mul(v.iter().map(as_indeterminates).collect::<Option<_>>()?),
        Expr::Neg(a) => Expr::Neg(Box::new(as_indeterminates(a)?)),
        Expr::Div(a, b) => Expr::Div(
            Box::new(as_indeterminates(a)?),
            Box::new(as_indeterminates(b)?),
        ),
        Expr::Pow(a, b) | Expr::Root(a, b) => {
            // The exponent must be plain rational arithmetic: with pi or e in it, or a
            // function (`e^{\ln 7}` = 7), the base's value matters.
            let mut transcendental = false;
            b.walk(&mut |x| {
                transcendental |= matches!(x, Expr::Const(Const::Pi | Const::E) | Expr::Func(..))
            });
            if transcendental {
                return None;
            }
            let a2 = Box::new(as_indeterminates(a)?);
            if matches!(e, Expr::Pow(..)) {
                Expr::Pow(a2, b.clone())
            } else {
                Expr::Root(a2, b.clone())
            }
        }
        Expr::Func(..) | Expr::Fact(_) | Expr::Sym(_) => {
            let mut transcendental = false;
            e.walk(&mut |x| transcendental |= matches!(x, Expr::Const(Const::Pi | Const::E)));
            if transcendental {
                return None;
            }
            e.clone()
        }
        other => other.clone(),
    })
}

fn strip_neg(e: &Expr) -> (&Expr, bool) {
    match e {
        Expr::Neg(a) => (a, true),
        other => (other, false),
    }
}

fn sig_digits(v: &BigRational, k: u32) -> u32 {
    // Digits of the scaled integer without leading zeros.
    let scaled = (v.abs()
        * BigRational::from_integer(num_traits::pow(BigInt::from(10), k as usize)))
    .round()
    .to_integer();
    let s = scaled.to_string();
    s.trim_start_matches('0').len() as u32
}

/// Deterministic test points: distinct small rationals of both signs, different per symbol,
/// so the same inputs always give the same verdict (the cache depends on it).
fn point(syms: &[String], t: u64) -> Vec<(String, Val)> {
    const NUM: [i64; 13] = [2, -3, 5, 7, -11, 13, 17, -19, 23, 29, -31, 37, 41];
    const DEN: [i64; 7] = [3, 7, 5, 11, 2, 13, 9];
    syms.iter()
        .enumerate()
        .map(|(j, s)| {
            let k = (t as usize) * 5 + j * 3;
            let v = eval::rat(NUM[k % NUM.len()], DEN[(k / 2 + j) % DEN.len()]);
            // Alternate signs and magnitudes between trials.
            let v = if t % 3 == 2 {
                v * BigRational::from_integer(BigInt::from(3))
            } else {
                v
            };
            (s.clone(), Val::real(v))
        })
        .collect()
}
