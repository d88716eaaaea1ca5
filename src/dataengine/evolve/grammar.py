"""The language of evolved items, read back against an annotation: referring phrases that chain
("the object to the left of the red ball"), the questions the operators ask, and the statements of
the true-statement and fill-in-the-blank formats.

`solve` re-derives an item's answer from the annotation on its own, from the question's words alone
(it never reads the item's lineage), so it also judges an item an LLM evolved, and it records the
steps, objects and skills the answer took: the complexity the judge compares.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..qtypes.counting import NUMBERS
from ..qtypes.geometry import CONTACTS, QUADRANTS, contact, direction, quadrant
from ..qtypes.vocabulary import Vocabulary, color_of, norm, plural, same, size_of
from ..records import ImageAnnotation, ObjectAnn

# relation as said in a phrase -> `geometry.direction`'s name of it
RELATIONS = {"to the left of": "left of", "to the right of": "right of", "above": "above", "below": "below"}
COUNTS = ["zero", *NUMBERS]
# the skill each seed question type exercises (SEED-Bench's dimensions, as skills)
TYPE_SKILLS = {1: "scene", 2: "identity", 3: "colour", 4: "location", 5: "counting", 6: "spatial relation",
               7: "contact", 8: "reasoning", 9: "text"}
FORMATS = ("multiple choice", "true statement", "fill in the blank", "order", "count a list", "choose all that apply")


@dataclass
class Solution:
    """What the annotation says an item's answer is, and what it took to get there."""
    answer: str  # the option text that is correct
    steps: list[str] = field(default_factory=list)
    objects: set[int] = field(default_factory=set)
    skills: set[str] = field(default_factory=set)
    fact: "Fact | None" = None  # what the item asks, for a further evolution
    wrong: list[str] = field(default_factory=list)  # options the annotation shows to be wrong
    format: str = "multiple choice"

    @property
    def complexity(self) -> int:
        """Steps + distinct objects + distinct skills (the grounded judge's measure)."""
        return len(self.steps) + len(self.objects) + len(self.skills)


@dataclass
class Fact:
    """One thing the annotation states: `kind` of `subjects` (their phrases) has `value`."""
    kind: str  # "colour", "shape", "location", "direction", "contact", "count"
    subjects: list[str]  # referring phrases, or a plural name for "count"
    value: str
    values: list[str]  # every value of the kind (where wrong options come from)


# ---- referring phrases ----

_SIMPLE = re.compile(r"the (?:(small|large) )?(?:(\w+) )?(\w+)(?: in the (top left|top right|bottom left|bottom right) of the image)?")
_CHAIN = re.compile(r"the object (to the left of|to the right of|above|below) (.+)")


def resolve(phrase: str, ann: ImageAnnotation, vocab: Vocabulary) -> list[ObjectAnn] | None:
    """The objects a phrase can refer to: one for a phrase that singles out, [] for one that names
    nothing in the image, None for a phrase this grammar does not read or a relation the boxes leave
    undecided (an object diagonal to the anchor may be said to lie either way)."""
    p = " ".join(phrase.lower().strip().rstrip("?.").split())
    if m := _CHAIN.fullmatch(p):
        inner = resolve(m.group(2), ann, vocab)
        if not inner or len(inner) != 1:
            return None if inner is None or len(inner) > 1 else []
        anchor = inner[0]
        others = [o for o in ann.objects if o.id != anchor.id]
        dirs = {o.id: direction(o.bbox, anchor.bbox) for o in others}
        if any(d is None for d in dirs.values()):
            return None
        return [o for o in others if dirs[o.id] == RELATIONS[m.group(1)]]
    if m := _SIMPLE.fullmatch(p):
        size, color, name, quad = m.groups()
        names = {o.name for o in ann.objects} | set(vocab.names)
        if color and color not in vocab.colors and color_of([color]) is None:
            return None
        if name != "object" and name not in names:
            return None
        found = [o for o in ann.objects if (name == "object" or o.name == name) and (not color or color_of(o.attributes) == color)
                 and (not size or size_of(o.attributes) == size)]
        if quad:
            if any(quadrant(o.bbox, ann.width, ann.height) is None for o in found):
                return None
            found = [o for o in found if quadrant(o.bbox, ann.width, ann.height) == quad]
        return found
    return None


