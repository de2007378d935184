//! Property tests: no input makes the checker panic, hang, or call an answer unequal to itself.

use proptest::prelude::*;
use stepkto::outcome::{Budget, Mode, Options, check};

fn tex_like() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "\\frac",
        "\\sqrt",
        "{",
        "}",
        "(",
        ")",
        "[",
        "]",
        "\\{",
        "\\}",
        "^",
        "_",
        "x",
        "y",
        "2",
        "10",
        "0.5",
        ",",
        ";",
        "=",
        "<",
        "\\le",
        "\\pm",
        "\\pi",
        "\\infty",
        "\\cup",
        "+",
        "-",
        "*",
        "/",
        "!",
        "%",
        "\\%",
        "\\circ",
        "\\text{cm}",
        "\\boxed{",
        "\\begin{pmatrix}",
        "\\end{pmatrix}",
        "&",
        "\\\\",
        "|",
        " ",
        "e",
        "i",
        "\\sin",
        "\\log_",
        "$",
        "and",
        "\\overline{3}",
        "1,000",
        "°",
        "√",
        "−",
        "∞",
        "\\left(",
        "\\right)",
        ".",
        ":",
        "'",
        "\\dfrac",
        "3e8",
        "<think>",
        "</think>",
        "\\mathbb{R}",
        "\\emptyset",
        "\\ne",
        "\\in",
    ]);
    prop::collection::vec(atoms, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_unicode_never_panics(a in any::<String>(), b in any::<String>()) {
        let _ = check(&a, &b, Mode::Auto, &Options::default(), &Budget::default());
        let _ = check(&a, &b, Mode::Answer, &Options::default(), &Budget::default());
    }

    #[test]
    fn tex_soup_never_panics(a in tex_like(), b in tex_like()) {
        let t0 = std::time::Instant::now();
        let _ = check(&a, &b, Mode::Auto, &Options::default(), &Budget::default());
        let _ = check(&a, &b, Mode::Solution, &Options::default(), &Budget::default());
        prop_assert!(t0.elapsed().as_secs() < 5);
    }

    /// A well-formed answer equals itself (reflexivity), written as a bare answer.
    #[test]
    fn numbers_equal_themselves(n in -1_000_000i64..1_000_000, d in 1i64..1000) {
        let s = format!("\\frac{{{n}}}{{{d}}}");
        let v = check(&s, &s, Mode::Answer, &Options::default(), &Budget::default());
        prop_assert!(v.equivalent, "{s}: {v:?}");
        let dec = format!("{}", n as f64 / d as f64);
        let v = check(&format!("{n}/{d}"), &format!("{}/{}", n * 3, d * 3), Mode::Answer, &Options::default(), &Budget::default());
        prop_assert!(v.equivalent, "{dec}: {v:?}");
    }

    /// Distinct integers are never equal.
    #[test]
    fn distinct_integers_differ(a in -100_000i64..100_000, b in -100_000i64..100_000) {
        prop_assume!(a != b);
        let v = check(&a.to_string(), &b.to_string(), Mode::Answer, &Options::default(), &Budget::default());
        prop_assert!(!v.equivalent, "{a} vs {b}: {v:?}");
    }
}
