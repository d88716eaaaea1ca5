"""Pretraining the tiny model's vision tower on annotated images, before any question is seen.

A real LLaVA starts from a pretrained CLIP and keeps it frozen. The embedded default has no such
weights (nothing is downloaded), so it makes its own: every image patch is taught what the annotation
says lies under it (object name, colour, size, sign text) and the CLS token the kind of place. Dense
labels make this take about a minute on a CPU; without it, a from-scratch tower learns too slowly
for a few rounds on a laptop to show anything.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from rich.progress import Progress
from torch import nn

from ..images import load_image
from ..qtypes.geometry import contact
from ..qtypes.vocabulary import color_of, size_of
from ..records import ImageAnnotation
from .vlm import VLM

KINDS = ("name", "color", "size", "text")
# Further per-patch labels `pretrain_vision` can teach (`labels=`): relations between the objects,
# written into each patch of an object, so that the language model reads them like a colour.
#   count:   how many objects of this patch's kind the image holds (1-4)
#   contact: this object's contact with another (inside, contains, overlapping, touching; else none)
EXTRA_KINDS = ("count", "contact")
CONTACT_STATES = ["inside", "contains", "overlapping", "touching"]


# masks(ann) -> which object each pixel shows (an array of object id + 1; 0: none), or None where
# only the boxes are known (the synthetic world can redraw its shapes: `world.render.object_mask`)
Masks = Callable[[ImageAnnotation], "np.ndarray | None"]


def _owners(ann: ImageAnnotation, grid: int, masks: Masks | None) -> list:
    """The object each patch shows: by the drawn pixels (the one covering most of the patch, if at
    least a tenth of it) when `masks` knows the shapes, else the box around the patch centre."""
    sx, sy = ann.width / grid, ann.height / grid
    m = masks(ann) if masks else None
    by_id = {o.id: o for o in ann.objects}
    out = []
    for i in range(grid * grid):
        r, c = divmod(i, grid)
        if m is not None:
            cell = m[round(r * sy):round((r + 1) * sy), round(c * sx):round((c + 1) * sx)]
            ids, counts = np.unique(cell[cell > 0], return_counts=True)
            best = ids[counts.argmax()] if len(ids) and counts.max() >= 0.1 * cell.size else 0
            out.append(by_id.get(int(best) - 1))
        else:
            cx, cy = (c + 0.5) * sx, (r + 0.5) * sy
            hit = None
            for o in ann.objects:  # later objects are drawn on top
                if o.bbox[0] <= cx <= o.bbox[2] and o.bbox[1] <= cy <= o.bbox[3]:
                    hit = o
            out.append(hit)
    return out


def contact_state(ann: ImageAnnotation, o) -> str | None:
    """How object o touches another: "inside" one, "contains" one, "overlapping", "touching"; None."""
    for p in ann.objects:
        if p.id == o.id:
            continue
        c = contact(o.bbox, p.bbox)
        if c == "inside":
            return "inside"
        if contact(p.bbox, o.bbox) == "inside":
            return "contains"
        if c in ("overlapping", "touching"):
            return c
    return None


def patch_labels(ann: ImageAnnotation, grid: int, vocab: dict[str, dict[str, int]], extra: tuple[str, ...] = (),
                 masks: Masks | None = None) -> dict[str, list[int]]:
    """For each patch (row-major), the id of what covers it (its centre, or with `masks` most of its
    pixels); 0 means nothing. `extra` adds labels of EXTRA_KINDS, -1 where no object is (contact 0:
    an object touching nothing)."""
    out = {k: [0] * (grid * grid) for k in KINDS} | {k: [-1] * (grid * grid) for k in extra}  # -1: no object here
    sx, sy = ann.width / grid, ann.height / grid
    names = [o.name for o in ann.objects]
    for i, o in enumerate(_owners(ann, grid, masks)):
        if o is not None:
            out["name"][i] = vocab["name"].get(o.name, 0)
            out["color"][i] = vocab["color"].get(color_of(o.attributes) or "", 0)
            out["size"][i] = vocab["size"].get(size_of(o.attributes) or "", 0)
            if "count" in extra:
                out["count"][i] = min(names.count(o.name), 4)
            if "contact" in extra:
                state = contact_state(ann, o)
                out["contact"][i] = CONTACT_STATES.index(state) + 1 if state else 0
        cx, cy = (i % grid + 0.5) * sx, (i // grid + 0.5) * sy
        for t in ann.texts:
            if t.bbox[0] <= cx <= t.bbox[2] and t.bbox[1] <= cy <= t.bbox[3]:
                out["text"][i] = vocab["text"].get(t.text, 0)
    return out


def build_vocab(anns: list[ImageAnnotation]) -> dict[str, dict[str, int]]:
    values = {"name": set(), "color": set(), "size": set(), "text": set(), "setting": set()}
    for a in anns:
        for o in a.objects:
            values["name"].add(o.name)
            values["color"].add(color_of(o.attributes) or "")
            values["size"].add(size_of(o.attributes) or "")
        values["text"].update(t.text for t in a.texts)
        values["setting"].add(a.setting or "")
    return {k: {v: i + 1 for i, v in enumerate(sorted(x - {""}))} for k, x in values.items()}


@dataclass
class Pretrained:
    losses: list[float]
    heads: nn.ModuleDict
    vocab: dict[str, dict[str, int]]
    extra: tuple[str, ...] = ()
    masks: Masks | None = None


def _tower(vlm: VLM):
    """The vision encoder: the first module named as the family names it (LLaVA: vision_tower)."""
    name = vlm.family.vision_module
    return next(m for n, m in vlm.model.named_modules() if n.rsplit(".", 1)[-1] == name)


def pretrain_vision(vlm: VLM, anns: list[ImageAnnotation], image_root: str | Path, steps: int = 300,
                    batch_size: int = 32, lr: float = 1e-3, seed: int = 0, progress: Progress | None = None,
                    extra: tuple[str, ...] = (), masks: Masks | None = None) -> Pretrained:
    """Train the vision tower with linear heads on dense annotation labels (`extra`: EXTRA_KINDS too;
    `masks`: a patch is labelled by the object whose pixels cover most of it, not by the box at its centre)."""
    extra = tuple(extra)
    unknown = set(extra) - set(EXTRA_KINDS)
    if unknown:
        raise ValueError(f"unknown vision labels {sorted(unknown)}; known: {', '.join(EXTRA_KINDS)}")
    tower = _tower(vlm)
    cfg = tower.config
    grid = cfg.image_size // cfg.patch_size
    vocab = build_vocab(anns)
    heads = nn.ModuleDict({k: nn.Linear(cfg.hidden_size, len(v) + 1) for k, v in vocab.items()})
    # Each patch also says where it is, so that position survives into the features (as in CLIP's).
    heads["row"], heads["col"] = nn.Linear(cfg.hidden_size, grid), nn.Linear(cfg.hidden_size, grid)
    sizes = {"count": 5, "contact": len(CONTACT_STATES) + 1}
    for k in extra:
        heads[k] = nn.Linear(cfg.hidden_size, sizes[k])
    cache: dict[str, dict[str, list[int]]] = {}
    where = torch.arange(grid * grid)
    params = list(tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr)
    # warm up over 5% of the steps, and never less than two (OneCycleLR divides by the warm-up length)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=min(0.3, max(0.05, 2 / steps)))
    rng = random.Random(seed)
    torch.manual_seed(seed)
    tower.train()
    losses = []
    task = progress.add_task("vision", total=steps) if progress else None
    ce = nn.CrossEntropyLoss()
    for step in range(steps):
        batch = rng.sample(anns, min(batch_size, len(anns)))
        pixels = vlm.pixel_values([load_image(image_root, a.image, where=f"image {a.image_id}") for a in batch])
        labels = [cache.get(a.image_id) or cache.setdefault(a.image_id, patch_labels(a, grid, vocab, extra, masks))
                  for a in batch]
        hidden = tower(pixel_values=pixels.to(vlm.device)).last_hidden_state  # (B, 1 + grid*grid, D)
        patches, cls = hidden[:, 1:], hidden[:, 0]
        loss = ce(heads["setting"](cls), torch.tensor([vocab["setting"].get(a.setting or "", 0) for a in batch]))
        for k in (*KINDS, *extra):
            target = torch.tensor([lab[k] for lab in labels])
            # the relations are taught on the objects' patches only, where they are rare enough already
            loss = loss + ce(heads[k](patches).flatten(0, 1), target.flatten().masked_fill(target.flatten() < 0, -100))
        for k, target in (("row", where // grid), ("col", where % grid)):
            loss = loss + ce(heads[k](patches).flatten(0, 1), target.repeat(len(batch)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress:
            progress.advance(task)
    tower.eval()
    return Pretrained(losses, heads, vocab, extra, masks)


@torch.no_grad()
def probe(vlm: VLM, pre: Pretrained, anns: list[ImageAnnotation], image_root: str | Path) -> dict[str, float]:
    """How well the pretrained features tell each label, on patches that have one (held-out images)."""
    tower = _tower(vlm)
    grid = tower.config.image_size // tower.config.patch_size
    pixels = vlm.pixel_values([load_image(image_root, a.image, where=f"image {a.image_id}") for a in anns])
    hidden = tower(pixel_values=pixels.to(vlm.device)).last_hidden_state[:, 1:]
    labels = [patch_labels(a, grid, pre.vocab, pre.extra, pre.masks) for a in anns]
    out = {}
    for k in (*KINDS, *pre.extra):
        target = torch.tensor([lab[k] for lab in labels])
        mask = target > 0
        if mask.any():
            out[k] = (pre.heads[k](hidden).argmax(-1)[mask] == target[mask]).float().mean().item()
    rows = torch.arange(grid * grid) // grid
    out["row"] = (pre.heads["row"](hidden).argmax(-1) == rows).float().mean().item()
    return out
