"""HA-DPO on the embedded world: DPO on hallucination-aware pairs against SFT on their positives.

From one base model (round 0 of `configs/hadpo.yaml`: a world whose shapes co-occur, a starter set
with descriptions and yes/no items), the hallucination round (`dataengine.hadpo`) describes pool
images, finds and corrects the hallucinated sentences and trains by DPO on the pairs. The same
pairs then train other arms with the same steps and learning rate:

    dpo         DPO on the pairs (HA-DPO; the `hadpo.train` settings)
    dpo+sft     DPO with HA-DPO's SFT term on the chosen side (gamma 0.5, its MiniGPT-4 recipe)
    sft         supervised fine-tuning on the chosen sides alone (corrected descriptions, right yes/no answers;
                an image-conditioned pair repeats another pair's chosen side, so the steps stay the same)
    blank       DPO on the same pairs with every picture replaced by a grey one (the control of
                mDPO, arXiv 2406.11839: a gain that survives without the image is not about the image;
                an image-conditioned pair then has nothing left to prefer)
    on-policy   DPO on the pairs the on-policy check passes at `--on-policy-gap` nats (`hadpo.off_policy:
                drop`, arXiv 2501.09695): fewer pairs, so fewer steps
    dpo-iter    a second hallucination round from the DPO model: it describes the same pool images
                anew, and its own new hallucinations make the next pairs (iterative, on-policy DPO)

The dpo arm is trained `--seeds` times (default 3) on the same pairs, with training seeds 0, 1, ...
(rows dpo, dpo-seed1, ...): one training's POPE F1 on 200 images moved by ten points from seed to
seed, so the mean and range say what one run cannot.

Each arm is measured on held-out images: SHR of its descriptions and POPE F1 per split, plus the
multiple-choice benchmark's held-out accuracy. Prints the table and writes figures.json. Usage:

    python bench/hadpo.py [--config configs/hadpo.yaml] [--out runs/bench-hadpo] [--arms dpo sft blank] [--seeds 3]
"""
from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from PIL import Image
from rich.console import Console
from rich.table import Table

from _base import base_round, run
from dataengine import stages
from dataengine.config import HADPOConfig, load_config
from dataengine.generate.hallucination import CLAIM_KINDS
from dataengine.generate.pairs import PreferencePair, check_on_policy
from dataengine.hadpo import POPE_SPLITS, describe_prompt, heldout_images, measure, object_names, run_hadpo
from dataengine.models.vlm import VLM
from dataengine.records import Sample, read_jsonl
from dataengine.train.config import TrainConfig
from dataengine.train.dpo import train_dpo
from dataengine.train.sft import train


ARMS = ["dpo", "dpo+sft", "sft", "blank", "on-policy", "dpo-iter"]


def grey_pairs(pairs: list[PreferencePair], folder: Path, size: int) -> list[PreferencePair]:
    """The blank control's pairs: every picture replaced by one grey `size` x `size` picture written
    to `folder`. An image-conditioned pair's rejected side gets a copy under another name (the same
    pixels, so nothing is left to prefer; `check_pairs` refuses a pair shown one file twice)."""
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), (128, 128, 128)).save(folder / "grey.png")
    shutil.copy(folder / "grey.png", folder / "grey-other.png")
    return [p.model_copy(update={"image": "grey.png", "rejected_image": p.rejected_image and "grey-other.png"}) for p in pairs]


def kinds_table(rows: dict[str, dict]) -> Table:
    """Each arm's hallucinated sentences by the kind of their false claim (`shr()`'s `by_kind`), and
    its descriptions that loop (`loops`); blank for a measurement recorded before these were, which
    a resumed bench reads back as it was."""
    table = Table(title="Hallucinated sentences by false claim (a sentence with two kinds counts under both)")
    for col in ("arm", *CLAIM_KINDS, "loops"):
        table.add_column(col, justify="right" if col != "arm" else "left")
    for arm, m in rows.items():
        by_kind = m["shr"].get("by_kind") or {}
        table.add_row(arm, *(str(by_kind.get(k, "")) for k in CLAIM_KINDS), str(m["shr"].get("loops", "")))
    return table


