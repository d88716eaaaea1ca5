"""Instruction evolution (MMEvol) on the embedded default: does training on evolved items lift the
hard benchmark without costing the standard one?

From one base model (round 0 of the default run), each arm trains a loop round's worth: the round's
replay of the starter set plus N grounded items of every type, of which a share (0, 25, 50, 100%)
is replaced by evolved descendants (`evolve.rounds.evolve`, 2 rounds, grounded judge). Every arm has
the same number of items and steps. Each is evaluated on the world's hard benchmark (evolution's
kinds of question on scenes of their own, `world.hard`) and on the standard benchmark's held-out
part. Prints accuracy per arm and its difference from the 0% arm with a standard error. Usage:

    python bench/evolve.py [--n 1200] [--shares 0 0.25 0.5 1] [--out runs/bench-evolve]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from _base import base_round, run  # noqa: E402
from dataengine import stages  # noqa: E402
from dataengine.benchmarks.seed import read_seed  # noqa: E402
from dataengine.config import load_config  # noqa: E402
from dataengine.evaluate import evaluate, split  # noqa: E402
from dataengine.evolve.rounds import evolve  # noqa: E402
from dataengine.generate import GroundedGenerator, generate  # noqa: E402
from dataengine.models.vlm import VLM  # noqa: E402
from dataengine.records import write_jsonl  # noqa: E402
from dataengine.world.hard import build_hard  # noqa: E402
from dataengine.world.render import VOCABULARY  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/bench-evolve"))
    ap.add_argument("--n", type=int, default=1200, help="incremental items per arm (all types together)")
    ap.add_argument("--shares", type=float, nargs="+", default=[0.0, 0.25, 0.5, 1.0])
    ap.add_argument("--hard-per-category", type=int, default=60)
    args = ap.parse_args()
    console = Console()
    started = time.monotonic()
    cfg = load_config(args.config)
    base = base_round(cfg, args.out, console)
    inputs, base_model, pool, original, questions = base.inputs, base.model, base.pool, base.original, base.questions
    hard_path = build_hard(cfg, args.out / "hard", args.hard_per_category)
    hard = read_seed(hard_path)
    hard_root = args.out / "hard" / "images"

    # the round's kept items, as the grounded generator writes them, then their evolution
    seeds = generate({t: args.n // 9 for t in range(1, 10)}, pool, GroundedGenerator(VOCABULARY, source="round-1"), seed=cfg.seed + 1)
    evolved, stats = evolve(seeds, pool, args.out / "evolve", rounds=2, vocab=VOCABULARY, seed=cfg.seed, log=console.print)

    rows: dict[str, dict] = {}
    for share in args.shares:
        arm = f"{share:.0%}"
        d = args.out / f"share-{arm.rstrip('%')}"
        items = stages.with_evolved(seeds, evolved, share, seed=cfg.seed + 1)
        data = stages.training_mix(original, items, cfg.train.original_fraction, seed=cfg.seed + 1)
        if not (d / "model" / "config.json").exists():
            console.rule(f"arm {arm}: {sum(s.lineage is not None for s in items)} of {len(items)} items evolved")
            write_jsonl(d / "items.jsonl", items)
            stages.train_model(base_model, data, inputs.image_root, d / "model", cfg.training(seed=cfg.seed + 1),
                               annotations=pool)
        vlm = VLM.load(d / "model")
        rows[arm] = figures(vlm, hard, hard_root, questions, inputs, cfg, items)
        del vlm
    vlm = VLM.load(base_model)
    base = figures(vlm, hard, hard_root, questions, inputs, cfg, [])

    table = Table(title=f"{args.n} incremental items per arm, the same steps; hard benchmark {len(hard)} questions, "
                        f"standard held-out {rows[next(iter(rows))]['standard_n']}")
    cats = list(dict.fromkeys(q.category for q in hard))
    for col in ("arm", "evolved", "hard", *(c.split()[0] for c in cats), "standard"):  # categories by their first word
        table.add_column(col, justify="left" if col == "arm" else "right")
    for arm, r in {"base": base, **rows}.items():
        table.add_row(arm, str(r["evolved"]), f"{r['hard']:.1%}", *(f"{r['per_category'][c]:.0%}" for c in cats), f"{r['standard']:.1%}")
    console.print(table)
    ref = rows[f"{args.shares[0]:.0%}"]
    se_hard = (2 * 0.25 / len(hard)) ** 0.5
    se_std = (2 * 0.25 / ref["standard_n"]) ** 0.5
    for arm, r in rows.items():
        console.print(f"{arm} evolved vs {args.shares[0]:.0%}: hard {r['hard'] - ref['hard']:+.1%}, standard "
                      f"{r['standard'] - ref['standard']:+.1%}  (a difference's standard error at most {se_hard:.1%} / {se_std:.1%})")
    minutes = (time.monotonic() - started) / 60
    console.print("evolution: " + "; ".join(f"round {s.round}: {sum(s.kept.values())} kept of {sum(s.made.values())}, complexity "
                                              f"{s.parent_complexity:.1f} -> {s.mean_complexity:.1f}" for s in stats))
    console.print(f"{minutes:.0f} minutes in all")
    out = {"n": args.n, "hard_questions": len(hard), "base": base, "arms": rows, "minutes": minutes,
           "evolution": [s.model_dump() for s in stats]}
    (args.out / "figures.json").write_text(json.dumps(out, indent=2) + "\n")


def figures(vlm, hard, hard_root, questions, inputs, cfg, items) -> dict:
    ph = evaluate(vlm, hard, hard_root, batch_size=cfg.evaluate.batch_size)
    report = [q for q in questions if q.question_id in held_out(cfg, questions)]
    ps = evaluate(vlm, report, inputs.benchmark_image_root, batch_size=cfg.evaluate.batch_size)
    by_cat = Counter(q.category for q in hard)
    right = Counter(q.category for q, p in zip(hard, ph) if p.correct)
    return {"hard": sum(p.correct for p in ph) / len(ph), "per_category": {c: right[c] / n for c, n in by_cat.items()},
            "standard": sum(p.correct for p in ps) / len(ps), "standard_n": len(ps),
            "evolved": sum(s.lineage is not None for s in items)}


def held_out(cfg, questions) -> set[str]:
    """The standard benchmark's report part (the part the loop never plans from)."""
    return {q for q, part in split(questions, cfg.evaluate.held_out).items() if part == "report"}


if __name__ == "__main__":
    run(main)
