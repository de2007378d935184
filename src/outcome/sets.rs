//! Sets of reals as unions of intervals: set difference (`[0,10] \setminus \{3\}` is
//! `[0,3) \cup (3,10]`) and the canonical form two unions are compared in (sorted, with
//! overlapping or touching pieces merged, so `[0,3] \cup [3,10]` is `[0,10]`).
//!
//! Endpoints are ordered by their values; a piece whose endpoints cannot be evaluated to
//! reals leaves the answer as written (no reordering, no merging), so nothing here can turn
//! an unknown into an equality.

use std::cmp::Ordering;

use super::answer::{Answer, Interval};
use super::budget::Meter;
use super::eval;
use super::expr::{Const, Expr};

fn inf(positive: bool) -> Expr {
    if positive {
        Expr::Const(Const::Inf)
    } else {
        Expr::Neg(Box::new(Expr::Const(Const::Inf)))
    }
}

/// An endpoint's value for ordering: +-infinity included; `None` when it is not a real.
fn value(e: &Expr, meter: &mut Meter) -> Option<f64> {
    match e {
        Expr::Const(Const::Inf) => Some(f64::INFINITY),
        Expr::Neg(a) if matches!(**a, Expr::Const(Const::Inf)) => Some(f64::NEG_INFINITY),
        _ => eval::eval(e, &[], meter).ok()?.as_real_f(),
    }
}

/// Endpoints compared by value, equal within floating-point noise (`\sqrt2` vs `2^{1/2}`).
fn cmp(a: f64, b: f64) -> Ordering {
    if a == b || (a.is_finite() && b.is_finite() && (a - b).abs() <= 1e-12 * a.abs().max(1.0)) {
        Ordering::Equal
    } else {
        a.total_cmp(&b)
    }
}

/// An interval with the values of its endpoints.
#[derive(Clone)]
struct Piece {
    iv: Interval,
    lo: f64,
    hi: f64,
}

impl Piece {
    fn new(iv: Interval, meter: &mut Meter) -> Option<Piece> {
        let lo = value(&iv.lo, meter)?;
        let hi = value(&iv.hi, meter)?;
        Some(Piece { iv, lo, hi })
    }

    fn is_empty(&self) -> bool {
        match cmp(self.lo, self.hi) {
            Ordering::Less => false,
            Ordering::Equal => !(self.iv.lo_closed && self.iv.hi_closed),
            Ordering::Greater => true,
        }
    }

    /// The intersection with another piece (possibly empty).
    fn meet(&self, o: &Piece) -> Piece {
        let (lo, lo_v, lo_closed) = match cmp(self.lo, o.lo) {
            Ordering::Greater => (&self.iv.lo, self.lo, self.iv.lo_closed),
            Ordering::Less => (&o.iv.lo, o.lo, o.iv.lo_closed),
            Ordering::Equal => (&self.iv.lo, self.lo, self.iv.lo_closed && o.iv.lo_closed),
        };
        let (hi, hi_v, hi_closed) = match cmp(self.hi, o.hi) {
            Ordering::Less => (&self.iv.hi, self.hi, self.iv.hi_closed),
            Ordering::Greater => (&o.iv.hi, o.hi, o.iv.hi_closed),
            Ordering::Equal => (&self.iv.hi, self.hi, self.iv.hi_closed && o.iv.hi_closed),
        };
        Piece {
            iv: Interval {
                lo: lo.clone(),
                hi: hi.clone(),
                lo_closed,
                hi_closed,
            },
            lo: lo_v,
            hi: hi_v,
        }
    }

    /// This piece minus another: up to two pieces (left of it, right of it).
    fn minus(&self, o: &Piece) -> Vec<Piece> {
        let left = Piece {
            iv: Interval {
                lo: inf(false),
                hi: o.iv.lo.clone(),
                lo_closed: false,
                hi_closed: !o.iv.lo_closed,
            },
            lo: f64::NEG_INFINITY,
            hi: o.lo,
        };
        let right = Piece {
            iv: Interval {
                lo: o.iv.hi.clone(),
                hi: inf(true),
                lo_closed: !o.iv.hi_closed,
                hi_closed: false,
            },
            lo: o.hi,
            hi: f64::INFINITY,
        };
        [self.meet(&left), self.meet(&right)]
            .into_iter()
            .filter(|p| !(p.is_empty() || p.lo.is_infinite() && p.lo == p.hi))
            .collect()
    }
}

