"""ABS against uniform allocation (and other strategies), over several seeds: the project's headline.

Per seed, one base model is trained (the world and round 0 of that seed); every strategy then runs
the same rounds from it, with the same budget, and differs only in how the budget is shared across
question types. Figures come from the benchmark's held-out report part; the base model's weakest
types are chosen on the diagnosis part (so that picking them does not select noise). Prints, per
seed and as mean +- standard deviation over seeds, the weakest types' gain and the overall accuracy
of each strategy, and writes figures.json and a plot (accuracy per type per round, one line per
strategy, mean over seeds). Usage:

    python bench/abs_vs_uniform.py [--seeds 0 1 2] [--strategies error sqrt-error uniform progress] [--rounds 3]
                                   [--out runs/bench-abs] [--config my.yaml] [--plot docs/abs_vs_uniform.png]
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from dataengine.config import load_config
from dataengine.loop import Loop
from dataengine.records import QTYPES
from dataengine.sample import STRATEGIES
from _base import run


def strategy_name(name: str) -> str:
    """An ABS strategy's name, checked before any model is built."""
    try:
        return STRATEGIES.check(name)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def mean_sd(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):.1%} +- {sd:.1%}"


def signed(xs: list[float]) -> str:
    sd = statistics.stdev(xs) if len(xs) > 1 else 0.0
    return f"{statistics.mean(xs):+.1%} +- {sd:.1%}"


