import math

import pytest

from dataengine.errors import DataError
from dataengine.records import Prediction
from dataengine.sample import allocate, near_duplicates_removed, plan, ratios


def test_sqrt_error_ratios_match_the_paper():
    acc = {1: 0.75, 2: 0.0, 3: 1.0}
    r = ratios(acc, "sqrt-error")
    total = math.sqrt(0.25) + 1.0 + 0.0
    assert r[1] == pytest.approx(0.5 / total) and r[2] == pytest.approx(1.0 / total) and r[3] == 0.0


def test_error_and_uniform():
    acc = {1: 0.8, 2: 0.4}
    assert ratios(acc, "error") == pytest.approx({1: 0.2 / 0.8, 2: 0.6 / 0.8})
    assert ratios(acc, "uniform") == {1: 0.5, 2: 0.5}
    assert ratios({1: 1.0, 2: 1.0}, "sqrt-error") == {1: 0.5, 2: 0.5}


def test_unknown_strategy_suggests():
    with pytest.raises(DataError, match="did you mean 'sqrt-error'"):
        ratios({1: 0.5}, "sqrt-eror")


def test_allocate_sums_to_budget():
    c = allocate({1: 1 / 3, 2: 1 / 3, 3: 1 / 3}, 100)
    assert sum(c.values()) == 100 and sorted(c.values()) == [33, 33, 34]
    c = allocate(ratios({t: 0.1 * t for t in range(1, 10)}), 900)
    assert sum(c.values()) == 900 and c[1] > c[5] > c[9]


def pred(i, question, answer_text, qtype=3):
    return Prediction(question_id=str(i), qtype=qtype, image=f"{i}.png", question=question,
                      options=[answer_text, "x", "y", "z"], answer="A", prediction="B", correct=False)


def test_near_duplicate_bad_cases_are_dropped():
    cases = [pred(1, "What color is the ball?", "red"), pred(2, "What color is the ball ?", "red"),
             pred(3, "How many stars are there in the image?", "two")]
    kept = near_duplicates_removed(cases, 0.9)
    assert [c.question_id for c in kept] == ["1", "3"]


def test_plan_counts_and_examples():
    bad = [pred(i, f"What color is the {w}?", c) for i, (w, c) in enumerate([("ball", "red"), ("star", "blue"), ("ring", "green")])]
    p = plan({3: 0.2, 5: 0.9}, bad, budget=50, examples_per_type=2)
    assert p.counts()[3] + p.counts()[5] == 50 and p.counts()[3] > p.counts()[5]
    assert len(p.types[3].examples) == 2 and p.types[5].examples == []


def test_progress_moves_budget_to_the_types_that_respond():
    from dataengine.sample import TypeStats, ratios
    first = ratios({1: 0.3, 2: 0.3}, "progress")
    assert first == ratios({1: 0.3, 2: 0.3}, "sqrt-error")  # round 1: no history, the paper's weights
    stats = {1: TypeStats(accuracy=0.5, previous=0.3, items=200, questions=60),   # rose clearly
             2: TypeStats(accuracy=0.5, previous=0.5, items=200, questions=60),   # did not move
             3: TypeStats(accuracy=0.5, previous=0.7, items=200, questions=60),   # fell
             4: TypeStats(accuracy=0.5, previous=0.3, items=0, questions=60)}     # got nothing: no evidence
    r = ratios(stats, "progress")
    assert r[1] > r[2] == r[4] > r[3] and abs(sum(r.values()) - 1) < 1e-9
    assert r[1] / r[2] <= 2 and r[3] / r[2] >= 0.25  # bounded, so noise cannot starve a type