/// A set answer as pieces: intervals, points (a finite set), or all reals.
fn pieces(a: &Answer, meter: &mut Meter) -> Option<Vec<Piece>> {
    let point = |e: &Expr| Interval {
        lo: e.clone(),
        hi: e.clone(),
        lo_closed: true,
        hi_closed: true,
    };
    let ivs: Vec<Interval> = match a {
        Answer::Intervals(v) => v.clone(),
        Answer::AllReals => vec![Interval {
            lo: inf(false),
            hi: inf(true),
            lo_closed: false,
            hi_closed: false,
        }],
        Answer::NoSolution => vec![],
        // `(1, 2)` after `\setminus` is the open interval.
        Answer::Tuple(t, true) => match t.as_slice() {
            [Answer::Scalar(a), Answer::Scalar(b)] => vec![Interval {
                lo: a.expr.clone(),
                hi: b.expr.clone(),
                lo_closed: false,
                hi_closed: false,
            }],
            _ => return None,
        },
        Answer::Scalar(s) if s.unit.is_none() && !s.percent && !s.degree => vec![point(&s.expr)],
        Answer::Set(items) => {
            let mut out = Vec::new();
            for x in items {
                match x {
                    Answer::Scalar(s) if s.unit.is_none() && !s.percent && !s.degree => {
                        out.push(point(&s.expr))
                    }
                    _ => return None,
                }
            }
            out
        }
        _ => return None,
    };
    ivs.into_iter().map(|iv| Piece::new(iv, meter)).collect()
}

/// `a \setminus b` for two set answers; `None` when either is not a set of reals or an
/// endpoint has no real value.
pub fn difference(a: &Answer, b: &Answer, meter: &mut Meter) -> Option<Answer> {
    let mut left = pieces(a, meter)?;
    let right = pieces(b, meter)?;
    for r in &right {
        left = left.iter().flat_map(|p| p.minus(r)).collect();
        if left.len() > 1_000 {
            return None;
        }
    }
    if left.is_empty() {
        return Some(Answer::NoSolution);
    }
    Some(Answer::Intervals(left.into_iter().map(|p| p.iv).collect()))
}

/// The canonical form of a union: pieces sorted by their left end, overlapping or touching
/// ones merged (`[0,3) \cup [3,5]` is `[0,5]`), empty ones dropped. Unchanged when an
/// endpoint has no real value.
pub fn normalize(v: &[Interval], meter: &mut Meter) -> Vec<Interval> {
    let Some(mut ps) = v
        .iter()
        .map(|iv| Piece::new(iv.clone(), meter))
        .collect::<Option<Vec<Piece>>>()
    else {
        return v.to_vec();
    };
    ps.retain(|p| !p.is_empty());
    ps.sort_by(|a, b| {
        cmp(a.lo, b.lo).then_with(|| b.iv.lo_closed.cmp(&a.iv.lo_closed)) // closed first
    });
    let mut out: Vec<Piece> = Vec::with_capacity(ps.len());
    for p in ps {
        if let Some(last) = out.last_mut() {
            let touch = match cmp(p.lo, last.hi) {
                Ordering::Less => true,
                Ordering::Equal => last.iv.hi_closed || p.iv.lo_closed,
                Ordering::Greater => false,
            };
            if touch {
                match cmp(p.hi, last.hi) {
                    Ordering::Greater => {
                        last.iv.hi = p.iv.hi;
                        last.hi = p.hi;
                        last.iv.hi_closed = p.iv.hi_closed;
                    }
                    Ordering::Equal => last.iv.hi_closed |= p.iv.hi_closed,
                    Ordering::Less => {}
                }
                continue;
            }
        }
        out.push(p);
    }
    out.into_iter().map(|p| p.iv).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::Budget;

    fn iv(lo: i64, hi: i64, lc: bool, hc: bool) -> Interval {
        Interval {
            lo: Expr::int(lo),
            hi: Expr::int(hi),
            lo_closed: lc,
            hi_closed: hc,
        }
    }

    #[test]
    fn difference_splits_and_normalize_merges() {
        let mut m = Meter::new(Budget::default());
        let a = Answer::Intervals(vec![iv(0, 10, true, true)]);
        let b = Answer::Intervals(vec![iv(3, 3, true, true)]);
        let Some(Answer::Intervals(d)) = difference(&a, &b, &mut m) else {
            panic!("no difference")
        };
        assert_eq!(d, vec![iv(0, 3, true, false), iv(3, 10, false, true)]);
        // Removing an open interval leaves its closed ends.
        let b = Answer::Intervals(vec![iv(1, 2, false, false)]);
        let Some(Answer::Intervals(d)) = difference(&a, &b, &mut m) else {
            panic!("no difference")
        };
        assert_eq!(d, vec![iv(0, 1, true, true), iv(2, 10, true, true)]);
        // Everything removed is the empty set.
        assert_eq!(
            difference(&b, &a, &mut m),
            Some(Answer::NoSolution),
            "(1,2) minus [0,10]"
        );
        let merged = normalize(
            &[
                iv(3, 5, true, true),
                iv(0, 3, true, false),
                iv(7, 7, false, false),
            ],
            &mut m,
        );
        assert_eq!(merged, vec![iv(0, 5, true, true)]);
        // Open at a shared end: (0,3) and (3,5) stay apart.
        let apart = normalize(&[iv(0, 3, false, false), iv(3, 5, false, false)], &mut m);
        assert_eq!(apart.len(), 2);
    }
}
