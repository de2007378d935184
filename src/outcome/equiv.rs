//! Equivalence of two typed answers, the reference deciding the form.
//!
//! Scalars: exact arithmetic first (complex rationals), then exact evaluation at random
//! rational points for expressions with variables, then floating point for transcendental
//! parts. Decimal references are compared at the precision they state; a decimal candidate
//! against an exact reference at the candidate's precision, if it shows enough significant
//! digits. Containers compare their items (ordered or as sets), intervals their endpoints and
//! openness, equations up to a nonzero factor.

use super::answer::{Answer, Interval, Scalar};
use super::budget::{BudgetError, Meter};
use super::eval::{self, EvalError, Val};
use super::expr::{Const, Expr};
use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Signed, ToPrimitive, Zero};

/// Policies a caller may change per request.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// `p%` also equals `p/100` and the bare `p` (true), or only `p/100` (false).
    pub percent_flexible: bool,
    /// Fewest significant digits a decimal candidate must show to match an exact,
    /// non-terminating reference (`0.333` vs `1/3` needs 3).
    pub min_sig_digits: u32,
    /// A unit the candidate omits is accepted (`5` for `5 \text{ cm}`).
    pub allow_missing_unit: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            percent_flexible: true,
            min_sig_digits: 3,
            allow_missing_unit: true,
        }
    }
}

/// Outcome of one comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Equal(&'static str),
    NotEqual,
    /// Could not be decided inside the budget.
    Budget,
}

impl Cmp {
    fn is_eq(self) -> bool {
        matches!(self, Cmp::Equal(_))
    }
}

fn all_eq(results: impl Iterator<Item = Cmp>) -> Cmp {
    let mut how = "exact";
    for r in results {
        match r {
            Cmp::Equal(h) => {
                if h != "exact" {
                    how = h
                }
            }
            other => return other,
        }
    }
    Cmp::Equal(how)
}

pub struct Ctx<'m> {
    pub meter: &'m mut Meter,
    pub opts: Options,
}

