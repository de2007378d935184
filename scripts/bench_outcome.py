#!/usr/bin/env python3
"""Outcome-checker benchmark: stepkto vs Hugging Face math-verify 0.9.0, same pairs, one core.

Pairs:
  1. ../shared/data/pairs_mathverify.jsonl (284 rows; rows with expected_equal = null skipped),
  2. pairs built from ../shared/data/math500.jsonl: each reference answer against its own
     solution (expected equal) and against two other problems' solutions whose answers differ
     as strings (expected not equal),
  3. real model outputs: the 112 ProcessBench MATH-split solutions to MATH-500 problems,
     labelled by ProcessBench's final_answer_correct.

Prints both accuracies, both throughputs (pairs per second, single thread, wall time of the
checking loop only) and the ratio. Run via scripts/bench_outcome.sh, which makes the venv.
"""
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "data")
REPEAT = 20


def load_pairs():
    pairs = []
    path = os.path.join(SHARED, "pairs_mathverify.jsonl")
    for i, line in enumerate(open(path)):
        row = json.loads(line)
        if row["expected_equal"] is None:
            continue
        pairs.append(("mathverify", row["gold"], row["prediction"], row["expected_equal"]))
    rows = [json.loads(l) for l in open(os.path.join(SHARED, "math500.jsonl"))]
    n = len(rows)
    for i, r in enumerate(rows):
        pairs.append(("math500", r["answer"], r["solution"], True))
        for k in (7, 131):
            o = rows[(i + k) % n]
            if o["answer"].replace(" ", "") == r["answer"].replace(" ", ""):
                continue
            pairs.append(("math500", r["answer"], o["solution"], False))
    # 3. Real model outputs: ProcessBench (MATH split) solutions to MATH-500 problems, with
    #    ProcessBench's final_answer_correct as the label.
    by_problem = {r["problem"].strip(): r["answer"] for r in rows}
    for line in open(os.path.join(SHARED, "processbench", "math.jsonl")):
        p = json.loads(line)
        ref = by_problem.get(p["problem"].strip())
        if ref is not None:
            pairs.append(("processbench", ref, "\n\n".join(p["steps"]), p["final_answer_correct"]))
    return pairs


def wrap(s):
    # math-verify's LaTeX extraction needs math delimiters around bare answers.
    return s if ("$" in s or "\\(" in s or "\\[" in s or "boxed" in s) else f"${s}$"


def run_mathverify(pairs):
    from math_verify import parse, verify

    out = []
    t0 = time.perf_counter()
    for _, gold, pred, _ in pairs:
        try:
            ok = bool(verify(parse(wrap(gold)), parse(pred)))
        except Exception:
            ok = False
        out.append(ok)
    return out, time.perf_counter() - t0


def run_stepkto(pairs, binary):
    with tempfile.TemporaryDirectory() as d:
        inp, outp = os.path.join(d, "in.jsonl"), os.path.join(d, "out.jsonl")
        # The pairs repeated REPEAT times so the timed run is long enough to measure.
        with open(inp, "w") as f:
            for _ in range(REPEAT):
                for i, (_, gold, pred, _) in enumerate(pairs):
                    f.write(json.dumps({"id": i, "reference": gold, "candidate": pred}) + "\n")
        # Time the checking itself: the binary reports nothing, so time the whole run and
        # subtract a run over an empty file (process start-up).
        empty = os.path.join(d, "empty.jsonl")
        open(empty, "w").close()
        t0 = time.perf_counter()
        subprocess.run([binary, "check", "-i", empty, "-o", outp, "--threads", "1"], check=True)
        startup = time.perf_counter() - t0
        best = None
        for _ in range(3):
            t0 = time.perf_counter()
            subprocess.run([binary, "check", "-i", inp, "-o", outp, "--threads", "1"], check=True)
            el = time.perf_counter() - t0 - startup
            best = el if best is None else min(best, el)
        res = [json.loads(l) for l in open(outp)][: len(pairs)]
    return [bool(r.get("equivalent")) for r in res], max(best, 1e-9) / REPEAT


def report(name, got, pairs, secs):
    by = {}
    for (src, _, _, want), g in zip(pairs, got):
        c = by.setdefault(src, [0, 0, 0])
        c[0] += g == want
        c[1] += 1
        c[2] += g and not want
    parts = [f"{src}: {c[0]}/{c[1]} = {100 * c[0] / c[1]:.1f}% ({c[2]} false positives)" for src, c in by.items()]
    print(f"{name:12s} {'; '.join(parts)}; {len(pairs) / secs:,.0f} pairs/s ({secs:.2f} s)")


def main():
    if not os.path.exists(os.path.join(SHARED, "math500.jsonl")):
        sys.exit(f"bench: {SHARED} is absent; this benchmark needs ../shared/data")
    binary = sys.argv[1]
    pairs = load_pairs()
    print(f"{len(pairs)} pairs, single thread")
    mv, mv_s = run_mathverify(pairs)
    sk, sk_s = run_stepkto(pairs, binary)
    report("math-verify", mv, pairs, mv_s)
    report("stepkto", sk, pairs, sk_s)
    print(f"throughput ratio stepkto / math-verify: {mv_s / sk_s:.0f}x")
    disagree = [(p, a, b) for p, a, b in zip(pairs, mv, sk) if a != b]
    print(f"{len(disagree)} pairs where the two disagree")


if __name__ == "__main__":
    main()
