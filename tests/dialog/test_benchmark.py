import json
import re

import pytest

from dataengine.dialog.benchmark import (
    WHERE,
    build_dialog_benchmark,
    build_dialogs,
    evaluate_dialogs,
    read_dialogs,
    score_turn,
)
from dataengine.dialog.conversation import FORMATS, parse_box
from dataengine.errors import DataError
from dataengine.qtypes.geometry import direction
from dataengine.records import LETTERS, ImageAnnotation, read_jsonl


@pytest.fixture(scope="module")
def dialogs(world, tmp_path_factory):
    path = tmp_path_factory.mktemp("dialog") / "dialog.json"
    return path, build_dialog_benchmark(world.image_root, path, n=30, seed=1, size=64)


def test_every_answer_follows_from_the_annotation(dialogs):
    path, ds = dialogs
    assert read_dialogs(path) == ds and len(ds) == 30 and len({d.image for d in ds}) == 30
    for d in ds:
        ann, target = d.annotation, d.annotation.object(d.target)
        first = d.turns[0]
        m = re.match(r"Which shape is (.+) the (\w+) (\w+)\?", first.question)
        pred = next(k for k, v in WHERE.items() if v == m.group(1))
        [ref] = [o for o in ann.objects if o.attributes[0] == m.group(2) and o.name == m.group(3)]  # the reference is unique
        # exactly one shape lies that way of the reference, and it is the one the dialog is about
        assert [o.id for o in ann.objects if o.id != ref.id and direction(o.bbox, ref.bbox) == pred] == [target.id]
        # and no other shape is diagonal to the reference (one a viewer might also call "to the right")
        assert all(direction(o.bbox, ref.bbox) is not None for o in ann.objects if o.id != ref.id)
        assert first.answer == target.name and first.refers_to is None
        for t in d.turns[1:]:
            assert t.question.endswith(FORMATS[t.format])
            if t.kind == "colour":
                assert target.attributes[0] in (t.answer.lower().rstrip(".").split()[-1], *t.keys)
            elif t.kind == "box":
                box = parse_box(t.answer)
                assert all(abs(v * 64 - p) <= 0.64 for v, p in zip(box, target.bbox))
            elif t.kind == "size":
                options = dict(re.findall(r"^([A-H])\. (\w+)$", t.question, re.M))
                assert options[t.answer] == target.attributes[1] and set(options.values()) == {"small", "large"}
            elif t.kind == "existence":
                name = re.search(r"Is there a (\w+) in", t.question).group(1)
                assert t.answer == ("yes" if any(o.name == name for o in ann.objects) else "no")
            assert t.refers_to in (0, None)
    # the follow-ups come in varying order, and every format is asked
    assert len({tuple(t.kind for t in d.turns) for d in ds}) > 3
    assert {t.format for d in ds for t in d.turns} == set(FORMATS)


def test_scoring_a_turn(dialogs):
    _, ds = dialogs
    for d in ds:
        for t in d.turns:
            assert score_turn(t, t.answer) == (True, True)  # the reference is right and in its format
    letter = next(t for d in ds for t in d.turns if t.format == "letter")
    other = LETTERS[1 - LETTERS.index(letter.answer)]
    assert score_turn(letter, f"({letter.answer})") == (True, True)
    assert score_turn(letter, other) == (False, True)
    assert score_turn(letter, "D") == (False, False)  # a letter the question does not offer
    assert score_turn(letter, f"The answer is {letter.answer} because it is.") == (False, False)
    box = next(t for d in ds for t in d.turns if t.format == "box")
    x1, y1, x2, y2 = parse_box(box.answer)
    assert score_turn(box, f"[{x1 + 0.01:.2f}, {y1:.2f}, {x2 + 0.01:.2f}, {y2:.2f}]") == (True, True)
    assert score_turn(box, "[0.0, 0.0, 0.05, 0.05]")[0] is False
    assert score_turn(box, "at the top left") == (False, False)
    word = ds[0].turns[0]
    assert score_turn(word, f"The {word.answer}.") == (True, True)
    assert score_turn(word, f"It is a {word.answer} that sits on the left.") == (False, False)


class Scripted:
    """A stand-in model that answers each turn from the dialog (found by its first question), checking
    that it is given its own earlier replies; the first turn of every other dialog is answered wrong."""

    def __init__(self, dialogs):
        self.by_first = {d.turns[0].question: d for d in dialogs}
        self.calls = 0

    def generate_chat(self, items, max_new_tokens=16):
        out = []
        for _, turns in items:
            d, k = self.by_first[turns[0][0]], len(turns) - 1
            assert turns[-1] == (d.turns[k].question, None)
            assert [a for _, a in turns[:-1]] == [self.reply(d, j) for j in range(k)]  # its own earlier replies
            out.append(self.reply(d, k))
        self.calls += 1
        return out

    @staticmethod
    def reply(d, k):
        return "nothing here" if k == 0 and int(d.id.rsplit("_", 1)[1]) % 2 == 0 else d.turns[k].answer


