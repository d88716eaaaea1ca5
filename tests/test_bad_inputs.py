"""Bad and odd input a new user's files carry, found by a newcomer's review: each ends in one line
naming the file and the item (exit code 2 at the command line), or is read as it is meant."""
import json

import pytest
from typer.testing import CliRunner

from dataengine.cli import app
from dataengine.errors import DataError
from tests.support.files import b64_image, image, vg_files, write_tsv, write_vg


def one_line(args, needle):
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 2, (args, r.output, r.exception)
    assert needle in " ".join(r.output.split()) and r.output.strip().count("\n") == 0, r.output
    return r


def test_lmms_eval_doc_ids_count_the_questions_this_project_skips(tmp_path, world):
    from dataengine.benchmarks.seed import read_seed
    seed = json.loads(world.benchmark.read_text())
    video = seed["questions"][0] | {"question_id": "v1", "data_type": "video", "question_type_id": 10}
    seed["questions"] = [video] + seed["questions"]
    (tmp_path / "b.json").write_text(json.dumps(seed))
    qs = read_seed(tmp_path / "b.json")
    (tmp_path / "s.jsonl").write_text("".join(json.dumps({"doc_id": i + 1, "filtered_resps": [[q.answer]]}) + "\n" for i, q in enumerate(qs)))
    r = CliRunner().invoke(app, ["score", "--benchmark", str(tmp_path / "b.json"), "--predictions", str(tmp_path / "s.jsonl"),
                                 "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["correct"] == len(qs)


def test_prediction_files_name_the_line_or_row(tmp_path, world):
    (tmp_path / "p.jsonl").write_text('{"index": 0, "prediction": "A"}\n{"index": 1, "predi\n')
    one_line(["score", "--benchmark", str(world.benchmark), "--predictions", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "e")],
             "p.jsonl: line 2: not valid JSON")
    (tmp_path / "p.xlsx").write_text("index\tprediction\n0\tA\n")
    one_line(["score", "--benchmark", str(world.benchmark), "--predictions", str(tmp_path / "p.xlsx"), "--out", str(tmp_path / "e")],
             "p.xlsx: not a readable .xlsx spreadsheet")
    (tmp_path / "p.json").write_text('"A"')
    one_line(["score", "--benchmark", str(world.benchmark), "--predictions", str(tmp_path / "p.json"), "--out", str(tmp_path / "e")],
             "p.json: expected a list of predictions")
    (tmp_path / "u.tsv").write_text("index\tprediction\n0\tA\n", encoding="utf-16")
    one_line(["score", "--benchmark", str(world.benchmark), "--predictions", str(tmp_path / "u.tsv"), "--out", str(tmp_path / "e")],
             "u.tsv: not UTF-8 text")


def test_an_evaluation_folder_holds_one_evaluation(tmp_path, world, tiny_vlm):
    tiny_vlm.save(tmp_path / "m")
    args = ["evaluate", "--model", str(tmp_path / "m"), "--image-root", str(world.image_root), "--out", str(tmp_path / "ev"), "--no-blind"]
    assert CliRunner().invoke(app, [*args, "--benchmark", str(world.benchmark)]).exit_code == 0
    r = CliRunner().invoke(app, [*args, "--benchmark", str(world.benchmark)])
    assert r.exit_code == 0 and "already evaluated" in " ".join(r.output.split())
    one_line([*args, "--benchmark", str(world.benchmark), "--method", "letter"], "holds the results of another evaluation (method")


def test_tsv_indexes_are_whole_ascii_numbers_and_unique(tmp_path):
    fields = ("index", "image", "question", "answer", "category")
    rows = [{"index": "0", "image": b64_image("red"), "question": "Red?", "answer": "yes", "category": "random"},
            {"index": "0", "image": b64_image("blue"), "question": "Blue?", "answer": "yes", "category": "random"}]
    write_tsv(tmp_path / "POPE.tsv", rows, fields=fields)
    one_line(["pope-eval", "--model", "m", "--questions", str(tmp_path / "POPE.tsv"), "--image-root", str(tmp_path / "i")],
             "question 0: the index appears twice")
    write_tsv(tmp_path / "m.tsv", [{"index": "²", "question": "q", "A": "a", "B": "b", "answer": "A", "category": "c",
                                    "image": b64_image("red")}], fields=("index", "question", "A", "B", "answer", "category", "image"))
    from dataengine.benchmarks.mmbench import read_mmbench
    with pytest.raises(DataError, match="index '²' is not a whole number"):
        read_mmbench(tmp_path / "m.tsv", tmp_path / "i")
    (tmp_path / "e.jsonl").write_text("")
    one_line(["pope-eval", "--model", "m", "--questions", str(tmp_path / "e.jsonl"), "--image-root", str(tmp_path)], "e.jsonl: no questions")


def coco(tmp_path, images=None, categories=None, annotations=None, make_pictures=True):
    images = images or [{"id": 1, "file_name": "1.jpg", "width": 40, "height": 30}]
    if make_pictures:
        for im in images:
            image(tmp_path / "root" / im["file_name"], (40, 30))
    (tmp_path / "cap.json").write_text(json.dumps({"images": images, "annotations": [
        {"id": 1, "image_id": images[0]["id"], "caption": "A thing."}]}))
    (tmp_path / "ins.json").write_text(json.dumps({"images": images, "categories": categories or [{"id": 1, "name": "person"}],
                                                   "annotations": annotations or [{"id": 1, "image_id": 1, "bbox": [1, 1, 5, 5], "category_id": 1}]}))
    return ["pool", "--coco-captions", str(tmp_path / "cap.json"), "--coco-instances", str(tmp_path / "ins.json"),
            "--image-root", str(tmp_path / "root"), "--out", str(tmp_path / "pool.jsonl")]


@pytest.mark.parametrize("over,needle", [
    (dict(images=[{"id": 1, "file_name": "1.jpg", "width": 40, "height": 30}, {"id": 1, "file_name": "2.jpg", "width": 40, "height": 30}]),
     "image 1: the image id appears twice"),
    (dict(categories=[{"id": 1, "name": "person"}, {"id": 1, "name": "car"}]), "category 1: the category id appears twice"),
    (dict(annotations=[{"id": 1, "image_id": 1, "bbox": [1, 1, float("nan"), 5], "category_id": 1}]), "annotation 1: field 'bbox' should be 4 finite numbers"),
    (dict(annotations=[{"id": 1, "image_id": 1, "bbox": [1, 1, 5, 5], "category_id": 1, "iscrowd": "0"}]), "annotation 1: field 'iscrowd' should be 0 or 1"),
    (dict(images=[{"id": 1, "file_name": "1.jpg", "width": 0, "height": 30}]), "image 1: width and height should be positive"),
    (dict(make_pictures=False), "none of its 1 pictures is under"),
])
def test_coco_files_that_cannot_be_right(tmp_path, over, needle):
    one_line(coco(tmp_path, **over), needle)
    assert not (tmp_path / "pool.jsonl").exists()


def test_lvis_names_keep_the_disambiguator_they_need(tmp_path):
    from dataengine.pools import read_coco
    args = coco(tmp_path)
    (tmp_path / "lvis.json").write_text(json.dumps({
        "images": [{"id": 1, "neg_category_ids": [3]}],
        "categories": [{"id": 1, "name": "bow_(weapon)"}, {"id": 2, "name": "bow_(decorative_ribbons)"}, {"id": 3, "name": "bat_(animal)"},
                       {"id": 4, "name": "bat_(baseball_bat)"}, {"id": 5, "name": "bus_(vehicle)"}],
        "annotations": [{"id": k, "image_id": 1, "bbox": [k * 6, 1, 5, 5], "category_id": c} for k, c in ((1, 1), (2, 2), (3, 4), (4, 5))]}))
    [rec] = read_coco(args[2], args[4], args[6], lvis_json=tmp_path / "lvis.json")
    assert [o.name for o in rec.objects] == ["person", "bow (weapon)", "bow (decorative ribbons)", "bat (baseball bat)", "bus"]
    assert rec.absent == ["bat (animal)"]


def test_visual_genome_and_folder_fields_of_the_wrong_kind(tmp_path):
    files = vg_files()
    files["attributes.json"][0]["attributes"][0]["attributes"] = "tall"
    vg, images = write_vg(tmp_path, files)
    one_line(["pool", "--vg", str(vg), "--image-root", str(images), "--out", str(tmp_path / "p.jsonl")],
             "object 10: field 'attributes' should be a list")
    files = vg_files()
    files["objects.json"][0]["objects"][0]["w"] = float("inf")
    vg, images = write_vg(tmp_path / "b", files)
    one_line(["pool", "--vg", str(vg), "--image-root", str(images), "--out", str(tmp_path / "p.jsonl")], "field 'w' should be a number")
    image(tmp_path / "f" / "a.png", (10, 10))
    (tmp_path / "c.jsonl").write_text(json.dumps({"image": "a\u0000.png", "caption": "x"}) + "\n")
    one_line(["pool", "--captions", str(tmp_path / "c.jsonl"), "--image-root", str(tmp_path / "f"), "--out", str(tmp_path / "p.jsonl")],
             "a path with a NUL character")
    (tmp_path / "c.jsonl").write_text(json.dumps({"image": "gone.png", "caption": "x"}) + "\n")
    r = one_line(["pool", "--captions", str(tmp_path / "c.jsonl"), "--image-root", str(tmp_path / "f"), "--out", str(tmp_path / "p.jsonl")],
                 "no image of the source could be kept")
    assert not (tmp_path / "p.jsonl").exists() and r


def test_plans_that_ask_for_nothing_or_too_much(tmp_path, world):
    (tmp_path / "e.json").write_text('{"types": {}}')
    (tmp_path / "g.jsonl").write_text("kept\n")
    one_line(["generate", "--plan", str(tmp_path / "e.json"), "--pool", str(world.pool), "--out", str(tmp_path / "g.jsonl")], "asks for no items")
    assert (tmp_path / "g.jsonl").read_text() == "kept\n"  # nothing already written is lost
    (tmp_path / "t.json").write_text('{"types": {"12": {"qtype": 12, "count": 3}}}')
    one_line(["generate", "--plan", str(tmp_path / "t.json"), "--pool", str(world.pool), "--out", str(tmp_path / "g.jsonl")],
             "t.json: types.12: no generator writes question type 12")
    (tmp_path / "big.json").write_text('{"types": {"9": {"qtype": 9, "count": 100000}}}')
    r = CliRunner().invoke(app, ["generate", "--plan", str(tmp_path / "big.json"), "--pool", str(world.pool), "--out", str(tmp_path / "b.jsonl")])
    assert r.exit_code == 0 and "of the 100000 items asked for" in " ".join(r.output.split())


def test_every_type_keeps_a_question_for_planning(tmp_path, world):
    from dataengine.benchmarks.seed import read_seed
    from dataengine.evaluate import split
    qs = read_seed(world.benchmark)
    parts = split(qs[:9] + qs[9:18], 0.99)
    per_type = {}
    for q in qs[:18]:
        per_type.setdefault(q.qtype, []).append(parts[q.question_id])
    assert all("diagnosis" in v for v in per_type.values())