def phrase_skills(phrase: str) -> set[str]:
    """What singling out the object of a phrase takes besides seeing it."""
    p = phrase.lower()
    return ({"spatial relation"} if _CHAIN.search(p) else set()) | ({"location"} if "of the image" in p else set()) \
        | ({"size"} if re.search(r"\b(small|large)\b", p) else set())


def _one(phrase: str, ann, vocab) -> ObjectAnn | None:
    found = resolve(phrase, ann, vocab)
    return found[0] if found and len(found) == 1 else None


def _find(phrase: str, ann, vocab) -> tuple[ObjectAnn, list[str], set[int]] | None:
    """The object a phrase singles out, with the steps of finding it and the objects looked at."""
    o = _one(phrase, ann, vocab)
    if o is None:
        return None
    if m := _CHAIN.fullmatch(" ".join(phrase.lower().split())):
        inner = _find(m.group(2), ann, vocab)
        if inner is None:
            return None
        anchor, steps, seen = inner
        return o, steps + [f"{m.group(1)} the {anchor.name} is the {o.name}"], seen | {o.id}
    return o, [f"find {phrase}"], {o.id}


# ---- statements (true-statement and fill-in-the-blank formats) ----

def statement(fact: Fact, value: str) -> str:
    """`fact` said with `value` in place of its own."""
    s = fact.subjects
    cap = lambda t: t[0].upper() + t[1:]  # noqa: E731
    if fact.kind == "colour":
        return f"{cap(s[0])} is {value}."
    if fact.kind == "shape":
        return f"{cap(s[0])} is a {value}."
    if fact.kind == "location":
        return f"{cap(s[0])} is in the {value} of the image."
    if fact.kind == "direction":
        return f"{cap(s[0])} is {value} {s[1]}."
    if fact.kind == "contact":
        return f"{cap(s[0])} and {s[1]} are {value}."
    if fact.kind == "count":
        k = COUNTS.index(value) if value in COUNTS else 2  # a blank reads as a plural
        return f"There {'is' if k == 1 else 'are'} {value} {s[0] if k == 1 else plural(s[0])} in the image."
    raise ValueError(fact.kind)


def truth(text: str, ann: ImageAnnotation, vocab: Vocabulary) -> tuple[bool, Solution] | None:
    """Whether the annotation makes a statement true, and how it was checked; None when this
    grammar does not read it or the annotation cannot decide."""
    t = " ".join(text.strip().split())
    t = t[0].lower() + t[1:] if t else t
    if m := re.fullmatch(r"there (?:is|are) (\w+) ([\w ]+?) in the image\.?", t):
        k = COUNTS.index(m.group(1)) if m.group(1) in COUNTS else None
        name = next((n for n in {o.name for o in ann.objects} | set(vocab.names) if m.group(2) in (n, plural(n))), None)
        if k is None or name is None or name in ann.inexhaustive:
            return None
        objs = {o.id for o in ann.objects if o.name == name}
        return len(objs) == k, Solution("", [f"count the {plural(name)}: {len(objs)}"], objs, {"counting"})
    if m := re.fullmatch(r"(.+) and (.+) are (\w+)\.?", t):
        a, b = _find(m.group(1), ann, vocab), _find(m.group(2), ann, vocab)
        if a and b and m.group(3) in CONTACTS:
            c = contact(a[0].bbox, b[0].bbox)
            if c == "near":
                return None
            return c == m.group(3), Solution("", a[1] + b[1] + [f"they are {c}"], a[2] | b[2], {"contact"})
        return None
    if m := re.fullmatch(r"(.+) is in the (top left|top right|bottom left|bottom right) of the image\.?", t):
        a = _find(m.group(1), ann, vocab)
        q = quadrant(a[0].bbox, ann.width, ann.height) if a else None
        return (q == m.group(2), Solution("", a[1] + [f"it is in the {q}"], a[2], {"location"})) if q else None
    if m := re.fullmatch(r"(.+?) is (to the left of|to the right of|above|below) (.+?)\.?", t):
        a, b = _find(m.group(1), ann, vocab), _find(m.group(3), ann, vocab)
        if a and b:
            d = direction(a[0].bbox, b[0].bbox)
            if d is None:
                return None
            return d == RELATIONS[m.group(2)], Solution("", a[1] + b[1] + [f"the first is {d} the second"], a[2] | b[2], {"spatial relation"})
        return None
    if m := re.fullmatch(r"(.+) is an? (\w+)\.?", t):
        a = _find(m.group(1), ann, vocab)
        return (same(a[0].name, m.group(2)), Solution("", a[1] + [f"it is a {a[0].name}"], a[2], {"shape"})) if a else None
    if m := re.fullmatch(r"(.+) is (\w+)\.?", t):
        a = _find(m.group(1), ann, vocab)
        c = color_of(a[0].attributes) if a else None
        return (same(c, m.group(2)), Solution("", a[1] + [f"it is {c}"], a[2], {"colour"})) if c else None
    return None


