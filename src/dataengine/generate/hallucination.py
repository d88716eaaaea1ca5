"""Hallucinations in a description, found against the image's annotation and corrected (HA-DPO,
Zhao et al. 2023, arXiv 2311.16839, sections 3.1-3.2).

A description is split into sentences (and the clauses a ";" separates, as region descriptions are
written); in each, the claims it makes are read against the annotation:

- objects: a name of the pool's vocabulary (singular or plural) that the image does not show;
- attributes: a colour or size that no object of that name on the image has;
- counts: "two balls" where the image shows three (never for names the annotation may have missed);
- positions: "at the top left" (the 3x3 grid region descriptions use) where no such object lies;
- text: a sign "reading" a word the image does not show;
- signs: a sign "at the top left" where the image's text (its OCR boxes) is not (a position claim;
  a sign on an image without OCR boxes is not judged, as a pool need not annotate text).

Each sentence is then `hallucinated` (a claim is false, with the reasons), `correct` (claims were
checked and all hold) or `unjudged` (no claim that the annotation can check). The sentence-level
hallucination rate SHR is hallucinated / judged sentences.

The grounded corrector rewrites only what is false, in place: a wrong colour, size, count or place
is replaced by the true one; a sentence about an object the image does not show is rewritten about
one it shows and the description does not yet mention, or dropped when none is left. The corrected
text is the preferred side of a pair, the original the rejected one (`generate/pairs.py`).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from pydantic import BaseModel, Field

from ..qtypes.geometry import CELLS, grid_cell, in_grid_cell
from ..qtypes.vocabulary import COLOR_WORDS, SIZE_WORDS, color_of, plural, size_of
from ..records import ImageAnnotation, ObjectAnn, TextAnn

VERDICTS = ("hallucinated", "correct", "unjudged")
# What kind of claim a reason says is false, in the order of the module's docstring.
CLAIM_KINDS = ("object", "attribute", "count", "position", "text")
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_NUMBER_WORD = {v: k for k, v in NUMBERS.items()}


class SentenceVerdict(BaseModel):
    """One sentence (or ";" clause) of a description and what the annotation says of it."""
    text: str
    verdict: str  # one of VERDICTS
    reasons: list[str] = Field(default_factory=list)  # why it is hallucinated ("no star in the image", ...)
    # the CLAIM_KINDS of `reasons`, one each (the grounded detector's; an LLM's reasons have none)
    kinds: list[str] = Field(default_factory=list)


class Judged(BaseModel):
    """A description with a verdict per sentence: what `detect` writes, one per line."""
    id: str
    image: str
    prompt: str
    text: str
    sentences: list[SentenceVerdict]
    detector: str = "grounded"

    @property
    def hallucinated(self) -> bool:
        return any(s.verdict == "hallucinated" for s in self.sentences)


def shr(judged: list[Judged]) -> dict:
    """The sentence-level hallucination rate: hallucinated sentences / judged sentences (those that
    are hallucinated or correct), over all descriptions; with the counts it comes from, and
    `by_kind`: for each of CLAIM_KINDS, the hallucinated sentences with a false claim of that kind
    (a sentence with two kinds counts under both): which hallucinations a round changed, and which
    it left. Zero for every kind when nothing is hallucinated; empty when the verdicts carry no
    kinds (the LLM detector's, or ones written before kinds were recorded). `loops`: descriptions
    that say one phrase three times in a row ("a sign a sign a sign"), the degeneration DPO can
    bring (its loss also lowers the chosen side's likelihood), which SHR does not see: such a
    sentence need make no false claim."""
    bad = sum(s.verdict == "hallucinated" for j in judged for s in j.sentences)
    good = sum(s.verdict == "correct" for j in judged for s in j.sentences)
    kinds = [set(s.kinds) for j in judged for s in j.sentences if s.verdict == "hallucinated"]
    has_kinds = judged and all(j.detector == "grounded" for j in judged) and all(kinds)
    by_kind = {k: sum(k in ks for ks in kinds) for k in CLAIM_KINDS} if has_kinds else {}
    return {"shr": bad / (bad + good) if bad + good else 0.0, "hallucinated": bad, "judged": bad + good,
            "sentences": sum(len(j.sentences) for j in judged), "descriptions": len(judged), "by_kind": by_kind,
            "loops": sum(bool(_LOOP.search(j.text)) for j in judged)}


_LOOP = re.compile(r"\b(\w+(?: \w+)*) \1 \1\b", re.I)


# ---- reading claims ----

_SPLIT = re.compile(r"(?<=[.!?;])\s+")


def sentences(text: str) -> list[str]:
    """The sentences of a description, and the clauses a ";" separates, in order, stripped."""
    return [s.strip() for s in _SPLIT.split(text.strip()) if s.strip()]


@dataclass
class Mention:
    """An object named in a sentence, with what the sentence says of it; spans index the sentence."""
    name: str  # as the annotation names it (singular)
    span: tuple[int, int]  # of the name as written
    count: int | None = None  # "two balls" -> 2; "a ball" -> None (one of maybe several)
    count_span: tuple[int, int] | None = None
    color: str | None = None
    color_span: tuple[int, int] | None = None
    size: str | None = None
    size_span: tuple[int, int] | None = None
    place: str | None = None
    place_span: tuple[int, int] | None = None
    start: int = 0  # where the noun phrase begins (its article or number)


@dataclass
class Claims:
    mentions: list[Mention] = field(default_factory=list)
    texts: list[tuple[str, tuple[int, int]]] = field(default_factory=list)  # words a sign is said to read
    # each sign said to be somewhere ("a sign reading "X" at the top left"): the place, its span, and
    # the word it is said to read there (None when none is)
    signs: list[tuple[str, tuple[int, int], str | None]] = field(default_factory=list)


_WORD = re.compile(r"[A-Za-z]+")
# "at the top left", "in the centre", "is at the top": the place words, as `CELLS` names them
_CELL_NAMES = {c: c for c in CELLS} | {"top": "top", "bottom": "bottom", "left": "left", "right": "right",
                                        "middle": "center", "centre": "center", "middle center": "center"}
_PLACE = re.compile(r"\s*,?\s*(?:(?:is|are|lies|sits) )?(?:at|in|on) the (" +
                    "|".join(sorted((re.escape(c) for c in _CELL_NAMES), key=len, reverse=True)) + r")\b")


def _name_pattern(names: list[str]) -> re.Pattern:
    forms = {}
    for n in names:
        forms[n.lower()] = n
        forms[plural(n).lower()] = n
    alternatives = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    return re.compile(rf"\b({alternatives})\b", re.I), forms


def read_claims(sentence: str, names: list[str]) -> Claims:
    """The claims of one sentence: each object name of `names` with the count, colour, size and
    place words that go with it ("two small red balls at the top left"), and quoted sign text."""
    pattern, forms = _name_pattern(names)
    claims = Claims()
    lower = sentence.lower()
    for m in pattern.finditer(sentence):
        written = m.group(1).lower()
        mention = Mention(name=forms[written], span=m.span(), start=m.start())
        # the words before the name, back to the article or number, give count, size and colour
        i = m.start()
        for w in reversed(list(_WORD.finditer(sentence[:m.start()]))[-4:]):
            if sentence[w.end():i].strip(" ,"):
                break  # another word or punctuation in between: the phrase ended
            word = w.group(0).lower()
            if word in COLOR_WORDS and mention.color is None:
                mention.color, mention.color_span = word, w.span()
            elif word in SIZE_WORDS and mention.size is None:
                mention.size, mention.size_span = word, w.span()
            elif word in NUMBERS and written != forms[written].lower():  # a number goes with a plural
                mention.count, mention.count_span = NUMBERS[word], w.span()
            elif word not in ("a", "an", "the", "one", "some", "several", "many"):
                break
            mention.start, i = w.start(), w.start()
        place = _PLACE.match(lower[m.end():])
        if place:
            where = _CELL_NAMES[place.group(1)]
            mention.place, mention.place_span = where, (m.end() + place.start(1), m.end() + place.end(1))
        claims.mentions.append(mention)
    for m in re.finditer(_READING, sentence):
        claims.texts.append((m.group(1), m.span(1)))
    for m in re.finditer(r"\bsigns?\b", lower):
        if any(a <= m.start() < b for a, b in (x.span for x in claims.mentions)):
            continue  # part of a name the vocabulary has ("stop sign"): judged as that object
        end = m.end() + (r.end() if (r := _READING.match(sentence[m.end():])) else 0)
        if place := _PLACE.match(lower[end:]):  # "a sign" alone claims nothing the boxes can check
            claims.signs.append((_CELL_NAMES[place.group(1)], (end + place.start(1), end + place.end(1)),
                                 r.group(1) if r else None))
    return claims


_READING = re.compile(r'\s*\b(?:reading|reads|says|saying|with the word)\s+"([^"]+)"', re.I)


# ---- judging ----

def known_absent(name: str, ann: ImageAnnotation, exhaustive: bool = True) -> bool:
    """Whether the annotation says the image has no `name` (it shows none): listed as absent, or
    unlisted where the annotation is `exhaustive` and does not mark the name as possibly missed."""
    return name in ann.absent or (exhaustive and name not in ann.inexhaustive)


def _fits(o: ObjectAnn, m: Mention) -> bool:
    return ((m.color is None or color_of(o.attributes) in (None, m.color))
            and (m.size is None or size_of(o.attributes) in (None, m.size)))


def judge_sentence(sentence: str, ann: ImageAnnotation, names: list[str], exhaustive: bool = True) -> SentenceVerdict:
    """The verdict on one sentence against one image's annotation. `names`: the object names the
    detector knows (the pool's vocabulary); `exhaustive`: whether an unannotated name of `names`
    is absent from the image (true of the synthetic world and of COCO's categories, not of Visual
    Genome, whose annotators named what they chose)."""
    claims = read_claims(sentence, names)
    reasons, kinds, checked = [], [], 0
    missed = set(ann.inexhaustive)
    for m in claims.mentions:
        objs = [o for o in ann.objects if o.name == m.name]
        if not objs:
            if known_absent(m.name, ann, exhaustive):
                reasons.append(f"no {m.name} in the image")
                kinds.append("object")
                checked += 1
            continue
        checked += 1
        fitting = [o for o in objs if _fits(o, m)]
        if not fitting:
            said = " ".join(w for w in (m.size, m.color) if w)
            reasons.append(f"no {said} {m.name} in the image".replace("  ", " "))
            kinds.append("attribute")
            continue
        if m.count is not None and m.name not in missed:
            n = len(fitting) if (m.color or m.size) else len(objs)
            if n != m.count:
                reasons.append(f"{n} {m.name if n == 1 else plural(m.name)}, not {m.count}")
                kinds.append("count")
                continue
        if m.place and not any(in_grid_cell(o.bbox, ann.width, ann.height, m.place) for o in fitting):
            reasons.append(f"no {m.name} at the {m.place}")
            kinds.append("position")
    # A sign's place is judged against the OCR boxes; with none on the image a sign is left unjudged,
    # since a pool need not annotate text at all.
    for place, _, word in claims.signs if ann.texts else []:
        checked += 1
        if _misplaced_sign(ann, place, word):
            reasons.append(f"no sign at the {place}" if word is None else f'no sign reading "{word}" at the {place}')
            kinds.append("position")
    for text, _ in claims.texts:
        checked += 1
        if not any(t.text.lower() == text.lower() for t in ann.texts):
            reasons.append(f'no text "{text}" in the image')
            kinds.append("text")
    verdict = "hallucinated" if reasons else "correct" if checked else "unjudged"
    return SentenceVerdict(text=sentence, verdict=verdict, reasons=reasons, kinds=kinds)


def _misplaced_sign(ann: ImageAnnotation, place: str, word: str | None) -> TextAnn | None:
    """For a sign said to be at `place` reading `word`: None when an OCR box it can be lies there,
    else the box it can be (the first). The boxes it can be: those with that word, else (a wrong
    or no word, judged as text on its own) every one."""
    boxes = [t for t in ann.texts if word and t.text.lower() == word.lower()] or ann.texts
    return None if any(in_grid_cell(t.bbox, ann.width, ann.height, place) for t in boxes) else boxes[0]


def detect(text: str, ann: ImageAnnotation, names: list[str], exhaustive: bool = True) -> list[SentenceVerdict]:
    """The grounded detector: a verdict per sentence of `text` (see `judge_sentence`)."""
    return [judge_sentence(s, ann, names, exhaustive) for s in sentences(text)]


# ---- correcting ----

def _phrase(o: ObjectAnn, ann: ImageAnnotation, with_place: bool) -> str:
    words = [w for w in (size_of(o.attributes), color_of(o.attributes)) if w]
    text = " ".join(["a", *words, o.name])
    return text + (f" at the {grid_cell(o.bbox, ann.width, ann.height)}" if with_place else "")


def _edit(sentence: str, edits: list[tuple[tuple[int, int], str]]) -> str:
    for (a, b), new in sorted(edits, reverse=True):
        sentence = sentence[:a] + new + sentence[b:]
    return sentence


def about_unused(sentence: str, claims: Claims, ann: ImageAnnotation, unused: list[ObjectAnn]) -> str | None:
    """The sentence, about one object, rewritten about the first of `unused` (which is taken from
    the list), in the same words around it; None when none is left or the sentence names several."""
    if not unused or len(claims.mentions) != 1:
        return None  # which part to keep is unclear: the sentence goes
    m, o = claims.mentions[0], unused.pop(0)
    end = m.place_span[1] if m.place_span else m.span[1]
    phrase = _phrase(o, ann, m.place is not None)
    if sentence[m.start].isupper():
        phrase = phrase[0].upper() + phrase[1:]
    return _edit(sentence, [((m.start, end), phrase)])


def correct_sentence(sentence: str, ann: ImageAnnotation, names: list[str], unused: list[ObjectAnn],
                     exhaustive: bool = True) -> str | None:
    """The sentence with its false claims made true (see the module's docstring); None when it is
    about an object the image does not show and no unmentioned object is left to say instead.
    `unused`: objects the description does not mention yet; one taken here is removed from it."""
    claims = read_claims(sentence, names)
    edits: list[tuple[tuple[int, int], str]] = []
    missed = set(ann.inexhaustive)
    for m in claims.mentions:
        objs = [o for o in ann.objects if o.name == m.name]
        if not objs:
            if not known_absent(m.name, ann, exhaustive):
                continue
            return about_unused(sentence, claims, ann, unused)
        fitting = [o for o in objs if _fits(o, m)]
        placed = [o for o in objs if m.place and in_grid_cell(o.bbox, ann.width, ann.height, m.place)]
        # the object the sentence most likely means: one that fits its words and its place, else either
        target = next((o for o in fitting if any(o is p for p in placed)), None) or (fitting or placed or objs)[0]
        if m.color and color_of(target.attributes) not in (None, m.color):
            edits.append((m.color_span, color_of(target.attributes)))
        if m.size and size_of(target.attributes) not in (None, m.size):
            edits.append((m.size_span, size_of(target.attributes)))
        if m.count is not None and m.name not in missed:
            same = [o for o in objs if _fits(o, Mention(m.name, m.span, color=color_of(target.attributes) if m.color else None,
                                                         size=size_of(target.attributes) if m.size else None))]
            if len(same) != m.count:
                edits.append((m.count_span, _NUMBER_WORD.get(len(same), str(len(same)))))
                if len(same) == 1:  # "there are two balls" of which there is one: "there is one ball"
                    edits.append((m.span, m.name))
                    if (verb := re.search(r"\bare(\s+)$", sentence[:m.count_span[0]])):
                        edits.append(((verb.start(), verb.start() + 3), "is"))
        if m.place and not in_grid_cell(target.bbox, ann.width, ann.height, m.place):
            edits.append((m.place_span, grid_cell(target.bbox, ann.width, ann.height)))
    for place, span, word in claims.signs if ann.texts else []:
        if box := _misplaced_sign(ann, place, word):
            edits.append((span, grid_cell(box.bbox, ann.width, ann.height)))
    for text, span in claims.texts:
        if not any(t.text.lower() == text.lower() for t in ann.texts):
            if not ann.texts:
                return None
            edits.append((span, ann.texts[0].text))
    return _edit(sentence, edits)


def correct(text: str, ann: ImageAnnotation, names: list[str], exhaustive: bool = True) -> str:
    """The description with every hallucinated sentence corrected (see `correct_sentence`); correct
    and unjudged sentences are kept word for word."""
    parts = sentences(text)
    verdicts = [judge_sentence(s, ann, names, exhaustive) for s in parts]
    mentioned = {m.name for s in parts for m in read_claims(s, names).mentions}
    unused = [o for o in ann.objects if o.name not in mentioned]
    described = {i for s, v in zip(parts, verdicts) if v.verdict == "correct" for i in referents(s, ann, names)}
    out: list[str] = []
    for s, v in zip(parts, verdicts):
        if v.verdict != "hallucinated":
            out.append(s)
            continue
        fixed = correct_sentence(s, ann, names, unused, exhaustive)
        if fixed is not None and (ids := referents(fixed, ann, names)) and ids <= described:
            # made true, it would say again what the description says already: about an unmentioned object instead
            fixed = about_unused(s, read_claims(s, names), ann, unused)
        if fixed is not None:
            described |= referents(fixed, ann, names)
            out.append(fixed)
    return join_sentences(out)


def referents(sentence: str, ann: ImageAnnotation, names: list[str]) -> set[int]:
    """The ids of the objects the sentence's mentions single out (by name, colour, size and place)."""
    ids = set()
    for m in read_claims(sentence, names).mentions:
        fits = [o for o in ann.objects if o.name == m.name and _fits(o, m)
                and (not m.place or in_grid_cell(o.bbox, ann.width, ann.height, m.place))]
        if len(fits) == 1 or (m.count is not None and len(fits) == m.count):
            ids |= {o.id for o in fits}
    return ids


def join_sentences(parts: list[str]) -> str:
    """Sentences joined back as they were written: a clause that ended in ";" keeps it, the last one
    ends in a full stop."""
    if not parts:
        return ""
    parts = [p.rstrip() for p in parts]
    last = parts[-1]
    if last.endswith(";"):
        last = last[:-1] + "."
    elif not last.endswith((".", "!", "?")):
        last += "."
    return " ".join(parts[:-1] + [last])
