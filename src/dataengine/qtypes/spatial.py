"""6. Spatial Relation: where one object is relative to another."""
from __future__ import annotations

from ..records import ImageAnnotation, Sample
from .base import Candidate, QuestionType
from .geometry import DIRECTIONS, direction
from .vocabulary import (
    Vocabulary,
    find_references,
    others,
    referring_expressions,
    same,
    the_one,
)


def named_pairs(ann: ImageAnnotation):
    """Every ordered pair of distinct objects that phrases single out, with their phrases."""
    refs = referring_expressions(ann)
    for a in ann.objects:
        for b in ann.objects:
            if a.id != b.id and a.id in refs and b.id in refs:
                yield a, b, refs[a.id], refs[b.id]


def two_objects(item: Sample, ann: ImageAnnotation, vocab: Vocabulary):
    """The two objects the item's question names, in order; a reason (str) when a phrase names
    nothing in the image; None when the phrases do not single out one object each."""
    groups = find_references(ann, item.instruction, set(vocab.names))
    if len(groups) >= 2 and (not groups[0] or not groups[1]):
        return "refers to an object not in the image"
    x, y = the_one(groups, 0), the_one(groups, 1)
    return None if x is None or y is None else (x, y)


class Spatial(QuestionType):
    id = 6
    needs = "two objects that phrases single out, one clearly beside or above the other"

    def candidates(self, ann: ImageAnnotation, vocab: Vocabulary) -> list[Candidate]:
        out = []
        for a, b, ra, rb in named_pairs(ann):
            if d := direction(a.bbox, b.bbox):
                s = DIRECTIONS[d]
                out.append(Candidate(f"Where is {ra} relative to {rb}?", f"{ra.capitalize()} is {s} {'of ' + rb if 'to the' in s else rb}.",
                                     s, others(list(DIRECTIONS.values()), s)))
        return out

    def verify(self, item: Sample, ann: ImageAnnotation, vocab: Vocabulary) -> str | None:
        pair = two_objects(item, ann, vocab)
        if not isinstance(pair, tuple):
            return pair
        d = direction(pair[0].bbox, pair[1].bbox)
        truth = DIRECTIONS.get(d) if d else None
        a = item.short_answer
        said = next((v for v in DIRECTIONS.values() if same(a, v) or same(a, v.replace("to the ", ""))), None)
        if truth is None or said is None:
            return None
        return "" if said == truth else f"it is {truth}"
