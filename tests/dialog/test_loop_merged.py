"""`train.conversation: merged`: the loop merges each round's training mix per image before training."""
import json
from collections import Counter

from rich.console import Console

from dataengine.dialog.conversation import Conversation
from dataengine.dialog.merge import items_of
from dataengine.loop import Loop
from dataengine.records import Sample, read_jsonl, write_jsonl
from tests.support.configs import small_config


def test_a_round_trains_on_its_mix_merged_per_image(tmp_path):
    cfg = small_config(rounds=1)
    cfg.train.conversation = "merged"
    cfg.merge.pool = ["caption"]
    cfg.merge.max_turns = 3
    cfg.merge.lead = "item"
    cfg.train.original_fraction = 1.0
    run = tmp_path / "run"
    # an original item on a benchmark picture: the filter never sees the original data, the merge must not take it
    from dataengine.world.build import build_world
    world = build_world(cfg, run / "world")
    bench_image = json.loads(world.benchmark.read_text())["questions"][0]["data_id"]
    starter = read_jsonl(world.original, Sample)
    write_jsonl(world.original, starter + [starter[0].model_copy(update={"id": "on-bench", "image": bench_image})])
    console = Console(record=True, width=400)
    results = Loop(cfg, run, console).run()
    assert len(results) == 2
    # the default tiny model puts the image first: nothing to warn about
    assert "puts the question before the image" not in console.export_text()
    convs = read_jsonl(run / "round_1" / "conversations.jsonl", Conversation)
    first = {}
    for c in convs:
        first.setdefault(c.image, c)
    assert all(c.turns[0].source != "caption" for c in first.values())  # merge.lead: item, and every image has one
    kept = read_jsonl(run / "round_1" / "filtered.jsonl", Sample)
    items = Counter(items_of(convs))
    assert all(n == 1 for n in items.values())
    assert {s.id for s in kept} <= set(items)  # every kept item of the round is a turn
    assert {s.id for s in starter} <= set(items) and "on-bench" not in items
    captions = [t for c in convs for t in c.turns if t.source == "caption"]
    assert len(captions) == len({c.image for c in convs})  # each merged image's caption, once
    assert max(len(c.turns) for c in convs) <= 3 and any(len(c.turns) > 1 for c in convs)
    bench_images = {q["data_id"] for q in json.loads((run / "world" / "benchmark.json").read_text())["questions"]}
    assert not bench_images & {c.image for c in convs}
    log = json.loads((run / "round_1" / "model" / "train_log.json").read_text())
    assert log["samples"] == len(convs)
