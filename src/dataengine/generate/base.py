"""The generation stage: `generate` draws images from the pool per question type and asks a
generator for items, then balances them by answer.

A generator is anything with `generate_batch(qtype, annotations, examples, rng) -> list[Sample]`
(at most one item an image): the grounded one writes items straight from the annotation; the LLM one
asks an OpenAI-compatible server, all images of a batch at once.
"""
from __future__ import annotations

import random
from typing import Protocol

from rich.progress import Progress

from ..records import ImageAnnotation, Prediction, Sample


class Generator(Protocol):
    name: str

    def generate_batch(self, qtype: int, anns: list[ImageAnnotation], examples: list[Prediction],
                       rng: random.Random) -> list[Sample]: ...


def generate(counts: dict[int, int], pool: list[ImageAnnotation], generator: Generator,
             examples: dict[int, list[Prediction]] | None = None, seed: int = 0,
             exclude_images: dict[int, set[str]] | set[str] | None = None, oversample: int = 3,
             progress: Progress | None = None, order: dict[int, list[int]] | None = None,
             max_images: float | None = None) -> list[Sample]:
    """Generate `counts[t]` items of each type t, one per image, from images of the pool.

    Up to `oversample * counts[t]` candidates are drawn, then picked round-robin by answer, so that a
    frequent answer ("one" for counting, "apart" for contact) does not swamp a type. Use 1 for a
    generator that costs money per call. Images are taken in random order, or in `order[t]` (pool
    indices, e.g. most similar to the bad cases first); those in `exclude_images` (all types, or per
    type) are skipped; at most `max_images * counts[t]` images are tried per type (None: all).
    Returns fewer items than asked when the images run out.
    """
    examples = examples or {}
    out: list[Sample] = []
    task = progress.add_task("generate", total=sum(counts.values())) if progress else None
    for qtype, n in sorted(counts.items()):
        if n <= 0:
            continue
        exclude = exclude_images.get(qtype, set()) if isinstance(exclude_images, dict) else (exclude_images or set())
        rng = random.Random(f"{seed}-{qtype}")
        shuffled = list(range(len(pool)))
        rng.shuffle(shuffled)
        ids = [i for i in (order or {}).get(qtype, shuffled) if pool[i].image not in exclude]
        if max_images is not None:
            ids = ids[:int(max_images * n)]
        drawn: list[Sample] = []
        while ids and len(drawn) < n * oversample:
            # Ask for as many images as items are still missing: one call for the grounded
            # generator's loop, one concurrent batch for an LLM.
            batch, ids = ids[:n * oversample - len(drawn)], ids[n * oversample - len(drawn):]
            drawn.extend(generator.generate_batch(qtype, [pool[i] for i in batch], examples.get(qtype, []), rng))
        picked = balance_answers(drawn, n)
        out.extend(picked)
        if progress:
            progress.advance(task, len(picked))
    return out


def balance_answers(items: list[Sample], n: int) -> list[Sample]:
    """Pick n items taking one of each answer in turn (answers in order of first appearance)."""
    by_answer: dict[str, list[Sample]] = {}
    for s in items:
        by_answer.setdefault(s.short_answer, []).append(s)
    queues = list(by_answer.values())
    picked: list[Sample] = []
    while len(picked) < n and any(queues):
        for q in queues:
            if q and len(picked) < n:
                picked.append(q.pop(0))
    return picked
