"""ABS against uniform allocation: the project's headline figure.

Both runs start from the same base model (round 0 is trained once and copied), use the same seed and
the same data budget per round, and differ only in how the budget is shared across question types.
Prints per-type accuracy per round for both, the gain of the base model's weakest types, and the
ratios ABS / uniform. Usage:

    python bench/abs_vs_uniform.py [--rounds 3] [--out runs/bench-abs] [--config my.yaml]
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dataengine.config import load_config
from dataengine.loop import Loop
from dataengine.report.terminal import accuracy_table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-abs"))
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--weakest", type=int, default=3, help="how many of the base model's weakest types to follow")
    args = ap.parse_args()
    console = Console()
    cfg = load_config(args.config)

    base = args.out / "base"
    Loop(cfg, base, console).run(rounds=0)  # world + round 0, shared by both arms
    results = {}
    for strategy in ("sqrt-error", "uniform"):
        arm = args.out / strategy
        arm.mkdir(parents=True, exist_ok=True)
        for part in ("world", "round_0"):
            if not (arm / part).exists():
                shutil.copytree(base / part, arm / part)
        console.rule(f"{strategy}")
        results[strategy] = Loop(cfg.model_copy(update={"sample": cfg.sample.model_copy(update={"strategy": strategy})}),
                                 arm, console).run(rounds=args.rounds)

    abs_r, uni_r = results["sqrt-error"], results["uniform"]
    base_acc = abs_r[0].accuracies()
    weakest = sorted(base_acc, key=lambda t: (base_acc[t], t))[: args.weakest]
    gain = lambda res: sum(res[-1].per_type[t].accuracy - res[0].per_type[t].accuracy for t in weakest) / len(weakest)
    g_abs, g_uni = gain(abs_r), gain(uni_r)

    table = Table(title=f"ABS (sqrt-error) vs uniform after {args.rounds} rounds, same base model and budget")
    for col in ("question type", "base", "ABS", "uniform", "ABS - uniform"):
        table.add_column(col, justify="right" if col != "question type" else "left")
    for t, r in abs_r[-1].per_type.items():
        u = uni_r[-1].per_type[t].accuracy
        table.add_row(f"{t}. {r.name}" + (" *" if t in weakest else ""), f"{base_acc[t]:.1%}", f"{r.accuracy:.1%}",
                      f"{u:.1%}", f"{r.accuracy - u:+.1%}")
    table.add_row("overall", f"{abs_r[0].accuracy:.1%}", f"{abs_r[-1].accuracy:.1%}", f"{uni_r[-1].accuracy:.1%}",
                  f"{abs_r[-1].accuracy - uni_r[-1].accuracy:+.1%}", style="bold")
    console.print(accuracy_table(abs_r, "ABS (sqrt-error): accuracy per round"))
    console.print(accuracy_table(uni_r, "uniform: accuracy per round"))
    console.print(table)
    # A ratio of gains means nothing when the uniform gain is zero or negative: give it only then.
    gain_ratio = g_abs / g_uni if g_uni > 0 else None
    figures = {
        "weakest_types": weakest,
        "weakest_gain_abs": g_abs, "weakest_gain_uniform": g_uni, "weakest_gain_ratio_abs_over_uniform": gain_ratio,
        "overall_abs": abs_r[-1].accuracy, "overall_uniform": uni_r[-1].accuracy,
        "overall_ratio_abs_over_uniform": abs_r[-1].accuracy / uni_r[-1].accuracy,
        "questions_per_type": abs_r[0].per_type[weakest[0]].total,
    }
    console.print(f"weakest types {weakest} (marked *): mean gain ABS {g_abs:+.1%}, uniform {g_uni:+.1%}, "
                  f"difference {g_abs - g_uni:+.1%}" + (f", ratio {gain_ratio:.2f}" if gain_ratio else " (uniform gained nothing)"))
    console.print(f"overall after {args.rounds} rounds: ABS {abs_r[-1].accuracy:.1%}, uniform {uni_r[-1].accuracy:.1%}, "
                  f"ratio {figures['overall_ratio_abs_over_uniform']:.3f}")
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