impl Ctx<'_> {
    pub fn answers(&mut self, r: &Answer, c: &Answer) -> Cmp {
        if self.meter.tick().is_err() {
            return Cmp::Budget;
        }
        use Answer as A;
        match (r, c) {
            (A::Scalar(a), A::Scalar(b)) => self.scalars(a, b),
            (A::Assign(_, v), A::Assign(_, w)) => {
                let r1 = self.answers(v, w);
                if r1.is_eq() {
                    return r1;
                }
                match (self.as_equation(r), self.as_equation(c)) {
                    (Some((l1, r1e)), Some((l2, r2e))) => self.equations(&l1, &r1e, &l2, &r2e),
                    _ => r1,
                }
            }
            (A::Assign(_, v), other) if !matches!(other, A::Equation(..)) => self.answers(v, other),
            (other, A::Assign(_, v)) if !matches!(other, A::Equation(..)) => self.answers(other, v),
            (A::Equation(..), _) | (_, A::Equation(..)) => {
                match (self.as_equation(r), self.as_equation(c)) {
                    (Some((l1, r1)), Some((l2, r2))) => self.equations(&l1, &r1, &l2, &r2),
                    _ => Cmp::NotEqual,
                }
            }
            (A::Set(a), A::Set(b)) => self.sets(a, b),
            (A::Set(a), A::Tuple(b, _)) | (A::Tuple(a, _), A::Set(b)) => {
                // A list of assignments `p=5, q=2` is the tuple `(5, 2)`.
                if a.len() == b.len() {
                    all_eq(a.iter().zip(b).map(|(x, y)| self.answers(x, y)))
                } else {
                    Cmp::NotEqual
                }
            }
            (A::Tuple(a, _), A::Tuple(b, _)) => {
                if a.len() != b.len() {
                    return Cmp::NotEqual;
                }
                all_eq(a.iter().zip(b).map(|(x, y)| self.answers(x, y)))
            }
            (A::Intervals(a), A::Intervals(b)) => self.intervals(a, b),
            // `\{1, 2\} \cup \{3\}` is the finite set `\{1, 2, 3\}`.
            (A::Intervals(iv), other) | (other, A::Intervals(iv))
                if iv
                    .iter()
                    .all(|i| i.lo == i.hi && i.lo_closed && i.hi_closed) =>
            {
                let points: Vec<Answer> = iv
                    .iter()
                    .map(|i| A::Scalar(Scalar::plain(i.lo.clone())))
                    .collect();
                let set = A::Set(points);
                if std::ptr::eq(other, c) {
                    self.answers(&set, other)
                } else {
                    self.answers(other, &set)
                }
            }
            (A::Intervals(a), A::Tuple(t, true)) | (A::Tuple(t, true), A::Intervals(a)) => {
                match pair_as_interval(t) {
                    Some(iv) => self.intervals(a, &[iv]),
                    None => Cmp::NotEqual,
                }
            }
            (A::Intervals(a), A::AllReals) | (A::AllReals, A::Intervals(a)) => {
                let all = Interval {
                    lo: Expr::Neg(Box::new(Expr::Const(Const::Inf))),
                    hi: Expr::Const(Const::Inf),
                    lo_closed: false,
                    hi_closed: false,
                };
                self.intervals(a, &[all])
            }
            (A::Matrix(a), A::Matrix(b)) => {
                if a.len() != b.len() || a.iter().zip(b).any(|(x, y)| x.len() != y.len()) {
                    return Cmp::NotEqual;
                }
                all_eq(a.iter().flatten().zip(b.iter().flatten()).map(|(x, y)| {
                    self.scalars(&Scalar::plain(x.clone()), &Scalar::plain(y.clone()))
                }))
            }
            (A::Matrix(m), A::Tuple(t, _)) | (A::Tuple(t, _), A::Matrix(m)) => {
                let flat: Vec<&Expr> = m.iter().flatten().collect();
                let vector = m.len() == 1 || m.iter().all(|r| r.len() == 1);
                if !vector || flat.len() != t.len() {
                    return Cmp::NotEqual;
                }
                all_eq(flat.iter().zip(t).map(|(x, y)| match y {
                    A::Scalar(s) => self.scalars(&Scalar::plain((*x).clone()), s),
                    _ => Cmp::NotEqual,
                }))
            }
            (A::Relation(a, o1), A::Relation(b, o2)) => {
                if o1 == o2 && a.len() == b.len() {
                    all_eq(a.iter().zip(b).map(|(x, y)| self.exprs(x, y)))
                } else {
                    Cmp::NotEqual
                }
            }
            (A::Ratio(a), A::Ratio(b)) => self.ratios(a, b),
            // `1:2` and `1/2`.
            (A::Ratio(v), A::Scalar(s)) | (A::Scalar(s), A::Ratio(v)) if v.len() == 2 => {
                let q = Expr::Div(Box::new(v[0].clone()), Box::new(v[1].clone()));
                let nonzero = eval::eval(&v[1], &[], self.meter).is_ok_and(|d| !d.is_zero());
                if nonzero {
                    self.scalars(&Scalar::plain(q), s)
                } else {
                    Cmp::NotEqual
                }
            }
            (A::Choice(a), A::Choice(b)) => eq_if(a.eq_ignore_ascii_case(b), "text"),
            (A::Choice(a), A::Text(t)) | (A::Text(t), A::Choice(a)) => eq_if(
                t.trim_matches(['(', ')'])
                    .eq_ignore_ascii_case(&a.to_string()),
                "text",
            ),
            (A::Text(a), A::Text(b)) => eq_if(a == b, "text"),
            (A::NoSolution, A::NoSolution) | (A::AllReals, A::AllReals) => Cmp::Equal("text"),
            // `15\frac{39}{40}` or `\frac{639}{40}`: a set whose members all agree is one value.
            (A::Set(a), b) => match self.dedup(a).as_slice() {
                [one] => self.answers(one, b),
                _ => Cmp::NotEqual,
            },
            (b, A::Set(a)) => match self.dedup(a).as_slice() {
                [one] => self.answers(b, one),
                _ => Cmp::NotEqual,
            },
            _ => Cmp::NotEqual,
        }
    }

    fn as_equation(&self, a: &Answer) -> Option<(Expr, Expr)> {
        match a {
            Answer::Equation(l, r) => Some((l.clone(), r.clone())),
            Answer::Assign(l, v) => match &**v {
                Answer::Scalar(s) if !s.percent && s.unit.is_none() => {
                    Some((l.clone(), s.expr.clone()))
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Unordered comparison; duplicates on either side are ignored.
    fn sets(&mut self, a: &[Answer], b: &[Answer]) -> Cmp {
        let a = self.dedup(a);
        let b = self.dedup(b);
        if a.len() != b.len() {
            return Cmp::NotEqual;
        }
        let mut used = vec![false; b.len()];
        let mut how = "exact";
        for x in &a {
            let mut found = false;
            for (j, y) in b.iter().enumerate() {
                if used[j] {
                    continue;
                }
                match self.answers(x, y) {
                    Cmp::Equal(h) => {
                        if h != "exact" {
                            how = h;
                        }
                        used[j] = true;
                        found = true;
                        break;
                    }
                    Cmp::Budget => return Cmp::Budget,
                    Cmp::NotEqual => {}
                }
            }
            if !found {
                return Cmp::NotEqual;
            }
        }
        Cmp::Equal(how)
    }

    fn dedup<'a>(&mut self, v: &'a [Answer]) -> Vec<&'a Answer> {
        let mut out: Vec<&Answer> = Vec::new();
        for x in v {
            if v.len() > 64 || !out.iter().any(|y| self.answers(y, x).is_eq()) {
                out.push(x);
            }
        }
        out
    }

    fn intervals(&mut self, a: &[Interval], b: &[Interval]) -> Cmp {
        if a.len() != b.len() {
            return Cmp::NotEqual;
        }
        let key = |i: &Interval, m: &mut Meter| endpoint_f(&i.lo, m);
        let mut a: Vec<(f64, &Interval)> = a.iter().map(|i| (key(i, self.meter), i)).collect();
        let mut b: Vec<(f64, &Interval)> = b.iter().map(|i| (key(i, self.meter), i)).collect();
        a.sort_by(|x, y| x.0.total_cmp(&y.0));
        b.sort_by(|x, y| x.0.total_cmp(&y.0));
        all_eq(a.iter().zip(&b).map(|((_, x), (_, y))| {
            if x.lo_closed != y.lo_closed || x.hi_closed != y.hi_closed {
                return Cmp::NotEqual;
            }
            match self.endpoint(&x.lo, &y.lo) {
                Cmp::Equal(_) => self.endpoint(&x.hi, &y.hi),
                other => other,
            }
        }))
    }

    fn endpoint(&mut self, a: &Expr, b: &Expr) -> Cmp {
        match (inf_sign(a), inf_sign(b)) {
            (Some(x), Some(y)) => eq_if(x == y, "exact"),
            (None, None) => self.scalars(&Scalar::plain(a.clone()), &Scalar::plain(b.clone())),
            _ => Cmp::NotEqual,
        }
    }

    fn ratios(&mut self, a: &[Expr], b: &[Expr]) -> Cmp {
        if a.len() != b.len() {
            return Cmp::NotEqual;
        }
        let direct = all_eq(a.iter().zip(b).map(|(x, y)| self.exprs(x, y)));
        if direct.is_eq() || a.len() != 2 {
            return direct;
        }
        // a:b = c:d when a*d = b*c and no term is zero (so `12:00` never equals `1:00`).
        let v: Vec<Option<Val>> = a
            .iter()
            .chain(b)
            .map(|e| eval::eval(e, &[], self.meter).ok())
            .collect();
        if v.iter().any(|x| x.as_ref().is_none_or(|x| x.is_zero())) {
            return Cmp::NotEqual;
        }
        let v: Vec<Val> = v.into_iter().flatten().collect();
        let l = eval::mul(v[0].clone(), v[3].clone());
        let r = eval::mul(v[1].clone(), v[2].clone());
        eq_if(eval::same(&l, &r, 1e-10) == Some(true), "exact")
    }

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
        // A decimal candidate against an exact reference: at the candidate's precision.
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
                if sig >= self.opts.min_sig_digits {
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
    fn identity(&mut self, a: &Expr, b: &Expr, syms: &[String]) -> Cmp {
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
    fn equations(&mut self, l1: &Expr, r1: &Expr, l2: &Expr, r2: &Expr) -> Cmp {
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
            let mut transcendental = false;
            b.walk(&mut |x| transcendental |= matches!(x, Expr::Const(Const::Pi | Const::E)));
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

fn eq_if(b: bool, how: &'static str) -> Cmp {
    if b { Cmp::Equal(how) } else { Cmp::NotEqual }
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

fn inf_sign(e: &Expr) -> Option<bool> {
    match e {
        Expr::Const(Const::Inf) => Some(true),
        Expr::Neg(a) => inf_sign(a).map(|s| !s),
        _ => None,
    }
}

fn endpoint_f(e: &Expr, m: &mut Meter) -> f64 {
    match inf_sign(e) {
        Some(true) => f64::INFINITY,
        Some(false) => f64::NEG_INFINITY,
        None => eval::eval(e, &[], m)
            .ok()
            .and_then(|v| v.as_real_f())
            .unwrap_or(f64::NAN),
    }
}

fn pair_as_interval(t: &[Answer]) -> Option<Interval> {
    match t {
        [Answer::Scalar(a), Answer::Scalar(b)] => Some(Interval {
            lo: a.expr.clone(),
            hi: b.expr.clone(),
            lo_closed: false,
            hi_closed: false,
        }),
        _ => None,
    }
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
