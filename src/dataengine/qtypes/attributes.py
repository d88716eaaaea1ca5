"""3. Instance Attributes: the colour of an object."""
from __future__ import annotations

from ..records import ImageAnnotation, Sample
from .base import Candidate, QuestionType
from .vocabulary import (
    Vocabulary,
    color_of,
    find_references,
    others,
    same,
    size_of,
    the_one,
)


class Attributes(QuestionType):
    id = 3
    needs = "objects with a colour attribute"

    def candidates(self, ann: ImageAnnotation, vocab: Vocabulary) -> list[Candidate]:
        objs, out = ann.objects, []
        for o in objs:
            c, s = color_of(o.attributes), size_of(o.attributes)
            same_name = [p for p in objs if p.name == o.name]
            if not c:
                continue
            if len(same_name) == 1:
                out.append(Candidate(f"What color is the {o.name}?", f"The {o.name} is {c}.", c, others(vocab.colors, c)))
            elif s and sum(1 for p in same_name if size_of(p.attributes) == s) == 1:
                out.append(Candidate(f"What color is the {s} {o.name}?", f"The {s} {o.name} is {c}.", c, others(vocab.colors, c)))
        return out

    def verify(self, item: Sample, ann: ImageAnnotation, vocab: Vocabulary) -> str | None:
        groups = find_references(ann, item.instruction, set(vocab.names))
        o = the_one(groups, 0)
        if groups and not groups[0]:
            return "refers to an object not in the image"
        if o is None or not ("color" in item.instruction.lower() or any(same(item.short_answer, c) for c in vocab.colors)):
            return None
        return "" if same(item.short_answer, color_of(o.attributes)) else f"it is {color_of(o.attributes)}"
