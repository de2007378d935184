//! The toy task of the KTO-vs-Step-KTO experiment (`scripts/experiment_toy.sh`): seeded
//! multi-step arithmetic word problems whose every step is a checkable claim, their reference
//! solutions, and the deliberately wrong solutions a base model is taught from, so that it
//! has the paper's failure mode (right answers reached through flawed steps). [`model`]
//! writes the from-scratch model those are trained into: a byte-level tokenizer, a chat
//! template and a random-init Llama directory.
//!
//! A problem is a start value and 2 to 5 operations (`+ k`, `- k`, `* 2`, `* 3`) on small
//! non-negative integers, told as sentences; its solution is one step per operation,
//! `Then Ann gives away 15: 48 - 15 = 33`, steps separated by blank lines (the judge's step
//! splitting), then `Answer: \boxed{33}`. Solution kinds, each a share of the SFT set:
//! - `correct`: every step true;
//! - `slip`: one step's result is off, later steps compute on from it: a wrong answer;
//! - `flawed`: the right answer through a false step: either a step's result is off and the
//!   next step goes on from the true value (a silent repair), or two results are off by
//!   amounts that cancel, or a false last step is followed by the true answer.
//!
//! The false step is the first that carries or borrows, with the carry or borrow forgotten
//! (the schoolbook bug, off by ten); in a problem with neither it is a random step off by a
//! small amount. The symbolic judge refutes the false steps exactly.

pub mod model;

use std::collections::BTreeSet;

/// splitmix64: the generator's only source of randomness, so a seed fixes every file.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i64
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next_u64() % xs.len() as u64) as usize]
    }
}

/// The largest value any step may reach. Small on purpose: with operands of one digit the
/// model has about 600 sums and differences to learn, which a model of a few million
/// parameters learns within one SFT epoch on this machine, while two steps in five still
/// carry or borrow.
pub const MAX_VALUE: i64 = 30;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Add(i64),
    Sub(i64),
    Mul(i64),
}

impl Op {
    pub fn apply(self, x: i64) -> i64 {
        match self {
            Op::Add(k) => x + k,
            Op::Sub(k) => x - k,
            Op::Mul(k) => x * k,
        }
    }

    fn symbol(self) -> (&'static str, i64) {
        match self {
            Op::Add(k) => ("+", k),
            Op::Sub(k) => ("-", k),
            Op::Mul(k) => ("*", k),
        }
    }
}

/// One problem: the start value and its operations (the text is a function of these and the
/// wording picked when it was drawn).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub text: String,
    pub start: i64,
    pub ops: Vec<Op>,
    /// Each operation's sentence as the text tells it (`Then Ann finds 7 more`).
    pub clauses: Vec<String>,
}

impl Problem {
    /// The value after each operation.
    pub fn values(&self) -> Vec<i64> {
        let mut x = self.start;
        self.ops
            .iter()
            .map(|op| {
                x = op.apply(x);
                x
            })
            .collect()
    }

    pub fn answer(&self) -> i64 {
        *self.values().last().expect("a problem has operations")
    }
}

const NAMES: &[&str] = &[
    "Ann", "Ben", "Cal", "Dee", "Eve", "Finn", "Gus", "Hal", "Ivy", "Jo", "Kai", "Lu", "Max",
    "Nia", "Oto", "Pia", "Raj", "Sam", "Tess", "Uma",
];
const ITEMS: &[&str] = &[
    "apples", "coins", "cards", "marbles", "stickers", "pens", "shells", "stamps", "beads", "books",
];
const GAIN: &[&str] = &[
    "finds {k} more",
    "buys {k} more",
    "gets {k} more",
    "wins {k} more",
];
const LOSS: &[&str] = &["gives away {k}", "loses {k}", "sells {k}", "uses {k}"];

/// Draw one problem with 2 to 5 operations, every intermediate value in `0..=MAX_VALUE`.
pub fn draw_problem(rng: &mut Rng) -> Problem {
    let name = *rng.pick(NAMES);
    let item = *rng.pick(ITEMS);
    let n_ops = rng.range(2, 5) as usize;
    let start = rng.range(2, 25);
    let (mut x, mut ops, mut clauses) = (start, Vec::with_capacity(n_ops), Vec::new());
    let mut text = format!("{name} has {start} {item}.");
    while ops.len() < n_ops {
        let op = match rng.range(0, 9) {
            0..=3 => Op::Add(rng.range(1, 9)),
            4..=7 => Op::Sub(rng.range(1, 9)),
            8 => Op::Mul(2),
            _ => Op::Mul(3),
        };
        let y = op.apply(x);
        if !(0..=MAX_VALUE).contains(&y) {
            continue;
        }
        let clause = match op {
            Op::Add(k) => rng.pick(GAIN).replace("{k}", &k.to_string()),
            Op::Sub(k) => rng.pick(LOSS).replace("{k}", &k.to_string()),
            Op::Mul(2) => "doubles them".to_string(),
            Op::Mul(_) => "triples them".to_string(),
        };
        let clause = format!("Then {name} {clause}");
        text.push_str(&format!(" {clause}."));
        clauses.push(clause);
        ops.push(op);
        x = y;
    }
    text.push_str(&format!(" How many {item} does {name} have now?"));
    Problem {
        text,
        start,
        ops,
        clauses,
    }
}

