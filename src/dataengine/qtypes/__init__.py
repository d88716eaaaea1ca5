"""Question types as plug-ins: one object per SEED-Bench image dimension, each knowing what it can
ask about an annotated image (`candidates`), how to check an item against an annotation (`verify`)
and whether a pool can supply it (`available`). The grounded generator, the filter's verifier and
the planner all go through `QUESTION_TYPES`; a new type is a new module here, registered below.
"""
from __future__ import annotations

from ..records import ImageAnnotation, Sample
from .attributes import Attributes
from .base import QUESTION_TYPES, Candidate, QuestionType
from .counting import Counting
from .identity import Identity
from .interaction import Interaction
from .location import Location
from .reasoning import Reasoning
from .scene import Scene
from .spatial import Spatial
from .text import Text
from .vocabulary import Vocabulary

for _type in (Scene, Identity, Attributes, Location, Counting, Spatial, Interaction, Reasoning, Text):
    QUESTION_TYPES.register(_type.id, _type())


def candidates(qtype: int, ann: ImageAnnotation, vocab: Vocabulary) -> list[Candidate]:
    """Every question of type `qtype` that the annotation answers exactly."""
    return QUESTION_TYPES.get(qtype).candidates(ann, vocab)


def verify(item: Sample, ann: ImageAnnotation, vocab: Vocabulary) -> str | None:
    """Judge an item against the annotation: a reason if the annotation contradicts it, "" if it
    confirms it, None if it cannot decide (also for a type no plug-in knows). An evolved item (one
    with a lineage) is read by the evolution grammar, whatever its type: its question chains facts or
    changes format, which a type's own check would misread."""
    if item.lineage is not None:
        from ..evolve.grammar import check
        return check(item, ann, vocab)
    if item.qtype not in QUESTION_TYPES:
        return None
    return QUESTION_TYPES.get(item.qtype).verify(item, ann, vocab)


def unavailable(pool: list[ImageAnnotation], vocab: Vocabulary, qtypes=None) -> dict[int, str]:
    """The types (of `qtypes`, default all) this pool cannot supply, each with the reason."""
    out = {}
    for t in sorted(qtypes or QUESTION_TYPES):
        if t in QUESTION_TYPES and (why := QUESTION_TYPES.get(t).available(pool, vocab)):
            out[t] = why
    return out


__all__ = ["QUESTION_TYPES", "Candidate", "QuestionType", "Vocabulary", "candidates", "verify", "unavailable"]
