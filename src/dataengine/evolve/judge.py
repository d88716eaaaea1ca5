"""Elimination (MMEvol, arXiv 2409.05840, section 3.4): a judge compares each evolved item with its
parent and keeps it only if it is more complex and still correct.

The grounded judge measures complexity as the steps, objects and skills the answer takes
(`grammar.Solution.complexity`, read from the question's words) and correctness with the verifier;
the LLM judge (`llm.LLMEvolver.judge_all`) answers improved yes/no, a 1-10 score and a reason.
"""
from __future__ import annotations

from ..qtypes import Vocabulary, verify
from ..records import ImageAnnotation, Sample, Verdict
from .operators import complexity


def judge_grounded(parent: Sample, child: Sample, ann: ImageAnnotation, vocab: Vocabulary) -> Verdict:
    """Keep `child` when the annotation confirms it (`qtypes.verify`) and it is more complex than
    `parent`; `score` is the complexity gained."""
    why = verify(child, ann, vocab)
    correct = None if why is None else why == ""
    before, after = complexity(parent, ann, vocab), complexity(child, ann, vocab)
    improved = after > before
    if correct is None:
        reason = "the annotation cannot decide it"
    elif not correct:
        reason = why
    else:
        reason = f"complexity {before} -> {after}"
    return Verdict(judge="grounded", kept=bool(correct) and improved, improved=improved, correct=correct,
                   score=float(after - before), reason=reason)
