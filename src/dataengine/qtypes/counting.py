"""5. Instances Counting: how many objects of a kind there are."""
from __future__ import annotations

import re

from ..records import ImageAnnotation, Sample
from .base import Candidate, QuestionType
from .vocabulary import Vocabulary, norm, others, plural, same

NUMBERS = ["one", "two", "three", "four"]


class Counting(QuestionType):
    id = 5
    needs = "named objects (one to four of a kind)"

    def candidates(self, ann: ImageAnnotation, vocab: Vocabulary) -> list[Candidate]:
        names, out = [o.name for o in ann.objects], []
        for n in sorted(set(names) - set(ann.inexhaustive)):  # a crowd, or an incomplete annotation: not countable
            k = names.count(n)
            if 1 <= k <= 4:
                out.append(Candidate(f"How many {plural(n)} are there in the image?",
                                     f"There {'is' if k == 1 else 'are'} {NUMBERS[k - 1]} {n if k == 1 else plural(n)}.",
                                     NUMBERS[k - 1], others(NUMBERS, NUMBERS[k - 1])))
        return out

    def verify(self, item: Sample, ann: ImageAnnotation, vocab: Vocabulary) -> str | None:
        a = item.short_answer
        m = re.search(r"how many (\w+)", item.instruction.lower())
        k_said = next((i + 1 for i, w in enumerate(NUMBERS) if same(a, w) or norm(a) == str(i + 1)), None)
        if m and k_said:
            word = m.group(1)
            name = next((n for n in {o.name for o in ann.objects} | set(vocab.names) if word in (n, plural(n))), None)
            if name and name not in ann.inexhaustive:
                k = sum(o.name == name for o in ann.objects)
                return "" if k_said == k else f"there are {k}"
        return None
