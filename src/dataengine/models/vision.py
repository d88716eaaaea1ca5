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

import torch
from rich.progress import Progress
from torch import nn

from ..images import load_image
from ..qtypes.vocabulary import color_of, size_of
from ..records import ImageAnnotation
from .vlm import VLM


def patch_labels(ann: ImageAnnotation, grid: int, vocab: dict[str, dict[str, int]]) -> dict[str, list[int]]:
    """For each patch (row-major), the id of what covers its centre; 0 means nothing."""
    out = {k: [0] * (grid * grid) for k in ("name", "color", "size", "text")}
    sx, sy = ann.width / grid, ann.height / grid
    for i in range(grid * grid):
        cx, cy = (i % grid + 0.5) * sx, (i // grid + 0.5) * sy
        inside = lambda b: b[0] <= cx <= b[2] and b[1] <= cy <= b[3]
        for o in ann.objects:  # later objects are drawn on top
            if inside(o.bbox):
                out["name"][i] = vocab["name"].get(o.name, 0)
                out["color"][i] = vocab["color"].get(color_of(o.attributes) or "", 0)
                out["size"][i] = vocab["size"].get(size_of(o.attributes) or "", 0)
        for t in ann.texts:
            if inside(t.bbox):
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


def _tower(vlm: VLM):
    """The vision encoder: the first module named as the family names it (LLaVA: vision_tower)."""
    name = vlm.family.vision_module
    return next(m for n, m in vlm.model.named_modules() if n.rsplit(".", 1)[-1] == name)


def pretrain_vision(vlm: VLM, anns: list[ImageAnnotation], image_root: str | Path, steps: int = 300,
                    batch_size: int = 32, lr: float = 1e-3, seed: int = 0, progress: Progress | None = None) -> Pretrained:
    """Train the vision tower with linear heads on dense annotation labels."""
    tower = _tower(vlm)
    cfg = tower.config
    grid = cfg.image_size // cfg.patch_size
    vocab = build_vocab(anns)
    heads = nn.ModuleDict({k: nn.Linear(cfg.hidden_size, len(v) + 1) for k, v in vocab.items()})
    # Each patch also says where it is, so that position survives into the features (as in CLIP's).
    heads["row"], heads["col"] = nn.Linear(cfg.hidden_size, grid), nn.Linear(cfg.hidden_size, grid)
    where = torch.arange(grid * grid)
    params = list(tower.parameters()) + list(heads.parameters())
    opt = torch.optim.AdamW(params, lr=lr)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    rng = random.Random(seed)
    torch.manual_seed(seed)
    tower.train()
    losses = []
    task = progress.add_task("vision", total=steps) if progress else None
    ce = nn.CrossEntropyLoss()
    for step in range(steps):
        batch = rng.sample(anns, min(batch_size, len(anns)))
        pixels = vlm.pixel_values([load_image(image_root, a.image, where=f"image {a.image_id}") for a in batch])
        labels = [patch_labels(a, grid, vocab) for a in batch]
        hidden = tower(pixel_values=pixels.to(vlm.device)).last_hidden_state  # (B, 1 + grid*grid, D)
        patches, cls = hidden[:, 1:], hidden[:, 0]
        loss = ce(heads["setting"](cls), torch.tensor([vocab["setting"].get(a.setting or "", 0) for a in batch]))
        for k in ("name", "color", "size", "text"):
            target = torch.tensor([lab[k] for lab in labels])
            loss = loss + ce(heads[k](patches).flatten(0, 1), target.flatten())
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
    return Pretrained(losses, heads, vocab)


@torch.no_grad()
def probe(vlm: VLM, pre: Pretrained, anns: list[ImageAnnotation], image_root: str | Path) -> dict[str, float]:
    """How well the pretrained features tell each label, on patches that have one (held-out images)."""
    tower = _tower(vlm)
    grid = tower.config.image_size // tower.config.patch_size
    pixels = vlm.pixel_values([load_image(image_root, a.image, where=f"image {a.image_id}") for a in anns])
    hidden = tower(pixel_values=pixels.to(vlm.device)).last_hidden_state[:, 1:]
    labels = [patch_labels(a, grid, pre.vocab) for a in anns]
    out = {}
    for k in ("name", "color", "size", "text"):
        target = torch.tensor([lab[k] for lab in labels])
        mask = target > 0
        if mask.any():
            out[k] = (pre.heads[k](hidden).argmax(-1)[mask] == target[mask]).float().mean().item()
    rows = torch.arange(grid * grid) // grid
    out["row"] = (pre.heads["row"](hidden).argmax(-1) == rows).float().mean().item()
    return out
