"""The grounded generator: items written from the annotation alone, exact by construction, no LLM.

What each question type can ask is the type's own (`qtypes`); this module picks among the
candidates, steered by the bad cases, and turns one into an item with four shuffled options.
"""
from __future__ import annotations

import hashlib
import random

from ..qtypes import Candidate, Vocabulary, candidates
from ..records import LETTERS, ImageAnnotation, Prediction, Sample


def make_sample(cand: Candidate, qtype: int, ann: ImageAnnotation, rng: random.Random,
                source: str, generator: str) -> Sample:
    # Keep the hardest distractors first (for reasoning, objects that are present), then shuffle.
    pool = list(dict.fromkeys(cand.distractors))
    head = pool[:2] if qtype == 8 else []
    rest = [d for d in pool if d not in head]
    rng.shuffle(rest)
    options = [cand.short] + (head + rest)[:3]
    rng.shuffle(options)
    key = hashlib.sha1(f"{ann.image_id}|{qtype}|{cand.question}".encode()).hexdigest()[:10]
    return Sample(id=f"{source}-{qtype}-{key}", image=ann.image, instruction=cand.question, answer=cand.answer,
                  short_answer=cand.short, options=options, choice_answer=LETTERS[options.index(cand.short)],
                  qtype=qtype, source=source, generator=generator)


class GroundedGenerator:
    """Writes items from the annotation alone, drawing wrong options from `vocab` (the pool's words).
    Bad-case examples steer it: with probability `focus` it asks a question whose correct answer was
    among the answers the model got wrong."""

    name = "grounded"

    def __init__(self, vocab: Vocabulary, focus: float = 0.5, source: str = "generated"):
        self.vocab = vocab
        self.focus = focus
        self.source = source

    def generate(self, qtype, ann, examples, rng):
        cands = candidates(qtype, ann, self.vocab)
        if not cands:
            return []
        wanted = {_correct_text(e) for e in examples}
        focused = [c for c in cands if c.short in wanted]
        if focused and rng.random() < self.focus:
            cands = focused
        # Draw the answer first, then a question with that answer, so no answer dominates a type.
        by_answer: dict[str, list[Candidate]] = {}
        for c in cands:
            by_answer.setdefault(c.short, []).append(c)
        choice = rng.choice(by_answer[rng.choice(sorted(by_answer))])
        return [make_sample(choice, qtype, ann, rng, self.source, self.name)]

    def generate_batch(self, qtype, anns, examples, rng):
        return [s for ann in anns for s in self.generate(qtype, ann, examples, rng)[:1]]


def _correct_text(p: Prediction) -> str:
    return p.options[LETTERS.index(p.answer)]
