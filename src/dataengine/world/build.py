"""The embedded default's inputs, built from the synthetic world: a generation pool, a held-out
benchmark in SEED-Bench's JSON format, and a deliberately imbalanced starter training set."""
from __future__ import annotations

import json
from pathlib import Path

from ..benchmarks.answers import LETTER_INSTRUCTION
from ..benchmarks.pope import build_pope
from ..benchmarks.seed import write_seed
from ..errors import DataError
from ..generate import GroundedGenerator, generate
from ..generate.align import alignment_samples
from ..qtypes.counting import NUMBERS
from ..qtypes.geometry import CONTACTS, DIRECTIONS, QUADRANTS
from ..records import ImageAnnotation, Inputs, Question, Sample, differs, write_json, write_jsonl
from .render import CATEGORIES, COLORS, SETTINGS, VOCABULARY, WORDS, build_pool


def build_world(cfg, out: str | Path) -> Inputs:
    """Render the world for `cfg` (a RunConfig: its seed and `world` section) into `out`:
    images/, pool.jsonl, benchmark.json (SEED-Bench format), starter.jsonl. Files already there are kept.

    Raises DataError when the benchmark's scenes cannot supply `world.benchmark_per_type` items of every
    type, or `out` cannot be a folder.
    """
    w, out = cfg.world, Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file where the folder (or one above it) should be
        raise DataError(f"{out}: cannot make the world's folder ({e.strerror})") from None
    inputs = Inputs(out / "benchmark.json", out / "images", out / "pool.jsonl", out / "starter.jsonl", out / "images")
    made_by = json.loads(json.dumps({"seed": cfg.seed, "world": w.model_dump(mode="json")}))  # as read back
    if all(p.exists() for p in (inputs.benchmark, inputs.pool, inputs.original)):
        # what made it is recorded (a world of an older version has no record: taken as it is)
        if differs(out / "world.json", made_by):
            raise DataError(f"{out}: holds a world made with another seed or world config; build into another "
                            f"folder, or remove it")
        return inputs
    size = w.image_size
    # Disjoint seed ranges keep the benchmark's scenes out of the pool by construction.
    pool = build_pool(inputs.image_root, "pool", range(cfg.seed * 10**6, cfg.seed * 10**6 + w.pool_size), size, w.cooccurrence)
    # Four scenes a question; more when a small benchmark happens to lack a type (signs are rare).
    first, scenes = cfg.seed * 10**6 + 500_000, w.benchmark_per_type * 4
    while True:
        bench = build_pool(inputs.image_root, "bench", range(first, first + scenes), size, w.cooccurrence)
        items = generate({t: w.benchmark_per_type for t in range(1, 10)}, bench, GroundedGenerator(VOCABULARY, source="bench"),
                         seed=cfg.seed + 7)
        short = {t: w.benchmark_per_type - sum(s.qtype == t for s in items) for t in range(1, 10)}
        if not any(short.values()):
            break
        if scenes >= w.benchmark_per_type * 32:
            raise DataError(f"{out}: the benchmark scenes could not supply every type: short by {short}")
        scenes *= 2
    write_seed(inputs.benchmark, [Question(question_id=f"{i:05d}", question=s.instruction, options=s.options,
                                           answer=s.choice_answer, qtype=s.qtype, image=s.image) for i, s in enumerate(items)])
    # The starter set draws from the second half of the pool; later rounds may use all of it.
    half = pool[len(pool) // 2:]
    starter = generate(dict(w.starter), half, GroundedGenerator(VOCABULARY, source="starter"), seed=cfg.seed + 11)
    if w.descriptions:
        starter += alignment_samples(half[:w.descriptions], "regions", seed=cfg.seed + 13)
    if w.existence:
        starter += existence_samples(half, w.existence, seed=cfg.seed + 17)
    write_jsonl(inputs.pool, pool)
    write_jsonl(inputs.original, starter)
    write_json(out / "world.json", made_by)
    return inputs


def existence_samples(pool: list[ImageAnnotation], n: int, seed: int = 0) -> list[Sample]:
    """`n` yes/no questions "Is there a <name> in the image?" over the pool, half of them about an
    object the image shows and half about one it does not (drawn at random, POPE's random split),
    as training items (short answer "yes" / "no")."""
    import random
    items = build_pope(pool, "random", per_image=1, seed=seed)
    random.Random(seed).shuffle(items)
    yes = [i for i in items if i.label == "yes"][:(n + 1) // 2]
    no = [i for i in items if i.label == "no"][:n // 2]
    return [Sample(id=f"exist-{k}", image=i.image, instruction=i.text, answer=f"{i.label.capitalize()}.", short_answer=i.label,
                   options=[], choice_answer="", qtype=0, source="existence") for k, i in enumerate(yes + no)]


def corpus(samples: list[Sample]) -> list[str]:
    """Text to train the tiny model's tokenizer on: the samples in the model's prompt format, and every
    word the world and its question types use."""
    words = CATEGORIES + list(COLORS) + CONTACTS + NUMBERS + SETTINGS + WORDS + list(DIRECTIONS.values()) + QUADRANTS
    texts = [f"USER: <image>\n{s.instruction} ASSISTANT: {s.short_answer} {s.answer} {' '.join(s.options)}" for s in samples]
    return texts + [" ".join(words)] * 5 + [f"A. B. C. D. {LETTER_INSTRUCTION}"] * 5
