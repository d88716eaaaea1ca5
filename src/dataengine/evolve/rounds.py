"""`evolve`: rounds of evolution over a set of items, each round's survivors the next round's
parents, as MMEvol grows its seed set (arXiv 2409.05840, Algorithm 1). Every round is written when
it finishes (`round_<r>/children.jsonl`, every child with its verdict, and `stats.json`), so a killed
run resumes at the round it was in; LLM answers come back from the client's cache, so no call is
made twice.
"""
from __future__ import annotations

import hashlib
import random
from collections import Counter
from pathlib import Path
from typing import Callable

from pydantic import BaseModel

from ..errors import DataError
from ..qtypes import Vocabulary
from ..records import ImageAnnotation, Sample, differs, read_jsonl, write_json, write_jsonl
from .judge import judge_grounded
from .operators import OPERATORS, complexity, evolve_one


class RoundStats(BaseModel):
    """What one evolution round did."""
    round: int
    parents: int
    made: dict[str, int]  # operator -> children written
    kept: dict[str, int]  # operator -> children the judge kept
    kept_share: float  # kept / made
    parent_complexity: float  # mean over the parents the round evolved
    mean_complexity: float  # mean over the kept children
    formats: dict[str, int]  # task format -> kept children
    skills: dict[str, int]  # skill -> kept children that use it
    spread: float | None = None  # mean pairwise cosine distance of the kept questions (MiniLM); None without it


def pick_operator(item_id: str, round_: int, operators: list[str]) -> str:
    """The operator a parent gets in a round: spread evenly, the same on every re-run."""
    h = int(hashlib.sha1(f"{item_id}|{round_}".encode()).hexdigest(), 16)
    return operators[h % len(operators)]


def spread(texts: list[str], embedder) -> float | None:
    """Mean pairwise cosine distance of the texts' embeddings (0: all alike)."""
    if embedder is None or len(texts) < 2:
        return None
    emb = embedder.encode(texts)
    sim = emb @ emb.T
    n = len(texts)
    return float(1 - (sim.sum() - n) / (n * (n - 1)))


def evolve(items: list[Sample], pool: list[ImageAnnotation], out: str | Path, rounds: int = 3,
           operators: list[str] | None = None, vocab: Vocabulary | None = None, llm=None, generator: str = "grounded",
           judge: str = "grounded",
           embedder=None, seed: int = 0, log: Callable[[str], None] = lambda msg: None) -> tuple[list[Sample], list[RoundStats]]:
    """Evolve `items` for `rounds` rounds into `out`; return the kept children of every round and each
    round's figures.

    Each round gives every parent one operator (`pick_operator`); `generator` "grounded" writes the
    child from the annotation, "llm" asks `llm` (an `llm.LLMEvolver`); the judge (`judge`: "grounded"
    or "llm", the latter through `llm` too) eliminates. Items whose
    image the pool does not annotate are left out. DataError when `out` holds a run made otherwise.
    """
    operators = operators or list(OPERATORS)
    for op in operators:
        OPERATORS.get(op)  # DataError naming the known ones
    if "llm" in (generator, judge) and llm is None:
        raise DataError("LLM evolution or judging needs an LLM: set the llm section, or use the grounded ones")
    vocab = vocab or Vocabulary.from_pool(pool)
    out = Path(out)
    anns = {a.image: a for a in pool}
    if dup := next((i for i, n in Counter(s.id for s in items).items() if n > 1), None):
        raise DataError(f"item {dup}: more than one item has this id; children are named after their parents")
    parents = [s for s in items if s.image in anns]
    if items and not parents:
        raise DataError(f"none of the {len(items)} items is about an image the pool annotates (first: {items[0].image})")
    if len(parents) < len(items):
        log(f"{len(items) - len(parents)} of {len(items)} items are about images the pool does not annotate: left out")
    what = {"items": hashlib.sha1("".join(s.id for s in items).encode()).hexdigest(), "operators": operators, "seed": seed,
            "generator": llm.name if generator == "llm" else "grounded", "judge": llm.name if judge == "llm" else "grounded"}
    if problems := differs(out / "evolve.json", what):
        raise DataError(f"{out}: holds an evolution made with another {', '.join(problems)}; use another folder")
    write_json(out / "evolve.json", what)
    kept_all: list[Sample] = []
    stats: list[RoundStats] = []
    for r in range(1, rounds + 1):
        folder = out / f"round_{r}"
        done = (folder / "stats.json").exists()  # written last: the round is finished
        children = read_jsonl(folder / "children.jsonl", Sample) if done else \
            _one_round(parents, anns, r, operators, vocab, llm, generator, judge, seed)
        kept = [c for c in children if c.lineage.verdict.kept]  # every child carries its verdict
        if done:
            st = RoundStats.model_validate_json((folder / "stats.json").read_text())
        else:
            by_id = {p.id: p for p in parents}
            st = RoundStats(
                round=r, parents=len(parents),
                made=dict(Counter(c.lineage.operator for c in children)),
                kept=dict(Counter(c.lineage.operator for c in kept)),
                kept_share=len(kept) / len(children) if children else 0.0,
                parent_complexity=_mean([complexity(by_id[c.lineage.parent], anns[c.image], vocab) for c in kept]),
                mean_complexity=_mean([complexity(c, anns[c.image], vocab) for c in kept]),
                formats=dict(Counter(c.lineage.format for c in kept)),
                skills=dict(Counter(k for c in kept for k in c.lineage.skills)),
                spread=spread([c.instruction for c in kept], embedder))
            write_jsonl(folder / "children.jsonl", children)
            write_json(folder / "stats.json", st)
        log(f"evolution round {r}: {len(kept)} of {len(children)} children kept ({st.kept_share:.0%}), "
            f"complexity {st.parent_complexity:.1f} -> {st.mean_complexity:.1f}, {len(st.formats)} formats")
        stats.append(st)
        kept_all += kept
        parents = kept
    write_jsonl(out / "evolved.jsonl", kept_all)
    write_json(out / "stats.json", [s.model_dump() for s in stats])
    return kept_all, stats


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _one_round(parents: list[Sample], anns: dict[str, ImageAnnotation], r: int, operators: list[str], vocab: Vocabulary,
               llm, generator: str, judge: str, seed: int) -> list[Sample]:
    jobs = [(p, anns[p.image], pick_operator(p.id, r, operators)) for p in parents]
    if generator == "llm":
        made = llm.evolve_all(jobs, r)
    else:
        made = [evolve_one(p, ann, vocab, op, r, random.Random(f"{seed}|{r}|{p.id}")) for p, ann, op in jobs]
    pairs = [(p, c, ann) for (p, ann, _), c in zip(jobs, made) if c is not None]
    if judge == "llm":
        verdicts = llm.judge_all(pairs)
    else:
        verdicts = [judge_grounded(p, c, ann, vocab) for p, c, ann in pairs]
    out = []
    for (p, c, ann), v in zip(pairs, verdicts):
        if v is not None:
            c.lineage.verdict = v
            out.append(c)
    return out
