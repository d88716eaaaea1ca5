"""Benchmark files in the forms their publishers ship, scored as VLMEvalKit scores them."""
import json

import pytest
from PIL import Image
from typer.testing import CliRunner

from dataengine.benchmarks.mmbench import circular, generator_types, read_mmbench
from dataengine.benchmarks.seed import read_seed
from dataengine.cli import app
from dataengine.errors import DataError
from dataengine.evaluate import evaluate, summarize
from dataengine.records import read_jsonl
from tests.support.files import b64_image, write_tsv

FIELDS = ("index", "question", "hint", "A", "B", "C", "D", "E", "answer", "category", "l2-category", "image")


def rotations(index, question, options, answer, category, l2, image, copy_image=None):
    """The rows of one question as MMBench's DEV file ships them: itself, then a copy per rotation of
    its options (index + k * 1,000,000), whose image field names the first row."""
    n, right = len(options), "ABCDE".index(answer)
    rows = []
    for k in range(n):
        opts = options[k:] + options[:k]
        row = {"index": str(index + k * 1_000_000), "question": question, "hint": "nan", "answer": "ABCDE"[(right - k) % n],
               "category": category, "l2-category": l2, "image": image if k == 0 else (copy_image or str(index))}
        row |= dict(zip("ABCDE", opts))
        rows.append(row)
    return rows


def official_rows():
    q0 = rotations(0, "What colour is the square?", ["red", "blue", "green", "black"], "A", "attribute_recognition",
                   "finegrained_perception", b64_image("red"))
    q1 = rotations(1, "Is it bright?", ["yes", "no"], "B", "image_quality", "coarse_perception", "0")  # row 0's picture
    q2 = rotations(2, "Which colour dominates?", ["white", "blue", "gray", "pink", "red"], "B", "attribute_recognition",
                   "finegrained_perception", b64_image("blue", "PNG"))
    return [q2[3], *q0, *q1, *q2[:3], q2[4]]  # a copy before its first row, as the file may order them


class SaysA:
    """Answers A by likelihood, and "The answer is A." by letter."""

    def score_options(self, items):
        return [[0.0] + [1.0] * (len(o) - 1) for _, _, o in items]

    def generate(self, items, max_new_tokens=8):
        self.max_new_tokens = max_new_tokens
        return ["Looking at the picture carefully, the answer is A." for _ in items]


def test_the_official_mmbench_tsv_with_its_circular_copies(tmp_path):
    write_tsv(tmp_path / "dev.tsv", official_rows(), fields=FIELDS)
    qs = read_mmbench(tmp_path / "dev.tsv", tmp_path / "img")
    assert len(qs) == 4 + 2 + 5 and circular(qs) == qs  # the copies are the rotations: none is added
    by_group = {}
    for q in qs:
        by_group.setdefault(q.group, []).append(q)
    assert {g: sorted(q.rotation for q in v) for g, v in by_group.items()} == {"0": [0, 1, 2, 3], "1": [0, 1], "2": [0, 1, 2, 3, 4]}
    assert all(q.options[ord(q.answer) - 65] == {"0": "red", "1": "no", "2": "blue"}[q.group] for q in qs)
    assert len({q.image for q in by_group["0"] + by_group["1"]}) == 1 and len(by_group["2"][0].options) == 5
    preds = evaluate(SaysA(), qs, tmp_path / "img")
    res = summarize(preds)
    # VLMEvalKit: the single pass is the first row of each question; CircularEval needs every rotation right
    assert res.total == 3 and res.correct == 1  # only question 0 has A right in its first row
    assert res.circular == 0.0  # "A" is wrong in some rotation of every question
    assert res.per_l2["finegrained_perception"].total == 2


