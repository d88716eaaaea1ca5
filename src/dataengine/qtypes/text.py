"""9. Text Understanding: the word written in the image.

Needs OCR text in the annotation (`texts`): the synthetic world draws signs; a folder pool may carry
the text of each picture. Wrong options are other words the pool shows.
"""
from __future__ import annotations

from ..records import ImageAnnotation, Sample
from .base import Candidate, QuestionType
from .vocabulary import Vocabulary, others, same


class Text(QuestionType):
    id = 9
    needs = "text written in the image (OCR `texts` in the annotation), and three other words in the pool"

    def candidates(self, ann: ImageAnnotation, vocab: Vocabulary) -> list[Candidate]:
        out = []
        for t in ann.texts:
            wrong = others(vocab.texts, t.text)
            if t.text in vocab.texts and len(wrong) >= 3:
                out.append(Candidate("What word is written on the sign?", f'The sign says "{t.text}".', t.text, wrong))
        return out

    def verify(self, item: Sample, ann: ImageAnnotation, vocab: Vocabulary) -> str | None:
        texts = {t.text for t in ann.texts}
        if not texts:
            return None  # real pools often have no OCR: no text annotated is not no text
        return "" if any(same(item.short_answer, t) for t in texts) else f"the text reads {sorted(texts)}"
