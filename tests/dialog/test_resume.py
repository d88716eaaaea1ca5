"""A killed `dialog-eval` resumes: the dialogs it finished are kept, not asked again."""
import json

import pytest

from dataengine import stages
from dataengine.dialog.benchmark import DialogPrediction, build_dialog_benchmark
from dataengine.errors import DataError
from dataengine.records import read_jsonl


class Killed(Exception):
    pass


def test_a_killed_dialog_evaluation_keeps_its_finished_dialogs(world, tiny_vlm, tmp_path):
    dialogs = build_dialog_benchmark(tmp_path / "img", tmp_path / "dialog.json", n=6, seed=3, size=64)
    tiny_vlm.save(tmp_path / "m")
    out = tmp_path / "ev"
    seen: list[list[str]] = []

    def kill_after_two_batches(preds):
        seen.append(sorted({p.dialog for p in preds}))
        if len(seen) == 2:
            raise Killed

    args = (tmp_path / "m", tmp_path / "dialog.json", tmp_path / "img", out)
    with pytest.raises(Killed):
        stages.evaluate_dialog_model(*args, batch_size=2, max_new_tokens=4, on_dialogs=kill_after_two_batches)
    assert not (out / "results.json").exists()
    partial = read_jsonl(out / "predictions.partial.jsonl", DialogPrediction)
    assert len(partial) == 4 * 5  # two batches of two dialogs, five turns each, kept as they finished
    # the kill also tore the last dialog: its last turn is lost, so that dialog is not finished
    lines = (out / "predictions.partial.jsonl").read_text().splitlines(keepends=True)
    (out / "predictions.partial.jsonl").write_text("".join(lines[:-1]) + lines[-1][:20])
    torn = partial[-1].dialog
    finished = {p.dialog for p in partial} - {torn}

    rerun: list[list[str]] = []
    figures = stages.evaluate_dialog_model(*args, batch_size=2, max_new_tokens=4, on_dialogs=lambda ps: rerun.append(sorted({p.dialog for p in ps})))
    asked = {d for batch in rerun for d in batch}
    assert asked == {d.id for d in dialogs} - finished and torn in asked  # only the unfinished ones, the torn one again
    preds = read_jsonl(out / "predictions.jsonl", DialogPrediction)
    assert [(p.dialog, p.turn) for p in preds] == [(d.id, t) for d in dialogs for t in range(5)]  # in the file's order
    assert [p for p in preds if p.dialog in finished] == [p for p in partial if p.dialog in finished]  # kept as they were
    assert figures["dialogs"] == 6 and figures["turns"] == 30
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(figures))
    assert not (out / "predictions.partial.jsonl").exists() and not (out / "predictions.partial.meta.json").exists()


def test_partial_replies_of_another_model_are_refused(world, tiny_vlm, tmp_path):
    build_dialog_benchmark(tmp_path / "img", tmp_path / "dialog.json", n=4, seed=3, size=64)
    tiny_vlm.save(tmp_path / "m")
    args = (tmp_path / "m", tmp_path / "dialog.json", tmp_path / "img", tmp_path / "ev")

    def kill(preds):
        raise Killed
    with pytest.raises(Killed):
        stages.evaluate_dialog_model(*args, batch_size=2, max_new_tokens=4, on_dialogs=kill)
    # retrained in the same folder: the weights differ, the partial replies are not its own
    import torch
    with torch.no_grad():
        next(tiny_vlm.model.parameters()).add_(1.0)
    tiny_vlm.save(tmp_path / "m")
    with torch.no_grad():
        next(tiny_vlm.model.parameters()).sub_(1.0)
    with pytest.raises(DataError, match=r"predictions.partial.jsonl: partial dialog replies of another run \(weights differ\)"):
        stages.evaluate_dialog_model(*args, batch_size=2, max_new_tokens=4)


def test_turns_the_grader_could_not_grade_are_left_for_a_later_run(world, tiny_vlm, tmp_path):
    """A grader with no usable grade (server down, unreadable answer): those turns are counted apart,
    not as wrong, and the folder is not finished, so a later run grades them without asking again."""
    from dataengine.dialog.benchmark import read_dialogs, write_dialogs
    dialogs = build_dialog_benchmark(tmp_path / "img", tmp_path / "d0.json", n=3, seed=3, size=64)
    for d in dialogs:  # make the colour turn open-ended (a sentence with no key words)
        t = next(t for t in d.turns if t.kind == "colour")
        t.format, t.keys = "sentence", []
    write_dialogs(tmp_path / "dialog.json", dialogs)
    assert read_dialogs(tmp_path / "dialog.json") == dialogs
    tiny_vlm.save(tmp_path / "m")
    args = (tmp_path / "m", tmp_path / "dialog.json", tmp_path / "img", tmp_path / "ev")

    def down(items):
        return [None for _ in items]
    down.version = "grade-v1"
    figures = stages.evaluate_dialog_model(*args, batch_size=2, max_new_tokens=4, grader=down)
    assert figures["ungraded"] == 3 and figures["per_format"]["sentence"]["accuracy"] == 0.0
    assert figures["per_format"]["sentence"]["n"] == 3
    assert not (tmp_path / "ev" / "results.json").exists()  # not finished for grading
    asked: list = []

    def up(items):
        return [1.0 for _ in items]
    up.version = "grade-v1"
    figures = stages.evaluate_dialog_model(*args, batch_size=2, max_new_tokens=4, grader=up, on_dialogs=asked.append)
    assert asked == [] and figures["ungraded"] == 0  # the replies kept, only graded now
    assert figures["per_format"]["sentence"]["accuracy"] == 1.0
    assert (tmp_path / "ev" / "results.json").exists()


def test_grade_with_nothing_open_ended_says_so_and_opens_no_llm(world, tiny_vlm, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from dataengine.cli import app
    build_dialog_benchmark(tmp_path / "img", tmp_path / "dialog.json", n=2, seed=3, size=64)
    tiny_vlm.save(tmp_path / "m")

    def no_llm(*a, **k):
        raise AssertionError("the LLM was opened")
    monkeypatch.setattr(stages, "open_llm", no_llm)
    res = CliRunner().invoke(app, ["dialog-eval", "--model", str(tmp_path / "m"), "--dialogs", str(tmp_path / "dialog.json"),
                                   "--image-root", str(tmp_path / "img"), "--out", str(tmp_path / "ev"), "--max-new-tokens", "4",
                                   "--grade"])
    assert res.exit_code == 0, res.output
    assert "no open-ended turn to grade" in " ".join(res.output.split())
