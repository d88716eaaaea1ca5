"""The review database: decisions written at once, last one wins, none lost to a second writer or a
kill; and how they take effect (`apply`)."""
import os
import subprocess
import sys
import threading

import pytest

from dataengine.errors import DataError
from dataengine.records import Sample
from dataengine.review.store import ReviewStore, apply


def item(i: str, question: str = "What color is the ball?", short: str = "red") -> Sample:
    return Sample(id=i, image=f"{i}.png", instruction=question, answer=f"It is {short}.", short_answer=short,
                  options=[short, "blue", "green", "white"], choice_answer="A", qtype=3, source="round-1")


def test_last_decision_wins_and_history_keeps_all(tmp_path):
    db = tmp_path / "review.sqlite"
    store = ReviewStore(db)
    store.decide(1, "a", "accept")
    store.decide("1", "a", "reject", comment="wrong colour")
    store.decide(1, "b", "edit", edited=item("b"), check="")
    again = ReviewStore(db)  # another connection, as after a restart
    got = again.decisions(1)
    assert got["a"].verdict == "reject" and got["a"].comment == "wrong colour"
    assert got["b"].edited == item("b") and got["b"].check == ""
    assert [d.verdict for d in again.history("a")] == ["accept", "reject"]
    assert again.decisions(2) == {}
    with pytest.raises(DataError, match="item a: unknown verdict 'maybe'"):
        store.decide(1, "a", "maybe")
    with pytest.raises(DataError, match="item c: an edit needs the edited item"):
        store.decide(1, "c", "edit")
    with pytest.raises(DataError, match="names another item"):
        store.decide(1, "c", "edit", edited=item("b"))


def test_two_writers_at_once_lose_nothing(tmp_path):
    db = tmp_path / "review.sqlite"
    ReviewStore(db)

    def tab(name: str):
        store = ReviewStore(db)  # each tab's requests: their own connections
        for i in range(40):
            store.decide(1, f"{name}-{i}", "reject" if i % 2 else "accept")
            store.decide(1, "shared", "accept" if name == "x" else "reject")

    threads = [threading.Thread(target=tab, args=(n,)) for n in ("x", "y")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = ReviewStore(db).decisions(1)
    assert len(got) == 81
    assert all(got[f"{n}-{i}"].verdict == ("reject" if i % 2 else "accept") for n in ("x", "y") for i in range(40))
    assert len(ReviewStore(db).history("shared")) == 80


def test_a_decision_survives_the_process_being_killed(tmp_path):
    db = tmp_path / "review.sqlite"
    code = (f"import os, signal\nfrom dataengine.review.store import ReviewStore\n"
            f"ReviewStore({str(db)!r}).decide(2, 'k', 'reject')\nos.kill(os.getpid(), signal.SIGKILL)\n")
    res = subprocess.run([sys.executable, "-c", code], env={**os.environ}, capture_output=True)
    assert res.returncode == -9
    assert ReviewStore(db).decisions(2)["k"].verdict == "reject"


def test_not_a_database(tmp_path):
    (tmp_path / "review.sqlite").write_text("not sqlite at all " * 100)
    with pytest.raises(DataError, match="review.sqlite: not a review database"):
        ReviewStore(tmp_path / "review.sqlite")


def test_apply_leaves_out_rejected_and_puts_passing_edits_in_place(tmp_path):
    store = ReviewStore(tmp_path / "review.sqlite")
    kept = [item("a"), item("b"), item("c"), item("d")]
    dropped = [item("e", "Is it red?")]  # the filter dropped it (it leaks its answer)
    store.decide(1, "a", "accept")
    store.decide(1, "b", "reject")
    fixed = item("c", "Which colour is the ball?")
    store.decide(1, "c", "edit", edited=fixed)
    broken = item("d").model_copy(update={"options": ["red", "red", "blue", "green"]})
    store.decide(1, "d", "edit", edited=broken)
    store.decide(1, "e", "edit", edited=item("e", "What colour is the ball?"))
    got = apply(store.decisions(1), kept, others=dropped)
    assert [s.id for s in got.items] == ["a", "c", "e"]
    assert got.items[1].instruction == "Which colour is the ball?"
    assert got.rejected == ["b"] and got.edited == ["c", "e"]
    assert got.failing == {"d": "options not distinct"}
    assert "1 rejected, 2 edited, 1 edits failing the filter" in got.summary()
    # a recheck, when given, decides instead of the recorded check: here it fails every edit
    strict = apply(store.decisions(1), kept, others=dropped, recheck=lambda s, seen: "contradicts annotation: no")
    assert [s.id for s in strict.items] == ["a"] and set(strict.failing) == {"c", "d", "e"}
    # accepting an item the filter dropped does not bring it back
    store.decide(1, "e", "accept")
    assert [s.id for s in apply(store.decisions(1), kept, others=dropped).items] == ["a", "c"]
