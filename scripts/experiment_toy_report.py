"""The report of scripts/experiment_toy.sh: per round M0..Mn and method, Pass@1 (greedy, test
split), the flawed-step rate among correct greedy solutions, and Maj@k, as mean +- sd over the
seeds; where the time went; two test solutions Step-KTO repaired. Writes DIR/results.json,
prints a Markdown table, and draws DIR/toy.png when matplotlib is importable.

Usage: experiment_toy_report.py DIR --sft-seconds S --total-seconds T --ablation equal|different
       --seeds 1 2 3
Standard library only, apart from the optional plot."""
import argparse
import json
import os
import statistics


def load(path):
    with open(path) as f:
        return json.load(f)


def records(run_dir, r):
    path = os.path.join(run_dir, f"round-{r}", "eval-records.jsonl")
    with open(path) as f:
        return {str(x["id"]): x for x in map(json.loads, f)}


def mean_sd(xs):
    xs = [x for x in xs if x is not None]
    if not xs:
        return None, None
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def fmt(m, sd):
    """A share as percent, mean ± sd."""
    if m is None:
        return "n/a"
    return f"{m * 100:.1f} ± {sd * 100:.1f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--sft-seconds", type=float, required=True)
    ap.add_argument("--total-seconds", type=float, required=True)
    ap.add_argument("--ablation", required=True)
    ap.add_argument("--seeds", nargs="+", required=True)
    a = ap.parse_args()

    methods = ["kto", "step-kto"]
    table, seconds = {}, {}
    problems, k = None, None
    for m in methods:
        per_round = {}
        for s in a.seeds:
            run = os.path.join(a.dir, f"{m}-seed{s}")
            summary = load(os.path.join(run, "summary.json"))
            for rnd in summary["rounds"]:
                e = rnd["eval"]
                problems, k = e["problems"], e["k"]
                per_round.setdefault(rnd["round"], []).append(e)
                for key, v in ((rnd.get("round_info") or {}).get("seconds") or {}).items():
                    if isinstance(v, (int, float)):
                        seconds[key] = seconds.get(key, 0.0) + v
        table[m] = {
            r: {
                "pass_at_1": mean_sd([e["pass_at_1"] for e in es]),
                "flawed_step_rate": mean_sd([e["flawed_step_rate"] for e in es]),
                "maj_at_k": mean_sd([e["maj_at_k"] for e in es]),
                "per_seed": es,
            }
            for r, es in sorted(per_round.items())
        }

    last = max(table["kto"])
    f_kto, f_step = table["kto"][last]["flawed_step_rate"], table["step-kto"][last]["flawed_step_rate"]
    p_kto, p_step = table["kto"][last]["pass_at_1"], table["step-kto"][last]["pass_at_1"]
    shows = None
    if None not in (f_kto[0], f_step[0], p_kto[0], p_step[0]):
        spread = max(f_kto[1], f_step[1])
        shows = (f_kto[0] - f_step[0] > spread) and p_step[0] >= p_kto[0] - max(p_kto[1], p_step[1])

    # two repairs: flawed at M0, correct with no refuted step after a Step-KTO round; the
    # last round of the first seed is searched first, then earlier rounds and other seeds
    # (a seed whose last round collapsed may hold none), one example per problem
    examples = []
    for seed in a.seeds:
        run = os.path.join(a.dir, f"step-kto-seed{seed}")
        before = records(run, 0)
        for r in range(last, 0, -1):
            after = records(run, r)
            for i, b in before.items():
                x = after.get(i)
                if any(e["id"] == i for e in examples):
                    continue
                if b["final_answer_correct"] and b["flawed"] and x and x["final_answer_correct"] and not x["flawed"]:
                    examples.append({"id": i, "answer": b["answer"], "seed": seed, "round": r,
                                     "before": b["greedy"], "after": x["greedy"]})
                if len(examples) == 2:
                    break
            if len(examples) == 2:
                break
        if len(examples) == 2:
            break

    results = {
        "seeds": a.seeds, "test_problems": problems, "maj_k": k, "rounds": last,
        "table": {m: {str(r): row for r, row in t.items()} for m, t in table.items()},
        "effect_shows": shows, "ablation_lambda0_equals_kto": a.ablation == "equal",
        "seconds": {"total": a.total_seconds, "sft": a.sft_seconds, **seconds},
        "repaired_examples": examples,
    }
    with open(os.path.join(a.dir, "results.json"), "w") as f:
        json.dump(results, f, indent=2)

    print(f"\n{problems} test problems, {len(a.seeds)} seed(s), Maj@{k}; mean ± sd over seeds (%)\n")
    print(f"| model | method | Pass@1 | flawed-step rate (of correct) | Maj@{k} |")
    print("|---|---|---|---|---|")
    for r in sorted(table["kto"]):
        for m in methods if r > 0 else ["kto"]:
            row = table[m][r]
            name = "both" if r == 0 else m
            print(f"| M{r} | {name} | {fmt(*row['pass_at_1'])} | {fmt(*row['flawed_step_rate'])} "
                  f"| {fmt(*row['maj_at_k'])} |")
    print(f"\neffect shows (Step-KTO's M{last} flawed-step rate below KTO's by more than the seeds' "
          f"spread, Pass@1 not lower): "
          f"{'n/a (a method has no correct solutions)' if shows is None else shows}")
    print(f"ablation lambda_step = 0 equals KTO: {a.ablation == 'equal'}")
    t = results["seconds"]
    print("seconds: " + ", ".join(f"{key} {v:.0f}" for key, v in t.items()))
    for e in examples:
        print(f"\n{e['id']} (answer {e['answer']}; seed {e['seed']}, M0 -> M{e['round']})\n"
              f"before:\n{e['before']}\nafter:\n{e['after']}")

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("\n(no matplotlib: toy.png not drawn)")
        return
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6))
    for ax, key, title in ((axes[0], "pass_at_1", "Pass@1 (greedy, test)"),
                           (axes[1], "flawed_step_rate", "flawed-step rate among correct")):
        for m, colour in (("kto", "tab:blue"), ("step-kto", "tab:red")):
            rs = sorted(table[m])
            ms = [table[m][r][key][0] or 0.0 for r in rs]
            sds = [table[m][r][key][1] or 0.0 for r in rs]
            ax.errorbar(rs, [100 * v for v in ms], yerr=[100 * v for v in sds], label=m, color=colour,
                        marker="o", capsize=3)
        ax.set_xticks(sorted(table["kto"]))
        ax.set_xticklabels([f"M{r}" for r in sorted(table["kto"])])
        ax.set_title(title)
        ax.set_ylabel("%")
        ax.legend()
    fig.suptitle(f"toy arithmetic, {problems} test problems, mean ± sd over {len(a.seeds)} seed(s)")
    fig.tight_layout()
    fig.savefig(os.path.join(a.dir, "toy.png"), dpi=110)
    print(f"\nwrote {os.path.join(a.dir, 'toy.png')}")


if __name__ == "__main__":
    main()
