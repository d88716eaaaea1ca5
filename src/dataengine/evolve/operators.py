"""The three evolution operators of MMEvol (arXiv 2409.05840, section 3), grounded: each writes a
child item from its parent and the image's annotation, exact by construction and confirmed by
`grammar.solve` before it is returned.

- perception: ask about a less salient object (the smallest one the parent did not look at), named
  by finer detail (its size, its place in the image);
- reasoning: chain two or three facts ("What color is the object to the left of the large ball?"),
  the steps recorded;
- interaction: the same knowledge in another task format (true statement, fill in the blank, order,
  count a list, choose all that apply).
"""
from __future__ import annotations

import hashlib
import random
from typing import Callable

from ..qtypes.geometry import QUADRANTS, quadrant
from ..qtypes.vocabulary import Vocabulary, color_of, find_references, plural, referring_expressions, size_of
from ..records import LETTERS, ImageAnnotation, Lineage, Sample
from ..registry import Registry
from .grammar import COUNTS, RELATIONS, Fact, Solution, format_of, resolve, solve, statement


class Draft:
    """A child question before it becomes an item: its text, correct option and wrong options
    (hardest first: values the image shows)."""

    def __init__(self, question: str, answer: str, wrong: list[str]):
        self.question, self.answer, self.wrong = question, answer, list(dict.fromkeys(w for w in wrong if w != answer))


def looked_at(item: Sample, ann: ImageAnnotation, vocab: Vocabulary) -> tuple[Solution | None, set[int]]:
    """The parent's solution (None if the grammar cannot read it) and the objects it involves."""
    sol = solve(item.instruction, item.options, ann, vocab)
    if sol:
        return sol, sol.objects
    groups = find_references(ann, item.instruction, set(vocab.names))
    return None, {o.id for g in groups for o in g}


def _area(o) -> float:
    return (o.bbox[2] - o.bbox[0]) * (o.bbox[3] - o.bbox[1])


def _hard_values(values: list[str], shown: list[str]) -> list[str]:
    return [v for v in shown if v in values] + [v for v in values if v not in shown]


# ---- perception ----

def perception(parent: Sample, ann: ImageAnnotation, vocab: Vocabulary, rng: random.Random) -> list[Draft]:
    """Questions about the least salient object the parent did not look at (smallest first), named
    by its size or its quadrant rather than by what is asked."""
    _, seen = looked_at(parent, ann, vocab)
    objs = sorted(ann.objects, key=lambda o: (o.id in seen, _area(o)))
    colors = [c for o in ann.objects if (c := color_of(o.attributes))]
    for o in objs:
        c, s, q = color_of(o.attributes), size_of(o.attributes), quadrant(o.bbox, ann.width, ann.height)
        phrases = [p for p in (f"the {o.name} in the {q} of the image" if q else "", f"the {s} {o.name}" if s else "",
                               f"the {s} {c} object" if s and c else "", f"the {c} {o.name} in the {q} of the image" if c and q else "")
                   if p and (r := resolve(p, ann, vocab)) and len(r) == 1]
        drafts = []
        for p in phrases:
            if c and c not in p:
                drafts.append(Draft(f"What color is {p}?", c, _hard_values(list(vocab.colors), colors)))
            if o.name not in p:
                drafts.append(Draft(f"What shape is {p}?", o.name, _hard_values(list(vocab.names), [x.name for x in ann.objects])))
            if q and "of the image" not in p:
                drafts.append(Draft(f"In which part of the image is {p}?", q, list(QUADRANTS)))
        if s and o.name not in ann.inexhaustive:
            k = sum(x.name == o.name and size_of(x.attributes) == s for x in ann.objects)
            drafts.append(Draft(f"How many {s} {plural(o.name)} are there in the image?", COUNTS[k], COUNTS[1:] + COUNTS[:1]))
        if drafts:
            return drafts
    return []


# ---- reasoning ----

def reasoning(parent: Sample, ann: ImageAnnotation, vocab: Vocabulary, rng: random.Random) -> list[Draft]:
    """Questions that chain a relation to what is asked: one relation from an object a phrase names,
    or two (three steps), about the parent's objects when it can."""
    _, seen = looked_at(parent, ann, vocab)
    refs = referring_expressions(ann)
    names = [x.name for x in ann.objects]
    colors = [c for o in ann.objects if (c := color_of(o.attributes))]
    chains: list[tuple[str, object]] = []
    for oid in sorted(refs, key=lambda i: i not in seen):
        for rel in RELATIONS:
            p1 = f"the object {rel} {refs[oid]}"
            if (t := resolve(p1, ann, vocab)) and len(t) == 1:
                chains.append((p1, t[0]))
                for rel2 in RELATIONS:
                    p2 = f"the object {rel2} {p1}"
                    if (t2 := resolve(p2, ann, vocab)) and len(t2) == 1 and t2[0].id != oid:
                        chains.append((p2, t2[0]))
    drafts = []
    for phrase, o in chains:
        if c := color_of(o.attributes):
            drafts.append(Draft(f"What color is {phrase}?", c, _hard_values(list(vocab.colors), colors)))
        drafts.append(Draft(f"What shape is {phrase}?", o.name, _hard_values(list(vocab.names), names)))
    for oid in refs:
        for rel in RELATIONS:
            found = resolve(f"the object {rel} {refs[oid]}", ann, vocab)
            if found:  # counting nothing is left out: "how many ... to the left" of a lone object is a trick question
                drafts.append(Draft(f"How many objects are {rel} {refs[oid]}?", COUNTS[len(found)], COUNTS[1:]))
    return drafts


