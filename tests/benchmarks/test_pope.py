import pytest

from dataengine.benchmarks.pope import (
    build_pope,
    evaluate_pope,
    pope_metrics,
    read_pope,
    write_pope,
)
from dataengine.errors import DataError
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


class Oracle:
    """A model that knows the annotation: "yes" scores best exactly when the object is in the image
    (or, with `always`, always)."""

    def __init__(self, always=False):
        self.always = always

    def score_options(self, items):
        out = []
        for img, question, options in items:
            name = question.removeprefix("Is there a ").removesuffix(" in the image?")
            out.append([0.1, 0.9] if self.always or name in img.info["names"] else [0.9, 0.1])
        return out


def test_evaluate_on_the_world(world, monkeypatch):
    """POPE end to end on the world's images: a model that knows the truth scores 1.0; one that always
    says yes has recall 1, precision 0.5 and a yes-ratio of 1 (the split is balanced)."""
    import dataengine.benchmarks.pope as pope
    pool = read_jsonl(world.pool, ImageAnnotation)[:100]
    names = {a.image: {o.name for o in a.objects} for a in pool}

    def load(root, rel, where=""):
        from PIL import Image
        img = Image.new("RGB", (8, 8))
        img.info["names"] = names[rel]  # what the oracle may know of the picture
        return img
    monkeypatch.setattr(pope, "load_image", load)
    items = build_pope(pool, "adversarial")
    labels = [i.label for i in items]
    assert len(items) > 30 and labels.count("yes") == labels.count("no")
    truth = pope_metrics(labels, evaluate_pope(Oracle(), items, world.image_root))
    assert truth["accuracy"] == truth["f1"] == 1.0 and truth["yes_ratio"] == 0.5
    yes = pope_metrics(labels, evaluate_pope(Oracle(always=True), items, world.image_root))
    assert yes["recall"] == 1.0 and yes["precision"] == 0.5 and yes["yes_ratio"] == 1.0 and yes["accuracy"] == 0.5


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
    # the same figures as the library gives for the same model and questions
    from dataengine.models.vlm import VLM
    items = read_pope(tmp_path / "pope.jsonl")
    assert items == build_pope(read_jsonl(world.pool, ImageAnnotation), "popular")
    assert metrics == pope_metrics([i.label for i in items], evaluate_pope(VLM.load(tmp_path / "m"), items, world.image_root)) | \
        {"method": "likelihood", "rule": None, "splits": {}}
