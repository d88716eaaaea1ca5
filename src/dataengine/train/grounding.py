"""Attention grounding: an auxiliary training loss that teaches the language model to look up, among
the image's patches, the objects a question names.

Why: the embedded tiny model's language model starts from random weights, and it never learns by
itself to find the object a phrase names among several (`bench/binding.py`: no head singles the
named object out, and the same language model cannot even look a phrase up in words). A real LLaVA
inherits that lookup from its pretrained language model. So while the tiny model trains on a
picture of several objects, one head at each named phrase, and every head at each position that
predicts an answer word, of every layer but the first, is asked to put its attention on the patches
of the objects the question names (`train.ground_attention` weighs it; 0 turns it off). It needs the items' image annotations (boxes) and a model with one image token per
patch (LLaVA). It is a training aid for a model without a pretrained language model, of our own
design: the grounding losses of the literature supervise boxes in the output, not attention.
"""
from __future__ import annotations

import torch

from ..qtypes.vocabulary import find_references
from ..records import ImageAnnotation


def covered(box, grid: int, width: float, height: float | None = None) -> list[int]:
    """The patches (row-major, of a `grid` x `grid` image of `width` x `height` pixels) of which the
    box (x0, y0, x1, y1, in pixels) covers at least 30%."""
    height = height or width
    pw, ph = width / grid, height / grid
    out = []
    for i in range(grid * grid):
        r, c = divmod(i, grid)
        x0, y0 = c * pw, r * ph
        area = max(0.0, min(box[2], x0 + pw) - max(box[0], x0)) * max(0.0, min(box[3], y0 + ph) - max(box[1], y0))
        if area >= 0.3 * pw * ph:
            out.append(i)
    return out


def named_patches(ann: ImageAnnotation, question: str, grid: int) -> list[tuple[str, list[int]]]:
    """Per phrase of the question that names objects ("the blue ring"), in order: its name and the
    patches of every object it can refer to; [] when it names none (a question about the scene)."""
    names = {o.name for o in ann.objects}
    out = []
    for objs in find_references(ann, question, names):
        patches = sorted({i for o in objs for i in covered(o.bbox, grid, ann.width or 1, ann.height)})
        if patches:
            out.append((objs[0].name, patches))
    return out


def grounding_targets(input_ids: torch.Tensor, labels: torch.Tensor, image_token: int,
                      phrases: list[list[tuple[list[int], list[int]]]]) -> tuple[torch.Tensor, torch.Tensor]:
    """(batch, seq, seq) float: row p of item b marks the image tokens position p should attend to;
    and (batch, seq) bool: the rows that are a phrase's name rather than the answer.
    `phrases`: per item, per named phrase, the token ids of its name and its patches (row-major).
    The last token of each phrase's name (its first occurrence after the previous one) looks at
    that phrase's patches; every position that predicts an answer token (labels != -100) but the
    last (the end of the text) at all the named patches. ValueError when an item has fewer image tokens than patches: grounding needs one
    image token per patch, LLaVA's layout."""
    batch, seq = input_ids.shape
    out, names = torch.zeros(batch, seq, seq), torch.zeros(batch, seq, dtype=torch.bool)
    for b, item in enumerate(phrases):
        if not item:
            continue
        where = (input_ids[b] == image_token).nonzero().flatten()
        if len(where) < max(max(p) for _, p in item) + 1:
            raise ValueError(f"attention grounding needs one image token per patch (LLaVA); this item has {len(where)}")
        ids = input_ids[b].tolist()
        answer = (labels[b] != -100).nonzero().flatten()
        end = int(answer[0]) if len(answer) else seq
        start = 0
        for name, patches in item:
            hit = next((i for i in range(start, end - len(name) + 1) if ids[i:i + len(name)] == name), None)
            if hit is not None:
                start = hit + len(name)
                out[b, start - 1, where[patches]] = 1.0
                names[b, start - 1] = True
        union = where[sorted({i for _, p in item for i in p})]
        for a in answer.tolist()[:-1]:  # the last answer token (end of text) needs no look
            if a > 0:
                out[b, a - 1, union] = 1.0
    return out, names


def attention_loss(attentions: tuple[torch.Tensor, ...], targets: torch.Tensor, names: torch.Tensor) -> torch.Tensor | None:
    """Mean of -log(attention on the target image tokens) over the positions that have targets, in
    every layer but the first (which cannot know the phrase yet): all heads at the positions that
    predict the answer, the first head only (a lookup head; the others stay free to read the
    question) at a phrase's name. `attentions`: per layer (batch, heads, seq, seq); `targets`,
    `names`: from `grounding_targets`. None when nothing is named."""
    rows, names = targets.sum(-1) > 0, names.bool()  # (batch, seq)
    if not rows.any():
        return None
    terms = []
    for att in attentions[1:] or attentions:  # a one-layer model: that layer
        nll = -torch.log((att * targets[:, None].to(att.dtype)).sum(-1).clamp_min(1e-6)).transpose(1, 2)  # (batch, seq, heads)
        terms += [nll[rows & ~names].flatten(), nll[rows & names][:, 0]]
    return torch.cat(terms).mean()