def spread_line(runs: list[dict], base: dict) -> str:
    """The dpo arm over its training seeds: SHR and adversarial POPE F1, mean and range, and the mean
    against the base's. One line."""
    shr = [m["shr"]["shr"] for m in runs]
    f1 = [m["pope"]["adversarial"]["f1"] for m in runs]
    mean_shr, mean_f1 = sum(shr) / len(shr), sum(f1) / len(f1)
    ratio = f"x{mean_shr / base['shr']['shr']:.2f}" if base["shr"]["shr"] else "n/a"
    return (f"dpo over {len(runs)} training seeds: SHR {mean_shr:.1%} ({min(shr):.1%}-{max(shr):.1%}), {ratio} of the base's; "
            f"adversarial POPE F1 {mean_f1:.1%} ({min(f1):.1%}-{max(f1):.1%}), "
            f"{100 * (mean_f1 - base['pope']['adversarial']['f1']):+.1f} points on the base's")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=Path("configs/hadpo.yaml"))
    ap.add_argument("--out", type=Path, default=Path("runs/bench-hadpo"))
    ap.add_argument("--arms", nargs="+", default=ARMS, choices=ARMS)
    ap.add_argument("--seeds", type=int, default=3,
                    help="train the dpo arm this many times, on the same pairs with training seeds 0, 1, ...: its spread")
    ap.add_argument("--on-policy-gap", type=float, default=0.25,
                    help="the on-policy arm leaves out pairs whose chosen side is less likely per token than the rejected by more")
    args = ap.parse_args()
    if args.seeds < 1:
        ap.error("--seeds: at least 1 (the dpo arm itself)")
    console = Console()
    started = time.monotonic()
    cfg = load_config(args.config)
    base_cfg = cfg.model_copy(update={"hadpo": HADPOConfig()})  # round 0 does not depend on the hallucination round
    base = base_round(base_cfg, args.out, console)
    inputs, base_model, pool, questions = base.inputs, base.model, base.pool, base.questions
    heldout, heldout_root = heldout_images(cfg, inputs, pool, base.original)
    names, prompt = object_names(pool, heldout), describe_prompt(cfg)

    def bench_accuracy(model_dir: Path, where: Path) -> float:
        # the base's evaluation is the loop's own, recorded under the loop's name for its model
        name = "round_0/model" if model_dir == base_model else None
        return stages.evaluate_model(model_dir, questions, inputs.benchmark_image_root, where, cfg,
                                     benchmark=inputs.benchmark.name, model_name=name).part("report").accuracy

    console.rule("dpo: the hallucination round")
    dpo_dir = args.out / "dpo"
    res = run_hadpo(base_model, cfg, inputs, dpo_dir, log=console.print)
    pairs = read_jsonl(dpo_dir / "pairs.jsonl", PreferencePair)
    rows = {"base": res["before"] | {"benchmark": bench_accuracy(base_model, args.out / "base" / "round_0" / "eval")}}
    if "dpo" in args.arms:
        rows["dpo"] = res["after"] | {"benchmark": bench_accuracy(dpo_dir / "model", dpo_dir / "eval")}
    h = cfg.hadpo
    at_gap = check_on_policy(None, pairs, inputs.image_root, gap=args.on_policy_gap)  # the stored scores, marked at this gap
    if "dpo-iter" in args.arms:
        console.rule("dpo-iter: a second hallucination round from the DPO model")
        it = run_hadpo(dpo_dir / "model", cfg, inputs, args.out / "dpo-iter", log=console.print)
        rows["dpo-iter"] = it["after"] | {"benchmark": bench_accuracy(args.out / "dpo-iter" / "model", args.out / "dpo-iter" / "eval")}
    seeds = [f"dpo-seed{k}" for k in range(1, args.seeds)] if "dpo" in args.arms else []
    for arm in seeds + [a for a in args.arms if a not in ("dpo", "dpo-iter")]:
        d = args.out / arm
        if not (d / "model" / "config.json").exists():
            console.rule(arm)
            vlm = VLM.load(base_model)
            if arm.startswith("dpo-seed"):
                train_dpo(vlm, pairs, inputs.image_root, d / "model",
                          h.train.model_copy(update={"seed": h.train.seed + cfg.seed + int(arm.removeprefix("dpo-seed"))}))
            elif arm == "sft":
                samples = [Sample(id=p.id, image=p.image, instruction=p.prompt, answer=p.chosen, short_answer=p.chosen,
                                  options=[], choice_answer="", qtype=0, source="hadpo-chosen") for p in pairs]
                t = h.train
                train(vlm, samples, inputs.image_root, d / "model",
                      TrainConfig(epochs=t.epochs, lr=t.lr, batch_size=t.batch_size, freeze_vision=t.freeze_vision,
                                  scheduler=t.scheduler, warmup_ratio=t.warmup_ratio, seed=t.seed + cfg.seed))
            elif arm == "dpo+sft":
                train_dpo(vlm, pairs, inputs.image_root, d / "model",
                          h.train.model_copy(update={"sft_weight": 0.5, "seed": h.train.seed + cfg.seed}))
            elif arm == "blank":
                blank = grey_pairs(pairs, d / "images", cfg.world.image_size)
                train_dpo(vlm, blank, d / "images", d / "model", h.train.model_copy(update={"seed": h.train.seed + cfg.seed}))
            elif arm == "on-policy":
                train_dpo(vlm, [p for p in at_gap if not p.off_policy], inputs.image_root, d / "model",
                          h.train.model_copy(update={"seed": h.train.seed + cfg.seed}))
        model = VLM.load(d / "model")
        rows[arm] = measure(model, heldout, heldout_root, d / "after", prompt, names, h) | {"benchmark": bench_accuracy(d / "model", d / "eval")}
        del model

    off = sum(bool(p.off_policy) for p in at_gap)
    console.print(f"on-policy check: {off} of {len(pairs)} pairs off-policy (chosen less likely per token than rejected by "
                  f"> {args.on_policy_gap} nats under the base model; {sum(bool(p.off_policy) for p in pairs)} at the config's "
                  f"{h.off_policy_gap})")
    table = Table(title=f"Hallucination on {len(heldout)} held-out images; {len(pairs)} pairs, the same for every arm "
                        f"(on-policy: {len(pairs) - off})")
    for col in ("arm", "SHR", *(f"POPE {s} F1" for s in POPE_SPLITS), "POPE adv. yes-ratio", "benchmark (held-out)"):
        table.add_column(col, justify="right" if col != "arm" else "left")
    for arm, m in rows.items():
        table.add_row(arm, f"{m['shr']['shr']:.1%}", *(f"{m['pope'][s]['f1']:.1%}" for s in POPE_SPLITS),
                      f"{m['pope']['adversarial']['yes_ratio']:.2f}", f"{m['benchmark']:.1%}")
    console.print(table)
    console.print(kinds_table(rows))
    base = rows["base"]
    for arm, m in rows.items():
        if arm == "base":
            continue
        gain = m["pope"]["adversarial"]["f1"] - base["pope"]["adversarial"]["f1"]
        ratio = m["shr"]["shr"] / base["shr"]["shr"] if base["shr"]["shr"] else float("nan")
        console.print(f"{arm}: adversarial POPE F1 {gain:+.1%} (target +10 points); SHR x{ratio:.2f} of the base's "
                      f"(target <= 0.50); benchmark {m['benchmark'] - base['benchmark']:+.1%}")
    if seeds:
        console.print(spread_line([rows[a] for a in ["dpo", *seeds]], base))
    minutes = (time.monotonic() - started) / 60
    console.print(f"{minutes:.0f} minutes in all")
    figures = {"pairs": len(pairs), "off_policy": off, "heldout_images": len(heldout), "arms": rows, "minutes": minutes}
    (args.out / "figures.json").write_text(json.dumps(figures, indent=2) + "\n")
    shutil.copy(args.config, args.out / "config.yaml")


if __name__ == "__main__":
    run(main)