def test_cli_on_the_official_file_prints_the_circular_score(tmp_path, tiny_vlm):
    tiny_vlm.save(tmp_path / "m")
    write_tsv(tmp_path / "dev.tsv", official_rows(), fields=FIELDS)
    r = CliRunner().invoke(app, ["evaluate", "--model", str(tmp_path / "m"), "--benchmark", str(tmp_path / "dev.tsv"),
                                 "--image-root", str(tmp_path / "img"), "--out", str(tmp_path / "ev"), "--no-blind"])
    assert r.exit_code == 0, r.output
    circ = json.loads((tmp_path / "ev" / "circular.json").read_text())
    preds = [json.loads(line) for line in (tmp_path / "ev" / "predictions.jsonl").read_text().splitlines()]
    assert len(preds) == 11  # each row asked once, not rotated again
    groups = {}
    for p in preds:
        groups.setdefault(str(int(p["question_id"]) % 1_000_000), []).append(p["correct"])
    assert circ["overall"]["circular"] == sum(all(v) for v in groups.values()) / 3


def test_copies_without_their_question_and_gaps_are_refused(tmp_path):
    rows = official_rows()
    write_tsv(tmp_path / "a.tsv", [r for r in rows if r["index"] != "1"], fields=FIELDS)
    with pytest.raises(DataError, match="question 1000001: a circular copy of question 1, which is not in the file"):
        read_mmbench(tmp_path / "a.tsv", tmp_path / "img")
    write_tsv(tmp_path / "b.tsv", [rows[1] | {"C": "nan"}], fields=FIELDS)
    with pytest.raises(DataError, match="option columns A, B, D leave a gap"):
        read_mmbench(tmp_path / "b.tsv", tmp_path / "img")
    write_tsv(tmp_path / "c.tsv", [rows[1] | {"index": "../../x"}], fields=FIELDS)
    with pytest.raises(DataError, match="index '../../x' is not a whole number"):
        read_mmbench(tmp_path / "c.tsv", tmp_path / "img")


def test_the_letter_method_reads_verbose_replies_and_asks_for_enough_tokens(tmp_path):
    write_tsv(tmp_path / "dev.tsv", official_rows(), fields=FIELDS)
    qs = read_mmbench(tmp_path / "dev.tsv", tmp_path / "img")
    model = SaysA()
    preds = evaluate(model, qs, tmp_path / "img", method="letter", max_new_tokens=48)
    assert model.max_new_tokens == 48 and all(p.prediction == "A" and p.extracted == "letter" for p in preds)


def test_byte_order_marks_and_crlf_everywhere(tmp_path, world):
    from dataengine.config import load_config
    from dataengine.records import Sample
    bom = "\ufeff"
    seed = json.loads(world.benchmark.read_text())
    (tmp_path / "b.json").write_text(bom + json.dumps(seed), encoding="utf-8")
    assert len(read_seed(tmp_path / "b.json")) == 36
    write_tsv(tmp_path / "t.tsv", official_rows(), fields=FIELDS)
    (tmp_path / "bom.tsv").write_text(bom + (tmp_path / "t.tsv").read_text().replace("\r\n", "\n").replace("\n", "\r\n"), encoding="utf-8")
    assert len(read_mmbench(tmp_path / "bom.tsv", tmp_path / "img")) == 11
    lines = world.original.read_text().splitlines()[:3]
    (tmp_path / "s.jsonl").write_text(bom + "\r\n".join(lines) + "\r\n", encoding="utf-8")
    assert len(read_jsonl(tmp_path / "s.jsonl", Sample)) == 3
    (tmp_path / "c.yaml").write_text(bom + "rounds: 2\r\n", encoding="utf-8")
    assert load_config(tmp_path / "c.yaml").rounds == 2
    (tmp_path / "latin.jsonl").write_bytes("{\"id\": \"é\"}".encode("latin-1"))
    with pytest.raises(DataError, match="latin.jsonl: not UTF-8 text"):
        read_jsonl(tmp_path / "latin.jsonl", Sample)


def seed_file(tmp_path, questions, table=None, name="seed.json"):
    data = {"questions": questions} | ({"question_type": table} if table else {})
    (tmp_path / name).write_text(json.dumps(data))
    return tmp_path / name


