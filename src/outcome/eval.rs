//! Evaluation of scalar expressions: exact complex rationals while the operations allow it
//! (`+ - * /`, integer powers, perfect roots, factorials), IEEE doubles after that (`\pi`,
//! irrational roots, `\sin`). Both paths obey the [`Meter`]: exponent, factorial and bit-size
//! caps, and wall time.

use super::budget::{BudgetError, Meter};
use super::expr::{Const, Expr};
use num_bigint::BigInt;
use num_integer::Integer;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

/// A complex value, exact or approximate.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// Exact real and imaginary parts.
    Q(BigRational, BigRational),
    /// Approximate real and imaginary parts.
    F(f64, f64),
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("undefined (division by zero or outside the domain)")]
    Undefined,
    #[error("free symbol {0}")]
    Unbound(String),
    #[error("not a number")]
    NotScalar,
    #[error("{0}")]
    Budget(#[from] BudgetError),
}

type R = Result<Val, EvalError>;

pub fn rat(n: i64, d: i64) -> BigRational {
    BigRational::new(BigInt::from(n), BigInt::from(d))
}

fn qf(q: &BigRational) -> f64 {
    q.to_f64().unwrap_or(f64::NAN)
}

impl Val {
    pub fn real(q: BigRational) -> Val {
        Val::Q(q, BigRational::zero())
    }
    pub fn f(&self) -> (f64, f64) {
        match self {
            Val::Q(a, b) => (qf(a), qf(b)),
            Val::F(a, b) => (*a, *b),
        }
    }
    /// The exact real value, when there is one.
    pub fn as_real_q(&self) -> Option<&BigRational> {
        match self {
            Val::Q(a, b) if b.is_zero() => Some(a),
            _ => None,
        }
    }
    /// The real part as a float when the value is (numerically) real.
    pub fn as_real_f(&self) -> Option<f64> {
        let (a, b) = self.f();
        if b.abs() <= 1e-12 * a.abs().max(1.0) {
            Some(a)
        } else {
            None
        }
    }
    pub fn is_zero(&self) -> bool {
        match self {
            Val::Q(a, b) => a.is_zero() && b.is_zero(),
            Val::F(a, b) => *a == 0.0 && *b == 0.0,
        }
    }
}

fn bits(q: &BigRational) -> u64 {
    q.numer().bits() + q.denom().bits()
}

fn check(meter: &Meter, v: Val) -> R {
    if let Val::Q(a, b) = &v {
        meter.bits(bits(a).max(bits(b)))?;
    }
    Ok(v)
}

pub fn add(a: Val, b: Val) -> Val {
    match (a, b) {
        (Val::Q(a1, a2), Val::Q(b1, b2)) => Val::Q(a1 + b1, a2 + b2),
        (a, b) => {
            let ((x1, y1), (x2, y2)) = (a.f(), b.f());
            Val::F(x1 + x2, y1 + y2)
        }
    }
}

pub fn neg(a: Val) -> Val {
    match a {
        Val::Q(x, y) => Val::Q(-x, -y),
        Val::F(x, y) => Val::F(-x, -y),
    }
}

pub fn mul(a: Val, b: Val) -> Val {
    match (a, b) {
        (Val::Q(a1, a2), Val::Q(b1, b2)) => {
            if a2.is_zero() && b2.is_zero() {
                Val::Q(a1 * b1, BigRational::zero())
            } else {
                Val::Q(&a1 * &b1 - &a2 * &b2, a1 * b2 + a2 * b1)
            }
        }
        (a, b) => {
            let ((x1, y1), (x2, y2)) = (a.f(), b.f());
            Val::F(x1 * x2 - y1 * y2, x1 * y2 + y1 * x2)
        }
    }
}

