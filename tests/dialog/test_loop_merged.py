"""`train.conversation: merged`: the loop merges each round's training mix per image before training."""
import json
from collections import Counter

from dataengine.dialog.conversation import Conversation
from dataengine.dialog.merge import items_of
from dataengine.loop import Loop
from dataengine.records import Sample, read_jsonl
from tests.support.configs import small_config


def test_a_round_trains_on_its_mix_merged_per_image(tmp_path):
    cfg = small_config(rounds=1)
    cfg.train.conversation = "merged"
    cfg.merge.pool = ["caption"]
    cfg.merge.max_turns = 3
    run = tmp_path / "run"
    results = Loop(cfg, run).run()
    assert len(results) == 2
    convs = read_jsonl(run / "round_1" / "conversations.jsonl", Conversation)
    kept = read_jsonl(run / "round_1" / "filtered.jsonl", Sample)
    items = Counter(items_of(convs))
    assert all(n == 1 for n in items.values())
    assert {s.id for s in kept} <= set(items)  # every kept item of the round is a turn
    captions = [t for c in convs for t in c.turns if t.source == "caption"]
    assert len(captions) == len({c.image for c in convs})  # each merged image's caption, once
    assert max(len(c.turns) for c in convs) <= 3 and any(len(c.turns) > 1 for c in convs)
    bench_images = {q["data_id"] for q in json.loads((run / "world" / "benchmark.json").read_text())["questions"]}
    assert not bench_images & {c.image for c in convs}
    log = json.loads((run / "round_1" / "model" / "train_log.json").read_text())
    assert log["samples"] == len(convs)
