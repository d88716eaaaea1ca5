"""Interactive Prompt Optimization (IPO), after MLLM-DataEngine:

  (1) the LLM is asked which rules of the prompt are confusing or contradictory, and rewrites them;
  (2) items are generated with the prompt on a fixed sample of images;
  (3) a reviewer (a person at the terminal, or the annotation verifier) records every failure:
      question, failure type, explanation;
  (4) the LLM is given the rules and the failures and revises the rules; back to (2),
until the correctness target is met, the round limit is hit, or a round does not improve.

Every version is stored (`PromptStore`) with its parent, the feedback that produced it and its
measured correctness, overall and per type. `generate` then uses the best version.
"""
from __future__ import annotations

import difflib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pydantic import BaseModel

from ..errors import DataError
from ..filter import check_format, check_leak
from ..generate.llm import LLMGenerator
from ..qtypes import Vocabulary, verify
from ..records import QTYPES, ImageAnnotation, Sample, read_jsonl, write_jsonl
from ..registry import Registry
from .client import LLMClient, LLMError
from .prompt import PromptStore, PromptVersion, describe, prompt_for

FAILURE_TYPES = ["wrong answer", "ambiguous question", "answer leaked", "bad options", "malformed output",
                 "mentions annotations", "not the requested type", "other"]

REWRITE_SCHEMA = {
    "type": "object",
    "properties": {
        "confusing": {"type": "array", "items": {"type": "string"}, "maxItems": 5},
        "rules": {"type": "array", "items": {"type": "string"}, "minItems": 3, "maxItems": 10},
    },
    "required": ["confusing", "rules"],
}


class Failure(BaseModel):
    item: str  # the item's id, or the image for an answer that could not be read
    qtype: int
    image: str
    question: str
    failure_type: str
    explanation: str


@dataclass
class Review:
    judged: int = 0
    correct: int = 0
    per_type: dict[int, list[int]] = field(default_factory=dict)  # qtype -> [correct, judged]
    failures: list[Failure] = field(default_factory=list)
    undecided: int = 0  # items the annotation could not decide (counted as not correct)

    def add(self, qtype: int, ok: bool) -> None:
        self.judged += 1
        self.correct += ok
        c = self.per_type.setdefault(qtype, [0, 0])
        c[0] += ok
        c[1] += 1

    @property
    def correctness(self) -> float:
        return self.correct / self.judged if self.judged else 0.0


# ---- reviewers: both give the same failure records ----

def auto_judge(s: Sample, ann: ImageAnnotation | None, vocab: Vocabulary | None = None) -> Failure | None | str:
    """A Failure, None when the item is confirmed correct, or "undecided". `vocab`: the pool's words
    (object names it may refer to; default: those of the annotation)."""
    def fail(kind: str, why: str) -> Failure:
        return Failure(item=s.id, qtype=s.qtype, image=s.image, question=s.instruction, failure_type=kind, explanation=why)
    if (r := check_format(s)):
        return fail("bad options", r)
    if (r := check_leak(s)):
        return fail("answer leaked", r)
    if any(w in s.instruction.lower() for w in ("description", "caption", "bounding box", "coordinate", "annotation")):
        return fail("mentions annotations", "the question refers to the annotation, not the image")
    verdict = verify(s, ann, vocab or Vocabulary()) if ann else None
    if verdict:
        return fail("wrong answer", f"contradicts the annotation: {verdict}")
    return None if verdict == "" else "undecided"


def human_judge(s: Sample, ann: ImageAnnotation | None, vocab: Vocabulary | None = None, ask: Callable[[str], str] = input,
                show: Callable[[str], None] = print) -> Failure | None:
    show(f"\nimage: {s.image}\n{describe(ann, s.qtype) if ann else '(no annotation)'}\n"
         f"type: {QTYPES[s.qtype][0]}\nQ: {s.instruction}\n"
         + "\n".join(f"  {l}. {o}" for l, o in zip("ABCD", s.options)) + f"\ncorrect: {s.choice_answer}  ({s.answer})")
    if ask("accept? [y/n] ").strip().lower().startswith("y"):
        return None
    show("failure types: " + ", ".join(f"{i}={t}" for i, t in enumerate(FAILURE_TYPES)))
    raw = ask("failure type (number or words): ").strip()
    kind = FAILURE_TYPES[int(raw)] if raw.isdigit() and int(raw) < len(FAILURE_TYPES) else (raw or "other")
    return Failure(item=s.id, qtype=s.qtype, image=s.image, question=s.instruction, failure_type=kind,
                   explanation=ask("explanation: ").strip())