pub fn div(a: Val, b: Val) -> R {
    if b.is_zero() {
        return Err(EvalError::Undefined);
    }
    Ok(match (a, b) {
        (Val::Q(a1, a2), Val::Q(b1, b2)) => {
            if a2.is_zero() && b2.is_zero() {
                Val::Q(a1 / b1, BigRational::zero())
            } else {
                let d = &b1 * &b1 + &b2 * &b2;
                Val::Q((&a1 * &b1 + &a2 * &b2) / &d, (a2 * b1 - a1 * b2) / d)
            }
        }
        (a, b) => {
            let ((x1, y1), (x2, y2)) = (a.f(), b.f());
            let d = x2 * x2 + y2 * y2;
            Val::F((x1 * x2 + y1 * y2) / d, (y1 * x2 - x1 * y2) / d)
        }
    })
}

/// Exact integer root of a non-negative integer, if it is one.
fn exact_root(n: &BigInt, k: u32) -> Option<BigInt> {
    let r = n.nth_root(k);
    if num_traits::pow(r.clone(), k as usize) == *n {
        Some(r)
    } else {
        None
    }
}

fn cpow_f(a: (f64, f64), b: (f64, f64)) -> Val {
    let (x, y) = a;
    if x == 0.0 && y == 0.0 {
        return Val::F(if b.0 == 0.0 { 1.0 } else { 0.0 }, 0.0);
    }
    // Real base and real exponent: stay on the real line when that is meaningful.
    if y == 0.0 && b.1 == 0.0 && (x > 0.0 || b.0.fract() == 0.0) {
        return Val::F(x.powf(b.0), 0.0);
    }
    let (r, th) = ((x * x + y * y).sqrt(), y.atan2(x));
    let lr = r.ln();
    let (re, im) = (b.0 * lr - b.1 * th, b.1 * lr + b.0 * th);
    let m = re.exp();
    Val::F(m * im.cos(), m * im.sin())
}

pub fn pow(base: Val, exp: Val, meter: &Meter) -> R {
    if let (Val::Q(b1, b2), Some(e)) = (&base, exp.as_real_q().cloned()) {
        if e.is_integer() {
            let n = e.to_integer();
            if base.is_zero() {
                return if n.is_negative() {
                    Err(EvalError::Undefined)
                } else {
                    Ok(Val::real(if n.is_zero() {
                        BigRational::one()
                    } else {
                        BigRational::zero()
                    }))
                };
            }
            if b2.is_zero() && (b1.abs().is_one()) {
                let odd = n.is_odd();
                return Ok(Val::real(if b1.is_negative() && odd {
                    -BigRational::one()
                } else {
                    BigRational::one()
                }));
            }
            let mag = n.abs().to_u64().unwrap_or(u64::MAX);
            if mag > meter.budget.max_exponent {
                return Err(BudgetError::Exponent {
                    limit: meter.budget.max_exponent,
                }
                .into());
            }
            let est = bits(b1).max(bits(b2)).saturating_mul(mag);
            meter.bits(est)?;
            let mut acc = Val::real(BigRational::one());
            let mut sq = base.clone();
            let mut k = mag;
            while k > 0 {
                if k & 1 == 1 {
                    acc = mul(acc, sq.clone());
                }
                k >>= 1;
                if k > 0 {
                    sq = mul(sq.clone(), sq);
                }
            }
            return if n.is_negative() {
                div(Val::real(BigRational::one()), acc)
            } else {
                Ok(acc)
            };
        }
        // Rational exponent p/q of a real rational base: exact when the q-th root is.
        if b2.is_zero()
            && let (Some(p), Some(q)) = (e.numer().to_i64(), e.denom().to_u32())
            && q <= 64
            && p.unsigned_abs() <= meter.budget.max_exponent
        {
            let neg = b1.is_negative();
            if !neg || q % 2 == 1 {
                let a = b1.abs();
                if let (Some(rn), Some(rd)) = (exact_root(a.numer(), q), exact_root(a.denom(), q)) {
                    let root = BigRational::new(if neg { -rn } else { rn }, rd);
                    return pow(
                        Val::real(root),
                        Val::real(BigRational::from_integer(p.into())),
                        meter,
                    );
                }
                if neg {
                    // Real odd root of a negative number.
                    let v = -(qf(&a).powf(p as f64 / q as f64));
                    return Ok(Val::F(if p % 2 == 0 { -v } else { v }, 0.0));
                }
            } else if q == 2 {
                // sqrt of a negative rational: i * sqrt(|b|).
                let r = pow(Val::real(-b1.clone()), exp.clone(), meter)?;
                let i_p = pow(
                    Val::Q(BigRational::zero(), BigRational::one()),
                    Val::real(BigRational::from_integer(p.into())),
                    meter,
                )?;
                return Ok(mul(r, i_p));
            }
        }
    }
    let v = cpow_f(base.f(), exp.f());
    let (a, b) = v.f();
    if !a.is_finite() || !b.is_finite() {
        return Err(BudgetError::TooBig {
            limit: meter.budget.max_bits,
        }
        .into());
    }
    Ok(v)
}

