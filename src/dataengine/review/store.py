"""A person's decisions on generated items, in SQLite, and how they take effect.

Each decision is written in its own transaction the moment it is made (WAL mode), so a killed
server loses nothing and two tabs or two processes reviewing at once lose nothing either. The last
decision on an item wins; every decision is also kept in `history`.

    store = ReviewStore(run_dir / "review.sqlite")
    store.decide("1", "round-1-4-ab12", "reject")
    store.decide("1", "round-1-3-cd34", "edit", edited=sample, check="")    # check: the filter's reason, "" passed
    applied = apply(store.decisions(), kept, others=generated, recheck=recheck)
    applied.items                                                          # what trains and is exported
    children, decided = reviewed_children(run_dir, k, recheck)              # round k's evolved children:
    stages.with_evolved(items, children, share, seed, reviewed=decided.decided())   # decisions on them count

Verdicts: `accept`, `reject` and `edit` for a round's items (round "1", "2", ...); `pass` and
`fail` (with a failure type and a comment) for an IPO prompt version's items (round "ipo-v2").
"""
from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from pydantic import BaseModel

from ..errors import DataError
from ..records import Sample, read_jsonl

ITEM_VERDICTS = ("accept", "reject", "edit")
IPO_VERDICTS = ("pass", "fail")
DB_NAME = "review.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS decisions (
  round TEXT NOT NULL, item TEXT NOT NULL, verdict TEXT NOT NULL, edited TEXT, "check" TEXT,
  kind TEXT NOT NULL DEFAULT '', comment TEXT NOT NULL DEFAULT '', at REAL NOT NULL,
  PRIMARY KEY (round, item));
CREATE TABLE IF NOT EXISTS history (
  id INTEGER PRIMARY KEY AUTOINCREMENT, round TEXT NOT NULL, item TEXT NOT NULL, verdict TEXT NOT NULL,
  edited TEXT, "check" TEXT, kind TEXT NOT NULL DEFAULT '', comment TEXT NOT NULL DEFAULT '', at REAL NOT NULL);
