"""What a question type is to the engine: the questions it can ask about an annotated image, how an
item of the type is checked against an annotation, and whether a pool can supply it at all."""
from __future__ import annotations

from dataclasses import dataclass

from ..records import QTYPES, ImageAnnotation, Sample
from ..registry import Registry
from .vocabulary import Vocabulary


@dataclass
class Candidate:
    """A question the annotation answers exactly: the question, the answer as a sentence, the short
    answer (the correct option) and wrong options to draw three from."""
    question: str
    answer: str
    short: str
    distractors: list[str]


class QuestionType:
    """One SEED-Bench question type. Subclasses set `id` and `needs` and write `candidates` and `verify`.

    `verify` re-derives the answer from the annotation on its own (it never calls `candidates`), so it
    also judges items an LLM wrote.
    """
    id: int
    needs: str = "what this type asks about"  # said when a pool cannot supply the type

    @property
    def name(self) -> str:
        return QTYPES[self.id][0]

    @property
    def definition(self) -> str:
        return QTYPES[self.id][1]

    def candidates(self, ann: ImageAnnotation, vocab: Vocabulary) -> list[Candidate]:
        """Every question of this type that the annotation answers exactly."""
        return []

    def verify(self, item: Sample, ann: ImageAnnotation, vocab: Vocabulary) -> str | None:
        """A reason if the annotation contradicts the item, "" if it confirms it, None if it cannot decide."""
        return None

    def available(self, pool: list[ImageAnnotation], vocab: Vocabulary, look: int = 500) -> str | None:
        """None if the pool can supply items of this type (judged on its first `look` images), else
        the reason it cannot."""
        if any(self.candidates(a, vocab) for a in pool[:look]):
            return None
        return f"no image of the pool has {self.needs}"


# SEED-Bench number -> the type; filled in `qtypes/__init__.py`, in SEED-Bench's order
QUESTION_TYPES: Registry[QuestionType] = Registry("question type")
