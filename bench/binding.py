"""Binding: does the embedded model find the object a question names among the other objects?

`bench/learnability.py` finds Instance Location right with one object in the picture and falling
towards chance as objects are added. This benchmark measures why, in two parts:

- attention: for a model trained by `bench/learnability.py` (`--model`, default its largest size),
  on held-out Instance Location questions about pictures of two or more objects, how much more each
  language-model head attends, per image patch, to the patches of the object the question names
  than to the other objects' patches: at the question's noun and at the position that predicts the
  answer. As a reference, the same ratio for another object of the picture, drawn at random, in the
  named one's place: a head that finds the named object reads well above that reference.
- text: the same language-model shape, from random weights, trained on the scene written out in
  words instead of the picture ("a large yellow star at the center; a small blue ring at the top
  center. Where is the blue ring?" -> "top center"), at the run's learning rate and batch size:
  whether looking up a phrase in the context is learnt at all at this size and number of steps,
  with no image in the way. Scored over the 9 grid cells on about 270 held-out scenes (chance 11%);
  the reference is a model that names the cell of one of the scene's objects at random, which
  needs no lookup.

    python bench/binding.py [--out runs/learn] [--model runs/learn/default/n1000] [--config my.yaml]
                            [--text-items 3000 20000] [--text-layers 3 6] [--epochs 3] [--results OUT/binding.json]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from dataengine.config import load_config  # noqa: E402
from dataengine.images import load_image  # noqa: E402
from dataengine.models.tiny import train_tokenizer  # noqa: E402
from dataengine.models.vlm import VLM  # noqa: E402
from dataengine.qtypes.geometry import CELLS, grid_cell  # noqa: E402
from dataengine.qtypes.vocabulary import referring_expressions  # noqa: E402
from dataengine.records import ImageAnnotation, read_jsonl  # noqa: E402
from dataengine.train.grounding import covered  # noqa: E402
from dataengine.world.build import build_world  # noqa: E402
from _base import run  # noqa: E402
from learnability import heldout_benchmark  # noqa: E402


@torch.no_grad()
def attention_ratios(vlm: VLM, questions, scenes: dict[str, ImageAnnotation], image_root: Path, seed: int = 0) -> dict:
    """Per place ("noun", "answer") and layer, per head: mean attention per patch of the named
    object over mean attention per patch of the other objects, over `questions` (Instance Location
    questions "Where is <phrase> in the image?"); and the same with another object of the picture,
    drawn at random, in the named one's place ("reference"). The noun is left out (None) when the
    question comes before the image: it cannot attend to it."""
    model = vlm.model
    model.set_attn_implementation("eager")  # sdpa returns no attention weights
    tok = vlm.processor.tokenizer
    image_id = model.config.image_token_index
    vision = model.config.vision_config
    grid = vision.image_size // vision.patch_size
    rng = random.Random(seed)
    sums: dict[tuple[str, str], torch.Tensor] = {}
    n = 0
    for q in questions:
        ann = scenes[q.image]
        phrase = q.question.removeprefix("Where is ").removesuffix(" in the image?")
        target = next((oid for oid, ref in referring_expressions(ann).items() if ref == phrase), None)
        if target is None:
            continue
        decoy = rng.choice([o.id for o in ann.objects if o.id != target])
        patches_of = {o.id: covered(o.bbox, grid, ann.width) for o in ann.objects}
        splits = {}
        for kind, named_id in (("named", target), ("reference", decoy)):
            named = patches_of[named_id]
            others = sorted({i for oid, ps in patches_of.items() if oid != named_id for i in ps} - set(named))
            splits[kind] = (named, others)
        if not all(a and b for a, b in splits.values()):
            continue
        enc = vlm.encode_batch([q.question], [load_image(image_root, q.image)], [q.options[ord(q.answer) - 65]])
        labels = enc.pop("labels")[0]
        answer = int((labels != -100).nonzero()[0]) - 1  # the position that predicts the answer's first token
        patches = (enc["input_ids"][0] == image_id).nonzero().flatten()
        words = tok.convert_ids_to_tokens(enc["input_ids"][0].tolist())
        noun = max(i for i in range(answer) if words[i].lstrip("Ġ") == "in") - 1  # "... <noun> in the image?"
        att = model(**enc, output_attentions=True).attentions  # per layer (1, heads, seq, seq)
        for place, pos in (("noun", noun), ("answer", answer)):
            if pos < int(patches[0]):
                continue
            rows = torch.stack([a[0, :, pos][:, patches] for a in att])  # (layers, heads, patches)
            for kind, (named, others) in splits.items():
                r = torch.stack([rows[..., named].mean(-1), rows[..., others].mean(-1)])
                sums[place, kind] = sums[place, kind] + r if (place, kind) in sums else r
        n += 1
    out: dict = {"questions": n}
    for place in ("noun", "answer"):
        out[place] = {kind: (sums[place, kind][0] / sums[place, kind][1]).tolist() if (place, kind) in sums else None
                      for kind in ("named", "reference")}
    return out


def scene_text(ann: ImageAnnotation, rng: random.Random) -> tuple[str, str] | None:
    """The scene in words, objects in a random order, and one "Where is <phrase>?" with its cell."""
    refs = referring_expressions(ann)
    if len(ann.objects) < 2 or not refs:
        return None
    objs = list(ann.objects)
    rng.shuffle(objs)
    w, h = ann.width or 1, ann.height or 1
    scene = "; ".join(f"a {' '.join(reversed(o.attributes))} {o.name} at the {grid_cell(o.bbox, w, h)}" for o in objs)
    oid = rng.choice(sorted(refs))
    box = next(o.bbox for o in ann.objects if o.id == oid)
    return f"{scene}. Where is {refs[oid]}? ASSISTANT:", " " + grid_cell(box, w, h)


TEST_SCENES = 300  # the first pool images; the text model trains on the others


def text_lookup(pool: list[ImageAnnotation], n_items: int, layers: int, cfg, epochs: float, seed: int = 0) -> dict:
    """Train a random-initialised language model of the tiny model's width (and `layers` layers) on
    `n_items` scenes in words (at least a batch); return held-out accuracy at every tenth of the
    steps, and the reference: naming the cell of one of the scene's objects at random."""
    from transformers import LlamaConfig, LlamaForCausalLM, get_cosine_schedule_with_warmup
    rng = random.Random(seed)
    held = TEST_SCENES
    scenes = [(a, x) for a in pool[:held] if (x := scene_text(a, rng))]
    test = [x for _, x in scenes]
    # the reference: the cell of one of the scene's objects, drawn at random (no lookup needed)
    w = pool[0].width or 1
    guess = sum(sum(grid_cell(o.bbox, a.width or w, a.height or w) == x[1].strip() for o in a.objects) / len(a.objects)
                for a, x in scenes) / len(scenes)
    train_pool = [a for a in pool[held:] if len(a.objects) >= 2 and referring_expressions(a)]
    items = [scene_text(train_pool[i % len(train_pool)], rng) for i in range(n_items)]  # a fresh order and question each pass
    tok = train_tokenizer([p + a for p, a in items + test], cfg.model.tiny.vocab_size)
    t = cfg.model.tiny
    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=t.hidden, intermediate_size=4 * t.hidden, num_hidden_layers=layers,
                                         num_attention_heads=t.heads, num_key_value_heads=t.heads, vocab_size=len(tok),
                                         max_position_embeddings=512, pad_token_id=tok.pad_token_id))

    def batch(pairs):
        ids, labels = [], []
        for prompt, answer in pairs:
            p, a = tok(prompt)["input_ids"], tok(answer)["input_ids"] + [tok.eos_token_id]
            ids.append(p + a)
            labels.append([-100] * len(p) + a)
        width = max(map(len, ids))
        mask = torch.tensor([[1] * len(i) + [0] * (width - len(i)) for i in ids])
        return (torch.tensor([i + [tok.pad_token_id] * (width - len(i)) for i in ids]), mask,
                torch.tensor([lab + [-100] * (width - len(lab)) for lab in labels]))

    @torch.no_grad()
    def accuracy() -> float:
        model.eval()
        right = 0
        for prompt, answer in test:
            ids, mask, labels = batch([(prompt, " " + c) for c in CELLS])
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1]
            nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), labels[:, 1:], reduction="none")
            per_token = nll.sum(1) / (labels[:, 1:] != -100).sum(1)
            right += CELLS[int(per_token.argmin())] == answer.strip()
        model.train()
        return right / len(test)

    bs = cfg.train.batch_size
    steps = math.ceil(len(items) / bs * epochs)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.weight_decay)
    sched = get_cosine_schedule_with_warmup(opt, max(1, int(cfg.train.warmup_ratio * steps)), steps)  # as the Trainer's
    curve, order = {}, []
    marks = {max(1, round(steps * k / 10)) for k in range(1, 11)}
    for step in range(1, steps + 1):
        if len(order) < bs:
            order = list(range(len(items)))
            rng.shuffle(order)
        ids, mask, labels = batch([items[order.pop()] for _ in range(bs)])
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as the Trainer does
        opt.step()
        sched.step()
        opt.zero_grad()
        if step in marks:
            curve[step] = accuracy()
    return {"steps": steps, "curve": curve, "test_scenes": len(test), "reference": guess}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/learn"), help="bench/learnability.py's output folder (its world)")
    ap.add_argument("--model", type=Path, default=None, help="a model trained by bench/learnability.py (default: OUT/default/n<largest>)")
    ap.add_argument("--text-items", type=int, nargs="*", default=[3000, 20000], help="none: the attention part only")
    ap.add_argument("--text-layers", type=int, nargs="+", default=[3])
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--results", type=Path, default=None, help="where the figures go (default: OUT/binding.json)")
    args = ap.parse_args()
    cfg = load_config(args.config)
    bs = cfg.train.batch_size
    if any(n < bs for n in args.text_items):
        raise SystemExit(f"error: --text-items: at least {bs} (a batch) each")
    if args.epochs <= 0:
        raise SystemExit("error: --epochs: more than 0")
    trained = [p.parent for p in (args.out / "default").glob("n*/config.json") if re.fullmatch(r"n\d+", p.parent.name)]
    model = args.model or max(trained, key=lambda p: int(p.name[1:]), default=None)
    if model is None:
        raise SystemExit(f"error: {args.out / 'default'}: no model of bench/learnability.py; run it first or give --model")
    model = Path(model).parent if Path(model).name == "config.json" else Path(model)
    vlm = VLM.load(model)  # a folder that holds no model stops here, before any world is built
    where = args.results or args.out / "binding.json"
    try:
        where.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SystemExit(f"error: {where}: cannot write the results there ({e.strerror})")
    w = build_world(cfg, args.out / "world")
    pool = read_jsonl(w.pool, ImageAnnotation)
    results: dict = {}

    bench, scenes = heldout_benchmark(cfg, w.image_root, 150)
    crowded = [q for q in bench if q.qtype == 4 and len(scenes[q.image].objects) >= 2]
    t0 = time.perf_counter()
    ratios = attention_ratios(vlm, crowded, scenes, w.image_root, seed=cfg.seed)
    results["attention"] = {"model": str(model), **ratios}
    print(f"attention of {model} on {ratios['questions']} Instance Location questions about 2+ objects: per patch, the "
          f"named object's over the other objects' [reference: another object of the picture in its place] "
          f"({time.perf_counter() - t0:.0f} s)")
    for place in ("noun", "answer"):
        named, ref = ratios[place]["named"], ratios[place]["reference"]
        if named is None:
            print(f"  at the {place}: before the image (the question comes first), so it cannot attend to it")
            continue
        for layer, (heads, refs) in enumerate(zip(named, ref)):
            print(f"  at the {place:<6} layer {layer}: " + "  ".join(f"{r:.2f}" for r in heads)
                  + "   [" + "  ".join(f"{r:.2f}" for r in refs) + "]")
    where.write_text(json.dumps(results, indent=1))

    results["text"] = []
    for layers in args.text_layers:
        for n in args.text_items:
            t0 = time.perf_counter()
            r = text_lookup(pool, n, layers, cfg, args.epochs, seed=cfg.seed)
            results["text"].append({"items": n, "layers": layers, "epochs": args.epochs, **r})
            print(f"text, {layers} layers, {n} items x {args.epochs:g} epochs ({r['steps']} steps, {time.perf_counter() - t0:.0f} s): "
                  f"accuracy on {r['test_scenes']} held-out scenes at every tenth of the steps "
                  + ", ".join(f"{a:.0%}" for a in r["curve"].values())
                  + f"; chance 11%, the cell of one of the scene's objects at random {r['reference']:.0%}", flush=True)
            where.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    run(main)
