import pytest

from dataengine.errors import DataError
from dataengine.pope import build_pope, evaluate_pope, pope_metrics, read_pope, write_pope
from dataengine.records import ImageAnnotation, ObjectAnn, read_jsonl


def test_metrics_on_hand_made_answers():
    labels = ["yes", "yes", "yes", "no", "no", "no"]
    answers = ["yes", "yes", "no", "yes", "no", "no"]
    m = pope_metrics(labels, answers)
    assert m["accuracy"] == pytest.approx(4 / 6) and m["precision"] == pytest.approx(2 / 3)
    assert m["recall"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3) and m["yes_ratio"] == 0.5
    assert pope_metrics(["yes", "no"], ["no", "no"])["precision"] == 0.0


def ann(i, names):
    return ImageAnnotation(image_id=str(i), image=f"{i}.png", width=10, height=10,
                           objects=[ObjectAnn(id=k, name=n, bbox=(0, 0, 1, 1)) for k, n in enumerate(names)])


def test_splits_draw_absent_objects_as_pope_does():
    # "cup" is the most frequent object; "fork" appears most often with knife/plate/spoon.
    pool = [ann(0, ["knife", "plate", "spoon"]), ann(1, ["cup", "fork", "knife"]), ann(2, ["cup", "fork", "plate"]),
            ann(3, ["cup", "fork", "spoon"]), ann(4, ["cup", "dog", "cat"]), ann(5, ["cup", "dog", "bird"]),
            ann(6, ["cup", "bird", "cat"])]
    for split in ("random", "popular", "adversarial"):
        items = build_pope(pool, split)
        assert len(items) == 6 * len(pool) and sum(i.label == "yes" for i in items) == 3 * len(pool)
        for i in items:
            name = i.text.removeprefix("Is there a ").removesuffix(" in the image?")
            present = {o.name for o in next(a for a in pool if a.image == i.image).objects}
            assert (name in present) == (i.label == "yes")
    negs = lambda split: {i.text for i in build_pope(pool, split) if i.image == "0.png" and i.label == "no"}
    assert "Is there a cup in the image?" in negs("popular")
    assert "Is there a fork in the image?" in negs("adversarial")
    with pytest.raises(DataError, match="unknown POPE split"):
        build_pope(pool, "hard")


def test_file_round_trip_and_bad_label(tmp_path):
    items = build_pope([ann(0, ["a", "b", "c"]), ann(1, ["d", "e", "f"])], "random")
    p = write_pope(tmp_path / "pope.jsonl", items)
    assert read_pope(p) == items
    p.write_text('{"question_id": 7, "image": "x.png", "text": "Is there a cat?", "label": "maybe"}\n')
    with pytest.raises(DataError, match="question 7: label 'maybe'"):
        read_pope(p)


def test_evaluate_on_the_world(tiny_vlm, world):
    pool = read_jsonl(world.pool, ImageAnnotation)[:20]
    items = build_pope(pool, "adversarial")
    answers = evaluate_pope(tiny_vlm, items, world.image_root)
    assert len(answers) == len(items) and set(answers) <= {"yes", "no"}


def test_cli_build_then_eval(tiny_vlm, world, tmp_path):
    import json

    from typer.testing import CliRunner

    from dataengine.cli import app
    tiny_vlm.save(tmp_path / "m")
    r = CliRunner()
    res = r.invoke(app, ["pope-build", "--pool", str(world.pool), "--split", "popular", "--out", str(tmp_path / "pope.jsonl")])
    assert res.exit_code == 0, res.output
    res = r.invoke(app, ["pope-eval", "--model", str(tmp_path / "m"), "--questions", str(tmp_path / "pope.jsonl"),
                         "--image-root", str(world.image_root), "--out", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert set(metrics) == {"accuracy", "precision", "recall", "f1", "yes_ratio"} and 0 <= metrics["accuracy"] <= 1
