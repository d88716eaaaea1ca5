import json

import pytest

from dataengine.dialog import export
from dataengine.dialog.merge import merge_items
from dataengine.errors import DataError
from dataengine.records import ImageAnnotation, Sample, read_jsonl


@pytest.fixture(scope="module")
def conversations(world):
    starter, pool = read_jsonl(world.original, Sample), read_jsonl(world.pool, ImageAnnotation)
    images = {s.image for s in starter[:40]}
    return merge_items(starter[:40], [a for a in pool if a.image in images], ["caption", "grounding", "existence"], max_turns=5)


def test_llava_multi_turn_json_round_trip(conversations, world, tmp_path):
    path = export.export_llava(conversations, tmp_path / "c.json", image_root=world.image_root)
    entries = json.loads(path.read_text())
    for e, c in zip(entries, conversations):
        msgs = e["conversations"]
        assert [m["from"] for m in msgs] == ["human", "gpt"] * len(c.turns)
        assert sum(m["value"].count("<image>") for m in msgs) == 1 and msgs[0]["value"].startswith("<image>\n")
    assert export.from_llava(path) == conversations


def test_hf_dataset_round_trip(conversations, world, tmp_path):
    import datasets
    out = export.export_hf(conversations, world.image_root, tmp_path / "hf", shard_size=7)
    ds = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    assert len(ds) == len(conversations) and ds[0]["turns"][0]["user"] == conversations[0].turns[0].user
    back = export.import_hf(out, tmp_path / "images")
    assert back == conversations
    assert (tmp_path / "images" / conversations[0].image).read_bytes() == (world.image_root / conversations[0].image).read_bytes()


def test_a_conversation_with_broken_turns_is_named(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps([{"id": "c7", "image": "a.png", "conversations": [
        {"from": "human", "value": "<image>\nQ"}, {"from": "human", "value": "Q2"}]}]))
    with pytest.raises(DataError, match="conversation c7: turns must alternate human, gpt"):
        export.from_llava(tmp_path / "bad.json")
