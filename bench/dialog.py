"""Single-turn against merged multi-round conversations (after "COCO is ALL you need for visual
instruction fine-tuning", arXiv 2401.08968), on the embedded world.

From one base model (round 0 of the default loop), the same items train two arms with the same
steps and learning rate:

    single   every item a one-turn conversation (its question and format instruction -> its answer)
    merged   per image, the items merged into conversations of up to `--max-turns` turns, shuffled,
             the image once at the start; the loss on every answer (the batch holds as many turns
             on average as the single arm's, so the two take the same steps over the same turns)
    merged-item  the same, each conversation opened by an item's turn while its image has one, the
             annotations' turns after (`merge.lead: item`)

The items: grounded items of every SEED-Bench type on `--images` pool images (as a round generates
them; those with options asked for the letter or the short answer, one or the other per item), and
what those images' annotations say: the caption (a sentence), each region's box (grounding, "[x1, y1,
x2, y2]" in 0-1), what lies in each box (a phrase), POPE-style yes / no questions, and a follow-up
chain whose later turns refer back to the first ("Which shape is above the red box?", then "What
colour is it?"...; `--pool-turns` without `followup` leaves it out). Beside them,
as a loop round trains, the replay of the starter set (`train.original_fraction` of it, seeded as
round 1's `stages.training_mix`), the same items in both arms: one-turn conversations in `single`,
merged per image with the rest in `merged` (as `train.conversation: merged` merges the round's mix).

Each arm is measured single-round (the multiple-choice benchmark's held-out part, by option
likelihood, as the loop reports it) and multi-round (the dialog benchmark: held-out scenes, five
turns whose later ones refer back to the first answer, each with a format instruction; the model's own
answers stay in the conversation): accuracy per turn, accuracy of the later turns, format compliance.
Prints the table and writes figures.json. Usage:

    OMP_NUM_THREADS=1 python bench/dialog.py [--out runs/bench-dialog] [--images 400] [--dialogs 150]
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from _base import base_round, run
from dataengine import stages
from dataengine.config import load_config
from dataengine.dialog.benchmark import build_dialog_benchmark, evaluate_dialogs, read_dialogs
from dataengine.dialog.merge import merge, pool_turns, sample_turn, single
from dataengine.generate import GroundedGenerator, generate
from dataengine.models.vlm import VLM
from dataengine.records import Sample, read_jsonl, write_jsonl
from dataengine.train.config import TrainConfig
from dataengine.train.sft import train


# arm -> how its conversations open (dialog.merge.LEADS); None: one turn a conversation
ARMS = {"single": None, "merged": "any", "merged-item": "item"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=None, help="The loop's config for the base model (default: the embedded default).")
    ap.add_argument("--out", type=Path, default=Path("runs/bench-dialog"))
    ap.add_argument("--images", type=int, default=400, help="Pool images the items are about.")
    ap.add_argument("--per-type", type=int, default=60, help="Grounded items of each SEED-Bench type.")
    ap.add_argument("--max-turns", type=int, default=8)
    ap.add_argument("--epochs", type=float, default=2.0)
    ap.add_argument("--batch-size", type=int, default=16, help="Turns a step (the single arm's batch).")
    ap.add_argument("--dialogs", type=int, default=150)
    ap.add_argument("--seed", type=int, default=0, help="The arms' training and merge seed (the items and the base stay).")
    ap.add_argument("--pool-turns", nargs="+", default=["caption", "region", "grounding", "existence", "followup"],
                    help="the kinds of turn the images' annotations add (dialog.merge.POOL_KINDS)")
    ap.add_argument("--arms", nargs="+", default=["single", "merged", "merged-item"], choices=list(ARMS),
                    help="single; merged (any turn opens); merged-item (an item opens, the pool's turns after)")
    args = ap.parse_args()
    if os.environ.get("OMP_NUM_THREADS") == "1":
        import torch
        torch.set_num_threads(1)
    console = Console(width=160)
    started = time.monotonic()
    cfg = load_config(args.config)
    base = base_round(cfg, args.out, console)
    inputs, base_model, pool, benchmark, questions = base.inputs, base.model, base.pool, base.benchmark, base.questions
    guard = stages.benchmark_guard(benchmark, inputs)

    dialog_path = args.out / "dialog.json"
    dialogs = read_dialogs(dialog_path) if dialog_path.exists() else \
        build_dialog_benchmark(inputs.image_root, dialog_path, n=args.dialogs, seed=cfg.seed, size=cfg.world.image_size)
    refuse = stages.refuse_benchmark_images(guard, {d.image for d in dialogs}, image_root=inputs.image_root)
    # the items: grounded items of every type and the annotations' turns, on the first --images pool
    # images that are no benchmark picture (a few pool scenes render the same picture as one)
    anns = [a for a in pool[:args.images] if refuse(a.image, a.image_id) is None]
    items = generate({t: args.per_type for t in range(1, 10)}, anns, GroundedGenerator(stages.vocabulary(pool), source="generated"),
                     seed=cfg.seed + 1, max_images=None)
    write_jsonl(args.out / "items.jsonl", items)
    # as round 1 of the loop trains: a seeded share (train.original_fraction) of the starter set replayed
    # beside the new items (stages.training_mix), the same replay in both arms; `train.conversation:
    # merged` merges the whole mix per image, so the merged arm merges the replayed items too. A starter
    # item on a benchmark picture is left out of both before the draw (the loop drops it after the
    # draw, from its conversations only; in the default world 1 of 2,120 starter items is one), so
    # the replay may differ from round 1's by that item. Both arms train conversations (the single arm
    # one-turn ones), which take no attention grounding; the loop grounds its tiny LLaVA's single items.
    original = [s for s in read_jsonl(inputs.original, Sample) if refuse(s.image, s.id) is None]
    mix = stages.training_mix(original, items, cfg.train.original_fraction, seed=cfg.seed + 1)
    replayed = len(mix) - len(items)
    turns = [(s.image, sample_turn(s, cfg.merge.form)) for s in mix] + pool_turns(anns, args.pool_turns, seed=cfg.seed)
    arms = {name: single(turns) if ARMS[name] is None else
            merge(turns, max_turns=args.max_turns, seed=cfg.seed + args.seed, refuse=refuse, lead=ARMS[name]) for name in args.arms}
    n_turns = len(turns)
    console.print(f"{len(items)} items, {replayed} replayed starter items ({cfg.train.original_fraction:.0%}) and "
                  f"{n_turns - len(mix)} annotation turns on {len({i for i, _ in turns})} images; "
                  f"conversations per arm {({n: len(c) for n, c in arms.items()})}; dialog benchmark: {len(dialogs)} dialogs")

    t = cfg.train
    no_blind = cfg.model_copy(update={"evaluate": cfg.evaluate.model_copy(update={"blind": False})})  # not measured here
    rows = {}
    for name in ["base", *arms]:
        d = args.out / (name if name == "base" or not args.seed else f"{name}-seed{args.seed}")
        model_dir = base_model if name == "base" else d / "model"
        if name != "base" and not (model_dir / "config.json").exists():
            console.rule(name)
            convs = arms[name]
            write_jsonl(d / "conversations.jsonl", convs)
            batch = max(1, round(args.batch_size * len(convs) / n_turns))  # the same turns a step, so the same steps
            log = train(VLM.load(base_model), convs, inputs.image_root, model_dir,
                        TrainConfig(epochs=args.epochs, lr=t.lr, batch_size=batch, freeze_vision=t.freeze_vision,
                                    scheduler=t.scheduler, warmup_ratio=t.warmup_ratio, seed=cfg.seed + 1 + args.seed))
            console.print(f"{name}: {log['steps']} steps, batch {batch} conversations, {log['seconds']:.0f} s")
        eval_dir = base_model.parent / "eval" if name == "base" else d / "eval"  # the base's: the loop's own
        seed_res = stages.evaluate_model(model_dir, questions, inputs.benchmark_image_root, eval_dir, no_blind,
                                         benchmark=inputs.benchmark.name, model_name="round_0/model" if name == "base" else None
                                         ).part("report")
        dia = evaluate_dialogs(VLM.load(model_dir), dialogs, inputs.image_root, d / "dialog", batch_size=32, max_new_tokens=32)
        steps = json.loads((model_dir / "train_log.json").read_text())["steps"] if name != "base" else 0
        rows[name] = {"single_round": seed_res.accuracy, "steps": steps, "dialog": dia}

    table = Table(title=f"Single-turn against merged conversations: {n_turns} turns, the same steps; "
                        f"{len(dialogs)} held-out dialogs (accuracy per turn, format compliance)")
    cols = ["arm", "steps", "benchmark (1 round)", *(f"turn {k}" for k in range(1, 6)), "later turns", "compliance",
            *(f"{f} compl." for f in ("letter", "word", "box", "sentence"))]
    for c in cols:
        table.add_column(c, justify="left" if c == "arm" else "right")
    for name, r in rows.items():
        dia = r["dialog"]
        table.add_row(name, str(r["steps"]), f"{r['single_round']:.1%}",
                      *(f"{dia['per_turn'][k]['accuracy']:.1%}" for k in range(1, 6)), f"{dia['later_turns_accuracy']:.1%}",
                      f"{dia['compliance']:.1%}",
                      *(f"{dia['per_format'][f]['compliance']:.1%}" if f in dia["per_format"] else "-" for f in ("letter", "word", "box", "sentence")))
    console.print(table)
    for name in [a for a in args.arms if a != "single" and "single" in rows]:
        s, m = rows["single"], rows[name]
        console.print(f"{name} - single: benchmark {m['single_round'] - s['single_round']:+.1%} (target >= 0 within noise), "
                      f"multi-round turn accuracy {m['dialog']['accuracy'] - s['dialog']['accuracy']:+.1%}, later turns "
                      f"{m['dialog']['later_turns_accuracy'] - s['dialog']['later_turns_accuracy']:+.1%} (target +10 points), "
                      f"format compliance {m['dialog']['compliance'] - s['dialog']['compliance']:+.1%} (target +10 points)")
    minutes = (time.monotonic() - started) / 60
    console.print(f"{minutes:.0f} minutes in all")
    figures = {"turns": n_turns, "items": len(items), "replayed": replayed, "conversations": {n: len(c) for n, c in arms.items()}, "dialogs": len(dialogs),
               "arms": rows, "minutes": minutes, "args": {k: str(v) for k, v in vars(args).items()}}
    (args.out / ("figures.json" if not args.seed else f"figures-seed{args.seed}.json")).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    run(main)
