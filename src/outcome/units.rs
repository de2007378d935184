//! Units of measure and number words.
//!
//! Units are compared by dimension and converted (30 mm = 3 cm, 3 m != 3 cm). Dimensions are
//! (length, mass, time, angle, money, other); "money" and "other" keep currencies and counted
//! things ("apples") from ever matching a physical unit.

use super::expr::Unit;

const L: [i8; 6] = [1, 0, 0, 0, 0, 0];
const M: [i8; 6] = [0, 1, 0, 0, 0, 0];
const T: [i8; 6] = [0, 0, 1, 0, 0, 0];
const A: [i8; 6] = [0, 0, 0, 1, 0, 0];
const D: [i8; 6] = [0, 0, 0, 0, 1, 0];
const V: [i8; 6] = [3, 0, 0, 0, 0, 0];

/// (spellings, dimension, size in the base unit).
const TABLE: &[(&[&str], [i8; 6], f64)] = &[
    (
        &[
            "mm",
            "millimeter",
            "millimeters",
            "millimetre",
            "millimetres",
        ],
        L,
        1e-3,
    ),
    (
        &[
            "cm",
            "centimeter",
            "centimeters",
            "centimetre",
            "centimetres",
        ],
        L,
        1e-2,
    ),
    (&["m", "meter", "meters", "metre", "metres"], L, 1.0),
    (
        &["km", "kilometer", "kilometers", "kilometre", "kilometres"],
        L,
        1e3,
    ),
    (&["in", "inch", "inches"], L, 0.0254),
    (&["ft", "foot", "feet"], L, 0.3048),
    (&["yd", "yard", "yards"], L, 0.9144),
    (&["mi", "mile", "miles"], L, 1609.344),
    (&["mg", "milligram", "milligrams"], M, 1e-6),
    (&["g", "gram", "grams"], M, 1e-3),
    (&["kg", "kilogram", "kilograms"], M, 1.0),
    (&["lb", "lbs", "pound", "pounds"], M, 0.45359237),
    (&["oz", "ounce", "ounces"], M, 0.028349523125),
    (&["ton", "tons"], M, 907.18474),
    (&["s", "sec", "secs", "second", "seconds"], T, 1.0),
    (&["min", "mins", "minute", "minutes"], T, 60.0),
    (&["h", "hr", "hrs", "hour", "hours"], T, 3600.0),
    (&["day", "days"], T, 86400.0),
    (&["week", "weeks"], T, 604800.0),
    (&["year", "years"], T, 31557600.0),
    (
        &["deg", "degree", "degrees"],
        A,
        std::f64::consts::PI / 180.0,
    ),
    (&["rad", "radian", "radians"], A, 1.0),
    (&["ml", "mL", "milliliter", "milliliters"], V, 1e-6),
    (&["L", "l", "liter", "liters", "litre", "litres"], V, 1e-3),
    (&["gallon", "gallons"], V, 0.003785411784),
    (&["dollar", "dollars", "usd"], D, 1.0),
    (&["cent", "cents"], D, 0.01),
];

/// Words that are accepted after a number but carry no dimension we convert: they are
/// dropped ("5 apples", "0.06 yuan"). Kept short on purpose: an unknown word is text.
const COUNT_WORDS: &[&str] = &[
    "units", "unit", "sq", "square", "cubic", "yuan", "euros", "euro", "people", "students",
    "ways", "times", "apples", "marbles", "books", "cars", "boxes", "balls", "coins", "points",
    "steps", "games", "numbers", "integers", "digits", "pages", "papers", "bins",
];

