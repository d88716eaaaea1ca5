"""MMBench (TSV, base64 images, CircularEval) and MME (yes/no pairs), from hand-made files in the official layouts."""
import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from dataengine.benchmarks.mmbench import circular, circular_scores, read_mmbench
from dataengine.benchmarks.mme import mme_scores, read_mme
from dataengine.cli import app
from dataengine.errors import DataError
from dataengine.records import Prediction
from tests.support.files import b64_image, write_tsv

ROWS = [
    {"index": "0", "question": "What color is the image?", "hint": "nan", "A": "red", "B": "blue", "C": "green", "D": "black",
     "answer": "A", "category": "attribute_recognition", "l2-category": "finegrained_perception", "image": b64_image("red")},
    {"index": "1", "question": "Is it bright?", "hint": "Look at the whole picture.", "A": "yes", "B": "no", "C": "nan", "D": "",
     "answer": "B", "category": "image_quality", "l2-category": "coarse_perception", "image": "0"},
    {"index": "2", "question": "Which colour dominates?", "hint": "", "A": "white", "B": "blue", "C": "gray",
     "answer": "B", "category": "attribute_recognition", "l2-category": "finegrained_perception", "image": b64_image("blue", "PNG")},
]


def test_mmbench_rows_become_questions_with_their_images(tmp_path):
    write_tsv(tmp_path / "dev.tsv", ROWS)
    qs = read_mmbench(tmp_path / "dev.tsv", tmp_path / "img")
    assert [len(q.options) for q in qs] == [4, 2, 3]
    # row 1 reuses row 0's picture; names keep the index and add the content's hash
    assert qs[0].image == qs[1].image and qs[0].image.startswith("0-") and qs[0].image.endswith(".jpg")
    assert qs[2].image.startswith("2-") and qs[2].image.endswith(".png")
    assert Image.open(tmp_path / "img" / qs[2].image).getpixel((0, 0)) == (0, 0, 255)
    assert qs[1].hint == "Look at the whole picture." and qs[1].question == "Is it bright?"
    assert qs[1].text == "Look at the whole picture.\nIs it bright?" and qs[0].text == "What color is the image?"
    assert (qs[0].qtype, qs[1].qtype, qs[0].category, qs[1].l2_category) == (1, 2, "attribute_recognition", "coarse_perception")


def test_mmbench_bad_rows_name_the_file_and_question(tmp_path):
    write_tsv(tmp_path / "a.tsv", [ROWS[0] | {"answer": "D"}, ROWS[2] | {"answer": "D"}])
    with pytest.raises(DataError, match=r"a.tsv: question 2: answer 'D' is not one of its 3 options"):
        read_mmbench(tmp_path / "a.tsv", tmp_path / "img")
    write_tsv(tmp_path / "test.tsv", ROWS, fields=("index", "question", "hint", "A", "B", "C", "D", "category", "image"))
    with pytest.raises(DataError, match="missing column 'answer' \\(the test split"):
        read_mmbench(tmp_path / "test.tsv", tmp_path / "img")
    write_tsv(tmp_path / "b.tsv", [ROWS[0] | {"image": "not base64!"}])
    with pytest.raises(DataError, match="question 0: image is not base64"):
        read_mmbench(tmp_path / "b.tsv", tmp_path / "img")


def test_circular_rotations_keep_the_right_option(tmp_path):
    write_tsv(tmp_path / "dev.tsv", ROWS)
    qs = circular(read_mmbench(tmp_path / "dev.tsv", tmp_path / "img"))
    assert len(qs) == 4 + 2 + 3
    for q in qs:
        assert q.options[ord(q.answer) - 65] == {"0": "red", "1": "no", "2": "blue"}[q.question_id.split("@")[0]]
    assert [q.question_id for q in qs[:4]] == ["0@0", "0@1", "0@2", "0@3"]
    assert {q.answer for q in qs[:4]} == set("ABCD")  # the right answer visits every letter


def test_circular_scores_count_a_question_only_if_every_rotation_is_right(tmp_path):
    write_tsv(tmp_path / "dev.tsv", ROWS)
    qs = circular(read_mmbench(tmp_path / "dev.tsv", tmp_path / "img"))
    # a model that always says "A": right on rotation 0 of question 0 only where A is right
    preds = [Prediction(question_id=q.question_id, qtype=q.qtype, image=q.image, category=q.category, l2_category=q.l2_category,
                        question=q.question, options=q.options, answer=q.answer, prediction="A", correct=q.answer == "A") for q in qs]
    s = circular_scores(preds)
    assert s["overall"] == {"questions": 3, "single": 1 / 3, "circular": 0.0}
    assert s["category"]["attribute_recognition"]["single"] == 0.5 and s["l2_category"]["coarse_perception"]["single"] == 0.0
    perfect = [p.model_copy(update={"correct": True}) for p in preds]
    assert circular_scores(perfect)["overall"]["circular"] == 1.0


