"""Alignment data: before any question, the tiny model learns to say what its images show.

LLaVA's first stage trains on image-caption pairs so that the projected image features read as words
to the language model; only then does instruction tuning begin. The embedded default's language
model starts from random weights, so this stage teaches it to read the frozen tower's features at
all: from every pool image's caption (and, with "regions", its region phrases in reading order, each
with the part of the image it lies in), with the loss on the description only. "relations" adds how
pairs of objects lie; "grounding" adds region-level referring data (one object a picture asked for by
its phrase, answered with where it lies), as LLaVA-1.5's mix carries RefCOCO and Visual Genome regions.
"""
from __future__ import annotations

import random

from ..qtypes.geometry import grid_cell
from ..records import ImageAnnotation, Sample
from ..registry import Registry

CAPTION_Q = "Describe the image briefly."
REGIONS_Q = "Describe each object in the image and where it is."
RELATIONS_Q = "Describe where the objects are relative to each other."
GROUNDING_Q = "Where is {ref}?"
KINDS: Registry[str] = Registry("alignment data")
for _kind in ("none", "caption", "regions", "both", "relations", "grounding"):
    KINDS.register(_kind, _kind)


def region_text(ann: ImageAnnotation) -> str | None:
    """The region phrases and the signs from top to bottom, left to right, each with where it lies
    ("a small red ball at the top left; a sign reading "STOP" at the bottom right."); None when the
    image has neither."""
    w, h = ann.width or 1, ann.height or 1
    parts = [(r.bbox, f"a {r.phrase}") for r in ann.regions] + [(t.bbox, f'a sign reading "{t.text}"') for t in ann.texts]
    if not parts:
        return None
    parts.sort(key=lambda p: ((p[0][1] + p[0][3]) / 2, (p[0][0] + p[0][2]) / 2))
    return "; ".join(f"{text} at the {grid_cell(box, w, h)}" for box, text in parts) + "."


def relation_text(ann: ImageAnnotation) -> str | None:
    """Each pair of objects a phrase singles out, with where the first lies relative to the second and
    how they touch ("the red ball is to the left of the blue box and apart from it."); None without
    such a pair."""
    from ..qtypes.geometry import DIRECTIONS, contact, direction
    from ..qtypes.spatial import named_pairs
    parts = []
    for a, b, ra, rb in named_pairs(ann):
        if a.id > b.id:
            continue
        d, c = direction(a.bbox, b.bbox), contact(a.bbox, b.bbox)
        where = (DIRECTIONS[d] + (" of" if "to the" in DIRECTIONS[d] else "")) if d else ""
        touch = {"inside": "inside it", "overlapping": "overlapping it", "touching": "touching it", "apart": "apart from it"}.get(c, "")
        if where or touch:
            parts.append(f"{ra} is {where + ' ' + rb if where else ''}{' and ' if where and touch else ''}"
                         f"{touch if where else touch.replace('it', rb)}")
    return "; ".join(parts) + "." if parts else None


def grounding_text(ann: ImageAnnotation, rng: random.Random) -> tuple[str, str] | None:
    """One object a phrase singles out, drawn with `rng`, asked for by that phrase ("Where is the red
    star?") and answered with the part of the image it lies in ("at the top left."), as region-level
    referring data (RefCOCO, Visual Genome regions) is in LLaVA-1.5's mix; None when no phrase
    singles out an object."""
    from ..qtypes.vocabulary import referring_expressions
    refs = referring_expressions(ann)
    if not refs:
        return None
    by_id = {o.id: o for o in ann.objects}
    oid = rng.choice(sorted(refs))
    return GROUNDING_Q.format(ref=refs[oid]), f"at the {grid_cell(by_id[oid].bbox, ann.width or 1, ann.height or 1)}."


def alignment_samples(pool: list[ImageAnnotation], kind: str = "caption", seed: int = 0) -> list[Sample]:
    """Per image, its first caption ("caption"), its region description ("regions") or both
    ("both"); "relations" adds to the regions how each pair of objects lies and touches;
    "grounding" adds to the regions one object asked for by its referring phrase, answered with
    where it lies (`grounding_text`). Shuffled; trained with the description as the target."""
    KINDS.get(kind)
    out = []
    rng = random.Random(seed)
    for ann in pool:
        texts = [(CAPTION_Q, ann.captions[0])] if ann.captions and kind in ("caption", "both") else []
        if kind in ("regions", "both", "relations", "grounding") and (r := region_text(ann)):
            texts.append((REGIONS_Q, r))
        if kind == "relations" and (r := relation_text(ann)):
            texts.append((RELATIONS_Q, r))
        if kind == "grounding" and (g := grounding_text(ann, rng)):
            texts.append(g)
        for k, (q, text) in enumerate(texts):
            out.append(Sample(id=f"align-{ann.image_id}-{k}", image=ann.image, instruction=q, answer=text,
                              short_answer=text, options=[], choice_answer="", qtype=0, source="align"))
    random.Random(seed).shuffle(out)
    return out