class PageJudge:
    """A person's verdicts given in the review page (`dataengine review RUN`, its IPO tab) instead of at
    the terminal: each item's pass / fail (failure type, comment) is read from the review database,
    waiting until the person has given it. `measure` writes a version's items before they are judged,
    so the page can show them; a verdict given earlier (a resumed run) is used at once."""

    def __init__(self, db: str | Path, poll: float = 1.0, timeout: float | None = None, show: Callable[[str], None] = print):
        from ..review.store import ReviewStore
        self.store, self.poll, self.timeout, self.show = ReviewStore(db), poll, timeout, show
        self._waiting: str | None = None

    def __call__(self, s: Sample, ann: ImageAnnotation | None, vocab: Vocabulary | None = None) -> Failure | None:
        import time
        round, start = s.source, time.monotonic()  # the version's items carry "ipo-v<n>" as their source
        while (d := self.store.get(round, s.id)) is None or d.verdict not in ("pass", "fail"):
            if self._waiting != round:
                self._waiting = round
                self.show(f"waiting for your verdicts on prompt {round.removeprefix('ipo-')} in the review page ({self.store.path})")
            if self.timeout is not None and time.monotonic() - start > self.timeout:
                raise DataError(f"item {s.id}: no verdict in {self.store.path} after {self.timeout:.0f} s")
            time.sleep(self.poll)
        if d.verdict == "pass":
            return None
        return Failure(item=s.id, qtype=s.qtype, image=s.image, question=s.instruction, failure_type=d.kind or "other",
                       explanation=d.comment)


# `dataengine ipo --review`: who judges the items of a prompt version ("page" is a PageJudge on a database)
REVIEWERS: Registry = Registry("review mode")
REVIEWERS.register("auto", auto_judge)
REVIEWERS.register("human", human_judge)
REVIEWERS.register("page", PageJudge)


def review(items: list[Sample], problems: list[dict], anns: dict[str, ImageAnnotation], judge=auto_judge,
           vocab: Vocabulary | None = None) -> Review:
    """Judge generated items; answers that could not be read count as failures, skips do not count."""
    rv = Review()
    for s in items:
        verdict = judge(s, anns.get(s.image), vocab)
        if verdict == "undecided":
            rv.undecided += 1
        if isinstance(verdict, Failure):
            rv.failures.append(verdict)
        rv.add(s.qtype, verdict is None)
    for p in problems:
        if p["kind"] in ("malformed", "failed"):
            rv.failures.append(Failure(item=p["image"], qtype=p["qtype"], image=p["image"], question=p.get("text", "")[:200],
                                       failure_type="malformed output", explanation=p["reason"]))
            rv.add(p["qtype"], False)
    return rv


# ---- the rewrite ----

_EXAMPLE_RULES = "- Ask about the image.\n- Give some options."
_EXAMPLE_FAILURES = [Failure(item="x", qtype=3, image="x", question="What color is the car?", failure_type="bad options",
                             explanation="two options were the same colour")]
_EXAMPLE_REWRITE = {"confusing": ["'Give some options' does not say how many options or that they must differ"],
                    "rules": ["Ask about one object or fact that the annotation states.",
                              "Give exactly four options, all different.",
                              "Exactly one option is correct and it equals the short answer."]}


def _rewrite_request(rules: str, failures: list[Failure], clarify: bool) -> str:
    task = ("Some rules may be confusing or contradictory. Name them, then write the rules again, clearer."
            if clarify else
            "Items written with these rules failed review. Name the rules that caused the failures, then write "
            "the rules again so that these failures do not happen.")
    failed = "\n".join(f"- [{f.failure_type}] {f.question[:160]} -- {f.explanation[:160]}" for f in failures[:12])
    return (f"These are the rules of a prompt that makes an assistant write multiple-choice questions about images "
            f"from their annotations:\n{rules.strip()}\n\n" + (f"Failures:\n{failed}\n\n" if failures else "")
            + task + ' Reply in JSON with "confusing" (the unclear rules) and "rules" (the whole new list of rules).')


def rewrite_messages(rules: str, failures: list[Failure], clarify: bool) -> list[dict]:
    """The rewrite request, after one worked example (small base models need to see the shape)."""
    return [{"role": "system", "content": "You improve instructions for a data-writing assistant."},
            {"role": "user", "content": _rewrite_request(_EXAMPLE_RULES, _EXAMPLE_FAILURES, clarify=False)},
            {"role": "assistant", "content": json.dumps(_EXAMPLE_REWRITE)},
            {"role": "user", "content": _rewrite_request(rules, failures, clarify)}]


def propose(client: LLMClient, rules: str, failures: list[Failure], clarify: bool, seed: int) -> tuple[str | None, list[str]]:
    """The LLM's rewrite of the rules, or None when its answer is unusable; with the parts it called confusing."""
    body = client.body(rewrite_messages(rules, failures, clarify), REWRITE_SCHEMA, seed=seed, max_tokens=500)
    [answer] = client.run([body])
    if isinstance(answer, LLMError):
        return None, [str(answer)]
    text = answer.text
    try:
        obj = json.loads(text[text.find("{"):text.rfind("}") + 1], strict=False)
        lines = [" ".join(str(r).split()).lstrip("-• ") for r in obj.get("rules", [])]
    except (ValueError, AttributeError):
        return None, ["unreadable rewrite"]
    lines = [l for l in dict.fromkeys(lines) if len(l) > 3]
    if len(lines) < 3:
        return None, ["fewer than 3 usable rules in the rewrite"]
    return "\n".join(f"- {l}" for l in lines), [str(c) for c in obj.get("confusing", [])][:5]


