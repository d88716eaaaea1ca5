"""The world's hard benchmark: multi-step and unusual-format questions (instruction evolution's
kinds, `evolve`) about scenes of their own, in SEED-Bench's JSON format. Its categories are the
evolution operators and task formats, not SEED-Bench's dimensions; no training set ever sees its
scenes (their seeds lie apart from the pool's and the benchmark's)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from ..benchmarks.seed import write_seed
from ..errors import DataError
from ..evolve.rounds import evolve
from ..generate import GroundedGenerator, generate
from ..records import Question, write_jsonl
from .render import VOCABULARY, build_pool

# the hard benchmark's categories, numbered as its file's question_type table says
CATEGORIES = ("fine-grained perception", "multi-step reasoning", "true statement", "fill in the blank",
              "count a list", "choose all that apply")  # "order" needs three shapes apart: too rare to measure


def category(lineage) -> str:
    if lineage.format != "multiple choice":
        return lineage.format
    return "fine-grained perception" if lineage.operator == "perception" else "multi-step reasoning"


def build_hard(cfg, out: str | Path, per_category: int = 60) -> Path:
    """Write `out`/hard.json with `per_category` questions of each of `CATEGORIES`, images under
    `out`/images/hard/ and their annotations in `out`/hard_scenes.jsonl. Kept when already there.
    DataError when the scenes cannot supply them."""
    out = Path(out)
    path = out / "hard.json"
    if path.exists():
        return path
    start, scenes = cfg.seed * 10**6 + 800_000, per_category * 6
    while True:
        anns = build_pool(out / "images", "hard", range(start, start + scenes), cfg.world.image_size, cfg.world.cooccurrence)
        seeds = generate({t: scenes // 9 for t in range(1, 10)}, anns, GroundedGenerator(VOCABULARY, source="hard"), seed=cfg.seed + 19)
        with tempfile.TemporaryDirectory() as tmp:
            kept, _ = evolve(seeds, anns, tmp, rounds=2, vocab=VOCABULARY, seed=cfg.seed + 23)
        by_cat: dict[str, list] = {c: [] for c in CATEGORIES}
        used: set[tuple[str, str]] = set()
        for c in kept:
            key = (c.image, c.instruction)
            if key not in used:  # a question once per image
                used.add(key)
                by_cat.setdefault(category(c.lineage), []).append(c)
        short = {c: per_category - len(by_cat[c]) for c in CATEGORIES if len(by_cat[c]) < per_category}
        if not short:
            break
        if scenes >= per_category * 48:
            raise DataError(f"{out}: the hard benchmark's scenes could not supply every category: short by {short}")
        scenes *= 2
    questions = []
    for n, cat in enumerate(CATEGORIES, 1):
        for c in by_cat[cat][:per_category]:
            questions.append(Question(question_id=f"hard{len(questions):05d}", question=c.instruction, options=c.options,
                                      answer=c.choice_answer, qtype=n, image=c.image, category=cat))
    write_jsonl(out / "hard_scenes.jsonl", [a for a in anns if a.image in {q.image for q in questions}])
    return write_seed(path, questions)
