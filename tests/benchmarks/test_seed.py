import json

import pytest

from dataengine.benchmarks.seed import read_seed, write_seed
from dataengine.errors import DataError


def seed_file(tmp_path, questions, name="bench.json"):
    p = tmp_path / name
    p.write_text(json.dumps({"questions": questions}))
    return p


def q(**over):
    base = {"question_id": "101", "question": "What color is the ball?", "choice_a": "red", "choice_b": "blue",
            "choice_c": "green", "choice_d": "black", "answer": "B", "question_type_id": 3, "data_id": "img/1.png",
            "data_type": "image"}
    base.update(over)
    return base


def test_reads_seed_format_and_skips_video(tmp_path, capsys):
    p = seed_file(tmp_path, [q(), q(question_id="v1", question_type_id=10, data_type="video", data_id="vid.mp4")])
    qs = read_seed(p)
    assert len(qs) == 1 and qs[0].options == ["red", "blue", "green", "black"] and qs[0].answer == "B" and qs[0].qtype == 3
    assert "skipped 1 video" in capsys.readouterr().out


def test_round_trip(world, tmp_path):
    qs = read_seed(world.benchmark)
    assert len(qs) == 36 and {x.qtype for x in qs} == set(range(1, 10))
    assert {x.answer for x in qs} <= set("ABCD")
    again = read_seed(write_seed(tmp_path / "copy.json", qs))
    assert again == qs


@pytest.mark.parametrize("bad,msg", [
    (q(question_type_id=13), "unknown question_type_id 13"),
    (q(answer="E"), "answer 'E'"),
])
def test_bad_items_name_file_and_item(tmp_path, bad, msg):
    p = seed_file(tmp_path, [q(question_id="7"), bad | {"question_id": "8"}])
    with pytest.raises(DataError) as e:
        read_seed(p)
    assert str(p) in str(e.value) and "question 8" in str(e.value) and msg in str(e.value)


def test_missing_field(tmp_path):
    item = q()
    del item["choice_c"]
    with pytest.raises(DataError, match="question 101: missing field 'choice_c'"):
        read_seed(seed_file(tmp_path, [item]))


def test_write_then_read(tmp_path):
    p = seed_file(tmp_path, [q(), q(question_id="2", answer="D")])
    qs = read_seed(p)
    out = write_seed(tmp_path / "copy.json", qs)
    assert read_seed(out) == qs
