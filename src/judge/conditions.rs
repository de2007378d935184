//! Conditions a problem or its working states on its variables (`\omega^3 = 1`, `ab = 2`,
//! `x + y = 10`), and whether an identity that fails for free variables holds under them.
//!
//! A step may write `\omega^4 + \omega^5 = \omega + \omega^2` (true because `\omega^3 = 1`)
//! or `a^2b^2 + 2ab = a^2b^2 + 4` (true because `ab = 2`). Refuting those would punish a
//! correct step, so before an identity is refuted it is tested under each condition that
//! shares a variable with it:
//! - a condition in one variable `f(v) = 0` explains `A = B` when `f` divides `A - B` as
//!   polynomials (coefficients found by exact interpolation, checked at further points);
//! - a condition linear in some variable `u` (`ab = 2` in `b`) explains it when `A = B`
//!   holds exactly at test points with `u` solved from the condition.
//!
//! When neither test applies (a condition of another shape), the answer is "cannot tell"
//! and the identity is not refuted. Single values (`x = 1`: a case being tried) are not
//! conditions.

use num_rational::BigRational;
use num_traits::Zero;

use super::claims;
use crate::outcome::budget::Meter;
use crate::outcome::eval::{self, Val};
use crate::outcome::expr::{Expr, RelOp};
use crate::outcome::latex;
use crate::steps::MathPiece;

/// `f = 0` for a stated relation `l = r` (`f = l - r`), with its variables.
#[derive(Debug, Clone)]
pub(super) struct Condition {
    f: Expr,
    syms: Vec<String>,
}

/// Whether the stated conditions account for an identity that fails for free variables.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Explained {
    Yes,
    No,
    CannotTell,
}

/// The conditions in some math: single relations `l = r` with a number on one side and
/// variables on the other (not a bare name: `x = 1` is a value, not a condition).
pub(super) fn collect(pieces: &[MathPiece], out: &mut Vec<Condition>, meter: &mut Meter) {
    for p in pieces.iter().filter(|p| p.tex) {
        if meter.tick().is_err() {
            return;
        }
        for (members, ops) in claims::relations(&p.text) {
            if ops.len() != 1 || ops[0] != RelOp::Eq || out.len() >= 64 {
                continue;
            }
            let (Ok(l), Ok(r)) = (
                latex::parse(members[0].trim(), meter),
                latex::parse(members[1].trim(), meter),
            ) else {
                continue;
            };
            let (mut ls, mut rs) = (Vec::new(), Vec::new());
            l.symbols(&mut ls);
            r.symbols(&mut rs);
            let symbolic_side = match (ls.is_empty(), rs.is_empty()) {
                (false, true) => 0,
                (true, false) => 1,
                _ => continue,
            };
            let number = if symbolic_side == 0 { &r } else { &l };
            if claims::is_name(members[symbolic_side].trim())
                || eval::eval(number, &[], meter).is_err()
            {
                continue;
            }
            let mut syms = if symbolic_side == 0 { ls } else { rs };
            syms.sort();
            syms.dedup();
            out.push(Condition {
                f: Expr::Add(vec![l, Expr::Neg(Box::new(r))]),
                syms,
            });
        }
    }
}

/// Do the conditions that share a variable with `a = b` make it hold?
pub(super) fn explains(
    a: &Expr,
    b: &Expr,
    syms: &[String],
    conds: &[Condition],
    meter: &mut Meter,
) -> Explained {
    let mut result = Explained::No;
    for c in conds
        .iter()
        .filter(|c| c.syms.iter().any(|s| syms.contains(s)))
    {
        let r = if c.syms.len() == 1 && syms == c.syms.as_slice() {
            divides(&c.f, a, b, &c.syms[0], meter)
        } else {
            under_linear(c, a, b, syms, meter)
        };
        match r {
            Explained::Yes => return Explained::Yes,
            Explained::CannotTell => result = Explained::CannotTell,
            Explained::No => {}
        }
    }
    result
}

type Poly = Vec<BigRational>;

