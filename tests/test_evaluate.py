import pytest

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
        how: sum(p.extracted == how for p in preds) for how in ("letter", "option", "judge", "none", "missing")}


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


def test_the_benchmark_splits_per_type_the_same_way_every_time():
    from dataengine.benchmarks.mmbench import circular
    from dataengine.evaluate import split
    qs = [Question(question_id=f"q{i}", question="?", options=["a", "b", "c", "d"], answer="A", qtype=1 + i % 3, image="x.png")
          for i in range(300)]
    parts = split(qs, 0.7)
    for t in (1, 2, 3):
        mine = [parts[q.question_id] for q in qs if q.qtype == t]
        assert mine.count("report") == 70 and mine.count("diagnosis") == 30
    assert split(list(reversed(qs)), 0.7) == parts  # order does not matter
    assert split(qs[:150], 0.7) != {}  # a smaller benchmark splits too
    assert split(qs, 0.0) == {}
    rotated = split(circular(qs[:30]), 0.5)  # the rotations of a question stay in one part
    assert all(rotated[f"q{i}@0"] == rotated[f"q{i}@{k}"] for i in range(30) for k in range(4))


class Recorder:
    """A model that answers A, and remembers every picture it was shown."""

    def __init__(self):
        self.seen = []

    def score_options(self, items):
        out = []
        for img, _, options in items:
            self.seen.append(img)
            out.append([0.0] + [1.0] * (len(options) - 1))
        return out


def test_blind_evaluation_shows_a_grey_picture_of_the_images_size(world, tmp_path):
    from dataengine.benchmarks.seed import read_seed
    qs = read_seed(world.benchmark)[:5]
    model = Recorder()
    preds = evaluate(model, qs, world.image_root, blind=True)
    assert len(preds) == 5 and all(img.getcolors() == [(64 * 64, (128, 128, 128))] for img in model.seen)
    model.seen.clear()
    evaluate(model, qs, world.image_root)
    assert all(len(img.getcolors(10**5)) > 1 for img in model.seen)


def test_results_per_part_and_planning_sees_only_the_diagnosis_part(world, tmp_path):
    from dataengine.benchmarks.seed import read_seed
    from dataengine.stages import diagnosis_badcases, plan_round
    from tests.support.configs import small_config
    qs = read_seed(world.benchmark)
    res = run_evaluate(Recorder(), qs, world.image_root, tmp_path / "ev", held_out=0.5)
    assert set(res.parts) == {"diagnosis", "report"}
    assert res.part("report").total + res.part("diagnosis").total == res.total == len(qs)
    assert all(x.total == 2 for r in res.parts.values() for x in r.per_type.values())  # 4 a type, halved
    preds = read_jsonl(tmp_path / "ev" / "predictions.jsonl", Prediction)
    report_ids = {p.question_id for p in preds if p.part == "report"}
    bad = diagnosis_badcases(tmp_path / "ev")
    assert bad and not {p.question_id for p in bad} & report_ids
    plan = plan_round(tmp_path / "ev", tmp_path / "plan.json", small_config(), seed=1)
    assert not {e.question_id for tp in plan.types.values() for e in tp.examples} & report_ids
    assert {t: tp.accuracy for t, tp in plan.types.items()} == res.part("diagnosis").accuracies()


def test_the_regression_guard_flags_only_a_starved_type_that_fell_beyond_its_noise():
    from dataengine.evaluate import regressions
    from dataengine.records import EvalResult, TypeResult

    def res(correct):
        per = {t: TypeResult(qtype=t, name=f"t{t}", total=150, correct=c) for t, c in correct.items()}
        return EvalResult(benchmark="b", method="likelihood", per_type=per, total=150 * len(per), correct=sum(correct.values()))
    before, after = res({1: 120, 2: 120, 3: 120}), res({1: 90, 2: 112, 3: 60})
    flagged = regressions(before, after, starved={1, 2})  # 3 fell too, but it got items
    assert [(r["qtype"], r["before"], r["after"]) for r in flagged] == [(1, 0.8, 0.6)]  # 2 fell within its noise
    assert 0.04 < flagged[0]["noise"] < 0.06