fn real_f(v: &Val) -> Result<f64, EvalError> {
    v.as_real_f().ok_or(EvalError::Undefined)
}

fn float(x: f64) -> R {
    if x.is_nan() {
        Err(EvalError::Undefined)
    } else if x.is_infinite() {
        // An overflow says nothing about the value: it must never decide a comparison.
        Err(BudgetError::Overflow.into())
    } else {
        Ok(Val::F(x, 0.0))
    }
}

/// ln of a positive integer of any size: its top 64 bits and its bit length, so that
/// `\log_{10}(100^{20000})` stays finite where the integer itself does not fit a double.
fn ln_int(n: &BigInt) -> f64 {
    let b = n.bits();
    if b <= 1000 {
        return n.to_f64().unwrap_or(f64::INFINITY).ln();
    }
    let shift = b - 64;
    let top = (n >> shift).to_f64().unwrap_or(f64::NAN);
    top.ln() + shift as f64 * std::f64::consts::LN_2
}

/// ln of a positive rational, finite for any size of numerator and denominator.
fn ln_q(q: &BigRational) -> f64 {
    ln_int(q.numer()) - ln_int(q.denom())
}

/// `log_b x` as an exact rational `p/q` when `b^p = x^q` holds exactly (`\log_4 8 = 3/2`,
/// `\log_2 \frac18 = -3`), checked within the bit budget; `None` otherwise.
fn exact_log(x: &BigRational, b: &BigRational, approx: f64, meter: &Meter) -> Option<BigRational> {
    if !approx.is_finite() {
        return None;
    }
    for q in 1..=12i64 {
        let p = (approx * q as f64).round();
        if (approx * q as f64 - p).abs() > 1e-9 * q as f64 || p.abs() > 1e6 {
            continue;
        }
        let p = p as i64;
        let cost = bits(b).saturating_mul(p.unsigned_abs()) + bits(x).saturating_mul(q as u64);
        if meter.bits(cost).is_err() {
            return None;
        }
        let lhs = pow_q(b, p);
        let rhs = pow_q(x, q);
        if lhs == rhs {
            return Some(rat(p, q));
        }
    }
    None
}

/// An exact integer power of a rational (the caller has checked the size).
fn pow_q(x: &BigRational, n: i64) -> BigRational {
    let m = num_traits::pow(x.clone(), n.unsigned_abs() as usize);
    if n < 0 { m.recip() } else { m }
}

fn int_arg(v: &Val) -> Result<BigInt, EvalError> {
    match v.as_real_q() {
        Some(q) if q.is_integer() => Ok(q.to_integer()),
        _ => Err(EvalError::Undefined),
    }
}

/// Evaluate with the given values for free symbols.
pub fn eval(e: &Expr, env: &[(String, Val)], meter: &mut Meter) -> R {
    eval_d(e, env, meter, 0)
}

