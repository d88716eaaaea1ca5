"""1. Scene Understanding: what kind of place the image shows.

The synthetic world annotates its setting. Real pools rarely do (Visual Genome, COCO and a folder of
captioned pictures have none), so the place is read from the captions when they agree on one.
"""
from __future__ import annotations

import re

from ..records import ImageAnnotation, Sample
from .base import Candidate, QuestionType
from .vocabulary import Vocabulary, others, same

# Kinds of place that captions of COCO / Visual Genome name, each with the words that name it.
PLACES: dict[str, tuple[str, ...]] = {
    "beach": ("beach", "shore", "seashore"), "kitchen": ("kitchen",), "bathroom": ("bathroom", "restroom"),
    "bedroom": ("bedroom",), "living room": ("living room", "lounge"), "office": ("office",),
    "restaurant": ("restaurant", "cafe", "diner"), "city street": ("city street", "street", "downtown", "intersection"),
    "highway": ("highway", "freeway"), "park": ("park",), "forest": ("forest", "woods"),
    "snowy field": ("snowy field", "snow", "ski slope"), "ocean": ("ocean", "sea", "waves"),
    "lake": ("lake", "pond"), "river": ("river",), "mountain": ("mountain", "mountains"), "desert": ("desert",),
    "farm": ("farm", "pasture", "barn"), "field": ("field", "meadow", "grassland"), "zoo": ("zoo",),
    "airport": ("airport", "runway", "tarmac"), "train station": ("train station", "railway station"),
    "tennis court": ("tennis court",), "baseball field": ("baseball field", "baseball diamond"),
    "soccer field": ("soccer field", "football field"), "skate park": ("skate park",),
    "harbor": ("harbor", "harbour", "marina", "dock"), "market": ("market",), "parking lot": ("parking lot",),
    "garden": ("garden", "backyard"), "classroom": ("classroom",), "night sky": ("night sky",),
}
_WORDS = sorted(((w, p) for p, ws in PLACES.items() for w in ws), key=lambda wp: -len(wp[0]))


def setting_from_captions(captions: list[str]) -> str | None:
    """The kind of place the captions agree on: named by the only caption, or by at least two captions
    and more often than any other place; None when they disagree or name none."""
    votes: dict[str, int] = {}
    for c in captions:
        text, named = f" {c.lower()} ", set()
        for word, place in _WORDS:  # longest first, so "city street" is not also "street"
            if re.search(rf"\b{re.escape(word)}\b", text):
                named.add(place)
                text = re.sub(rf"\b{re.escape(word)}\b", " ", text)
        for p in named:
            votes[p] = votes.get(p, 0) + 1
    if not votes:
        return None
    ranked = sorted(votes.items(), key=lambda kv: -kv[1])
    best, n = ranked[0]
    if len(ranked) > 1 and ranked[1][1] == n:
        return None
    return best if n >= 2 or len(captions) == 1 else None


def setting_of(ann: ImageAnnotation) -> str | None:
    """The annotated setting, else the one the captions agree on."""
    return ann.setting or setting_from_captions(ann.captions)


class Scene(QuestionType):
    id = 1
    needs = "a known kind of place (a setting, or captions that agree on one)"

    def candidates(self, ann: ImageAnnotation, vocab: Vocabulary) -> list[Candidate]:
        s = setting_of(ann)
        if not s:
            return []
        wrong = others(vocab.settings, s)
        if len(wrong) < 3:
            return []
        return [Candidate("What kind of place is shown in the image?", f"The picture shows a {s}.", s, wrong)]

    def verify(self, item: Sample, ann: ImageAnnotation, vocab: Vocabulary) -> str | None:
        s = setting_of(ann)
        if s and "place" in item.instruction.lower():
            return "" if same(item.short_answer, s) else f"the place is {s}"
        return None
