"""Learnability: can the embedded default model learn every question type from balanced grounded data?

Builds the default world and a held-out benchmark from scenes of its own (`--bench-per-type`
questions a type, the same grounded generator), builds the tiny model as round 0 does (vision
pretraining, alignment stage), then, from that same starting point each time, trains on `n` grounded
items of every type for each n of `--sizes` and evaluates per type. Prints a type x size table (the
ceiling each type reaches and how many items it takes), the largest size's accuracy by the number
of objects in the picture, and the time of each step. Usage:

    python bench/learnability.py [--sizes 100 300 1000] [--config my.yaml] [--out runs/learn] [--ground-attention 1]

`--ground-attention W` trains each size with train/grounding.py's loss at weight W (the starting
point is the same: its alignment stage does not use it).
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dataengine.config import load_config  # noqa: E402
from dataengine.evaluate import evaluate  # noqa: E402
from dataengine.generate import GroundedGenerator, generate  # noqa: E402
from dataengine.models.vlm import VLM  # noqa: E402
from dataengine.records import QTYPES, ImageAnnotation, Question, Sample, read_jsonl, write_jsonl  # noqa: E402
from dataengine.stages import align, init_model, probe_images  # noqa: E402
from dataengine.train.sft import train  # noqa: E402
from dataengine.world.build import build_world  # noqa: E402
from dataengine.world.render import VOCABULARY, build_pool  # noqa: E402
from _base import run  # noqa: E402


def heldout_benchmark(cfg, image_root: Path, per_type: int) -> tuple[list[Question], dict[str, ImageAnnotation]]:
    """`per_type` questions a type from scenes neither the pool nor the loop's benchmark uses, and
    those scenes' annotations (by image path)."""
    start = cfg.seed * 10**6 + 700_000
    scenes = build_pool(image_root, "heldout", range(start, start + per_type * 6), cfg.world.image_size)
    items = generate({t: per_type for t in range(1, 10)}, scenes, GroundedGenerator(VOCABULARY, source="heldout"), seed=cfg.seed + 13)
    short = {t: per_type - sum(s.qtype == t for s in items) for t in range(1, 10)}
    assert not any(short.values()), short
    questions = [Question(question_id=f"h{i:05d}", question=s.instruction, options=s.options, answer=s.choice_answer,
                          qtype=s.qtype, image=s.image) for i, s in enumerate(items)]
    return questions, {a.image: a for a in scenes}