fn eval_d(e: &Expr, env: &[(String, Val)], meter: &mut Meter, depth: usize) -> R {
    meter.tick()?;
    meter.depth(depth)?;
    let ev = |x: &Expr, m: &mut Meter| eval_d(x, env, m, depth + 1);
    let v = match e {
        Expr::Num(q) | Expr::Dec(q, _) => Val::real(q.clone()),
        Expr::Base(digits, b) => {
            let n = BigInt::parse_bytes(digits.as_bytes(), *b).ok_or(EvalError::Undefined)?;
            Val::real(BigRational::from_integer(n))
        }
        Expr::Sym(s) => env
            .iter()
            .find(|(n, _)| n == s)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| EvalError::Unbound(s.clone()))?,
        Expr::Const(Const::Pi) => Val::F(std::f64::consts::PI, 0.0),
        Expr::Const(Const::E) => Val::F(std::f64::consts::E, 0.0),
        Expr::Const(Const::I) => Val::Q(BigRational::zero(), BigRational::one()),
        Expr::Const(Const::Inf) => return Err(EvalError::NotScalar),
        Expr::Add(v) => {
            let mut acc = Val::real(BigRational::zero());
            for x in v {
                // Sums of fractions grow too (their denominators multiply).
                let x = ev(x, meter)?;
                acc = check(meter, add(acc, x))?;
            }
            acc
        }
        Expr::Mul(v) => {
            let mut acc = Val::real(BigRational::one());
            for x in v {
                acc = mul(acc, ev(x, meter)?);
                acc = check(meter, acc)?;
            }
            acc
        }
        Expr::Neg(a) => neg(ev(a, meter)?),
        Expr::Div(a, b) => {
            let q = div(ev(a, meter)?, ev(b, meter)?)?;
            check(meter, q)?
        }
        Expr::Pow(a, b) => {
            let ex = ev(b, meter)?;
            pow(ev(a, meter)?, ex, meter)?
        }
        Expr::Root(a, n) => {
            let n = ev(n, meter)?;
            let inv = div(Val::real(BigRational::one()), n)?;
            pow(ev(a, meter)?, inv, meter)?
        }
        Expr::Percent(a) => div(
            ev(a, meter)?,
            Val::real(BigRational::from_integer(100.into())),
        )?,
        Expr::Degree(a) | Expr::WithUnit(a, _) => ev(a, meter)?,
        Expr::Fact(a) => {
            let n = int_arg(&ev(a, meter)?)?;
            if n.is_negative() {
                return Err(EvalError::Undefined);
            }
            let n = n.to_u64().unwrap_or(u64::MAX);
            if n > meter.budget.max_factorial {
                return Err(BudgetError::Factorial {
                    limit: meter.budget.max_factorial,
                }
                .into());
            }
            let mut acc = BigInt::one();
            for k in 2..=n {
                meter.tick()?;
                acc *= k;
            }
            Val::real(BigRational::from_integer(acc))
        }
        Expr::Func(name, args) => {
            let mut vals = Vec::with_capacity(args.len());
            for a in args {
                vals.push(ev(a, meter)?);
            }
            func(name, &vals, meter)?
        }
        Expr::PlusMinus(..)
        | Expr::Seq(..)
        | Expr::Set(_)
        | Expr::List(_)
        | Expr::Matrix(_)
        | Expr::Rel(..) => {
            return Err(EvalError::NotScalar);
        }
        Expr::Union(_) | Expr::Ratio(_) | Expr::Text(_) | Expr::EmptySet | Expr::Reals => {
            return Err(EvalError::NotScalar);
        }
    };
    check(meter, v)
}