/// `n` distinct problems (by text) for the train, validation and test splits in order, so no
/// problem is in two splits.
pub fn draw_splits(seed: u64, sizes: [usize; 3]) -> [Vec<Problem>; 3] {
    let mut rng = Rng::new(seed);
    let mut seen = BTreeSet::new();
    let mut out: [Vec<Problem>; 3] = Default::default();
    for (split, &n) in out.iter_mut().zip(&sizes) {
        while split.len() < n {
            let p = draw_problem(&mut rng);
            if seen.insert(p.text.clone()) {
                split.push(p);
            }
        }
    }
    out
}

/// The kinds of solution the base model is taught from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Correct,
    Slip,
    Flawed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Correct => "correct",
            Kind::Slip => "slip",
            Kind::Flawed => "flawed",
        }
    }
}

/// A solution: its step lines (without the answer line) and the answer it boxes.
#[derive(Debug, Clone)]
pub struct Solution {
    pub steps: Vec<String>,
    pub answer: i64,
    pub kind: Kind,
}

impl Solution {
    /// The text: steps separated by blank lines, then the boxed answer.
    pub fn text(&self) -> String {
        let mut s = self.steps.join("\n\n");
        s.push_str(&format!("\n\nAnswer: \\boxed{{{}}}", self.answer));
        s
    }
}

/// A step: the clause it computes, then the claim. Why the clause: it is what a small model
/// copies from the problem by matching the previous step's clause (an induction head), which
/// it learns long before it can count its way to the n-th number of the text.
fn line(clause: &str, x: i64, op: Op, y: i64) -> String {
    let (sym, k) = op.symbol();
    format!("{clause}: {x} {sym} {k} = {y}")
}

/// Whether a step needs a carry (`+`) or a borrow (`-`) in its units digit: where the
/// writers of the slip and flawed solutions go wrong.
pub fn carries(x: i64, op: Op) -> bool {
    match op {
        Op::Add(k) => x % 10 + k % 10 >= 10,
        Op::Sub(k) => x % 10 < k % 10,
        Op::Mul(_) => false,
    }
}

/// A nonzero offset for a slip in a problem with no carry or borrow, small like a real
/// counting slip, keeping the value non-negative.
fn offset(rng: &mut Rng, true_value: i64) -> i64 {
    loop {
        let d = *rng.pick(&[-10, -2, -1, 1, 2, 10]);
        if true_value + d >= 0 {
            return d;
        }
    }
}

/// Where a wrong solution goes wrong, and by how much: the first step that carries or
/// borrows, by the forgotten ten (`39 + 18 = 47`, `42 - 17 = 35`); in a problem with none,
/// a step drawn from `0..last` (`last` excluded) by a small offset. Why the systematic bug: a writer who always errs on
/// the same steps makes the error the model's most likely step there, so M0's greedy
/// solutions show it, as a real model's systematic mistakes do; errors at random steps
/// would stay below the right step's probability everywhere and greedy decoding would hide
/// them.
fn error_at(p: &Problem, vals: &[i64], last: usize, rng: &mut Rng) -> (usize, i64) {
    let before = std::iter::once(p.start).chain(vals.iter().copied());
    for (i, (x, &op)) in before.zip(&p.ops).enumerate() {
        if carries(x, op) {
            // the ten a forgotten carry loses or a forgotten borrow keeps
            return (i, if matches!(op, Op::Add(_)) { -10 } else { 10 });
        }
    }
    let at = rng.range(0, last as i64 - 1) as usize;
    (at, offset(rng, vals[at]))
}

