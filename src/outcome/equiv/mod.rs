//! Equivalence of two typed answers, the reference deciding the form. Containers are
//! compared here; scalars and expressions in [`numbers`].
//!
//! Scalars: exact arithmetic first (complex rationals), then exact evaluation at random
//! rational points for expressions with variables, then floating point for transcendental
//! parts. Decimal references are compared at the precision they state; a decimal candidate
//! against an exact reference must equal it exactly (`0.125` = `\frac18`, `2.33` !=
//! `\frac73`) unless [`Options::accept_rounded`] asks for the candidate's precision. Containers compare their items (ordered or as sets), intervals their endpoints and
//! openness, equations up to a nonzero factor.

use super::answer::{Answer, Interval, Scalar};
use super::budget::Meter;
use super::eval::{self, Val};
use super::expr::{Const, Expr};

mod numbers;

/// Policies a caller may change per request.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// `p%` also equals `p/100` and the bare `p` (true), or only `p/100` (false).
    pub percent_flexible: bool,
    /// Fewest significant digits a decimal must show to be read as a rounded value: a decimal
    /// reference with this many is matched at its stated precision (`33.3` vs `100/3`), and,
    /// under `accept_rounded`, so is a decimal candidate against an exact reference.
    pub min_sig_digits: u32,
    /// A rounded decimal candidate matches an exact reference at the candidate's precision
    /// (`2.33` for `\frac73`, `1.41` for `\sqrt2`). Off by default: a reward for a rounded
    /// answer to an exact question is a false positive (the ecosystem's graders reject it).
    pub accept_rounded: bool,
    /// A unit the candidate omits is accepted (`5` for `5 \text{ cm}`).
    pub allow_missing_unit: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            percent_flexible: true,
            min_sig_digits: 3,
            accept_rounded: false,
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
            // `x + y = 4` for the value 4: the candidate names the quantity asked for (a
            // combination of two or more unknowns) and gives its value. A one-unknown left
            // side (`2x = 4`) is not accepted: it states a value of x, not of 2x.
            (A::Scalar(_), A::Equation(l, v)) if names_a_quantity(l, v) => {
                self.answers(r, &A::Scalar(super::answer::scalar(v.clone())))
            }
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
        let a = &super::sets::normalize(a, self.meter);
        let b = &super::sets::normalize(b, self.meter);
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
}

/// `l = v` with a constant `v` and an `l` in two or more unknowns (`x+y`, `ab`, `\frac{m}{n}`).
fn names_a_quantity(l: &Expr, v: &Expr) -> bool {
    let (mut ls, mut vs) = (Vec::new(), Vec::new());
    l.symbols(&mut ls);
    v.symbols(&mut vs);
    ls.sort();
    ls.dedup();
    vs.is_empty() && ls.len() >= 2
}

fn eq_if(b: bool, how: &'static str) -> Cmp {
    if b { Cmp::Equal(how) } else { Cmp::NotEqual }
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
