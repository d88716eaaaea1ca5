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
    return merge_items(starter[:40], [a for a in pool if a.image in images], ["caption", "grounding", "existence", "followup"], max_turns=5)


def test_llava_multi_turn_json_round_trip(conversations, world, tmp_path):
    path = export.export_llava(conversations, tmp_path / "c.json", image_root=world.image_root)
    entries = json.loads(path.read_text())
    for e, c in zip(entries, conversations):
        msgs = e["conversations"]
        assert [m["from"] for m in msgs] == ["human", "gpt"] * len(c.turns)
        assert sum(m["value"].count("<image>") for m in msgs) == 1 and msgs[0]["value"].startswith("<image>\n")
    assert export.from_llava(path) == conversations
    assert any(t.follows for c in conversations for t in c.turns)  # the follow-up chains keep what they refer to


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


def _entry(cid="c1", turns=None, **over):
    e = {"id": cid, "image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhich shape?"}, {"from": "gpt", "value": "ball"},
                                                       {"from": "human", "value": "What colour is it?"}, {"from": "gpt", "value": "red"}],
         "turns": turns if turns is not None else [{"source": "followup", "format": "word", "item": f"{cid}-0"},
                                                   {"source": "followup", "format": "word", "item": f"{cid}-1", "follows": f"{cid}-0"}]}
    return e | over


@pytest.mark.parametrize("entry, says", [
    (_entry(turns=[{"source": "s", "format": "word", "item": "c1-0"}, {"source": "s", "format": "word", "item": "c1-1", "follows": "nope"}]),
     "conversation c1: item c1-1: follows item nope, which is not an earlier turn of this conversation"),
    (_entry(turns=[{"source": "s", "format": "word", "item": "c1-0", "follows": "c1-1"}, {"source": "s", "format": "word", "item": "c1-1"}]),
     "conversation c1: item c1-0: follows item c1-1, which is not an earlier turn"),
    (_entry(turns=[{"source": "s", "format": "haiku", "item": "c1-0"}, {"source": "s", "format": "word", "item": "c1-1"}]),
     "conversation c1: format: format 'haiku' is not one of letter, word, box, sentence"),
    (_entry(turns=[{"source": "s", "format": "word"}, {"source": "s", "format": "word", "item": "c1-1"}]), "conversation c1: item: Field required"),
    (_entry(turns=[{"source": "s", "format": "word", "item": "c1-0"}]), "conversation c1: 'turns' must hold one record per human / gpt turn (2)"),
    (_entry(turns="abc"), "conversation c1: 'turns' must hold one record per human / gpt turn"),
    (_entry(turns=["abc", "def"]), "conversation c1: turn 0: its record must be an object"),
    (_entry(turns=[{"user": "Q", "source": "s", "format": "word", "item": "a"}, {"source": "s", "format": "word", "item": "b"}]),
     "conversation c1: turn 0: its record must be an object"),
    (_entry(image=5), "conversation c1: image: Input should be a valid string"),
])
def test_a_hand_edited_conversation_file_is_refused_in_one_line(tmp_path, entry, says):
    (tmp_path / "bad.json").write_text(json.dumps([entry]))
    with pytest.raises(DataError) as e:
        export.from_llava(tmp_path / "bad.json")
    assert str(e.value).startswith(f"{tmp_path / 'bad.json'}: ") and says in str(e.value), str(e.value)


def test_an_item_in_two_conversations_is_refused(tmp_path):
    (tmp_path / "twice.json").write_text(json.dumps([_entry("c1"), _entry("c2", turns=[
        {"source": "s", "format": "word", "item": "c2-0"}, {"source": "s", "format": "word", "item": "c1-1"}])]))
    with pytest.raises(DataError, match="twice.json: conversation c2: item c1-1: also a turn of conversation c1"):
        export.from_llava(tmp_path / "twice.json")
    assert len(export.from_llava(_write(tmp_path / "ok.json", [_entry("c1"), _entry("c2")]))) == 2
    with pytest.raises(DataError, match="again.json: conversation c1: given twice"):
        export.from_llava(_write(tmp_path / "again.json", [_entry("c1"), _entry("c1")]))


def test_a_broken_parquet_shard_is_named_in_one_line(conversations, world, tmp_path):
    out = export.export_hf(conversations[:3], world.image_root, tmp_path / "hf")
    shard = next(out.glob("*.parquet"))
    shard.write_bytes(shard.read_bytes()[:200])
    with pytest.raises(DataError, match=rf"{shard.name}: not a readable Parquet shard"):
        export.import_hf(out, tmp_path / "images")


def _write(path, entries):
    path.write_text(json.dumps(entries))
    return path


def test_wrong_kind_of_input_is_one_line_not_a_traceback(conversations, world, tiny_vlm, tmp_path):
    """A conversations folder imported as samples, a conversation file trained as items, `dialog-eval
    --out` an existing file, `dialog-bench --image-root` a file: one line each, exit code 2."""
    from typer.testing import CliRunner

    from dataengine.cli import app
    from dataengine.dialog.benchmark import build_dialog_benchmark
    from dataengine.records import write_jsonl
    runner = CliRunner()

    def fails(args, says):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, res.output
        assert says in " ".join(res.output.split()) and "Traceback" not in res.output, res.output
    export.export_hf(conversations[:3], world.image_root, tmp_path / "conv_hf")
    fails(["import", str(tmp_path / "conv_hf"), "--out", str(tmp_path / "s.jsonl"), "--image-root", str(tmp_path / "ii2")],
          "holds conversations (`merge --hf`), not samples: add --conversations")
    write_jsonl(tmp_path / "conv.jsonl", conversations[:3])
    tiny_vlm.save(tmp_path / "m")
    fails(["train", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "conv.jsonl"), "--image-root", str(world.image_root),
           "--out", str(tmp_path / "m1"), "--epochs", "1"], "conv.jsonl: holds conversations (`merge`'s), not items: add --conversations")
    (tmp_path / "some_file.jsonl").write_text("{}\n")
    fails(["dialog-bench", str(tmp_path / "d.json"), "--image-root", str(tmp_path / "some_file.jsonl"), "--n", "2", "--size", "64"],
          "some_file.jsonl: not a folder")
    build_dialog_benchmark(tmp_path / "img", tmp_path / "d.json", n=2, seed=3, size=64)
    fails(["dialog-eval", "--model", str(tmp_path / "m"), "--dialogs", str(tmp_path / "d.json"), "--image-root", str(tmp_path / "img"),
           "--out", str(tmp_path / "some_file.jsonl")], "some_file.jsonl: a file, not a folder")
