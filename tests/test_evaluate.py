import pytest

from dataengine.benchmarks.answers import extract_letter
from dataengine.errors import DataError
from dataengine.evaluate import evaluate, run_evaluate, summarize
from dataengine.records import Prediction, Question, read_jsonl


def p(qid, qtype, answer, pred):
    return Prediction(question_id=qid, qtype=qtype, image="i.png", question="q", options=["a", "b", "c", "d"],
                      answer=answer, prediction=pred, correct=answer == pred)


def test_accuracy_on_a_hand_made_prediction_file(tmp_path):
    rows = [p("1", 1, "A", "A"), p("2", 1, "B", "C"), p("3", 1, "C", "C"), p("4", 1, "D", "D"),
            p("5", 9, "A", "B"), p("6", 9, "B", "")]
    path = tmp_path / "preds.jsonl"
    path.write_text("".join(r.model_dump_json() + "\n" for r in rows))
    res = summarize(read_jsonl(path, Prediction))
    assert res.per_type[1].accuracy == pytest.approx(0.75) and res.per_type[9].accuracy == 0.0
    assert res.accuracy == pytest.approx(3 / 6) and res.per_type[1].name == "Scene Understanding"


def test_extract_letter():
    opts = ["red", "blue", "green", "black"]
    assert extract_letter("B", opts) == ("B", "letter")
    assert extract_letter("(C) green", opts) == ("C", "letter")
    assert extract_letter("It is blue.", opts) == ("B", "option")
    assert extract_letter("A cat", opts) == (None, "none")  # "A" here is an article, not a letter
    assert extract_letter("purple", opts) == (None, "none")


def test_likelihood_picks_the_lowest_loss(tiny_vlm, world):
    from dataengine.benchmarks.seed import read_seed
    qs = read_seed(world.benchmark)[:6]
    preds = evaluate(tiny_vlm, qs, world.image_root, batch_size=4)
    for q, pr in zip(qs, preds):
        assert len(pr.scores) == 4 and pr.prediction == "ABCD"[pr.scores.index(min(pr.scores))]
        assert pr.correct == (pr.prediction == q.answer)


def test_letter_method_runs(tiny_vlm, world):
    from dataengine.benchmarks.seed import read_seed
    qs = read_seed(world.benchmark)[:3]
    preds = evaluate(tiny_vlm, qs, world.image_root, method="letter", batch_size=3)
    assert len(preds) == 3 and all(pr.prediction in ("", "A", "B", "C", "D") for pr in preds)
    assert all(pr.extracted in ("letter", "option", "none") for pr in preds)
    res = summarize(preds, method="letter")
    assert sum(res.extraction.values()) == 3 and res.extraction == {
        how: sum(p.extracted == how for p in preds) for how in ("letter", "option", "none")}


def test_missing_and_corrupt_images_fail_before_writing(tiny_vlm, world, tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    q = lambda img: [Question(question_id="q9", question="What?", options=list("abcd"), answer="A", qtype=1, image=img)]
    with pytest.raises(DataError, match="question q9: image not found"):
        run_evaluate(tiny_vlm, q("nope.png"), tmp_path, tmp_path / "out")
    assert not (tmp_path / "out" / "results.json").exists()
    with pytest.raises(DataError, match=r"bad.png: .*question q9: cannot read image"):
        evaluate(tiny_vlm, q("bad.png"), tmp_path)
    with pytest.raises(DataError, match="leaves the image root"):
        evaluate(tiny_vlm, q("../../etc/passwd"), tmp_path)


def test_resume_skips_finished_predictions(tiny_vlm, world, tmp_path):
    from dataengine.benchmarks.seed import read_seed
    qs = read_seed(world.benchmark)[:8]
    out = tmp_path / "ev"
    first = run_evaluate(tiny_vlm, qs[:5], world.image_root, out)
    # pretend the run was killed after 5 questions: keep them as the partial file
    (out / "predictions.partial.jsonl").write_text((out / "predictions.jsonl").read_text())
    (out / "results.json").unlink()
    calls = []
    orig = tiny_vlm.score_options
    tiny_vlm.score_options = lambda items, **kw: (calls.append(len(list(items := list(items)))), orig(items))[1]
    try:
        res = run_evaluate(tiny_vlm, qs, world.image_root, out)
    finally:
        tiny_vlm.score_options = orig
    assert sum(calls) == 3 and res.total == 8 and first.total == 5
    assert len(read_jsonl(out / "predictions.jsonl", Prediction)) == 8
