"""`dataengine merge`, `train --conversations`, `dialog-bench` and `dialog-eval`, end to end on a tiny model."""
import json

from typer.testing import CliRunner

from dataengine.cli import app
from dataengine.dialog.conversation import Conversation
from dataengine.dialog.merge import items_of
from dataengine.records import Sample, read_jsonl, write_jsonl


def test_merge_train_and_evaluate_dialogs(world, tiny_vlm, tmp_path):
    runner = CliRunner()
    w = str(world.benchmark.parent)
    items = read_jsonl(world.original, Sample)[:48]
    write_jsonl(tmp_path / "items.jsonl", items)
    res = runner.invoke(app, ["merge", str(tmp_path / "items.jsonl"), "--out", str(tmp_path / "conv.jsonl"), "--pool", f"{w}/pool.jsonl",
                              "--pool-turns", "caption,grounding,followup", "--max-turns", "4", "--benchmark", f"{w}/benchmark.json",
                              "--image-root", f"{w}/images", "--llava", str(tmp_path / "conv.json")])
    assert res.exit_code == 0, res.output
    convs = read_jsonl(tmp_path / "conv.jsonl", Conversation)
    ids = items_of(convs)
    assert {s.id for s in items} <= set(ids) and len(ids) == len(set(ids))
    assert {t.source for c in convs for t in c.turns} >= {"caption", "grounding", "followup"} and max(len(c.turns) for c in convs) <= 4
    assert len(json.loads((tmp_path / "conv.json").read_text())) == len(convs)
    # a pool without the turns to take from it says so, rather than adding nothing
    bare = runner.invoke(app, ["merge", str(tmp_path / "items.jsonl"), "--out", str(tmp_path / "c2.jsonl"), "--pool", f"{w}/pool.jsonl"])
    assert bare.exit_code == 2 and "--pool gives no turns without --pool-turns" in bare.output and not (tmp_path / "c2.jsonl").exists()
    res = runner.invoke(app, ["import", str(tmp_path / "conv.json"), "--conversations", "--out", str(tmp_path / "back.jsonl")])
    assert res.exit_code == 0, res.output
    assert read_jsonl(tmp_path / "back.jsonl", Conversation) == convs

    tiny_vlm.save(tmp_path / "m")
    res = runner.invoke(app, ["train", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "conv.jsonl"), "--conversations",
                              "--image-root", f"{w}/images", "--out", str(tmp_path / "m1"), "--epochs", "1", "--batch-size", "8",
                              "--benchmark", f"{w}/benchmark.json"])  # none of them on a benchmark picture
    assert res.exit_code == 0, res.output
    log = json.loads((tmp_path / "m1" / "train_log.json").read_text())
    assert log["samples"] == len(convs) and log["steps"] == -(-len(convs) // 8)
    assert f"on {len(convs)} conversations ({sum(len(c.turns) for c in convs)} turns)" in " ".join(res.output.split())

    res = runner.invoke(app, ["dialog-bench", str(tmp_path / "dialog.json"), "--image-root", str(tmp_path / "img"), "--n", "4",
                              "--size", "64", "--seed", "2"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["dialog-eval", "--model", str(tmp_path / "m1"), "--dialogs", str(tmp_path / "dialog.json"),
                              "--image-root", str(tmp_path / "img"), "--out", str(tmp_path / "ev"), "--max-new-tokens", "4"])
    assert res.exit_code == 0, res.output
    assert "turn 5:" in res.output and json.loads((tmp_path / "ev" / "results.json").read_text())["dialogs"] == 4
    again = runner.invoke(app, ["dialog-eval", "--model", str(tmp_path / "m1"), "--dialogs", str(tmp_path / "dialog.json"),
                                "--image-root", str(tmp_path / "img"), "--out", str(tmp_path / "ev"), "--max-new-tokens", "4"])
    assert again.exit_code == 0 and again.output == res.output  # read back, the same figures
    other = runner.invoke(app, ["dialog-eval", "--model", str(tmp_path / "m"), "--dialogs", str(tmp_path / "dialog.json"),
                                "--image-root", str(tmp_path / "img"), "--out", str(tmp_path / "ev"), "--max-new-tokens", "4"])
    assert other.exit_code == 2 and "holds the results of another dialog evaluation (model differ)" in other.output
    missing = runner.invoke(app, ["dialog-eval", "--model", str(tmp_path / "m1"), "--dialogs", str(tmp_path / "nope.json"),
                                  "--image-root", str(tmp_path / "img"), "--out", str(tmp_path / "ev2")])
    assert missing.exit_code == 2 and "nope.json: file not found" in missing.output

    # an item on a benchmark image: one line naming it, exit code 2, nothing written
    bench = json.loads(world.benchmark.read_text())["questions"][0]
    write_jsonl(tmp_path / "leak.jsonl", [items[0].model_copy(update={"id": "leak-1", "image": bench["data_id"]})])
    res = runner.invoke(app, ["merge", str(tmp_path / "leak.jsonl"), "--out", str(tmp_path / "leak-conv.jsonl"),
                              "--benchmark", f"{w}/benchmark.json", "--image-root", f"{w}/images"])
    assert res.exit_code == 2 and "item leak-1: benchmark item" in res.output
    assert not (tmp_path / "leak-conv.jsonl").exists()


def test_train_refuses_conversations_on_benchmark_pictures(world, tiny_vlm, tmp_path):
    """`train --conversations` takes what `merge` made or anything else: held to merge's rule when
    given the benchmarks, before any step."""
    import shutil

    from dataengine.dialog.benchmark import build_dialog_benchmark
    from dataengine.dialog.merge import merge_items
    runner = CliRunner()
    items = read_jsonl(world.original, Sample)[:6]
    convs = merge_items(items, max_turns=2)
    bench = json.loads(world.benchmark.read_text())["questions"][0]["data_id"]
    dialogs = build_dialog_benchmark(tmp_path / "img", tmp_path / "dialog.json", n=2, seed=5, size=64)
    copy = world.image_root / "pool" / "copy-of-bench.png"  # the same picture under another name: refused by content
    shutil.copy(world.image_root / bench, copy)
    dcopy = world.image_root / "pool" / "copy-of-dialog.png"  # a dialog picture's byte-identical copy: refused by content
    shutil.copy(tmp_path / "img" / dialogs[0].image, dcopy)
    try:
        _refused(runner, world, tiny_vlm, tmp_path, convs, items, bench, dialogs)
    finally:
        copy.unlink()
        dcopy.unlink()


def _refused(runner, world, tiny_vlm, tmp_path, convs, items, bench, dialogs):
    w = str(world.benchmark.parent)
    tiny_vlm.save(tmp_path / "m")
    cases = [(bench, "benchmark item"), ("pool/copy-of-bench.png", "benchmark image"), ("pool/copy-of-dialog.png", "dialog benchmark image")]
    for k, (image, why) in enumerate(cases):
        bad = convs[1].model_copy(update={"id": f"bad-{k}", "image": image})
        write_jsonl(tmp_path / f"conv{k}.jsonl", [convs[0], bad])
        res = runner.invoke(app, ["train", "--model", str(tmp_path / "m"), "--data", str(tmp_path / f"conv{k}.jsonl"), "--conversations",
                                  "--image-root", f"{w}/images", "--out", str(tmp_path / f"m{k}"), "--epochs", "1",
                                  "--benchmark", f"{w}/benchmark.json", "--dialog-benchmark", str(tmp_path / "dialog.json"),
                                  "--dialog-image-root", str(tmp_path / "img")])
        assert res.exit_code == 2, res.output
        line = " ".join(res.output.split())
        assert f"conv{k}.jsonl: conversation bad-{k} (item {bad.turns[0].item}): {why}" in line, res.output
        assert not (tmp_path / f"m{k}").exists()
    # single items too, with the file and the item named
    write_jsonl(tmp_path / "items.jsonl", [items[0], items[1].model_copy(update={"id": "leak", "image": bench})])
    res = runner.invoke(app, ["train", "--model", str(tmp_path / "m"), "--data", str(tmp_path / "items.jsonl"), "--image-root", f"{w}/images",
                              "--out", str(tmp_path / "mi"), "--benchmark", f"{w}/benchmark.json"])
    assert res.exit_code == 2 and "items.jsonl: item leak: benchmark item" in " ".join(res.output.split()), res.output
