"""Attention grounding: an auxiliary training loss that teaches the language model to look up, among
the image's patches, the objects a question names.

Why: the embedded tiny model's language model starts from random weights, and it does not learn by
itself to find the object a phrase names among several (`bench/binding.py`: no head singles the
named object out, and the same language model cannot even look a phrase up in words). A real LLaVA
inherits that lookup from its pretrained language model. So while the tiny model trains on a
picture of several objects, in every layer but the first, one head at each phrase that names
objects, and half of the heads at each position that predicts an answer word, are asked to put their
attention on the patches of those objects (`train.ground_attention` weighs it; 0 turns it off).
It needs the items' image annotations (boxes) and a model with one image token per patch (LLaVA);
a box is put on the patch grid of the centre square that CLIP's processor (the tiny LLaVA's) keeps.
It is a training aid for a model without a pretrained language model. Supervising a VQA model's
attention with human attention maps is an older idea (Qiao et al., "Exploring Human-like Attention
Supervision in Visual Question Answering", AAAI 2018); here the maps come from the annotation's
boxes, and the heads are the language model's own.
"""
from __future__ import annotations

import re

import torch

from ..errors import DataError
from ..qtypes.vocabulary import color_of, find_references, plural
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
    """Per phrase of the question that names objects ("the blue ring", "stars", "the blue object",
    "the sign", whose box is its text's, "a ring" as POPE asks), in order: its last words as the question writes them
    ("ring", "Stars", "blue object", "sign") and the patches of every object it can refer to; []
    when it names none (a question about the scene). The patches are those of the square the
    tiny LLaVA's processor keeps (CLIP's: the shorter side resized, the centre cropped), so on a
    wide picture an object at the edge may have none."""
    names = {o.name for o in ann.objects}
    # (where its last words start, those words as written, its objects); a phrase whose words are
    # found by a pattern knows where it is
    found = []

    def at(m: re.Match, group: int, objs) -> None:
        found.append((m.start(group), question[m.start(group):m.end(group)], objs))

    for n in sorted(names):
        same = [o for o in ann.objects if o.name == n]
        for m in re.finditer(rf"\b({re.escape(plural(n))})\b", question, re.I):  # "How many stars ...?": every star
            at(m, 1, same)
        for m in re.finditer(rf"\ban? ({re.escape(n)})\b", question, re.I):  # "Is there a ring ...?" (POPE): the rings, if any
            at(m, 1, same)
    for m in re.finditer(r"\bthe ((\w+) object)\b", question, re.I):  # "the blue object": the blue one(s)
        if objs := [o for o in ann.objects if color_of(o.attributes) == m.group(2).lower()]:
            at(m, 1, objs)
    if ann.texts:
        for m in re.finditer(r"\bthe (sign)\b", question, re.I):  # the sign a word is written on: its text's box
            at(m, 1, list(ann.texts))
    # the referring phrases ("the blue ring") come in the question's order; each takes the first
    # occurrence of its name that no phrase above has taken ("Is there a ring left of the blue ring?")
    taken = {start for start, _, _ in found}
    for objs in find_references(ann, question, names):
        if not objs:
            continue
        for m in re.finditer(rf"\b({re.escape(objs[0].name)})\b", question, re.I):
            if m.start(1) not in taken:
                taken.add(m.start(1))
                at(m, 1, objs)
                break
    w, h = ann.width or 1, ann.height or ann.width or 1
    side = min(w, h)
    dx, dy = (w - side) / 2, (h - side) / 2
    out = []
    for start, written, objs in found:
        boxes = [(o.bbox[0] - dx, o.bbox[1] - dy, o.bbox[2] - dx, o.bbox[3] - dy) for o in objs]
        if patches := sorted({i for b in boxes for i in covered(b, grid, side)}):
            out.append((start, written, patches))
    return [(name, patches) for _, name, patches in sorted(out, key=lambda f: f[0])]  # in the order the question names them


def grounding_targets(input_ids: torch.Tensor, labels: torch.Tensor, image_token: int, heads: int, grid: int,
                      phrases: list[list[tuple[list[int], list[int]]]]) -> torch.Tensor:
    """(batch, heads, seq, seq) float: row p of head h of item b marks the image tokens that head
    should attend to at position p. `phrases`: per item, per named phrase, the token ids of its
    name and its patches (row-major).
    - At the last token of each phrase's name (its first occurrence after the previous phrase's),
      the first head (a lookup head; the others stay free to read the question) looks at that
      phrase's patches, when the name comes after the image (a question before it cannot).
    - At every position that predicts an answer token (labels != -100) but the last (the end of
      the text), the first half of the heads (at least one a phrase) share the phrases: head h
      looks at phrase h mod n's patches, so that with two phrases ("Where is A relative to B?")
      the answer reads each object's place apart. The others stay free: attention averages what it
      looks at, so heads held on the named objects alone cannot tell how many there are or what
      lies between two of them (bench/learnability.py, 3,000 items a type: with every head held,
      Counting fell from 72% to 63% and Interaction went from 63% to 67%; with half, 71% and 68%).
    DataError when an item's image tokens are not one per patch of the `grid` x `grid` image
    (LLaVA's layout)."""
    batch, seq = input_ids.shape
    out = torch.zeros(batch, heads, seq, seq)
    for b, item in enumerate(phrases):
        if not item:
            continue
        where = (input_ids[b] == image_token).nonzero().flatten()
        if len(where) != grid * grid:
            raise DataError(f"train.ground_attention needs one image token per patch (LLaVA's layout); an item has {len(where)} "
                            f"image tokens for {grid} x {grid} patches")
        ids = input_ids[b].tolist()
        answer = (labels[b] != -100).nonzero().flatten()
        end = int(answer[0]) if len(answer) else seq
        start = 0
        for name, patches in item:
            hit = next((i for i in range(start, end - len(name) + 1) if ids[i:i + len(name)] == name), None)
            if hit is not None:
                start = hit + len(name)
                if start - 1 > int(where[-1]):  # a name before the image (question first) cannot look at it
                    out[b, 0, start - 1, where[patches]] = 1.0
        for a in answer.tolist()[:-1]:
            if a > 0:
                for h in range(min(heads, max(heads // 2, len(item)))):
                    out[b, h, a - 1, where[item[h % len(item)][1]]] = 1.0
    return out


def attention_loss(attentions: tuple[torch.Tensor, ...], targets: torch.Tensor) -> torch.Tensor | None:
    """Mean of -log(attention on the target image tokens) over the (head, position) pairs that have
    targets, in every layer but the first (which cannot know the phrase yet). `attentions`: per
    layer (batch, heads, seq, seq); `targets`: from `grounding_targets`. None when nothing is named."""
    rows = targets.sum(-1) > 0  # (batch, heads, seq)
    if not rows.any():
        return None
    terms = []
    for att in attentions[1:] or attentions:  # a one-layer model: that layer
        terms.append(-torch.log((att * targets.to(att.dtype)).sum(-1).clamp_min(1e-6))[rows])
    return torch.cat(terms).mean()
