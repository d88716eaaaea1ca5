"""2. Instance Identity: which object it is, or which object is there at all."""
from __future__ import annotations

import re

from ..records import ImageAnnotation, Sample
from .base import Candidate, QuestionType
from .vocabulary import Vocabulary, color_of, others, same


class Identity(QuestionType):
    id = 2
    needs = "objects with a colour of their own, or named objects beside three absent ones"

    def candidates(self, ann: ImageAnnotation, vocab: Vocabulary) -> list[Candidate]:
        objs, out = ann.objects, []
        names = [o.name for o in objs]
        for o in objs:
            c = color_of(o.attributes)
            if c and sum(1 for p in objs if color_of(p.attributes) == c) == 1:
                out.append(Candidate(f"What is the {c} object in the image?", f"The {c} object is a {o.name}.",
                                     o.name, others(vocab.names, o.name)))
        # known absent first (LVIS's negatives), then the pool's other names; never a name whose
        # instances the annotation may have missed
        absent = list(dict.fromkeys(ann.absent + [c for c in vocab.names if c not in names and c not in ann.inexhaustive]))
        absent = [c for c in absent if c not in names]
        if len(absent) >= 3:
            for n in sorted(set(names)):
                out.append(Candidate("Which of these objects can be seen in the image?", f"A {n} can be seen in the image.", n, absent))
        return out

    def verify(self, item: Sample, ann: ImageAnnotation, vocab: Vocabulary) -> str | None:
        q, a = item.instruction.lower(), item.short_answer
        m = re.search(r"what is the (\w+) object", q)
        if m:
            match = [o for o in ann.objects if color_of(o.attributes) == m.group(1)]
            if len(match) != 1:
                return f"no single {m.group(1)} object"
            return "" if same(a, match[0].name) else f"the {m.group(1)} object is a {match[0].name}"
        if "can be seen" in q:
            present = {o.name for o in ann.objects}
            if not any(same(a, n) for n in present):
                return f"no {a} in the image"
            if any(same(o, n) for o in item.options if not same(o, a) for n in present | set(ann.inexhaustive)):
                return "a distractor is also in the image"
            return ""
        return None
