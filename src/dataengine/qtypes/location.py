"""4. Instance Location: which quadrant of the image an object is in."""
from __future__ import annotations

from ..records import ImageAnnotation, Sample
from .base import Candidate, QuestionType
from .geometry import QUADRANTS, quadrant
from .vocabulary import (
    Vocabulary,
    find_references,
    others,
    referring_expressions,
    same,
    the_one,
)


class Location(QuestionType):
    id = 4
    needs = "an object that a phrase singles out (colour, size) and that lies clearly in one quadrant"

    def candidates(self, ann: ImageAnnotation, vocab: Vocabulary) -> list[Candidate]:
        refs, out = referring_expressions(ann), []
        for o in ann.objects:
            q = quadrant(o.bbox, ann.width, ann.height)
            if o.id in refs and q:
                out.append(Candidate(f"Where is {refs[o.id]} in the image?", f"It is in the {q} of the image.", q, others(QUADRANTS, q)))
        return out

    def verify(self, item: Sample, ann: ImageAnnotation, vocab: Vocabulary) -> str | None:
        o = the_one(find_references(ann, item.instruction, set(vocab.names)), 0)
        where = quadrant(o.bbox, ann.width, ann.height) if o else None
        if where is None or not any(same(item.short_answer, x) for x in QUADRANTS):
            return None
        return "" if same(item.short_answer, where) else f"it is in the {where}"
