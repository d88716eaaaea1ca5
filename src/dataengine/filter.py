"""Filter: keep only well-formed, correct, new items; never let a benchmark image into training data.

Each check returns a reason or None. Correctness is judged against the image's annotation by the
item's question type (`qtypes.verify`), which re-derives the answer on its own (it never calls the
generator), so it also judges items written by an LLM.
"""
from __future__ import annotations

import hashlib
import re
from collections import Counter
from pathlib import Path
from typing import Callable

from pydantic import BaseModel

from .embed import item_text, near_duplicates
from .images import resolve
from .qtypes import Vocabulary, verify
from .qtypes.vocabulary import norm
from .records import LETTERS, QTYPES, ImageAnnotation, Question, Sample


def check_format(s: Sample) -> str | None:
    if not s.instruction.strip() or not s.answer.strip() or not s.short_answer.strip():
        return "empty field"
    if not s.image.strip():
        return "no image"  # text-only items are not supported: refused, not trained on a folder
    if s.qtype not in QTYPES:
        return "unknown question type"
    if len(s.options) != 4 or any(not o.strip() for o in s.options):
        return "not 4 options"
    if len({norm(o) for o in s.options}) != 4:
        return "options not distinct"
    if s.choice_answer not in LETTERS[:4]:
        return "answer letter not A-D"
    if norm(s.options[LETTERS.index(s.choice_answer)]) != norm(s.short_answer):
        # Which of the two is wrong: a short answer that is another option means the letter is
        # marked wrong, not that the answer is missing.
        if norm(s.short_answer) in {norm(o) for o in s.options}:
            return "the marked letter's option is not the short answer"
        return "answer not among options"
    return None


def check_sentence(s: Sample) -> str | None:
    """The answer sentence must not contradict the short answer, in the one way text alone can tell:
    it must contain it (whole words, case-insensitively). A letter-only short answer ("B") is not
    looked for, as sentences name the option, not its letter. Applied to a person's edits, where
    the sentence and the short answer are typed apart."""
    short = norm(s.short_answer)
    if not short or re.fullmatch(r"[a-h]", short):
        return None
    if f" {short} " not in f" {norm(s.answer)} ":  # norm leaves words between single spaces
        return "the answer sentence does not say the short answer"
    return None


def check_leak(s: Sample) -> str | None:
    """The question must not give its own answer away."""
    if re.search(rf"\b{re.escape(norm(s.short_answer))}\b", norm(s.instruction)):
        return "question leaks the answer"
    return None


# ---- the filter stage ----

class FilterReport(BaseModel):
    kept: int
    dropped: dict[str, int]  # reason -> count
    dropped_by_type: dict[int, dict[str, int]]
    unverified: int = 0  # kept items whose image the pool does not annotate (nothing to check them against)


def file_hash(path: Path) -> str | None:
    return hashlib.sha1(path.read_bytes()).hexdigest() if path.exists() else None


class BenchmarkGuard:
    """Knows the benchmark's images (by file and by content) and questions, to keep them out of training.

    Benchmark images live under `benchmark_image_root` (default: `image_root`), training images under
    `image_root`. Files are compared as resolved paths, not as names: the same name under two roots
    may be two pictures. A copy under any name is caught by its content."""

    def __init__(self, questions: list[Question], image_root: str | Path, benchmark_image_root: str | Path | None = None):
        self.image_root = image_root
        bench_root = image_root if benchmark_image_root is None else benchmark_image_root
        self.paths = {resolve(bench_root, q.image, where=f"benchmark question {q.question_id}") for q in questions}
        self.hashes = {h for h in map(file_hash, self.paths) if h}
        self.texts = [item_text(q.question, q.options, q.options[LETTERS.index(q.answer)]) for q in questions
                      if q.answer in LETTERS[:len(q.options)]]
        self._cache: dict[str, str | None] = {}

    def leaks(self, s: Sample) -> str | None:
        """Why `s` may not be trained on because of its picture: a benchmark's picture (by path or by
        content), no picture at that path at all ("missing image"), or a file that is no picture
        ("unreadable image"); None when it may."""
        path = resolve(self.image_root, s.image, where=f"sample {s.id}")
        if path in self.paths:
            return "benchmark item"
        if not path.is_file():
            return "missing image"
        if s.image not in self._cache:
            self._cache[s.image] = file_hash(path) if _opens(path) else "unreadable"
        if self._cache[s.image] == "unreadable":
            return "unreadable image"
        return "benchmark image" if self._cache[s.image] in self.hashes else None


def _opens(path: Path) -> bool:
    """Whether a picture's file is one PIL can read (its header and structure; not a full decode)."""
    from PIL import Image
    try:
        with Image.open(path) as im:
            im.verify()
        return True
    except Exception:  # PIL raises many kinds for a broken file; any of them means "cannot be trained on"
        return False