fn func(name: &str, v: &[Val], meter: &mut Meter) -> R {
    let one = |f: fn(f64) -> f64| -> R {
        let x = real_f(v.first().ok_or(EvalError::NotScalar)?)?;
        float(f(x))
    };
    match (name, v.len()) {
        ("abs", 1) => match &v[0] {
            Val::Q(a, b) if b.is_zero() => Ok(Val::real(a.abs())),
            Val::Q(a, b) => pow(Val::real(a * a + b * b), Val::real(rat(1, 2)), meter),
            Val::F(a, b) => float(a.hypot(*b)),
        },
        ("floor", 1) | ("ceil", 1) => match v[0].as_real_q() {
            Some(q) => Ok(Val::real(if name == "floor" {
                q.floor()
            } else {
                q.ceil()
            })),
            None => one(if name == "floor" {
                f64::floor
            } else {
                f64::ceil
            }),
        },
        ("binom", 2) => {
            let (n, k) = (int_arg(&v[0])?, int_arg(&v[1])?);
            if k.is_negative() || k > n || n.is_negative() {
                return Ok(Val::real(BigRational::zero()));
            }
            let k = k
                .to_u64()
                .unwrap_or(u64::MAX)
                .min((&n - &k).to_u64().unwrap_or(u64::MAX));
            if k > meter.budget.max_factorial {
                return Err(BudgetError::Factorial {
                    limit: meter.budget.max_factorial,
                }
                .into());
            }
            // The result has about k * bits(n) bits: refuse before multiplying, since one
            // step of a huge product can outlast the clock the meter reads between ticks.
            meter.bits(k.saturating_mul(n.bits().max(1)))?;
            let mut acc = BigRational::one();
            for i in 0..k {
                meter.tick()?;
                acc = acc * BigRational::from_integer(&n - BigInt::from(i))
                    / BigRational::from_integer(BigInt::from(i + 1));
            }
            Ok(Val::real(acc))
        }
        ("gcd", _) | ("lcm", _) if !v.is_empty() => {
            let mut acc = int_arg(&v[0])?;
            for x in &v[1..] {
                let y = int_arg(x)?;
                acc = if name == "gcd" {
                    acc.gcd(&y)
                } else {
                    acc.lcm(&y)
                };
            }
            Ok(Val::real(BigRational::from_integer(acc)))
        }
        ("max", _) | ("min", _) if !v.is_empty() => {
            let mut best = real_f(&v[0])?;
            let mut idx = 0;
            for (i, x) in v.iter().enumerate().skip(1) {
                let f = real_f(x)?;
                if (name == "max" && f > best) || (name == "min" && f < best) {
                    best = f;
                    idx = i;
                }
            }
            Ok(v[idx].clone())
        }
        ("exp", 1) => {
            if v[0].is_zero() {
                return Ok(Val::real(BigRational::one()));
            }
            pow(Val::F(std::f64::consts::E, 0.0), v[0].clone(), meter)
        }
        ("ln", 1) => {
            if v[0].as_real_q().is_some_and(|q| q.is_one()) {
                return Ok(Val::real(BigRational::zero()));
            }
            match v[0].as_real_q() {
                Some(q) if q.is_positive() => float(ln_q(q)),
                Some(_) => Err(EvalError::Undefined),
                None => {
                    let x = real_f(&v[0])?;
                    if x <= 0.0 {
                        Err(EvalError::Undefined)
                    } else {
                        float(x.ln())
                    }
                }
            }
        }
        ("log", 1) | ("log", 2) => {
            let ten = BigRational::from_integer(BigInt::from(10));
            let base_q = if v.len() == 2 {
                v[1].as_real_q().cloned()
            } else {
                Some(ten)
            };
            // Exact arguments: logarithms of any size, exact when the result is rational.
            if let (Some(x), Some(b)) = (v[0].as_real_q(), base_q.as_ref()) {
                if !x.is_positive() || !b.is_positive() || b.is_one() {
                    return Err(EvalError::Undefined);
                }
                let r = ln_q(x) / ln_q(b);
                if let Some(q) = exact_log(x, b, r, meter) {
                    return Ok(Val::real(q));
                }
                return float(r);
            }
            let x = real_f(&v[0])?;
            let b = if v.len() == 2 { real_f(&v[1])? } else { 10.0 };
            if x <= 0.0 || b <= 0.0 || b == 1.0 {
                return Err(EvalError::Undefined);
            }
            float(x.ln() / b.ln())
        }
        ("sin", 1) => one(f64::sin),
        ("cos", 1) => one(f64::cos),
        ("tan", 1) => one(f64::tan),
        ("sec", 1) => one(|x| 1.0 / x.cos()),
        ("csc", 1) => one(|x| 1.0 / x.sin()),
        ("cot", 1) => one(|x| 1.0 / x.tan()),
        ("arcsin", 1) => one(f64::asin),
        ("arccos", 1) => one(f64::acos),
        ("arctan", 1) => one(f64::atan),
        ("sinh", 1) => one(f64::sinh),
        ("cosh", 1) => one(f64::cosh),
        ("tanh", 1) => one(f64::tanh),
        ("det", 1) => Err(EvalError::NotScalar),
        _ => Err(EvalError::NotScalar),
    }
}