def sq(qid, qtype, **over):
    return {"question_id": qid, "question": "Where is the cat?", "choice_a": "top left", "choice_b": "top right",
            "choice_c": "bottom left", "choice_d": "bottom right", "answer": "C", "question_type_id": qtype,
            "data_id": "a.png", "data_type": "image"} | over


def test_the_files_own_type_table_names_and_routes_the_types(tmp_path):
    # the published SEED-Bench.json numbers Location 3 and Attributes 4, the other way round from its paper
    table = {"Scene Understanding": 1, "Instance Identity": 2, "Instance Location": 3, "Instance Attributes": 4}
    qs = read_seed(seed_file(tmp_path, [sq("1", 3), sq("2", 4, question="What colour is the cat?")], table))
    assert [(q.qtype, q.category) for q in qs] == [(3, "Instance Location"), (4, "Instance Attributes")]
    names = {q.qtype: q.category for q in qs}
    assert generator_types(names) == {3: 4, 4: 3}  # location questions go to the location generator
    with pytest.raises(DataError, match=r"question 9: question_type_id 7 is not in the file's question_type table"):
        read_seed(seed_file(tmp_path, [sq("9", 7)], table))
    with pytest.raises(DataError, match="question_type gives number 3 to both"):
        read_seed(seed_file(tmp_path, [sq("1", 3)], {"A": 3, "B": 3}))


@pytest.mark.parametrize("over,needle", [
    ({"choice_a": {"text": "x"}}, "field 'choice_a' should be text"),
    ({"question_type_id": 3.7}, "question_type_id 3.7 is not a whole number"),
    ({"question_type_id": True}, "question_type_id True is not a whole number"),
    ({"data_id": ["a.png", "b.png"]}, "field 'data_id' should be the image's path"),
])
def test_fields_are_checked_not_coerced(tmp_path, over, needle):
    with pytest.raises(DataError, match="question 1: " + needle.replace("(", r"\(").replace(")", r"\)")):
        read_seed(seed_file(tmp_path, [sq("1", 3, **over)]))


def test_duplicate_ids_and_seed_bench_2(tmp_path, capsys):
    with pytest.raises(DataError, match="question 1: the question_id appears twice"):
        read_seed(seed_file(tmp_path, [sq("1", 3), sq("1", 3)]))
    table = {"Scene Understanding": 1, "Instance Location": 3, "Text-to-Image Generation": 23}
    qs = read_seed(seed_file(tmp_path, [sq("1", 3, data_type="Single Image", data_id=["cc3m/1.jpg"]),
                                        sq("2", 1, data_type="Multiple Images", data_id=["a.jpg", "b.jpg"]),
                                        sq("3", 23, data_type="Image Generation")], table))
    assert [(q.question_id, q.image) for q in qs] == [("1", "cc3m/1.jpg")]
    out = capsys.readouterr().out
    assert "skipped 1 Multiple Images, 1 Image Generation questions" in out


def yes_no_rows(rows):
    return [{"index": str(i), "image": b64_image(c) if i == 0 or c != "red" else "0", "question": q, "answer": a, "category": cat,
             "image_path": f"{cat}/{c}.jpg"} for i, (c, q, a, cat) in enumerate(rows)]


class ReadsColour:
    """A model that sees the picture's colour: "yes" when the question names it."""

    def score_options(self, items):
        return [[0.0, 1.0] if self._yes(img, q) else [1.0, 0.0] for img, q, _ in items]

    def generate(self, items, max_new_tokens=8):
        return ["Yes, it is." if self._yes(img, q) else "No, there is not." for img, q in items]

    @staticmethod
    def _yes(img, q):
        r, _, b = img.getpixel((0, 0))  # JPEG: near the colour, not on it
        return ("red" if r > 200 and b < 60 else "blue" if b > 200 and r < 60 else "?") in q