# ---- questions ----

def format_of(question: str) -> str:
    """The task format of a question, from its words (one of FORMATS)."""
    q = question.strip().lower()
    if q == "which statement about the image is true?":
        return "true statement"
    if q.startswith("fill in the blank"):
        return "fill in the blank"
    if q.startswith("from left to right, in which order"):
        return "order"
    if q.startswith("how many of these"):
        return "count a list"
    if q.startswith("which option lists every"):
        return "choose all that apply"
    return "multiple choice"


def _pick(options: list[str], truths: list[bool | None]) -> tuple[str, list[str]] | None:
    """The single option that is true, and the wrong ones; None unless exactly one is and every other
    is known to be false."""
    if truths.count(True) != 1 or any(t is None for t in truths):
        return None
    return options[truths.index(True)], [o for o, t in zip(options, truths) if not t]


def solve(question: str, options: list[str], ann: ImageAnnotation, vocab: Vocabulary) -> Solution | None:
    """Re-derive the answer of an item from the annotation: the correct option's text, the steps, the
    objects and skills it took. None when the grammar does not read the question or the annotation
    cannot decide it (the item is then neither confirmed nor refuted)."""
    q = " ".join(question.strip().split())
    ql = q.lower()
    if ql == "which statement about the image is true?":
        checked = [truth(o, ann, vocab) for o in options]
        picked = _pick(options, [c[0] if c else None for c in checked])
        if not picked:
            return None
        sol = Solution(picked[0], format="true statement", wrong=picked[1])
        sol.steps = checked[0][1].steps[:-1]  # finding what the statements are about
        for o, c in zip(options, checked):
            sol.steps.append(f"{o.rstrip('.')}: {'true' if c[0] else 'false'}")
            sol.objects |= c[1].objects
            sol.skills |= c[1].skills
        sol.skills.add("true statement")
        return sol
    if ql.startswith("fill in the blank: ") and "___" in q:
        frame = q[len("fill in the blank: "):]
        checked = [truth(frame.replace("___", o), ann, vocab) for o in options]
        picked = _pick(options, [c[0] if c else None for c in checked])
        if not picked:
            return None
        c = checked[options.index(picked[0])][1]
        return Solution(picked[0], c.steps, c.objects, c.skills | {"fill in the blank"}, format="fill in the blank", wrong=picked[1])
    if ql == "from left to right, in which order are the shapes?":
        objs = sorted(ann.objects, key=lambda o: o.bbox[0] + o.bbox[2])
        centres = [(o.bbox[0] + o.bbox[2]) / 2 for o in objs]
        if len(objs) < 3 or len({o.name for o in objs}) != len(objs) or any(b - a <= 8 for a, b in zip(centres, centres[1:])):
            return None
        answer = ", ".join(o.name for o in objs)
        return Solution(answer, [f"the {o.name} is next" for o in objs], {o.id for o in objs}, {"spatial relation", "order"},
                        format="order", wrong=[o for o in options if norm(o) != norm(answer)])
    if m := re.fullmatch(r"how many of these shapes are in the image: (.+)\?", ql):
        listed = [n.strip() for n in m.group(1).split(",")]
        if any(n in ann.inexhaustive for n in listed):
            return None
        present = [n for n in listed if any(o.name == n for o in ann.objects)]
        return Solution(COUNTS[len(present)], [f"is there a {n}: {'yes' if n in present else 'no'}" for n in listed],
                        {o.id for o in ann.objects if o.name in present}, {"identity", "counting", "count a list"}, format="count a list")
    if ql == "which option lists every color in the image?":
        colors = {c for o in ann.objects if (c := color_of(o.attributes))}
        if len(colors) < len(ann.objects) and any(color_of(o.attributes) is None for o in ann.objects):
            return None
        right = [o for o in options if {x.strip() for x in o.split(",")} == colors]
        if len(right) != 1:
            return None
        return Solution(right[0], [f"the {o.name} is {color_of(o.attributes)}" for o in ann.objects], {o.id for o in ann.objects},
                        {"colour", "choose all that apply"}, format="choose all that apply")
    if m := re.fullmatch(r"how many objects are (to the left of|to the right of|above|below) (.+)\?", ql):
        found = resolve(f"the object {m.group(1)} {m.group(2)}", ann, vocab)
        anchor = _find(m.group(2), ann, vocab)
        if found is None or anchor is None:
            return None
        return Solution(COUNTS[len(found)], anchor[1] + [f"count the objects {m.group(1)} it: {len(found)}"],
                        anchor[2] | {o.id for o in found}, {"spatial relation", "counting"},
                        Fact("count", [], COUNTS[len(found)], COUNTS))
    if m := re.fullmatch(r"how many (?:(small|large) )?(\w+) are there in the image\?", ql):
        name = next((n for n in {o.name for o in ann.objects} | set(vocab.names) if m.group(2) == plural(n)), None)
        if name is None or name in ann.inexhaustive:
            return None
        objs = [o for o in ann.objects if o.name == name and (not m.group(1) or size_of(o.attributes) == m.group(1))]
        skills = {"counting", "size"} if m.group(1) else {"counting"}
        return Solution(COUNTS[len(objs)], [f"count the {' '.join(filter(None, [m.group(1), plural(name)]))}: {len(objs)}"],
                        {o.id for o in objs}, skills, Fact("count", [name], COUNTS[len(objs)], COUNTS) if not m.group(1) else None)
    asks = [(r"what colou?r is (.+)\?", "colour"), (r"what shape is (.+)\?", "shape"),
            (r"(?:in which part of the image is|where is) (.+?)(?: in the image)?\?", "location")]
    for pattern, kind in asks:
        if m := re.fullmatch(pattern, ql):
            if kind == "location" and " relative to " in m.group(1):
                break
            found = _find(m.group(1), ann, vocab)
            if found is None:
                return None
            o, steps, seen = found
            value = {"colour": color_of(o.attributes), "shape": o.name, "location": quadrant(o.bbox, ann.width, ann.height)}[kind]
            if value is None:
                return None
            values = {"colour": list(vocab.colors), "shape": list(vocab.names), "location": QUADRANTS}[kind]
            skills = {kind} | phrase_skills(m.group(1))
            return Solution(value, steps + [f"its {kind}: {value}"], seen, skills, Fact(kind, [m.group(1)], value, values))
    if m := re.fullmatch(r"where is (.+) relative to (.+)\?", ql):
        a, b = _find(m.group(1), ann, vocab), _find(m.group(2), ann, vocab)
        d = direction(a[0].bbox, b[0].bbox) if a and b else None
        if d is None:
            return None
        said = next(k for k, v in RELATIONS.items() if v == d)
        value = {"left of": "to the left", "right of": "to the right"}.get(d, d)
        return Solution(value, a[1] + b[1] + [f"the first is {d} the second"], a[2] | b[2], {"spatial relation"},
                        Fact("direction", [m.group(1), m.group(2)], said, list(RELATIONS)))
    if m := re.fullmatch(r"what is the contact between (.+) and (.+)\?", ql):
        a, b = _find(m.group(1), ann, vocab), _find(m.group(2), ann, vocab)
        c = contact(a[0].bbox, b[0].bbox) if a and b else None
        if c is None or c == "near":
            return None
        return Solution(c, a[1] + b[1] + [f"they are {c}"], a[2] | b[2], {"contact"},
                        Fact("contact", [m.group(1), m.group(2)], c, CONTACTS) if c != "inside" else None)
    return None


def check(item, ann: ImageAnnotation, vocab: Vocabulary) -> str | None:
    """The verifier's answer for an evolved item (a `Sample`): "" when the annotation confirms its
    answer and shows every other option wrong, a reason when it contradicts it, None when the grammar
    cannot read or decide it."""
    sol = solve(item.instruction, item.options, ann, vocab)
    if sol is None:
        return None
    if norm(item.short_answer) != norm(sol.answer):
        return f"the annotation says {sol.answer!r}"
    if sum(norm(o) == norm(sol.answer) for o in item.options) != 1:
        return "the answer is among the options more than once"
    return ""
