"""`evaluate.dialog: N`: the loop builds N held-out dialogs once and reports every round's multi-round figures."""
import json

import pytest

from dataengine.dialog.benchmark import DialogPrediction, read_dialogs
from dataengine.errors import DataError
from dataengine.loop import Loop
from dataengine.records import ImageAnnotation, read_jsonl
from tests.support.configs import small_config


def test_every_round_answers_the_dialog_benchmark(tmp_path):
    cfg = small_config(rounds=1)
    cfg.evaluate.dialog = 6
    run = tmp_path / "run"
    Loop(cfg, run).run()
    dialogs = read_dialogs(run / "world" / "dialog.json")
    assert len(dialogs) == 6 and all((run / "world" / "images" / d.image).is_file() for d in dialogs)
    pool = {a.image for a in read_jsonl(run / "world" / "pool.jsonl", ImageAnnotation)}
    assert not pool & {d.image for d in dialogs}  # held out: no pool picture, so no item is ever made on one
    summary = json.loads((run / "summary.json").read_text())
    for k in (0, 1):
        preds = read_jsonl(run / f"round_{k}" / "dialog" / "predictions.jsonl", DialogPrediction)
        assert len(preds) == sum(len(d.turns) for d in dialogs)
        d = summary["rounds"][k]["dialog"]
        assert d["dialogs"] == 6 and set(d["per_turn"]) == {"1", "2", "3", "4", "5"}
        assert d["accuracy"] == pytest.approx(sum(p.correct for p in preds) / len(preds))
        assert d["compliance"] == pytest.approx(sum(p.complies for p in preds) / len(preds))
        assert json.loads((run / f"round_{k}" / "dialog" / "evaluation.json").read_text())["model"] == f"round_{k}/model"
    # a re-run reads everything back: the dialogs are not built again, no dialog is asked again
    made = (run / "world" / "dialog.json").stat().st_mtime_ns
    answered = (run / "round_1" / "dialog" / "predictions.jsonl").stat().st_mtime_ns
    Loop(cfg, run).run()
    assert (run / "world" / "dialog.json").stat().st_mtime_ns == made
    assert (run / "round_1" / "dialog" / "predictions.jsonl").stat().st_mtime_ns == answered
    assert json.loads((run / "summary.json").read_text()) == summary
    # another number of dialogs in the same world folder: one line, not a silent mix
    other = cfg.model_copy(deep=True)
    other.evaluate.dialog = 4
    (run / "config.yaml").unlink()
    with pytest.raises(DataError, match=r"dialog.json: holds 6 dialogs, evaluate.dialog asks for 4"):
        Loop(other, run).run(rounds=0)