def test_vlmevalkit_pope_and_mme_tsvs_and_free_text_answers(tmp_path, monkeypatch):
    from dataengine.benchmarks.mme import mme_scores, read_mme
    from dataengine.benchmarks.pope import PopeItem, evaluate_pope, pope_metrics, read_pope
    from tests.support.files import write_tsv
    fields = ("index", "image", "question", "answer", "category", "image_path")
    pope = yes_no_rows([("red", "Is there something red?", "Yes", "random"), ("red", "Is there something blue?", "No", "random"),
                        ("blue", "Is there something blue?", "yes", "adversarial"), ("blue", "Is it red?", "no", "adversarial")])
    write_tsv(tmp_path / "POPE.tsv", pope, fields=fields)
    items = read_pope(tmp_path / "POPE.tsv", tmp_path / "img")
    assert [(i.label, i.category) for i in items] == [("yes", "random"), ("no", "random"), ("yes", "adversarial"), ("no", "adversarial")]
    for method, rule in (("likelihood", "pope"), ("generate", "pope"), ("generate", "vlmevalkit")):
        answers = evaluate_pope(ReadsColour(), items, tmp_path / "img", method=method, rule=rule)
        assert pope_metrics([i.label for i in items], answers)["accuracy"] == 1.0, (method, rule)
    (tmp_path / "p.jsonl").write_text(json.dumps({"question_id": 1, "image": "x.png", "text": "Is there a cat?", "label": "Yes"}) + "\n")
    assert read_pope(tmp_path / "p.jsonl")[0].label == "yes"
    mme = yes_no_rows([("red", "Is it red?", "Yes", "color"), ("red", "Is it blue?", "No", "color"),
                       ("blue", "Is it blue?", "Yes", "color"), ("blue", "Is it red?", "Yes", "color")])  # the last one is wrong on purpose
    write_tsv(tmp_path / "MME.tsv", mme, fields=fields)
    mitems = read_mme(tmp_path / "MME.tsv", tmp_path / "mimg")
    asked = [PopeItem(question_id=i, image=it.image, text=it.question, label=it.label) for i, it in enumerate(mitems)]
    scores = mme_scores(mitems, evaluate_pope(ReadsColour(), asked, tmp_path / "mimg", method="generate", rule="vlmevalkit"))
    # acc+ pairs the two questions of each picture by its image_path: red both right, blue one wrong
    assert scores["subtasks"]["color"] == {"acc": 0.75, "acc_plus": 0.5, "score": 125.0}


def test_score_predictions_made_elsewhere(tmp_path, world):
    from openpyxl import Workbook

    from dataengine.benchmarks.seed import read_seed as rs
    qs = rs(world.benchmark)
    wb = Workbook()
    ws = wb.active
    ws.append(["index", "question", "prediction"])
    for q in qs:  # VLMEvalKit writes ids as numbers and the raw reply
        ws.append([int(q.question_id), q.question, f"The answer is {q.answer}." if q.qtype <= 4 else "I am not sure"])
    wb.save(tmp_path / "preds.xlsx")
    r = CliRunner().invoke(app, ["score", "--benchmark", str(world.benchmark), "--predictions", str(tmp_path / "preds.xlsx"),
                                 "--out", str(tmp_path / "ev")])
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert res["correct"] == sum(q.qtype <= 4 for q in qs) and res["extraction"]["none"] == sum(q.qtype > 4 for q in qs)
    # lmms-eval's samples: doc_id is the question's place in the file
    (tmp_path / "samples.jsonl").write_text("".join(json.dumps({"doc_id": i, "filtered_resps": [[q.answer]]}) + "\n"
                                                    for i, q in enumerate(qs)))
    r = CliRunner().invoke(app, ["score", "--benchmark", str(world.benchmark), "--predictions", str(tmp_path / "samples.jsonl"),
                                 "--out", str(tmp_path / "ev2")])
    assert r.exit_code == 0, r.output
    assert json.loads((tmp_path / "ev2" / "results.json").read_text())["correct"] == len(qs)
    # and ABS plans from it
    r = CliRunner().invoke(app, ["plan", "--eval", str(tmp_path / "ev"), "--out", str(tmp_path / "plan.json")])
    assert r.exit_code == 0, r.output
    (tmp_path / "bad.jsonl").write_text(json.dumps({"index": 99999, "prediction": "A"}) + "\n")
    r = CliRunner().invoke(app, ["score", "--benchmark", str(world.benchmark), "--predictions", str(tmp_path / "bad.jsonl"),
                                 "--out", str(tmp_path / "ev3")])
    assert r.exit_code == 2 and "bad.jsonl: line 1: question 99999 is not in the benchmark" in " ".join(r.output.split())