def filter_samples(samples: list[Sample], guard: BenchmarkGuard | None = None,
                   annotations: dict[str, ImageAnnotation] | None = None,
                   seen: list[Sample] | None = None, embedder=None, similarity: float = 0.9,
                   scope: str = "image", drop_unverified: bool = False,
                   vocab: Vocabulary | None = None,
                   blind: Callable[[list[Sample]], list[bool]] | None = None) -> tuple[list[Sample], list[tuple[Sample, str]], FilterReport]:
    """Split samples into kept and (dropped, reason). `seen` are items already in the training data.
    `blind` says of each item whether it is answered correctly without its image (`answered_blind`,
    `answered_by_llm`); those are dropped, as MMStar (arXiv 2403.20330) drops benchmark items.
    `vocab`: the pool's words (object names a question may refer to; default: those of the annotations).
    With an embedder, near-duplicates (question and answer, cosine >= similarity) are dropped too:
    among items of the same image (scope "image"), or among all items and against the benchmark's
    questions (scope "global"). `drop_unverified` also drops items the annotation can neither confirm
    nor contradict: right for an LLM writing about a pool whose annotation is complete."""
    vocab = vocab or Vocabulary()
    keys = {(s.image, norm(s.instruction)) for s in (seen or [])}
    kept, dropped = [], []
    for s in samples:
        reason = check_format(s) or check_leak(s) or (guard.leaks(s) if guard else None)
        if not reason and annotations and s.image in annotations:
            bad = verify(s, annotations[s.image], vocab)
            reason = f"contradicts annotation: {bad}" if bad else None
            if bad is None and drop_unverified:
                reason = "cannot be verified against the annotation"
        key = (s.image, norm(s.instruction))
        if not reason and key in keys:
            reason = "duplicate"
        if reason:
            dropped.append((s, reason))
        else:
            keys.add(key)
            kept.append(s)
    if embedder is not None and kept:
        texts = [item_text(s.instruction, s.options, s.short_answer) for s in kept]
        near = near_duplicates(texts, embedder, similarity, against=guard.texts if guard and scope == "global" else None,
                               groups=[s.image for s in kept] if scope == "image" else None)
        dropped += [(kept[i], r) for i, r in sorted(near.items())]
        kept = [s for i, s in enumerate(kept) if i not in near]
    if blind is not None and kept:
        answered = blind(kept)
        dropped += [(s, "answered without the image") for s, a in zip(kept, answered) if a]
        kept = [s for s, a in zip(kept, answered) if not a]
    by_reason = Counter(r.split(":")[0] for _, r in dropped)
    by_type: dict[int, Counter] = {}
    for s, r in dropped:
        by_type.setdefault(s.qtype, Counter())[r.split(":")[0]] += 1
    unverified = sum(s.image not in annotations for s in kept) if annotations is not None else 0
    report = FilterReport(kept=len(kept), dropped=dict(by_reason), dropped_by_type={t: dict(c) for t, c in by_type.items()},
                          unverified=unverified)
    return kept, dropped, report


# ---- items a model answers without looking ----

def answered_blind(model, image_root: str | Path, batch_size: int = 16) -> Callable[[list[Sample]], list[bool]]:
    """For the filter: whether `model` (any with `score_options`) picks each item's correct option when
    shown a grey picture instead of the image: the answer comes from priors, not from looking."""
    from .evaluate import blank_image

    def check(items: list[Sample]) -> list[bool]:
        out = []
        for i in range(0, len(items), batch_size):
            chunk = items[i:i + batch_size]
            scores = model.score_options([(blank_image(image_root, s.image), s.instruction, s.options) for s in chunk])
            out += [LETTERS[min(range(len(sc)), key=sc.__getitem__)] == s.choice_answer for s, sc in zip(chunk, scores)]
        return out
    return check


def answered_by_llm(client) -> Callable[[list[Sample]], list[bool]]:
    """For the filter: whether the LLM, given only the question and the options (no image, no
    annotation), names the correct letter."""
    from .benchmarks.answers import LETTER_INSTRUCTION, extract_letter
    from .llm.client import LLMError

    def check(items: list[Sample]) -> list[bool]:
        bodies = [client.body([{"role": "user", "content": s.instruction + "\n" + "\n".join(
            f"{l}. {o}" for l, o in zip(LETTERS, s.options)) + "\n" + LETTER_INSTRUCTION}], seed=0, max_tokens=8)
            for s in items]
        answers = client.run(bodies)
        return [not isinstance(a, LLMError) and extract_letter(a.text, s.options)[0] == s.choice_answer
                for s, a in zip(items, answers)]
    return check
