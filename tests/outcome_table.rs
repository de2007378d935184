//! Table tests of the outcome checker, one table per answer type, plus extraction from
//! whole solutions and the failure classes named in issue #2 (regressions are named after it).

use stepkto::outcome::{Budget, Mode, Options, check};

fn run(table: &[(&str, &str, bool)], mode: Mode) {
    run_with(table, mode, &Options::default())
}

fn run_with(table: &[(&str, &str, bool)], mode: Mode, opts: &Options) {
    let mut bad = Vec::new();
    for (r, c, want) in table {
        let v = check(r, c, mode, opts, &Budget::default());
        if v.equivalent != *want {
            bad.push(format!("{r:?} vs {c:?}: want {want}, got {v:?}"));
        }
    }
    assert!(
        bad.is_empty(),
        "{} cases failed:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn numbers() {
    run(
        &[
            ("5", "5", true),
            ("5", "5.0", true),
            ("-5", "−5", true),
            ("0.4", ".4", true),
            ("\\frac{1}{2}", "0.5", true),
            ("\\frac12", "\\dfrac{1}{2}", true),
            ("\\frac{10}{9}", "10/9", true),
            ("13535", "13536", false),
            ("13535", "13535.0", true),
            ("\\frac{1}{2^{99}}", "\\frac{1}{2^{98}}", false),
            ("1e-30", "2e-30", false),
            ("300000000", "3e8", true),
            ("3 \\times 10^8", "3e8", true),
            ("2\\frac{1}{2}", "\\frac52", true),
            ("\\frac{1}{3}", "0.\\overline{3}", true),
            ("\\frac16", "0.1\\overline{6}", true),
            ("7", "seven", true),
            ("21", "twenty-one", true),
            ("7", "\\text{seven}", true),
            ("204_5", "204", true),
            ("204_5", "54", false),
            ("3 \\cdot 4", "12", true),
            ("6 \\div 2", "3", true),
            ("100!", "100!", true),
            ("1000!", "1000!+1", false),
            ("\\binom{5}{2}", "10", true),
        ],
        Mode::Answer,
    );
}

#[test]
fn thousands_separators_and_decimal_commas() {
    run(
        &[
            ("7425000", "7,425,000", true),
            ("2220", "2\\,220", true),
            ("2220", "2{,}220", true),
            ("2220", "2\\!220", true),
            ("12000003", "12,\\!000,\\!003", true),
            ("222", "2\\,220", false),
            ("1000", "1 000", true),
            ("1.22", "1,22", true),
            ("1000.99", "1,000.99", true),
            ("-2,1", "1,-2", true),
            ("32349", "32, 349", false),
        ],
        Mode::Answer,
    );
}

#[test]
fn radicals_constants_and_expressions() {
    run(
        &[
            ("\\sqrt{2}+\\sqrt{5}", "\\sqrt 5+\\sqrt 2", true),
            ("\\sqrt[3]{8}", "2", true),
            ("\\sqrt{12}", "2\\sqrt{3}", true),
            ("√16", "4", true),
            ("\\pi", "π", true),
            ("\\frac{9}{4}\\pi", "\\frac94\\pi", true),
            ("x^2+2x+1", "(x+1)^2", true),
            ("x^2+2x+1", "(x-1)^2", false),
            ("\\frac{x+2}{7}", "\\frac{x}{7}+\\frac{2}{7}", true),
            ("\\tan^2(y)+1", "\\sec^2(y)", true),
            ("2\\sin b\\cos a", "\\sin(a+b)-\\sin(a-b)", true),
            ("\\frac{\\sqrt3}{2}", "\\sin(\\pi/3)", true),
            ("e^{i\\pi}", "-1", true),
            ("i^2", "-1", true),
            ("3+4i", "4i+3", true),
            ("\\log_2 8", "3", true),
            ("\\ln e", "1", true),
            ("1-\\frac{1}{e}", "1+\\frac{1}{e}", false),
            ("(a+5)(b+2)", "(+5)(b+2)", false),
            ("x+2n+1", "x+1", false),
            ("ab^2", "a \\cdot b^2", true),
            ("ab^2", "(ab)^2", false),
        ],
        Mode::Answer,
    );
}

#[test]
fn decimals_at_stated_precision() {
    run(
        &[
            ("33.3", "\\frac{100}{3}", true),
            ("16386.17", "16386.169", true),
            ("7.78", "\\frac{70}{9}", true),
            ("0.5", "0.52", false),
            // A rounded decimal for an exact reference is wrong by default (issue 9).
            ("\\frac{1}{12}", "0.0833333333333333", false),
            ("\\sqrt{2}", "1.414", false),
            ("\\pi", "3.14159", false),
            ("\\frac{1}{8}", "0.125", true),
            ("\\pi", "\\pi+10^{-12}", false),
            ("\\frac{\\pi}{\\sqrt2}", "\\frac{\\sqrt2\\pi}{2}", true),
            ("e^{i\\pi}", "-1", true),
        ],
        Mode::Answer,
    );
    // With `accept_rounded`, at the precision the candidate states.
    run_with(
        &[
            ("\\frac{1}{12}", "0.0833333333333333", true),
            ("\\sqrt{2}", "1.414", true),
            ("\\sqrt{2}", "1.4", false),
            ("\\pi", "3.14159", true),
            ("\\pi", "3.15", false),
            ("4\\pi", "12.566", true),
        ],
        Mode::Answer,
        &Options {
            accept_rounded: true,
            ..Options::default()
        },
    );
}

#[test]
fn percent_degrees_units() {
    run(
        &[
            ("12.5\\%", "12.5", true),
            ("12.5\\%", "0.125", true),
            ("12.5", "12.5\\%", true),
            ("12.5\\%", "12", false),
            ("28\\%", "28 percent", true),
            ("90^\\circ", "90°", true),
            ("90^\\circ", "90", true),
            ("90^\\circ", "\\frac{\\pi}{2}", true),
            ("3\\text{ cm}", "3\\text{ m}", false),
            ("3 m", "3 cm", false),
            ("3 cm", "30 mm", true),
            ("5 \\text{ cm}^2", "500 \\text{ mm}^2", true),
            ("15\\mbox{ cm}^2", "15", true),
            ("125 miles", "125", true),
            ("\\$5.00", "5", true),
        ],
        Mode::Answer,
    );
}

#[test]
fn sets_tuples_lists() {
    run(
        &[
            ("(1,2)", "(1,2)", true),
            ("(1,2)", "(2,1)", false),
            ("\\{1,2\\}", "\\{2,1\\}", true),
            ("1,-2", "-2, 1", true),
            ("1,-2", "x=1 \\text{ or } x=-2", true),
            ("\\pm 3", "3,-3", true),
            ("1\\pm\\sqrt{19}", "1+\\sqrt{19}, 1-\\sqrt{19}", true),
            ("\\pm 2021", "2021", false),
            (
                "(3, \\frac{\\pi}{2})",
                "\\left( 3, \\frac{\\pi}{2} \\right)",
                true,
            ),
            (
                "(5, 8), (8, 5)",
                "(x, y) = (8, 5) \\text{ and } (5, 8)",
                true,
            ),
            ("p=5,q=2;p=7,q=2", "(5,2),(7,2)", true),
            ("a_3 = 2, a_{37} = 19", "a_{37} = 19, a_3 = 2", true),
            ("19, 46, and 82", "21, 36, and 82", false),
            ("12:00", "1:00", false),
            ("7:32", "14:64", true),
        ],
        Mode::Answer,
    );
}

#[test]
fn intervals_and_inequalities() {
    run(
        &[
            ("[0,1)", "[0,1)", true),
            ("[0,1)", "[0,1]", false),
            ("(0,9)", "[0,9)", false),
            ("x \\le 2", "(-\\infty, 2]", true),
            ("x \\ge 5", "5 \\le x", true),
            ("x > 5", "x < 5", false),
            ("x < 1", "-x > -1", true),
            ("x > 2", "x \\ge 2", false),
            ("-2 \\le x \\le 7", "x \\in [-2,7]", true),
            ("1 < x < 3", "(1, 3)", true),
            ("|x| < 2", "-2 < x < 2", true),
            (
                "1\\leq|z|\\leq \\frac{3}{2}",
                "z \\in \\left[-\\frac{3}{2}, -1\\right] \\cup \\left[1, \\frac{3}{2}\\right]",
                true,
            ),
            (
                "(-\\infty, -3] \\cup [2, \\infty)",
                "[2,\\infty)\\cup(-\\infty,-3]",
                true,
            ),
            ("\\{-1\\} \\cup [0,7)", "\\{-1\\} \\cup [0,7)", true),
            ("(-∞, 2]", "(-\\infty, 2]", true),
            ("x \\neq 3", "x != 3", true),
            ("\\{1,2\\} \\cup \\{3\\}", "\\{1,2,3\\}", true),
            ("[1,2]", "\\{x : 1 \\leq x \\leq 2\\}", true),
            ("(2,\\infty)", "\\{x \\mid x > 2\\}", true),
            ("[2,\\infty)", "\\{x \\mid x > 2\\}", false),
        ],
        Mode::Answer,
    );
}

#[test]
fn equations_and_assignments() {
    run(
        &[
            ("x=5", "5", true),
            ("5", "x=5", true),
            ("k=1", "1", true),
            ("7 = 11a+c", "11a+c", false),
            ("a+3z = 0", "0", false),
            ("2x+4y-3=0", "y=-\\frac{1}{2}x+\\frac{3}{4}", true),
            ("x^2/4 + y^2/3 = 1", "x^2/16 + y^2/12 = 1/4", true),
            ("34x+45y-20z+100=0", "-34x-45y+20z-100=0", true),
            ("y=2x+1", "y=2x-1", false),
            ("x = 11", "x = 5+5+1 = 7 = 11", true),
            ("x = 1/3", "x = 1/3 \\approx 0.33", true),
            ("|AB| = 1", "1", true),
            (
                "\\frac{NO}{BO}=\\frac{1}{\\sqrt{6}}",
                "\\frac{1}{\\sqrt 6}",
                true,
            ),
        ],
        Mode::Answer,
    );
}

#[test]
fn matrices() {
    run(
        &[
            (
                "\\begin{pmatrix}1\\\\2\\end{pmatrix}",
                "\\begin{bmatrix}1\\\\2\\end{bmatrix}",
                true,
            ),
            (
                "\\begin{pmatrix}1&2\\\\3&4\\end{pmatrix}",
                "\\begin{pmatrix}1&2\\\\3&5\\end{pmatrix}",
                false,
            ),
            (
                "\\begin{pmatrix}2&4\\end{pmatrix}",
                "2\\begin{pmatrix}1&2\\end{pmatrix}",
                true,
            ),
            (
                "\\begin{pmatrix}6 & 8 \\\\ 10 & 12\\end{pmatrix}",
                "\\begin{pmatrix}1 & 2 \\\\ 3 & 4\\end{pmatrix} + \\begin{pmatrix}5 & 6 \\\\ 7 & 8\\end{pmatrix}",
                true,
            ),
            ("\\begin{pmatrix}1\\\\2\\\\3\\end{pmatrix}", "(1,2,3)", true),
        ],
        Mode::Answer,
    );
}

#[test]
fn text_choices_and_synonyms() {
    run(
        &[
            ("\\emptyset", "no solution", true),
            ("DNE", "\\varnothing", true),
            ("\\text{no solution}", "There is no solution.", true),
            ("\\mathbb{R}", "all real numbers", true),
            ("(-\\infty,\\infty)", "\\mathbb{R}", true),
            ("\\text{(C)}", "C", true),
            ("(B)", "C", false),
            ("\\text{Evelyn}", "Evelyn", true),
            ("\\text{Evelyn}", "Bob", false),
            ("\\text{odd}", "odd", true),
            ("\\text{No}", "no", true),
            ("\\text{yes}", "no", false),
            ("3.14", "\\boxed{\\approx 3.14}", true),
            ("5", "\\boxed{= 5}", true),
            ("2", "x = 2 \\text{ (double root)}", true),
            ("d", "\\text{E}", false),
            ("B", "\\text{(B) } 5", true),
            ("5", "(B) 5", true),
            ("6", "(B) 5", false),
        ],
        Mode::Answer,
    );
}

#[test]
fn extraction_from_solutions() {
    run(
        &[
            (
                "\\frac{14}{3}",
                "so $f = 2+\\frac{5}{3}+1=\\boxed{\\frac{14}{3}}$",
                true,
            ),
            ("9", "Answer \\[ 9 \\]", true),
            (
                "28\\%",
                "Final Answer: The final answer is $28\\%$. I hope it is correct.",
                true,
            ),
            (
                "143",
                "<think> maybe \\boxed{142} </think> So the answer is \\boxed{143}.",
                true,
            ),
            (
                "142",
                "<think> maybe \\boxed{142} </think> So the answer is \\boxed{143}.",
                false,
            ),
            ("143", "<think> I think \\boxed{143} but let me", false),
            ("5", "We get \\boxed{5", false),
            (
                "(2,2),(6,2)",
                "$\\boxed{(2, 2)} \\quad \\text{and} \\quad \\boxed{(6, 2)}$",
                true,
            ),
            ("1,2", "\\boxed{1} no no no no no \\boxed{2}", false),
            ("12", "So there are 12 ways. Final answer: **12**", true),
            ("2/3", "the probability is 2/3. <|im_start|>user what", true),
            (
                "10455",
                "so \\boxed{255} ... Final Answer: The final answer is $10,455$. I hope it is correct.",
                true,
            ),
            ("34", "Final Answer: The largest $n$ is 34.", true),
            (
                "72",
                "In May she sold 48/2 = 24.\nAltogether 48+24 = 72.\n#### 72",
                true,
            ),
            ("72", "So 3 apples.\n#### 71", false),
            ("5", "所以答案是 5。", true),
            (
                "-\\frac{24}{25}",
                "Therefore, $\\cos \\angle RPS = -\\frac{24}{25}$.",
                true,
            ),
            ("1000.99", "the number is not 10 which is 1,000.99€", true),
        ],
        Mode::Auto,
    );
}

#[test]
fn everyday_equivalent_forms() {
    run(
        &[
            ("\\frac{1}{2}\\text{ hours}", "30 minutes", true),
            ("18.90", "\\$18.9", true),
            ("5\\%", "\\frac{1}{20}", true),
            (
                "x=\\frac{-1\\pm\\sqrt{5}}{2}",
                "\\frac{-1+\\sqrt5}{2}, \\frac{-1-\\sqrt5}{2}",
                true,
            ),
            ("\\{1, 2, 3\\}", "1, 2, 3", true),
            ("3\\sqrt{2}", "\\sqrt{18}", true),
            ("(x-1)(x+2)", "x^2+x-2", true),
            ("\\frac{x^2-1}{x-1}", "x+1", true),
            ("y = 3x - 2", "3x-2", true),
            ("4\\pi", "12.566", false),
            ("1:2", "\\frac{1}{2}", true),
            ("\\$1,000", "1000", true),
            ("0.\\overline{6}", "2/3", true),
            ("6 \\times 10^{23}", "6e23", true),
            ("\\frac{7}{2}", "3 1/2", true),
            ("\\frac{7}{2}", "3\\frac12", true),
            ("2", "3 1/2", false),
            ("\\text{Tuesday}", "tuesday", true),
            ("10", "ten", true),
            ("\\frac{\\sqrt{3}}{3}", "\\frac{1}{\\sqrt{3}}", true),
            ("45^\\circ", "\\frac{\\pi}{4}", true),
            ("\\infty", "\\infty", true),
            ("-\\infty", "\\infty", false),
            ("(-\\infty, \\infty)", "all real numbers", true),
            ("x^3", "x^{3}", true),
            ("2^{10}", "1024", true),
            ("\\sqrt{2}", "2^{1/2}", true),
            ("\\log_{2}{8}", "3", true),
            ("e^{2}", "e^2", true),
            ("100", "10^2", true),
            ("0", "-0", true),
            ("\\frac{3}{4}", "0.75", true),
            ("\\frac{3}{4}", "75\\%", true),
            ("75\\%", "\\frac34", true),
            ("1/2", "2/4", true),
            ("\\frac{1}{2}", "\\frac{1}{3}", false),
        ],
        Mode::Answer,
    );
}

/// Issue #2's list of bad inputs: each is answered with a verdict (usually `budget`) within
/// the budget's time, never a panic or a hang.
#[test]
fn issue_2_hostile_inputs_are_answered() {
    let cases: Vec<(String, String)> = vec![
        (
            "1".into(),
            format!("{}1{}", "(".repeat(99_999), ")".repeat(99_999)),
        ),
        ("1".into(), "{".repeat(50_000)),
        ("5".into(), "2^{2^{2^{2^{100}}}}".into()),
        ("10^{10^{10}}".into(), "10^{10^{10}}+1".into()),
        ("1".into(), "1000!".into()),
        ("1".into(), "\\frac{1}{0}".into()),
        ("1".into(), "\u{202e}\u{0}\u{fffd}𝕏∑∫ﬁ".into()),
        ("1".into(), "99999999999999999999!".into()),
        ("1".into(), "\\binom{100000}{50000}".into()),
        ("x".into(), "x^{x^{x^{x^{x^{x}}}}}".into()),
        ("1".into(), "\\sqrt{".repeat(5_000)),
        ("1".into(), "1+".repeat(60_000) + "1"),
    ];
    for (r, c) in &cases {
        let t0 = std::time::Instant::now();
        let v = check(r, c, Mode::Answer, &Options::default(), &Budget::default());
        assert!(!v.equivalent, "{:?}: {v:?}", &c[..c.len().min(40)]);
        assert!(
            t0.elapsed().as_secs_f64() < 5.0,
            "{:?} took {:?}",
            &c[..c.len().min(40)],
            t0.elapsed()
        );
    }
    let v = check(
        "10^{10^{10}}",
        "10^{10^{10}}+1",
        Mode::Answer,
        &Options::default(),
        &Budget::default(),
    );
    assert_eq!(v.reason.tag, "budget");
    let v = check(
        "1000!",
        "1000!",
        Mode::Answer,
        &Options::default(),
        &Budget::default(),
    );
    assert!(v.equivalent);
}

#[test]
fn percent_policy_is_configurable() {
    let strict = Options {
        percent_flexible: false,
        ..Options::default()
    };
    assert!(!check("12.5\\%", "12.5", Mode::Answer, &strict, &Budget::default()).equivalent);
    assert!(
        check(
            "12.5\\%",
            "0.125",
            Mode::Answer,
            &strict,
            &Budget::default()
        )
        .equivalent
    );
}
