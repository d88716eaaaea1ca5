"""Records between stages: JSON lines read with one-line errors, written atomically."""
import json

import pytest

from dataengine.errors import DataError
from dataengine.records import EvalResult, Sample, TypeResult, is_seed_type, qtype_name, read_jsonl, write_json, write_jsonl


def sample(i: int) -> Sample:
    return Sample(id=str(i), image=f"{i}.png", instruction="What color is the ball?", answer="It is red.", short_answer="red",
                  options=["red", "blue", "green", "black"], choice_answer="A", qtype=3)


def test_round_trip_and_blank_lines(tmp_path):
    items = [sample(i) for i in range(3)]
    path = write_jsonl(tmp_path / "a" / "s.jsonl", items)
    path.write_text(path.read_text() + "\n\n")
    assert read_jsonl(path, Sample) == items
    assert not list(tmp_path.rglob("*.tmp"))


def test_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "s.jsonl"
    good = sample(0).model_dump()
    path.write_text(json.dumps(good) + "\n" + json.dumps(good | {"qtype": "three"}) + "\n")
    with pytest.raises(DataError, match=r"s.jsonl: line 2: qtype: Input should be a valid integer"):
        read_jsonl(path, Sample)
    path.write_text(json.dumps({k: v for k, v in good.items() if k != "answer"}) + "\n")
    with pytest.raises(DataError, match=r"s.jsonl: line 1: answer: Field required"):
        read_jsonl(path, Sample)
    with pytest.raises(DataError, match=r"missing.jsonl: file not found"):
        read_jsonl(tmp_path / "missing.jsonl", Sample)


def test_a_failed_write_leaves_the_old_file(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [sample(0)])

    def broken():
        yield sample(1)
        raise RuntimeError("killed")
    with pytest.raises(RuntimeError):
        write_jsonl(path, broken())
    assert read_jsonl(path, Sample) == [sample(0)]


def test_write_json_takes_models_and_plain_data(tmp_path):
    res = EvalResult(benchmark="b", method="likelihood", total=4, correct=3,
                     per_type={3: TypeResult(qtype=3, name="Instance Attributes", total=4, correct=3)})
    again = EvalResult.model_validate_json(write_json(tmp_path / "r.json", res).read_text())
    assert again == res and again.accuracy == 0.75 and again.accuracies() == {3: 0.75}
    assert json.loads(write_json(tmp_path / "d.json", {"é": 1}).read_text(encoding="utf-8")) == {"é": 1}


def test_type_names():
    assert qtype_name(9) == "Text Understanding" and qtype_name(14) == "type 14"
    assert is_seed_type(3, "Instance Attributes") and not is_seed_type(3, "attribute_recognition")