def diff(old: str, new: str) -> str:
    return "\n".join(difflib.unified_diff(old.splitlines(), new.splitlines(), "rules (current)", "rules (proposed)", lineterm=""))


# ---- the loop ----

@dataclass
class IPOResult:
    versions: list[PromptVersion]
    best: PromptVersion
    stopped: str


# f(client, version) -> (items made with the version's rules, problems as LLMGenerator reports them)
ItemsFor = Callable[[LLMClient, PromptVersion], tuple[list[Sample], list[dict]]]


def measure(client: LLMClient, version: PromptVersion, images: dict[int, list[ImageAnnotation]],
            anns: dict[str, ImageAnnotation], out: Path, judge=auto_judge, image_root: str | None = None,
            vocab: Vocabulary | None = None, items_for: ItemsFor | None = None) -> Review:
    """Make items with this version and review them; files under out/v{n}/. By default one generated
    item per sampled image; `items_for` makes them otherwise (the evolution prompt's children)."""
    if items_for is not None:
        items, problems = items_for(client, version)
    else:
        gen = LLMGenerator(client, prompt_for(version), source=f"ipo-v{version.version}", image_root=image_root)
        items = [s for t, imgs in sorted(images.items()) for s in gen.generate_batch(t, imgs, [], random.Random(0))]
        problems = gen.problems
    d = out / f"v{version.version}"
    write_jsonl(d / "items.jsonl", items)  # before the review: a person judges them in the review page
    rv = review(items, problems, anns, judge, vocab)
    write_jsonl(d / "failures.jsonl", rv.failures)
    return rv


def sample_images(pool: list[ImageAnnotation], qtypes: list[int], per_type: int, seed: int) -> dict[int, list[ImageAnnotation]]:
    """The same images judge every version, so versions are compared on equal terms."""
    rng = random.Random(seed)
    return {t: rng.sample(pool, min(per_type, len(pool))) for t in qtypes}


def optimize(client: LLMClient, pool: list[ImageAnnotation], out: str | Path, rounds: int = 3, target: float = 0.9,
             per_type: int = 3, qtypes: list[int] | None = None, clarify: bool = True, judge=auto_judge,
             accept: Callable[[str, str], str | None] | None = None, log: Callable[[str], None] = print,
             seed: int = 0, image_root: str | None = None, items_for: ItemsFor | None = None,
             template: str = "generate-v1", rules: str | None = None) -> IPOResult:
    """Run IPO; re-running resumes from the stored versions. `accept(current, proposed)` returns the
    rules to use (edited or not) or None to reject; None as `accept` accepts automatically. For
    another prompt than generation's (evolution's), `items_for` makes a version's items, `template`
    names its prompt file and `rules` its first rules."""
    out = Path(out)
    store = PromptStore(out / "prompts.jsonl")
    images = sample_images(pool, qtypes or sorted(QTYPES), per_type, seed)
    anns = {a.image: a for a in pool}
    vocab = Vocabulary.from_pool(pool)

    def measured(v: PromptVersion) -> PromptVersion:
        if v.correctness is None:
            rv = measure(client, v, images, anns, out, judge, image_root, vocab, items_for)
            v.correctness, v.judged = rv.correctness, rv.judged
            v.per_type = {t: c / n for t, (c, n) in sorted(rv.per_type.items())}
            store.save(v)
        log(f"prompt v{v.version}: correctness {v.correctness:.0%} of {v.judged} items  "
            + " ".join(f"{t}:{x:.0%}" for t, x in v.per_type.items()))
        return v

    current = measured(store.initial(template, rules))
    for v in store.versions()[1:]:
        current = measured(v)
    stopped = "round limit"
    while True:
        versions = store.versions()
        best = store.best()
        if best.correctness >= target:
            stopped = "target met"
            break
        if len(versions) - 1 >= rounds:
            break
        if len(versions) >= 2 and versions[-1].correctness <= max(v.correctness for v in versions[:-1]):
            stopped = "no improvement"
            break
        failures = [] if len(versions) == 1 and clarify else _failures(out, current)
        proposal, notes = propose(client, current.rules, failures, clarify=not failures, seed=seed + len(versions))
        if proposal is None:
            stopped = f"no usable rewrite ({notes[0]})"
            break
        log(diff(current.rules, proposal))
        chosen = proposal if accept is None else accept(current.rules, proposal)
        if chosen is None:
            stopped = "rewrite rejected"
            break
        feedback = [f"confusing: {c}" for c in notes] + [f"[{f.failure_type}] {f.question[:120]} -- {f.explanation[:120]}" for f in failures]
        new = PromptVersion(version=versions[-1].version + 1, parent=current.version, template=current.template,
                            rules=chosen, feedback=feedback)
        store.save(new)
        current = measured(new)
    best = store.best()
    log(f"IPO stopped ({stopped}); best prompt: v{best.version} at {best.correctness:.0%}")
    return IPOResult(store.versions(), best, stopped)


def _failures(out: Path, v: PromptVersion) -> list[Failure]:
    p = out / f"v{v.version}" / "failures.jsonl"
    return read_jsonl(p, Failure) if p.exists() else []