/// A unit as written after a quantity: a name (`cm`, `feet`), or an area or volume in words
/// or with a power inside the text (`square feet`, `sq ft`, `cubic inches`, `cm^2`,
/// `cm^{3}`, `cm²`, `meters squared`). `square units` and `cubic units` are counted things.
pub fn lookup(word: &str) -> Option<Unit> {
    let w = word.trim().trim_end_matches('.');
    let lower = w.to_ascii_lowercase();
    for (pre, k) in [
        ("square ", 2),
        ("sq. ", 2),
        ("sq ", 2),
        ("cubic ", 3),
        ("cu. ", 3),
    ] {
        if lower.starts_with(pre) {
            let base = lookup_one(w[pre.len()..].trim())?;
            return Some(if base.dim == [0; 6] {
                base
            } else {
                power(&base, k)
            });
        }
    }
    for (post, k) in [(" squared", 2), (" cubed", 3)] {
        if let Some(head) = lower.strip_suffix(post) {
            let base = lookup_one(w[..head.len()].trim())?;
            return Some(power(&base, k));
        }
    }
    for (post, k) in [("²", 2), ("³", 3)] {
        if let Some(head) = w.strip_suffix(post) {
            return Some(power(&lookup_one(head.trim())?, k));
        }
    }
    if let Some((head, exp)) = w.split_once('^') {
        let exp = exp
            .trim()
            .trim_start_matches('{')
            .trim_end_matches('}')
            .trim();
        let k: i8 = exp.parse().ok().filter(|k| (1..=3).contains(k))?;
        return Some(power(&lookup_one(head.trim())?, k));
    }
    lookup_one(w)
}

fn lookup_one(w: &str) -> Option<Unit> {
    for (names, dim, scale) in TABLE {
        if names.contains(&w) || (w.len() > 3 && names.iter().any(|n| n.eq_ignore_ascii_case(w))) {
            return Some(Unit {
                dim: *dim,
                scale: *scale,
                name: w.to_string(),
            });
        }
    }
    let lower = w.to_ascii_lowercase();
    if COUNT_WORDS.contains(&lower.as_str()) {
        return Some(Unit {
            dim: [0; 6],
            scale: 1.0,
            name: lower,
        });
    }
    None
}

/// `cm^2` from `cm`.
pub fn power(u: &Unit, k: i8) -> Unit {
    let mut dim = u.dim;
    for d in dim.iter_mut() {
        *d = d.saturating_mul(k);
    }
    Unit {
        dim,
        scale: u.scale.powi(k as i32),
        name: format!("{}^{k}", u.name),
    }
}

pub fn is_percent_word(w: &str) -> bool {
    matches!(
        w.to_ascii_lowercase().as_str(),
        "percent" | "pct" | "percentage" | "percents" | "per cent"
    )
}

/// "seven", "twenty-one" (as one word "twentyone" after hyphen removal is not attempted),
/// "hundred"; only whole words.
pub fn number_word(w: &str) -> Option<i64> {
    const ONES: &[&str] = &[
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: &[&str] = &[
        "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    if let Some(i) = ONES.iter().position(|x| *x == w) {
        return Some(i as i64);
    }
    if let Some(i) = TENS.iter().position(|x| !x.is_empty() && *x == w) {
        return Some(10 * i as i64);
    }
    match w {
        "hundred" => Some(100),
        "thousand" => Some(1000),
        "million" => Some(1_000_000),
        _ => None,
    }
}

/// A whole answer written in words: "twenty-one", "three hundred twelve", "one thousand".
pub fn parse_number_words(s: &str) -> Option<i64> {
    let lower = s.trim().trim_end_matches('.').to_ascii_lowercase();
    let words: Vec<&str> = lower
        .split([' ', '-'])
        .filter(|w| !w.is_empty() && *w != "and")
        .collect();
    if words.is_empty() || words.len() > 8 {
        return None;
    }
    let (mut total, mut cur) = (0i64, 0i64);
    for w in words {
        let n = number_word(w)?;
        match n {
            100 => cur = cur.max(1) * 100,
            1000 | 1_000_000 => {
                total += cur.max(1) * n;
                cur = 0;
            }
            _ => cur += n,
        }
    }
    Some(total + cur)
}