# ---- interaction (task formats) ----

def _sets(truth: list[str], values: list[str], rng: random.Random) -> list[str]:
    """Three wrong lists near `truth`: one more value, one fewer, one swapped."""
    extra = [v for v in values if v not in truth]
    out = []
    if extra:
        out.append(truth + [rng.choice(extra)])
    if len(truth) > 1:
        out.append(truth[:-1])
    if extra and truth:
        out.append(truth[:-1] + [rng.choice(extra)])
    if len(extra) >= 2:
        out.append(rng.sample(extra, 2))
    return [", ".join(sorted(s)) for s in out if s and sorted(s) != sorted(truth)]


def interaction(parent: Sample, ann: ImageAnnotation, vocab: Vocabulary, rng: random.Random) -> list[Draft]:
    """The parent's knowledge in other task formats: its fact as the one true statement or as a
    blank to fill; and, about the whole image, the order of the shapes, how many of a list are
    there, or the list of every colour."""
    sol, _ = looked_at(parent, ann, vocab)
    fact: Fact | None = sol.fact if sol else None
    drafts = []
    if fact and fact.subjects:
        wrong = [v for v in fact.values if v != fact.value]
        rng.shuffle(wrong)
        drafts.append(Draft("Which statement about the image is true?", statement(fact, fact.value),
                            [statement(fact, v) for v in wrong]))
        drafts.append(Draft(f"Fill in the blank: {statement(fact, '___')}", fact.value, wrong))
    names = [o.name for o in ann.objects]
    if len(names) >= 3 and len(set(names)) == len(names):
        truth = solve("From left to right, in which order are the shapes?", [], ann, vocab)
        if truth:
            perms = [p for p in dict.fromkeys(", ".join(rng.sample(names, len(names))) for _ in range(12)) if p != truth.answer]
            drafts.append(Draft("From left to right, in which order are the shapes?", truth.answer, perms))
    listed = rng.sample(list(vocab.names), min(3, len(vocab.names)))
    if len(listed) == 3 and not set(listed) & set(ann.inexhaustive):
        k = sum(n in names for n in listed)
        drafts.append(Draft(f"How many of these shapes are in the image: {', '.join(listed)}?", COUNTS[k],
                            [c for c in COUNTS[:4] if c != COUNTS[k]]))
    colors = sorted({c for o in ann.objects if (c := color_of(o.attributes))})
    if colors and all(color_of(o.attributes) for o in ann.objects):
        drafts.append(Draft("Which option lists every color in the image?", ", ".join(colors), _sets(colors, list(vocab.colors), rng)))
    parent_format = format_of(parent.instruction)
    return [d for d in drafts if format_of(d.question) != parent_format]


# name -> f(parent, annotation, vocabulary, rng) -> drafts; the grounded versions
OPERATORS: Registry[Callable] = Registry("evolution operator")
OPERATORS.register("perception", perception)
OPERATORS.register("reasoning", reasoning)
OPERATORS.register("interaction", interaction)


def make_child(parent: Sample, draft: Draft, ann: ImageAnnotation, vocab: Vocabulary, operator: str, round_: int,
               rng: random.Random, generator: str = "evolve:grounded") -> Sample | None:
    """The draft as an item with four shuffled options and its lineage; None when there are not three
    wrong options or the grammar does not confirm it."""
    if len(draft.wrong) < 3:
        return None
    head, rest = draft.wrong[:1], draft.wrong[1:]
    rng.shuffle(rest)
    options = [draft.answer] + head + rest[:2]
    rng.shuffle(options)
    sol = solve(draft.question, options, ann, vocab)
    if sol is None or sol.answer != draft.answer:
        return None
    root = parent.lineage.root if parent.lineage else parent.id
    key = hashlib.sha1(f"{parent.id}|{operator}|{draft.question}|{draft.answer}".encode()).hexdigest()[:8]
    answer = statement(sol.fact, draft.answer) if sol.fact and sol.fact.subjects else (
        draft.answer if sol.format == "true statement" else f"The answer is {draft.answer}.")
    return Sample(id=f"{root}~e{round_}{operator[0]}{key}", image=parent.image, instruction=draft.question, answer=answer,
                  short_answer=draft.answer, options=options, choice_answer=LETTERS[options.index(draft.answer)],
                  qtype=parent.qtype, source=parent.source, generator=generator,
                  lineage=Lineage(parent=parent.id, root=root, operator=operator, round=round_, format=sol.format,
                                  steps=sol.steps, skills=sorted(sol.skills), complexity=sol.complexity))


def complexity(item: Sample, ann: ImageAnnotation, vocab: Vocabulary) -> int:
    """Steps + objects + skills of an item (`Solution.complexity`); an item the grammar does not read
    counts one step, the objects its phrases name and its type's skill."""
    sol, seen = looked_at(item, ann, vocab)
    return sol.complexity if sol else 1 + max(len(seen), 1) + 1


def evolve_one(parent: Sample, ann: ImageAnnotation, vocab: Vocabulary, operator: str, round_: int,
               rng: random.Random) -> Sample | None:
    """One child of `parent` by the grounded `operator`, drawn at random among its drafts that make an
    item; None when the operator has nothing to ask about this image. Whether the child is harder is
    left to the judge, as in MMEvol: a draft no more complex than its parent is eliminated there."""
    children = [c for d in OPERATORS.get(operator)(parent, ann, vocab, rng)
                if (c := make_child(parent, d, ann, vocab, operator, round_, rng))]
    return rng.choice(children) if children else None