def test_dialogs_are_asked_turn_by_turn_with_the_model_s_own_answers(dialogs, world, tmp_path):
    from dataengine.dialog.benchmark import DialogPrediction
    _, ds = dialogs
    ds = [d for d in ds if sum(x.turns[0].question == d.turns[0].question for x in ds) == 1][:8]
    assert len(ds) >= 4
    model = Scripted(ds)
    figures = evaluate_dialogs(model, ds, world.image_root, tmp_path / "ev", batch_size=4)
    assert model.calls == -(-len(ds) // 4) * 5  # five turns, each asked of a batch of dialogs at once
    wrong_first = sum(int(d.id.rsplit("_", 1)[1]) % 2 == 0 for d in ds)
    assert 0 < wrong_first < len(ds)
    assert figures["per_turn"][1]["accuracy"] == pytest.approx(1 - wrong_first / len(ds))
    assert figures["per_turn"][2]["accuracy"] == 1.0 and figures["later_turns_accuracy"] == 1.0
    assert figures["whole_dialogs"] == pytest.approx(1 - wrong_first / len(ds))
    assert figures["compliance"] == 1.0  # "nothing here" is still a short phrase
    assert figures["turns"] == 5 * len(ds)
    assert json.loads((tmp_path / "ev" / "results.json").read_text())["accuracy"] == figures["accuracy"]
    assert len(read_jsonl(tmp_path / "ev" / "predictions.jsonl", DialogPrediction)) == 5 * len(ds)


def test_a_tiny_model_answers_dialogs(tiny_vlm, dialogs, world):
    _, ds = dialogs
    figures = evaluate_dialogs(tiny_vlm, ds[:3], world.image_root, batch_size=2, max_new_tokens=4)
    assert figures["dialogs"] == 3 and set(figures["per_turn"]) == {1, 2, 3, 4, 5}
    assert 0 <= figures["compliance"] <= 1


def test_a_bad_dialog_file_is_named(tmp_path, dialogs):
    path, ds = dialogs
    data = json.loads(path.read_text())
    del data["dialogs"][2]["turns"][1]["answer"]
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(DataError, match=f"bad.json: dialog {ds[2].id}: turns.1.answer: Field required"):
        read_dialogs(tmp_path / "bad.json")


def test_images_without_a_singled_out_shape_give_no_dialog(world):
    pool = read_jsonl(world.pool, ImageAnnotation)
    lone = [a for a in pool if len(a.objects) == 1][:5]
    assert lone and build_dialogs(lone, 5) == []


def test_pictures_of_other_settings_are_refused_not_kept(tmp_path):
    """Pictures already on disk are kept by the renderer: a build with another size (or co-occurrence)
    into the same root would describe scenes the pictures do not show. Refused in one line."""
    import json as _json

    from typer.testing import CliRunner

    from dataengine.cli import app
    build_dialog_benchmark(tmp_path / "img", tmp_path / "a.json", n=2, seed=0, size=64)
    made = _json.loads((tmp_path / "img" / "dialog" / "made.json").read_text())
    assert made["size"] == 64 and made["cooccurrence"] == 0.0 and made["seeds"] == [0]
    with pytest.raises(DataError, match=r"dialog: its pictures were made with size 64 \(asked: 80\)"):
        build_dialog_benchmark(tmp_path / "img", tmp_path / "b.json", n=2, seed=0, size=80)
    assert not (tmp_path / "b.json").exists()
    with pytest.raises(DataError, match="cooccurrence 0.0 \\(asked: 0.5\\)"):
        build_dialog_benchmark(tmp_path / "img", tmp_path / "b.json", n=2, seed=0, size=64, cooccurrence=0.5)
    build_dialog_benchmark(tmp_path / "img", tmp_path / "c.json", n=2, seed=1, size=64)  # the same settings, another seed
    assert _json.loads((tmp_path / "img" / "dialog" / "made.json").read_text())["seeds"] == [0, 1]
    # pictures with no record are not trusted either
    (tmp_path / "img" / "dialog" / "made.json").unlink()
    with pytest.raises(DataError, match="no record of what made them"):
        build_dialog_benchmark(tmp_path / "img", tmp_path / "d.json", n=2, seed=0, size=64)
    # the command: one line, exit 2; --config gives the world's image size
    res = CliRunner().invoke(app, ["dialog-bench", str(tmp_path / "e.json"), "--image-root", str(tmp_path / "img"), "--n", "2"])
    assert res.exit_code == 2 and "no record" in res.output and "Traceback" not in res.output
    (tmp_path / "cfg.yaml").write_text("world:\n  image_size: 72\n")
    res = CliRunner().invoke(app, ["dialog-bench", str(tmp_path / "f.json"), "--image-root", str(tmp_path / "img2"), "--n", "2",
                                   "--config", str(tmp_path / "cfg.yaml")])
    assert res.exit_code == 0, res.output
    assert _json.loads((tmp_path / "img2" / "dialog" / "made.json").read_text())["size"] == 72


def test_a_dialog_file_with_impossible_turns_is_named(tmp_path, dialogs):
    path, ds = dialogs
    base = json.loads(path.read_text())

    def bad(change, says):
        data = json.loads(json.dumps(base))
        change(data)
        (tmp_path / "bad.json").write_text(json.dumps(data))
        with pytest.raises(DataError, match=says):
            read_dialogs(tmp_path / "bad.json")
    bad(lambda d: d.update(dialogs=[]), "bad.json: no dialogs")
    bad(lambda d: d["dialogs"][0].update(turns=[]), f"bad.json: dialog {ds[0].id}: no turns")
    box = next(k for k, t in enumerate(ds[1].turns) if t.format == "box")
    bad(lambda d: d["dialogs"][1]["turns"][box].update(answer="top left"),
        rf"bad.json: dialog {ds[1].id}: turn {box + 1}: box answer 'top left' is not a box")
    letter = next(k for k, t in enumerate(ds[2].turns) if t.format == "letter")
    bad(lambda d: d["dialogs"][2]["turns"][letter].update(answer="D"),
        rf"bad.json: dialog {ds[2].id}: turn {letter + 1}: letter answer 'D' is not among the options \(A, B\)")
