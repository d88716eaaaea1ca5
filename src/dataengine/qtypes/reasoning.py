"""8. Visual Reasoning: which object would be heaviest, if all were made of the same material."""
from __future__ import annotations

from ..records import ImageAnnotation, Sample
from .base import Candidate, QuestionType
from .vocabulary import Vocabulary, same, size_of

HEAVIEST_Q = "If all the objects were made of the same material, which one would be the heaviest?"


class Reasoning(QuestionType):
    id = 8
    needs = "two or more objects, exactly one of them annotated as large"

    def candidates(self, ann: ImageAnnotation, vocab: Vocabulary) -> list[Candidate]:
        objs, names = ann.objects, [o.name for o in ann.objects]
        large = [o for o in objs if size_of(o.attributes) == "large"]
        if len(objs) >= 2 and len(large) == 1:
            n = large[0].name
            present = [p for p in dict.fromkeys(names) if p != n]
            # the objects that are present first: the hardest wrong options (kept first by the generator)
            return [Candidate(HEAVIEST_Q, f"The {n} is the largest, so it would be the heaviest.", n,
                              present + [c for c in vocab.names if c not in names])]
        return []

    def verify(self, item: Sample, ann: ImageAnnotation, vocab: Vocabulary) -> str | None:
        if item.instruction != HEAVIEST_Q:
            return None
        large = [o for o in ann.objects if size_of(o.attributes) == "large"]
        return "" if len(large) == 1 and same(item.short_answer, large[0].name) else "not the single largest object"