/// A solution of `kind` for `p`.
pub fn solve(p: &Problem, kind: Kind, rng: &mut Rng) -> Solution {
    let vals = p.values();
    let n = p.ops.len();
    let mut steps = Vec::with_capacity(n);
    let mut answer = p.answer();
    match kind {
        Kind::Correct => {
            let mut x = p.start;
            for ((op, c), &y) in p.ops.iter().zip(&p.clauses).zip(&vals) {
                steps.push(line(c, x, *op, y));
                x = y;
            }
        }
        Kind::Slip => {
            // one result off; the rest computed truly from it
            let (at, d) = error_at(p, &vals, n, rng);
            let mut x = p.start;
            for (i, op) in p.ops.iter().enumerate() {
                let mut y = op.apply(x);
                if i == at {
                    y += d;
                }
                steps.push(line(&p.clauses[i], x, *op, y));
                x = y;
            }
            answer = x;
        }
        Kind::Flawed => {
            // the step after the false one either goes on from the true value (a silent
            // repair) or from the false one to the true result (a second false step that
            // cancels the first); a false last step is followed by the true answer
            let (at, d) = error_at(p, &vals, n - 1, rng);
            let repair = rng.unit() < 0.5;
            let mut x = p.start;
            for (i, op) in p.ops.iter().enumerate() {
                let y = vals[i];
                if i == at {
                    steps.push(line(&p.clauses[i], x, *op, y + d));
                } else if i == at + 1 && !repair {
                    steps.push(line(&p.clauses[i], x + d, *op, y));
                } else {
                    steps.push(line(&p.clauses[i], x, *op, y));
                }
                x = y;
            }
        }
    }
    Solution {
        steps,
        answer,
        kind,
    }
}

/// The kind of each of `n` SFT solutions for shares `(slip, flawed)` (the rest correct),
/// exact counts in a seeded order.
pub fn kinds(n: usize, slip: f64, flawed: f64, rng: &mut Rng) -> Vec<Kind> {
    let ns = (n as f64 * slip).round() as usize;
    let nf = ((n as f64 * flawed).round() as usize).min(n - ns.min(n));
    let mut v: Vec<Kind> = (0..n)
        .map(|i| match i {
            _ if i < ns => Kind::Slip,
            _ if i < ns + nf => Kind::Flawed,
            _ => Kind::Correct,
        })
        .collect();
    for i in (1..n).rev() {
        v.swap(i, (rng.next_u64() % (i as u64 + 1)) as usize);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_value_stays_in_range_and_answers_follow() {
        let mut rng = Rng::new(1);
        for _ in 0..2000 {
            let p = draw_problem(&mut rng);
            assert!((2..=5).contains(&p.ops.len()));
            assert!(p.values().iter().all(|v| (0..=MAX_VALUE).contains(v)));
            let s = solve(&p, Kind::Correct, &mut rng);
            assert_eq!(s.answer, p.answer());
            assert_eq!(s.steps.len(), p.ops.len());
        }
    }

    #[test]
    fn slips_change_the_answer_and_flaws_keep_it() {
        let mut rng = Rng::new(2);
        for _ in 0..2000 {
            let p = draw_problem(&mut rng);
            assert_ne!(solve(&p, Kind::Slip, &mut rng).answer, p.answer());
            let f = solve(&p, Kind::Flawed, &mut rng);
            assert_eq!(f.answer, p.answer());
            let good = solve(&p, Kind::Correct, &mut rng);
            assert_ne!(f.steps, good.steps);
        }
    }

    #[test]
    fn wrong_solutions_forget_the_first_carry_or_borrow() {
        assert!(carries(39, Op::Add(18)) && carries(42, Op::Sub(17)));
        assert!(!carries(31, Op::Add(18)) && !carries(47, Op::Sub(17)) && !carries(9, Op::Mul(3)));
        let p = Problem {
            text: String::new(),
            start: 31,
            ops: vec![Op::Add(4), Op::Sub(17), Op::Mul(2)],
            clauses: vec!["a".into(), "b".into(), "c".into()],
        };
        let mut rng = Rng::new(4);
        // 35 - 17 borrows: the slip writes 28 and doubles it, the flaw writes 28 and then
        // doubles 18 (a repair) or 28 into 36 (a cancelling step)
        let s = solve(&p, Kind::Slip, &mut rng);
        assert_eq!(s.steps[1], "b: 35 - 17 = 28");
        assert_eq!(s.answer, 56);
        for _ in 0..20 {
            let f = solve(&p, Kind::Flawed, &mut rng);
            assert_eq!(f.steps[1], "b: 35 - 17 = 28");
            assert!(["c: 18 * 2 = 36", "c: 28 * 2 = 36"].contains(&f.steps[2].as_str()));
            assert_eq!(f.answer, 36);
        }
    }

    #[test]
    fn splits_are_disjoint_and_seeded() {
        let a = draw_splits(7, [300, 50, 50]);
        let b = draw_splits(7, [300, 50, 50]);
        assert_eq!(a, b);
        let texts: BTreeSet<&str> = a.iter().flatten().map(|p| p.text.as_str()).collect();
        assert_eq!(texts.len(), 400);
    }

    #[test]
    fn kind_counts_are_exact() {
        let k = kinds(100, 0.25, 0.3, &mut Rng::new(3));
        assert_eq!(k.iter().filter(|k| **k == Kind::Slip).count(), 25);
        assert_eq!(k.iter().filter(|k| **k == Kind::Flawed).count(), 30);
    }
}