def test_picture_names_come_from_content_so_files_never_share_the_wrong_one(tmp_path):
    a = [{"index": "0", "question": "q", "A": "x", "B": "y", "answer": "A", "category": "c", "image": b64_image("red")}]
    b = [a[0] | {"image": b64_image("blue")}]
    write_tsv(tmp_path / "a.tsv", a, fields=FIELDS)
    write_tsv(tmp_path / "b.tsv", b, fields=FIELDS)
    qa, qb = read_mmbench(tmp_path / "a.tsv", tmp_path / "img"), read_mmbench(tmp_path / "b.tsv", tmp_path / "img")
    assert qa[0].image != qb[0].image
    assert Image.open(tmp_path / "img" / qb[0].image).getpixel((0, 0))[2] > 200


def test_an_evaluation_folder_belongs_to_one_model_or_one_predictions_file(tmp_path, world, tiny_vlm):
    from dataengine.benchmarks.seed import read_seed as rs
    qs = rs(world.benchmark)
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"index": q.question_id, "prediction": q.answer}) + "\n" for q in qs))
    score = ["score", "--benchmark", str(world.benchmark), "--predictions", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "ev")]
    assert CliRunner().invoke(app, score).exit_code == 0
    assert CliRunner().invoke(app, score).exit_code == 0  # the same file scored again: the same folder
    tiny_vlm.save(tmp_path / "m1")
    ev = ["evaluate", "--benchmark", str(world.benchmark), "--image-root", str(world.image_root)]
    r = CliRunner().invoke(app, [*ev, "--model", str(tmp_path / "m1"), "--out", str(tmp_path / "ev")])
    # the scored predictions' accuracy is never read back as this model's
    assert r.exit_code == 2 and "holds the results of another evaluation (method, held_out, model differ)" in " ".join(r.output.split())
    assert CliRunner().invoke(app, [*ev, "--model", str(tmp_path / "m1"), "--out", str(tmp_path / "ev1")]).exit_code == 0
    tiny_vlm.save(tmp_path / "m2")
    r = CliRunner().invoke(app, [*ev, "--model", str(tmp_path / "m2"), "--out", str(tmp_path / "ev1")])
    assert r.exit_code == 2 and "model differ" in " ".join(r.output.split())
    (tmp_path / "q.jsonl").write_text((tmp_path / "p.jsonl").read_text().replace('"prediction": "A"', '"prediction": "B"'))
    r = CliRunner().invoke(app, [*score[:4], str(tmp_path / "q.jsonl"), "--out", str(tmp_path / "ev1")])
    assert r.exit_code == 2 and "model differ" in " ".join(r.output.split())
    # a predictions file that stops short: its missing questions are named as such, and count as wrong
    (tmp_path / "part.jsonl").write_text("".join((tmp_path / "p.jsonl").read_text().splitlines(keepends=True)[:3]))
    r = CliRunner().invoke(app, [*score[:4], str(tmp_path / "part.jsonl"), "--out", str(tmp_path / "ev-part")])
    res = json.loads((tmp_path / "ev-part" / "results.json").read_text())
    assert r.exit_code == 0 and res["extraction"]["missing"] == len(qs) - 3 and res["correct"] == 3
    assert f"{len(qs) - 3} questions have no prediction in part.jsonl" in " ".join(r.output.split())