def plot(curves: dict[str, list[dict[int, float]]], overall: dict[str, list[float]], weakest: set[int], path: Path) -> None:
    """Accuracy per type per round (held-out part, mean over seeds), one line per strategy."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 5, figsize=(17, 6.5), sharex=True, sharey=True)
    rounds = range(len(next(iter(overall.values()))))
    for ax, t in zip(axes.flat, list(QTYPES) + ["overall"]):
        for strategy, per_round in curves.items():
            ys = overall[strategy] if t == "overall" else [r[t] for r in per_round]
            ax.plot(list(rounds), ys, marker="o", label=strategy)
        name = "overall" if t == "overall" else f"{t}. {QTYPES[t][0]}" + (" *" if t in weakest else "")
        ax.set_title(name, fontsize=10)
        ax.axhline(0.25, color="grey", lw=0.8, ls=":")  # chance with 4 options
        ax.set_ylim(0, 1.02)
        ax.set_xticks(list(rounds))
        ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xlabel("round")
    for ax in axes[:, 0]:
        ax.set_ylabel("held-out accuracy")
    axes.flat[0].legend(fontsize=9)
    fig.suptitle("Accuracy per question type per round, mean over seeds (* a weakest type of the base model; dotted: chance)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--strategies", nargs="+", default=["error", "sqrt-error", "uniform", "progress"], type=strategy_name)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-abs"))
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--weakest", type=int, default=3, help="how many of the base model's weakest types to follow")
    ap.add_argument("--plot", type=Path, default=None, help="where the plot goes (default: OUT/abs_vs_uniform.png)")
    args = ap.parse_args()
    console = Console()
    started = time.monotonic()

    per_seed: dict[int, dict] = {}
    for seed in args.seeds:
        cfg = load_config(args.config).model_copy(update={"seed": seed})
        base = args.out / f"seed-{seed}" / "base"
        console.rule(f"seed {seed}: base model")
        base_res = Loop(cfg, base, console).run(rounds=0)[0]
        diag = base_res.part("diagnosis").accuracies()
        weakest = sorted(diag, key=lambda t: (diag[t], t))[: args.weakest]
        arms = {}
        for strategy in args.strategies:
            arm = args.out / f"seed-{seed}" / strategy
            arm.mkdir(parents=True, exist_ok=True)
            for part in ("world", "round_0"):
                if not (arm / part).exists():
                    shutil.copytree(base / part, arm / part)
            console.rule(f"seed {seed}: {strategy}")
            run_cfg = cfg.model_copy(update={"sample": cfg.sample.model_copy(update={"strategy": strategy})})
            results = Loop(run_cfg, arm, console).run(rounds=args.rounds)
            report = [r.part("report") for r in results]
            arms[strategy] = {
                "per_round": [r.accuracies() for r in report], "overall": [r.accuracy for r in report],
                "weakest_gain": sum(report[-1].per_type[t].accuracy - report[0].per_type[t].accuracy for t in weakest) / len(weakest),
            }
        per_seed[seed] = {"weakest": weakest, "questions_per_type": min(x.total for x in base_res.part("report").per_type.values()),
                          "arms": arms}

    strategies = args.strategies
    table = Table(title=f"Per seed, after {args.rounds} rounds (held-out report part)")
    table.add_column("seed")
    table.add_column("weakest types")
    for s in strategies:
        table.add_column(f"{s}: weak gain", justify="right")
        table.add_column(f"{s}: overall", justify="right")
    for seed, d in per_seed.items():
        table.add_row(str(seed), ",".join(map(str, d["weakest"])),
                      *[x for s in strategies for x in (f"{d['arms'][s]['weakest_gain']:+.1%}", f"{d['arms'][s]['overall'][-1]:.1%}")])
    console.print(table)

    gains = {s: [d["arms"][s]["weakest_gain"] for d in per_seed.values()] for s in strategies}
    overall = {s: [d["arms"][s]["overall"][-1] for d in per_seed.values()] for s in strategies}
    base_overall = [d["arms"][strategies[0]]["overall"][0] for d in per_seed.values()]
    summary = Table(title=f"Mean +- standard deviation over {len(per_seed)} seeds")
    for col in ("strategy", "weakest types' gain", "overall accuracy"):
        summary.add_column(col, justify="right" if col != "strategy" else "left")
    summary.add_row("base model", "", mean_sd(base_overall))
    for s in strategies:
        summary.add_row(s, signed(gains[s]), mean_sd(overall[s]))
    console.print(summary)

    types = sorted(next(iter(per_seed.values()))["arms"][strategies[0]]["per_round"][0])
    curves = {s: [{t: statistics.mean(d["arms"][s]["per_round"][k][t] for d in per_seed.values()) for t in types}
                  for k in range(args.rounds + 1)] for s in strategies}
    mean_overall = {s: [statistics.mean(d["arms"][s]["overall"][k] for d in per_seed.values()) for k in range(args.rounds + 1)]
                    for s in strategies}
    per_type = Table(title="Final held-out accuracy per type, mean over seeds")
    per_type.add_column("question type")
    per_type.add_column("base", justify="right")
    for s in strategies:
        per_type.add_column(s, justify="right")
    for t in types:
        per_type.add_row(f"{t}. {QTYPES[t][0]}", f"{curves[strategies[0]][0][t]:.1%}", *[f"{curves[s][-1][t]:.1%}" for s in strategies])
    per_type.add_row("overall", f"{mean_overall[strategies[0]][0]:.1%}", *[f"{mean_overall[s][-1]:.1%}" for s in strategies], style="bold")
    console.print(per_type)
    for a, b in [("error", "uniform"), ("sqrt-error", "uniform"), ("error", "sqrt-error"), ("progress", "error"), ("progress", "sqrt-error")]:
        if a in strategies and b in strategies:
            diff = [x - y for x, y in zip(gains[a], gains[b])]
            console.print(f"weak-type gain, {a} - {b}: {signed(diff)}; "
                          f"overall, {a} - {b}: {signed([x - y for x, y in zip(overall[a], overall[b])])}")
    plot_path = args.plot or args.out / "abs_vs_uniform.png"
    weakest_all = {t for d in per_seed.values() for t in d["weakest"]}
    plot(curves, mean_overall, weakest_all, plot_path)
    minutes = (time.monotonic() - started) / 60
    console.print(f"plot: {plot_path}; {minutes:.0f} minutes in all")
    (args.out / "figures.json").write_text(json.dumps({"per_seed": per_seed, "mean_curves": curves, "mean_overall": mean_overall,
                                                       "minutes": minutes}, indent=2) + "\n")


if __name__ == "__main__":
    run(main)
