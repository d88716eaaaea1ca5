"""Reading a model's free-text answer to a multiple-choice question: the prompt that lists the
options, and the letter a reply names."""
from __future__ import annotations

import re

from ..records import LETTERS, Question

LETTER_INSTRUCTION = "Answer with the option's letter from the given choices directly."


def letter_prompt(q: Question) -> str:
    opts = "\n".join(f"{l}. {o}" for l, o in zip(LETTERS, q.options))
    return f"{q.question}\n{opts}\n{LETTER_INSTRUCTION}"


def extract_letter(text: str, options: list[str]) -> tuple[str | None, str]:
    """Map free text to a letter, and say how: "letter", "option" (its text named one option) or "none"."""
    # "B", "B.", "(B) ...", "B: ..." are letters; "A cat" is an article.
    m = re.match(r"^\s*\(?([A-D])(?:[\).:]|\s*$)", text)
    if m:
        return m.group(1), "letter"
    low = text.strip().lower()
    hits = [l for l, o in zip(LETTERS, options) if o.lower() and o.lower() in low]
    return (hits[0], "option") if len(hits) == 1 else (None, "none")
