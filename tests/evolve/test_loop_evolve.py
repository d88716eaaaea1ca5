"""The loop's evolution option: a round evolves its kept items, and its training set holds evolved
items in place of a share of them, the count unchanged (slow, still run in CI)."""
import json

import pytest

from dataengine.config import EvolveConfig
from dataengine.loop import Loop
from dataengine.records import Sample, read_jsonl
from tests.support.configs import small_config

pytestmark = pytest.mark.slow


def test_a_round_evolves_its_kept_items_before_training(tmp_path):
    cfg = small_config(rounds=1, evolve=EvolveConfig(rounds=2, share=1.0))
    loop = Loop(cfg, tmp_path / "run")
    loop.run()
    rd = tmp_path / "run" / "round_1"
    kept = read_jsonl(rd / "filtered.jsonl", Sample)
    evolved = read_jsonl(rd / "evolve" / "evolved.jsonl", Sample)
    assert evolved and all(c.lineage.verdict.kept for c in evolved)
    assert [r["round"] for r in json.loads((rd / "evolve" / "stats.json").read_text())] == [1, 2]
    trained = loop.incremental(1)
    assert len(trained) == len(kept)
    roots = {c.lineage.root for c in evolved}
    assert sum(s.lineage is not None for s in trained) == len(roots & {s.id for s in kept})
    assert (rd / "model" / "config.json").exists()