/// Exact coefficients of a polynomial in `v` of degree at most 16, by interpolation at 17
/// rational points, confirmed at two more; `None` when the expression is not one.
fn coefficients(e: &Expr, v: &str, meter: &mut Meter) -> Option<Poly> {
    const N: usize = 17;
    let xs: Vec<BigRational> = (0..N as i64 + 2)
        .map(|k| eval::rat(2 * k - 17, 3))
        .collect();
    let mut ys = Vec::with_capacity(xs.len());
    for x in &xs {
        let val = eval::eval(e, &[(v.to_string(), Val::real(x.clone()))], meter).ok()?;
        ys.push(val.as_real_q()?.clone());
    }
    // Newton's divided differences on the first N points.
    let mut dd = ys[..N].to_vec();
    for j in 1..N {
        for i in (j..N).rev() {
            dd[i] = (&dd[i] - &dd[i - 1]) / (&xs[i] - &xs[i - j]);
        }
    }
    // Expand the Newton form into monomial coefficients.
    let mut poly: Poly = vec![BigRational::zero(); N];
    for i in (0..N).rev() {
        // poly = poly * (x - xs[i]) + dd[i]
        let mut next = vec![BigRational::zero(); N];
        for (k, c) in poly.iter().enumerate() {
            if c.is_zero() {
                continue;
            }
            if k + 1 < N {
                next[k + 1] += c;
            }
            next[k] -= c * &xs[i];
        }
        next[0] += &dd[i];
        poly = next;
    }
    while poly.last().is_some_and(Zero::is_zero) {
        poly.pop();
    }
    let at = |p: &Poly, x: &BigRational| {
        p.iter()
            .rev()
            .fold(BigRational::zero(), |acc, c| acc * x + c)
    };
    (at(&poly, &xs[N]) == ys[N] && at(&poly, &xs[N + 1]) == ys[N + 1]).then_some(poly)
}

/// `f(v) = 0` explains `a = b` when `f` divides `a - b`.
fn divides(f: &Expr, a: &Expr, b: &Expr, v: &str, meter: &mut Meter) -> Explained {
    let d = Expr::Add(vec![a.clone(), Expr::Neg(Box::new(b.clone()))]);
    let (Some(fp), Some(mut r)) = (coefficients(f, v, meter), coefficients(&d, v, meter)) else {
        return Explained::CannotTell;
    };
    if fp.is_empty() {
        return Explained::CannotTell;
    }
    let lead = fp.last().unwrap().clone();
    while r.len() >= fp.len() {
        let q = r.last().unwrap() / &lead;
        let shift = r.len() - fp.len();
        for (k, c) in fp.iter().enumerate() {
            r[shift + k] -= &q * c;
        }
        r.pop();
        while r.last().is_some_and(Zero::is_zero) {
            r.pop();
        }
    }
    if r.is_empty() {
        Explained::Yes
    } else {
        Explained::No
    }
}

/// A condition linear in one of its variables `u`: solve for `u` at test points of the
/// others and compare `a` and `b` there.
fn under_linear(
    c: &Condition,
    a: &Expr,
    b: &Expr,
    syms: &[String],
    meter: &mut Meter,
) -> Explained {
    let mut all: Vec<String> = syms.iter().chain(&c.syms).cloned().collect();
    all.sort();
    all.dedup();
    if all.len() > 6 {
        return Explained::CannotTell;
    }
    let point = |t: i64, skip: &str| -> Vec<(String, Val)> {
        all.iter()
            .enumerate()
            .filter(|(_, s)| s.as_str() != skip)
            .map(|(j, s)| {
                let j = j as i64;
                (
                    s.clone(),
                    Val::real(eval::rat(3 * t + 5 * j + 2, 7 + 2 * t + j)),
                )
            })
            .collect()
    };
    let f_at = |env: &[(String, Val)], u: &str, x: i64, m: &mut Meter| {
        let mut env = env.to_vec();
        env.push((
            u.to_string(),
            Val::real(BigRational::from_integer(x.into())),
        ));
        eval::eval(&c.f, &env, m)
            .ok()
            .and_then(|v| v.as_real_q().cloned())
    };
    for u in &c.syms {
        let (mut same, mut differ, mut linear) = (0, 0, true);
        for t in 0..5 {
            let env = point(t, u);
            let (Some(f0), Some(f1), Some(f2)) = (
                f_at(&env, u, 0, meter),
                f_at(&env, u, 1, meter),
                f_at(&env, u, 2, meter),
            ) else {
                linear = false;
                break;
            };
            let slope = &f1 - &f0;
            if &f2 - &f1 != slope {
                linear = false;
                break;
            }
            if slope.is_zero() {
                continue;
            }
            let root = -f0 / slope;
            let mut env = env;
            env.push((u.clone(), Val::real(root)));
            if let (Ok(x), Ok(y)) = (eval::eval(a, &env, meter), eval::eval(b, &env, meter)) {
                match eval::same(&x, &y, 1e-9) {
                    Some(true) => same += 1,
                    Some(false) => differ += 1,
                    None => {}
                }
            }
        }
        if linear {
            return if same >= 3 && differ == 0 {
                Explained::Yes
            } else if differ > 0 {
                Explained::No
            } else {
                Explained::CannotTell
            };
        }
    }
    Explained::CannotTell
}
