//! Answer forms that need more than a look at the tree: matrix arithmetic written in the
//! answer, relations (`x = 5`, chains, `\\in`) and one-variable inequalities as intervals.

use super::answer::{Answer, Interval, classify};
use super::budget::Meter;
use super::eval::{self, Val};
use super::expr::{Const, Expr, RelOp};
use num_traits::{Signed, Zero};

/// Matrix arithmetic written in the answer (`2\begin{pmatrix}..\end{pmatrix}`, `A + B`, `AB`)
/// reduced to one matrix of entry expressions.
pub(super) fn matrix_value(e: &Expr) -> Option<Vec<Vec<Expr>>> {
    let mut has = false;
    e.walk(&mut |x| has |= matches!(x, Expr::Matrix(_)));
    if !has {
        return None;
    }
    match mat(e)? {
        M::Mat(m) => Some(m),
        M::Scalar(_) => None,
    }
}

enum M {
    Mat(Vec<Vec<Expr>>),
    Scalar(Expr),
}

fn mat(e: &Expr) -> Option<M> {
    Some(match e {
        Expr::Matrix(m) => M::Mat(m.clone()),
        Expr::Mul(v) => {
            let mut acc = M::Scalar(Expr::int(1));
            for x in v {
                acc = match (acc, mat(x)?) {
                    (M::Scalar(a), M::Scalar(b)) => M::Scalar(Expr::Mul(vec![a, b])),
                    (M::Scalar(a), M::Mat(m)) | (M::Mat(m), M::Scalar(a)) => M::Mat(
                        m.into_iter()
                            .map(|r| {
                                r.into_iter()
                                    .map(|c| Expr::Mul(vec![a.clone(), c]))
                                    .collect()
                            })
                            .collect(),
                    ),
                    (M::Mat(a), M::Mat(b)) => {
                        let (n, k, p) = (a.len(), b.len(), b.first()?.len());
                        if a.iter().any(|r| r.len() != k)
                            || b.iter().any(|r| r.len() != p)
                            || n * p * k > 10_000
                        {
                            return None;
                        }
                        M::Mat(
                            (0..n)
                                .map(|i| {
                                    (0..p)
                                        .map(|j| {
                                            Expr::Add(
                                                (0..k)
                                                    .map(|t| {
                                                        Expr::Mul(vec![
                                                            a[i][t].clone(),
                                                            b[t][j].clone(),
                                                        ])
                                                    })
                                                    .collect(),
                                            )
                                        })
                                        .collect()
                                })
                                .collect(),
                        )
                    }
                };
            }
            acc
        }
        Expr::Add(v) => {
            let mut acc: Option<Vec<Vec<Expr>>> = None;
            for x in v {
                let M::Mat(m) = mat(x)? else { return None };
                acc = Some(match acc {
                    None => m,
                    Some(a) => {
                        if a.len() != m.len() || a.iter().zip(&m).any(|(r, s)| r.len() != s.len()) {
                            return None;
                        }
                        a.into_iter()
                            .zip(m)
                            .map(|(r, s)| {
                                r.into_iter()
                                    .zip(s)
                                    .map(|(x, y)| Expr::Add(vec![x, y]))
                                    .collect()
                            })
                            .collect()
                    }
                });
            }
            M::Mat(acc?)
        }
        Expr::Neg(a) => match mat(a)? {
            M::Mat(m) => M::Mat(
                m.into_iter()
                    .map(|r| r.into_iter().map(|c| Expr::Neg(Box::new(c))).collect())
                    .collect(),
            ),
            M::Scalar(s) => M::Scalar(Expr::Neg(Box::new(s))),
        },
        Expr::Div(a, b) => match (mat(a)?, mat(b)?) {
            (M::Mat(m), M::Scalar(s)) => M::Mat(
                m.into_iter()
                    .map(|r| {
                        r.into_iter()
                            .map(|c| Expr::Div(Box::new(c), Box::new(s.clone())))
                            .collect()
                    })
                    .collect(),
            ),
            (M::Scalar(x), M::Scalar(y)) => M::Scalar(Expr::Div(Box::new(x), Box::new(y))),
            _ => return None,
        },
        other => {
            let mut has = false;
            other.walk(&mut |x| has |= matches!(x, Expr::Matrix(_)));
            if has {
                return None;
            }
            M::Scalar(other.clone())
        }
    })
}

/// `x = 5`, `x \in [0, 1)`, `-2 \le x < 7`, `2x + 4y = 3`, `x \approx 1.3`.
pub(super) fn relation(mut items: Vec<Expr>, mut ops: Vec<RelOp>, meter: &mut Meter) -> Answer {
    // In a chain, `\approx` parts after an exact `=` are commentary: `x = 1/3 \approx 0.33`.
    if let Some(k) = ops.iter().position(|o| *o == RelOp::Approx) {
        if ops[..k].contains(&RelOp::Eq) {
            ops.truncate(k);
            items.truncate(k + 1);
        } else {
            ops = ops
                .into_iter()
                .map(|o| if o == RelOp::Approx { RelOp::Eq } else { o })
                .collect();
        }
    }
    if ops.iter().all(|o| *o == RelOp::Eq) {
        let last = items.pop().unwrap();
        let first = items.swap_remove(0);
        let mut syms = Vec::new();
        first.symbols(&mut syms);
        last.symbols(&mut syms);
        // `\frac12 = \frac{10}{9}` (no variables) is a computation; its value is the last member.
        if ops.len() == 1 && !first.is_label() && !syms.is_empty() {
            return Answer::Equation(first, last);
        }
        // `x = 5+5+1 = 11`: the last member of a chain is the value.
        return Answer::Assign(first, Box::new(classify(last, meter)));
    }
    if ops.len() == 1 && ops[0] == RelOp::In && items[0].is_label() {
        let set = items.pop().unwrap();
        let name = items.pop().unwrap();
        return Answer::Assign(name, Box::new(classify(set, meter)));
    }
    if ops.iter().all(|o| o.is_order())
        && let Some(iv) = to_intervals(&items, &ops, meter)
    {
        return Answer::Intervals(iv);
    }
    Answer::Relation(items, ops)
}