def make_mme(root):
    """Two subtasks in MME's two layouts: images/ + questions_answers_YN/, and side by side."""
    (root / "artwork" / "images").mkdir(parents=True)
    (root / "artwork" / "questions_answers_YN").mkdir()
    (root / "count").mkdir()
    for i in range(2):
        Image.new("RGB", (32, 32), "red").save(root / "artwork" / "images" / f"a{i}.jpg")
        (root / "artwork" / "questions_answers_YN" / f"a{i}.txt").write_text(
            "Is this painting red? Please answer yes or no.\tYes\nIs this painting blue? Please answer yes or no.\tNo\n")
        Image.new("RGB", (32, 32), "blue").save(root / "count" / f"c{i}.png")
        (root / "count" / f"c{i}.txt").write_text("Is there one square?\tYes\nAre there two squares?\tNo\n")
    Image.new("RGB", (32, 32), "white").save(root / "code_reasoning.png")  # stray files are ignored


def test_mme_layouts_and_scores(tmp_path):
    make_mme(tmp_path)
    items = read_mme(tmp_path)
    assert len(items) == 8 and items[0].image == "artwork/images/a0.jpg" and items[-1].image == "count/c1.png"
    # artwork: all right (acc 1, acc+ 1); count: image c0 half right, c1 all right (acc .75, acc+ .5)
    answers = [it.label for it in items]
    answers[4] = "no"
    s = mme_scores(items, answers)
    assert s["subtasks"]["artwork"]["score"] == 200.0
    assert s["subtasks"]["count"] == {"acc": 0.75, "acc_plus": 0.5, "score": 125.0}
    assert s["perception"] == 325.0 and s["cognition"] == 0.0
    (tmp_path / "count" / "c1.txt").write_text("Is there one square? Yes\n")
    with pytest.raises(DataError, match=r"c1.txt: line 1: expected 'question<TAB>Yes\|No'"):
        read_mme(tmp_path)


def test_cli_evaluates_mmbench_circular_and_mme(tmp_path, tiny_vlm):
    tiny_vlm.save(tmp_path / "m")
    write_tsv(tmp_path / "dev.tsv", ROWS)
    r = CliRunner().invoke(app, ["evaluate", "--model", str(tmp_path / "m"), "--benchmark", str(tmp_path / "dev.tsv"),
                                 "--image-root", str(tmp_path / "img"), "--out", str(tmp_path / "ev"), "--circular"])
    assert r.exit_code == 0, r.output
    scores = json.loads((tmp_path / "ev" / "circular.json").read_text())
    # counted here from the predictions: a question is right under CircularEval only if every rotation is
    preds = [json.loads(line) for line in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    by_question = {}
    for p in preds:
        by_question.setdefault(p["question_id"].split("@")[0], []).append(p["correct"])
    assert scores["overall"]["questions"] == 3 and [len(v) for v in by_question.values()] == [4, 2, 3]
    assert scores["overall"]["circular"] == sum(all(v) for v in by_question.values()) / 3
    assert scores["overall"]["single"] == sum(p["correct"] for p in preds if p["question_id"].endswith("@0")) / 3
    results = json.loads((tmp_path / "ev" / "results.json").read_text())
    # results.json is the single pass (rotation 0), as VLMEvalKit prints it, with the circular score beside it
    assert results["total"] == 3 and results["per_type"]["1"]["name"] == "attribute_recognition"
    assert results["circular"] == scores["overall"]["circular"] and results["correct"] / 3 == scores["overall"]["single"]
    assert set(results["per_l2"]) == {"finegrained_perception", "coarse_perception"}
    make_mme(tmp_path / "mme")
    r = CliRunner().invoke(app, ["mme-eval", "--model", str(tmp_path / "m"), "--root", str(tmp_path / "mme"), "--out", str(tmp_path / "mme.json")])
    assert r.exit_code == 0, r.output
    assert set(json.loads((tmp_path / "mme.json").read_text())["subtasks"]) == {"artwork", "count"}


def test_abs_plans_over_benchmark_categories(tmp_path, tiny_vlm):
    from dataengine.evaluate import run_evaluate
    from dataengine.sample import plan
    write_tsv(tmp_path / "dev.tsv", ROWS)
    qs = read_mmbench(tmp_path / "dev.tsv", tmp_path / "img")
    res = run_evaluate(tiny_vlm, qs, tmp_path / "img", tmp_path / "ev")
    p = plan(res.accuracies(), [], 10, names={t: r.name for t, r in res.per_type.items()})
    assert {t.name for t in p.types.values()} == {"attribute_recognition", "image_quality"} and p.budget == 10