def by_objects(preds, objects: dict[str, int], types: list[int]) -> dict[int, dict[int, tuple[int, float]]]:
    """Per type, per number of objects in the picture: (questions, accuracy). A type that is right
    with one object and falls as objects are added can read what it needs but not find the object
    the question names among the others (binding), rather than not see it."""
    out: dict[int, dict[int, tuple[int, float]]] = {}
    for t in types:
        cells: dict[int, list[bool]] = {}
        for p in preds:
            if p.qtype == t:
                cells.setdefault(objects[p.image], []).append(p.correct)
        out[t] = {k: (len(v), sum(v) / len(v)) for k, v in sorted(cells.items())}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=None, help="a run config (model.tiny, model.vision_*, model.align, train)")
    ap.add_argument("--out", type=Path, default=Path("runs/learn"))
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 300, 1000])
    ap.add_argument("--types", type=int, nargs="+", default=list(range(1, 10)))
    ap.add_argument("--bench-per-type", type=int, default=150)
    ap.add_argument("--epochs", type=float, default=None, help="training epochs (default: the config's train.epochs)")
    ap.add_argument("--ground-attention", type=float, default=None,
                    help="train.ground_attention for the per-size training (train/grounding.py; default: the config's)")
    ap.add_argument("--tag", default="default", help="a name for this configuration's results")
    args = ap.parse_args()
    args.sizes = sorted(set(args.sizes))
    if args.ground_attention is not None and args.ground_attention < 0:
        raise SystemExit("error: --ground-attention: 0 or more")
    cfg = load_config(args.config)
    times: dict[str, float] = {}

    t0 = time.perf_counter()
    w = build_world(cfg, args.out / "world")
    pool = read_jsonl(w.pool, ImageAnnotation)
    starter = read_jsonl(w.original, Sample)
    bench, scenes = heldout_benchmark(cfg, w.image_root, args.bench_per_type)
    objects = {image: len(a.objects) for image, a in scenes.items()}
    bench = [q for q in bench if q.qtype in args.types]
    times["world"] = time.perf_counter() - t0

    # The starting point as round 0 makes it (before its starter training), kept between runs; its
    # alignment stage trains with the train section's settings, so they are part of its name.
    m = cfg.model
    # (ground_attention at 0 is left out, so that starting points built before it existed keep their names)
    training = cfg.training()
    t = training.model_dump(mode="json", exclude={"ground_attention"} if not training.ground_attention else None)
    key = hashlib.sha1(json.dumps([m.model_dump(mode="json"), t, cfg.seed]).encode()).hexdigest()[:8]
    base = args.out / f"base-{key}"
    if (base / "config.json").exists():
        vlm = VLM.load(base)
        scores = json.loads((base / "probe.json").read_text())
    else:
        t0 = time.perf_counter()
        vlm, scores = init_model(starter, cfg, None, pool, w.image_root)
        times["vision"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        if align(vlm, pool, cfg, w.image_root, args.out / "align") is not None:
            times["align"] = time.perf_counter() - t0
        vlm.save(base)
        (base / "probe.json").write_text(json.dumps(scores or {}))
    print("vision probe: " + ", ".join(f"{k} {v:.0%}" for k, v in (scores or {}).items()), flush=True)
    state = copy.deepcopy(vlm.model.state_dict())

    tcfg = cfg.training(**({"epochs": args.epochs} if args.epochs else {})
                        | ({"ground_attention": args.ground_attention} if args.ground_attention is not None else {}))
    table: dict[int, dict[int, float]] = {}
    crowds: dict[int, dict] = {}
    for n in args.sizes:
        vlm.model.load_state_dict(state)
        data = generate({t: n for t in args.types}, pool[probe_images(pool):], GroundedGenerator(VOCABULARY, source="learn"), seed=cfg.seed + 1)
        t0 = time.perf_counter()
        train(vlm, data, w.image_root, args.out / args.tag / f"n{n}", tcfg, annotations=pool)
        times[f"train n={n}"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        preds = evaluate(vlm, bench, w.image_root, batch_size=cfg.evaluate.batch_size)
        times[f"eval n={n}"] = time.perf_counter() - t0
        table[n] = {t: sum(p.correct for p in preds if p.qtype == t) / sum(p.qtype == t for p in preds) for t in args.types}
        crowds[n] = by_objects(preds, objects, args.types)
        write_jsonl(args.out / args.tag / f"n{n}" / "predictions.jsonl", preds)
        print(f"n={n}: {len(data)} items, train {times[f'train n={n}']:.0f} s, eval {times[f'eval n={n}']:.0f} s  "
              + " ".join(f"{t}:{a:.0%}" for t, a in table[n].items()), flush=True)
        (args.out / args.tag / "results.json").write_text(json.dumps(
            {"table": table, "by_objects": crowds, "times": times, "probe": scores, "config": cfg.model_dump(mode="json"),
             "epochs": tcfg.epochs, "ground_attention": tcfg.ground_attention, "freeze_vision": tcfg.freeze_vision,
             "bench_per_type": args.bench_per_type}, indent=1))

    se = (0.25 / args.bench_per_type) ** 0.5
    print(f"\n{'question type':<26}" + "".join(f"{f'n={n}':>10}" for n in args.sizes))
    for t in args.types:
        print(f"{t}. {QTYPES[t][0]:<23}" + "".join(f"{table[n][t]:>9.0%} " for n in args.sizes))
    print(f"{'mean':<26}" + "".join(f"{sum(table[n].values()) / len(table[n]):>9.1%} " for n in args.sizes))
    reached = [t for t in args.types if table[args.sizes[-1]][t] >= 0.75]
    print(f"at n={args.sizes[-1]}: {len(reached)} of {len(args.types)} types at 75% or more ({', '.join(map(str, reached))}); "
          f"one cell's standard error at 50%: {se:.1%}")
    crowd = crowds[args.sizes[-1]]
    counts = sorted({k for cells in crowd.values() for k in cells})
    print(f"\nat n={args.sizes[-1]}, by objects in the picture (accuracy, questions)")
    print(f"{'question type':<26}" + "".join(f"{f'{k} object' + ('' if k == 1 else 's'):>14}" for k in counts))
    for t, cells in crowd.items():
        print(f"{t}. {QTYPES[t][0]:<23}" + "".join(f"{f'{cells[k][1]:.0%} ({cells[k][0]})' if k in cells else '-':>14}"
                                                  for k in counts))
    print("time: " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))


if __name__ == "__main__":
    run(main)