"""


class Decision(BaseModel):
    round: str
    item: str
    verdict: str
    edited: Sample | None = None  # the item as the person rewrote it (verdict "edit")
    check: str | None = None  # the filter on the edit: None not checked, "" passed, else the reason it failed
    kind: str = ""  # IPO: the failure type
    comment: str = ""
    at: float = 0.0


class ReviewStore:
    """The review database of a run (`run/review.sqlite`). A connection per call: safe from any thread."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        try:
            with self._connect() as db:
                db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as e:
            raise DataError(f"{self.path}: not a review database ({e})") from None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        return db

    def decide(self, round: str | int, item: str, verdict: str, edited: Sample | None = None, check: str | None = None,
               kind: str = "", comment: str = "") -> Decision:
        """Record a decision at once (one transaction: the decision and its history row)."""
        if verdict not in ITEM_VERDICTS + IPO_VERDICTS:
            raise DataError(f"item {item}: unknown verdict {verdict!r} (one of {', '.join(ITEM_VERDICTS + IPO_VERDICTS)})")
        if verdict == "edit" and edited is None:
            raise DataError(f"item {item}: an edit needs the edited item")
        if edited is not None and edited.id != item:
            raise DataError(f"item {item}: the edit names another item ({edited.id})")
        d = Decision(round=str(round), item=item, verdict=verdict, edited=edited if verdict == "edit" else None,
                     check=check if verdict == "edit" else None, kind=kind, comment=comment, at=time.time())
        row = (d.round, d.item, d.verdict, d.edited.model_dump_json() if d.edited else None, d.check, d.kind, d.comment, d.at)
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            db.execute('INSERT OR REPLACE INTO decisions (round, item, verdict, edited, "check", kind, comment, at) '
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            db.execute('INSERT INTO history (round, item, verdict, edited, "check", kind, comment, at) '
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", row)
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        finally:
            db.close()
        return d

    def _rows(self, sql: str, args: tuple) -> list[Decision]:
        db = self._connect()
        try:
            rows = db.execute(sql, args).fetchall()
        finally:
            db.close()
        return [Decision(round=r[0], item=r[1], verdict=r[2], edited=Sample.model_validate_json(r[3]) if r[3] else None,
                         check=r[4], kind=r[5], comment=r[6], at=r[7]) for r in rows]

    def decisions(self, round: str | int | None = None) -> dict[str, Decision]:
        """The last decision on each item (of one round, or of all), by item id."""
        cols = 'round, item, verdict, edited, "check", kind, comment, at'
        if round is None:
            rows = self._rows(f"SELECT {cols} FROM decisions ORDER BY at", ())
        else:
            rows = self._rows(f"SELECT {cols} FROM decisions WHERE round = ? ORDER BY at", (str(round),))
        return {d.item: d for d in rows}

    def get(self, round: str | int, item: str) -> Decision | None:
        return self.decisions(round).get(item)

    def history(self, item: str | None = None) -> list[Decision]:
        cols = 'round, item, verdict, edited, "check", kind, comment, at'
        if item is None:
            return self._rows(f"SELECT {cols} FROM history ORDER BY id", ())
        return self._rows(f"SELECT {cols} FROM history WHERE item = ? ORDER BY id", (item,))


# ---- how decisions take effect ----

@dataclass
class Applied:
    items: list[Sample]  # what trains and is exported
    rejected: list[str] = field(default_factory=list)  # ids a person rejected (left out)
    edited: list[str] = field(default_factory=list)  # ids whose edit passed the filter (the edit replaces the item)
    failing: dict[str, str] = field(default_factory=dict)  # ids whose edit failed the filter: the reason (left out)

    def summary(self) -> str:
        return (f"{len(self.rejected)} rejected, {len(self.edited)} edited"
                + (f", {len(self.failing)} edits failing the filter (left out: "
                   + "; ".join(f"{i}: {r}" for i, r in self.failing.items()) + ")" if self.failing else ""))

    def decided(self) -> dict[str, Sample | None]:
        """Item id -> its edit (passing), or None (rejected, or an edit that fails): only the items a
        decision changed, as `stages.with_evolved` takes them for evolved children."""
        edited = set(self.edited)
        return ({i: None for i in [*self.rejected, *self.failing]}
                | {s.id: s for s in self.items if s.id in edited})


def basic_check(s: Sample) -> str:
    """The filter's checks that need nothing but the item: its format, and whether it leaks its answer."""
    from ..filter import check_format, check_leak
    return check_format(s) or check_leak(s) or ""


def answer_check(edit: Sample, original: Sample) -> str:
    """Where an edit changed the answer sentence or the short answer, the sentence must say the
    short answer (`filter.check_sentence`): "" or the reason. Only then, as the filter never asked
    it of generated items, and an LLM's sentence may word its answer otherwise."""
    from ..filter import check_sentence
    from ..qtypes.vocabulary import norm
    if (norm(edit.answer), norm(edit.short_answer)) == (norm(original.answer), norm(original.short_answer)):
        return ""
    return check_sentence(edit) or ""


def apply(decisions: dict[str, Decision], kept: Iterable[Sample], others: Iterable[Sample] = (),
          recheck: Callable[[Sample, list[Sample]], str] | None = None) -> Applied:
    """The items to train on and export after a person's decisions. `kept`: what the filter kept;
    `others`: the round's other items (what it dropped), which an edit may bring back.
    Rejected items are left out; an edited item replaces the original when the edit passes the filter
    again (`recheck(edit, kept)` returns "" or the reason; without it, the check recorded when the
    edit was made, or the format and leak checks) and, where it changed the answer, says the short
    answer in its sentence (`answer_check`); it is left out, reported as failing, when it does not,
    and so is the original.
    Accepting an item changes nothing: the filter's verdict on a dropped item stands."""
    kept = list(kept)
    out = Applied(items=[])
    kept_ids = {s.id for s in kept}
    edits = {}
    for s in [*kept, *(o for o in others if o.id not in kept_ids)]:
        d = decisions.get(s.id)
        if d is None or d.verdict not in ("reject", "edit") or s.id in edits:
            continue
        if d.verdict == "reject":
            if s.id in kept_ids:
                out.rejected.append(s.id)
            continue
        if recheck:
            reason = recheck(d.edited, kept) or answer_check(d.edited, s)
        else:  # the check recorded when the edit was made holds the answer check too
            reason = d.check if d.check is not None else basic_check(d.edited) or answer_check(d.edited, s)
        if reason:
            out.failing[s.id] = reason
        else:
            edits[s.id] = d.edited
            out.edited.append(s.id)
    for s in kept:
        if s.id in out.rejected or s.id in out.failing:
            continue
        out.items.append(edits.pop(s.id, s))
    out.items += list(edits.values())  # dropped by the filter, brought back by an edit that passes
    return out


def open_store(run_dir: str | Path) -> ReviewStore | None:
    """The run's review database, or None when nobody has reviewed it."""
    path = Path(run_dir) / DB_NAME
    return ReviewStore(path) if path.is_file() else None


def reviewed_round(run_dir: str | Path, k: int, recheck: Callable[[Sample, list[Sample]], str] | None = None) -> Applied:
    """Round k's kept items (`round_k/filtered.jsonl`) with the run's review decisions applied."""
    rd = Path(run_dir) / f"round_{k}"
    kept = read_jsonl(rd / "filtered.jsonl", Sample) if (rd / "filtered.jsonl").exists() else []
    store = open_store(run_dir)
    if store is None:
        return Applied(items=kept)
    decisions = store.decisions(k)
    others = read_jsonl(rd / "generated.jsonl", Sample) if decisions and (rd / "generated.jsonl").exists() else []
    return apply(decisions, kept, others, recheck)


def reviewed_children(run_dir: str | Path, k: int,
                      recheck: Callable[[Sample, list[Sample]], str] | None = None) -> tuple[list[Sample], Applied]:
    """Round k's kept evolved children (`round_k/evolve/evolved.jsonl`, [] without it) as evolution
    wrote them, and the run's review decisions on them (`Applied.decided()` for `stages.with_evolved`).
    An edited child is re-checked beside the round's kept items, as the review page checks it."""
    rd = Path(run_dir) / f"round_{k}"
    path = rd / "evolve" / "evolved.jsonl"
    children = read_jsonl(path, Sample) if path.exists() else []
    store = open_store(run_dir)
    decisions = store.decisions(k) if store is not None and children else {}
    if not decisions:
        return children, Applied(items=children)
    seen = read_jsonl(rd / "filtered.jsonl", Sample) if recheck and (rd / "filtered.jsonl").exists() else []
    return children, apply(decisions, children, recheck=(lambda s, _: recheck(s, seen)) if recheck else None)


def apply_review(samples: list[Sample], run_dir: str | Path) -> Applied:
    """Any samples (a file to export or mix) with the run's review decisions applied, by item id (the
    checks recorded when each edit was made)."""
    store = open_store(run_dir)
    if store is None:
        raise DataError(f"{Path(run_dir) / DB_NAME}: no review database (review the run with `dataengine review {run_dir}`)")
    return apply(store.decisions(), samples)


def dumps(d: Decision) -> str:
    return json.dumps(d.model_dump(mode="json"))
