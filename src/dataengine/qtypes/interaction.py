"""7. Instance Interaction: the contact between two objects (inside, overlapping, touching, apart)."""
from __future__ import annotations

from ..records import ImageAnnotation, Sample
from .base import Candidate, QuestionType
from .geometry import CONTACTS, contact
from .spatial import named_pairs, two_objects
from .vocabulary import Vocabulary, others, same


class Interaction(QuestionType):
    id = 7
    needs = "two objects that phrases single out, clearly in contact or apart"

    def candidates(self, ann: ImageAnnotation, vocab: Vocabulary) -> list[Candidate]:
        out = []
        for a, b, ra, rb in named_pairs(ann):
            if (c := contact(a.bbox, b.bbox)) in CONTACTS:
                if c != "inside" and contact(b.bbox, a.bbox) == "inside":
                    continue  # b sits inside a: only the (inner, outer) order is asked
                sentence = f"{ra.capitalize()} is inside {rb}." if c == "inside" else f"{ra.capitalize()} and {rb} are {c}."
                out.append(Candidate(f"What is the contact between {ra} and {rb}?", sentence, c, others(CONTACTS, c)))
        return out

    def verify(self, item: Sample, ann: ImageAnnotation, vocab: Vocabulary) -> str | None:
        pair = two_objects(item, ann, vocab)
        if not isinstance(pair, tuple):
            return pair
        c = contact(pair[0].bbox, pair[1].bbox)
        if c == "near" or not any(same(item.short_answer, k) for k in CONTACTS):
            return None
        return "" if same(item.short_answer, c) else f"they are {c}"