/// Numeric closeness of two values: exact equality for exact values, relative tolerance
/// `rel` for floats. `None` when it cannot be decided (non-finite).
pub fn same(a: &Val, b: &Val, rel: f64) -> Option<bool> {
    if let (Val::Q(a1, a2), Val::Q(b1, b2)) = (a, b) {
        return Some(a1 == b1 && a2 == b2);
    }
    let ((x1, y1), (x2, y2)) = (a.f(), b.f());
    if ![x1, y1, x2, y2].iter().all(|v| v.is_finite()) {
        return None;
    }
    let d = ((x1 - x2).powi(2) + (y1 - y2).powi(2)).sqrt();
    let m = (x1.hypot(y1)).max(x2.hypot(y2));
    // A tiny absolute floor only for values that are zero up to rounding (sin(pi)).
    Some(d <= rel * m || (m < 1e-13 && d < 1e-13))
}

/// A decimal rendering of `q` with `d` decimals (rounded half away from zero).
pub fn decimal_string(q: &BigRational, d: u32) -> String {
    let scale = BigRational::from_integer(num_traits::pow(BigInt::from(10), d as usize));
    let scaled = (q * scale).round().to_integer();
    let neg = scaled.is_negative();
    let s = scaled.abs().to_string();
    let d = d as usize;
    let s = if s.len() <= d {
        format!("{}{}", "0".repeat(d + 1 - s.len()), s)
    } else {
        s
    };
    let (ip, fp) = s.split_at(s.len() - d);
    let sign = if neg { "-" } else { "" };
    if d == 0 {
        format!("{sign}{ip}")
    } else {
        format!("{sign}{ip}.{fp}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::budget::{Budget, Meter};

    #[test]
    fn decimal_strings_round_half_away_from_zero() {
        assert_eq!(decimal_string(&rat(1, 3), 3), "0.333");
        assert_eq!(decimal_string(&rat(2, 3), 2), "0.67");
        assert_eq!(decimal_string(&rat(-5, 2), 0), "-3");
        assert_eq!(decimal_string(&rat(1, 200), 2), "0.01");
    }

    #[test]
    fn powers_stay_exact_and_respect_caps() {
        let m = Meter::new(Budget::default());
        let v = pow(Val::real(rat(2, 1)), Val::real(rat(-3, 1)), &m).unwrap();
        assert_eq!(v, Val::real(rat(1, 8)));
        let v = pow(Val::real(rat(8, 27)), Val::real(rat(2, 3)), &m).unwrap();
        assert_eq!(v, Val::real(rat(4, 9)));
        let v = pow(Val::real(rat(-4, 1)), Val::real(rat(1, 2)), &m).unwrap();
        assert_eq!(v, Val::Q(rat(0, 1), rat(2, 1)));
        assert!(matches!(
            pow(Val::real(rat(3, 1)), Val::real(rat(1_000_000, 1)), &m),
            Err(EvalError::Budget(BudgetError::Exponent { .. }))
        ));
        assert!(pow(Val::real(rat(0, 1)), Val::real(rat(-1, 1)), &m).is_err());
    }
}
