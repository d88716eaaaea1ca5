"""A small run directory to review, made in about a second: the synthetic world, one round's
generated items (grounded, so they pass the filter) plus a few that fail it, filtered as the loop
filters them; and an IPO folder with one prompt version's items."""
from pathlib import Path

from dataengine import stages
from dataengine.config import dump_config
from dataengine.generate import GroundedGenerator, generate
from dataengine.llm.prompt import PromptStore, PromptVersion
from dataengine.records import ImageAnnotation, Sample, read_jsonl, write_jsonl, write_text
from dataengine.world.build import build_world

from .configs import small_config


def review_run(root: Path, per_type: int = 2) -> Path:
    cfg = small_config()
    root.mkdir(parents=True, exist_ok=True)
    write_text(root / "config.yaml", dump_config(cfg))
    inputs = build_world(cfg, root / "world")
    pool = read_jsonl(inputs.pool, ImageAnnotation)
    items = generate({t: per_type for t in (3, 4, 5, 9)}, pool, GroundedGenerator(stages.vocabulary(pool), source="round-1"), seed=1)
    a = items[0]
    bad = [a.model_copy(update={"id": "round-1-3-badopts", "options": [a.options[0]] * 4}),  # options not distinct
           a.model_copy(update={"id": "round-1-3-leak", "instruction": f"Is it {a.short_answer}?"})]  # leaks its answer
    generated = items + bad
    rd = root / "round_1"
    write_jsonl(rd / "generated.jsonl", generated)
    guard = stages.benchmark_guard(stages.read_questions(inputs)[0], inputs)
    stages.filter_items(generated, rd / "filtered.jsonl", guard, pool, cfg, seen=read_jsonl(inputs.original, Sample),
                        rejected=rd / "rejected.jsonl", report=rd / "filter_report.json")
    store = PromptStore(root / "ipo" / "prompts.jsonl")
    store.save(PromptVersion(version=1, rules="- Ask about the image."))
    ipo_items = [s.model_copy(update={"id": f"ipo-v1-{s.qtype}-{i}", "source": "ipo-v1", "generator": "llm:test:prompt-v1"})
                 for i, s in enumerate(items[:3])]
    write_jsonl(root / "ipo" / "v1" / "items.jsonl", ipo_items)
    return root