fn neg_inf() -> Expr {
    Expr::Neg(Box::new(Expr::Const(Const::Inf)))
}

/// One-variable inequalities as intervals. Handles `x op c`, `c op x`, linear `a x + b op c`
/// (sign of `a` flips the relation), `a op MID op b` chains and `|x| op c`.
fn to_intervals(items: &[Expr], ops: &[RelOp], meter: &mut Meter) -> Option<Vec<Interval>> {
    let consts: Vec<bool> = items
        .iter()
        .map(|e| {
            let mut s = Vec::new();
            e.symbols(&mut s);
            s.is_empty()
        })
        .collect();
    if items.len() == 3 && consts[0] && !consts[1] && consts[2] {
        let up = matches!(ops[0], RelOp::Lt | RelOp::Le) && matches!(ops[1], RelOp::Lt | RelOp::Le);
        let down =
            matches!(ops[0], RelOp::Gt | RelOp::Ge) && matches!(ops[1], RelOp::Gt | RelOp::Ge);
        if !(up || down) {
            return None;
        }
        let (lo, hi, lc, hc) = if up {
            (
                &items[0],
                &items[2],
                ops[0] == RelOp::Le,
                ops[1] == RelOp::Le,
            )
        } else {
            (
                &items[2],
                &items[0],
                ops[1] == RelOp::Ge,
                ops[0] == RelOp::Ge,
            )
        };
        if let Expr::Func(f, a) = &items[1]
            && f == "abs"
            && matches!(a.first(), Some(Expr::Sym(_)))
        {
            // a <= |x| <= b  ->  [-b, -a] U [a, b]
            let n = |e: &Expr| Expr::Neg(Box::new(e.clone()));
            return Some(vec![
                Interval {
                    lo: n(hi),
                    hi: n(lo),
                    lo_closed: hc,
                    hi_closed: lc,
                },
                Interval {
                    lo: lo.clone(),
                    hi: hi.clone(),
                    lo_closed: lc,
                    hi_closed: hc,
                },
            ]);
        }
        return Some(vec![Interval {
            lo: lo.clone(),
            hi: hi.clone(),
            lo_closed: lc,
            hi_closed: hc,
        }]);
    }
    if items.len() != 2 {
        return None;
    }
    // Normalise to `VAR op c`.
    let (var, op, c) = if consts[1] && !consts[0] {
        (&items[0], ops[0], items[1].clone())
    } else if consts[0] && !consts[1] {
        (&items[1], ops[0].flip(), items[0].clone())
    } else {
        return None;
    };
    let (op, c) = match var {
        Expr::Sym(_) => (op, c),
        Expr::Func(f, a) if f == "abs" && matches!(a.first(), Some(Expr::Sym(_))) => {
            let n = Expr::Neg(Box::new(c.clone()));
            return Some(match op {
                RelOp::Lt | RelOp::Le => vec![Interval {
                    lo: n,
                    hi: c,
                    lo_closed: op == RelOp::Le,
                    hi_closed: op == RelOp::Le,
                }],
                _ => vec![
                    Interval {
                        lo: neg_inf(),
                        hi: n,
                        lo_closed: false,
                        hi_closed: op == RelOp::Ge,
                    },
                    Interval {
                        lo: c,
                        hi: Expr::Const(Const::Inf),
                        lo_closed: op == RelOp::Ge,
                        hi_closed: false,
                    },
                ],
            });
        }
        other => {
            // Linear in one symbol: a*x + b, found by evaluating at 0, 1, 2.
            let mut syms = Vec::new();
            other.symbols(&mut syms);
            if syms.len() != 1 {
                return None;
            }
            let at = |x: i64, m: &mut Meter| {
                eval::eval(other, &[(syms[0].clone(), Val::real(eval::rat(x, 1)))], m).ok()
            };
            let (f0, f1, f2) = (at(0, meter)?, at(1, meter)?, at(2, meter)?);
            let (f0, f1, f2) = (
                f0.as_real_q()?.clone(),
                f1.as_real_q()?.clone(),
                f2.as_real_q()?.clone(),
            );
            let a = &f1 - &f0;
            if a.is_zero() || &f2 - &f1 != a {
                return None;
            }
            let cv = eval::eval(&c, &[], meter).ok()?.as_real_q()?.clone();
            let root = (cv - f0) / &a;
            let op = if a.is_negative() { op.flip() } else { op };
            (op, Expr::Num(root))
        }
    };
    Some(vec![match op {
        RelOp::Lt | RelOp::Le => Interval {
            lo: neg_inf(),
            hi: c,
            lo_closed: false,
            hi_closed: op == RelOp::Le,
        },
        _ => Interval {
            lo: c,
            hi: Expr::Const(Const::Inf),
            lo_closed: op == RelOp::Ge,
            hi_closed: false,
        },
    }])
}
