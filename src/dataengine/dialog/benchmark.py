"""A multi-round dialog benchmark: held-out images, and per image a dialog whose later turns refer
back to an earlier answer ("Which shape is to the left of the red box?" then "What colour is it?"),
each turn with a format instruction (letter, word, box, sentence), after the multi-round evaluation
of "COCO is ALL you need" (arXiv 2401.08968, MM-Vet multi-round).

Each dialog carries its image's annotation, and every answer is derived from it, so each turn is
scored exactly. The model answers turn by turn with its own earlier answers in the conversation (as
in a real dialog); the report gives accuracy per turn index and per format, and format compliance
(did it answer with a letter / a word / a box / a sentence when asked).

The file is JSON ({"version": 1, "dialogs": [...]}); its images are never trained on (`merge`
refuses them; the world renders them from seeds no pool uses).
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, Field, ValidationError

from ..errors import DataError
from ..qtypes.geometry import direction
from ..records import LETTERS, ImageAnnotation, read_json, write_json, write_jsonl
from .conversation import FORMATS, complies, format_box, iou, normalise, parse_box, parse_letter, with_instruction

# A relation as the annotation names it -> as a question says it.
WHERE = {"left of": "to the left of", "right of": "to the right of", "above": "above", "below": "below"}
# Seeds of the dialog benchmark's scenes: apart from the pool's (seed * 10**6 + i) and the SEED benchmark's (+ 500_000).
SEED_OFFSET = 900_000


class DialogTurn(BaseModel):
    question: str  # as asked: the question and its format's instruction
    answer: str  # the reference answer
    format: str  # one of FORMATS
    kind: str  # "locate", "colour", "box", "size", "existence"
    keys: list[str] = Field(default_factory=list)  # sentence answers: the words a right one says
    refers_to: int | None = None  # the turn whose answer "it" is


class Dialog(BaseModel):
    id: str
    image: str
    target: int  # the object the dialog is about (its id in the annotation)
    annotation: ImageAnnotation
    turns: list[DialogTurn]


class DialogPrediction(BaseModel):
    dialog: str
    turn: int  # 0-based index in the dialog
    kind: str
    format: str
    question: str
    answer: str
    reply: str
    correct: bool
    complies: bool
    grade: float | None = None  # the LLM grader's 0-1 score, for open-ended answers graded that way
    ungraded: bool = False  # an open-ended answer the grader gave no usable grade for: out of the accuracy


def _object_phrase(ann: ImageAnnotation, oid: int) -> str:
    o = ann.object(oid)
    return f"{o.attributes[0]} {o.name}"  # the world's attributes are [colour, size]


def dialog_for(ann: ImageAnnotation, rng: random.Random) -> Dialog | None:
    """A dialog about one image: which shape lies in some direction of a shape named by colour and
    kind (unique on the image), then its colour, its box and its size ("it": the shape of the first
    answer), and whether some shape is on the image; the follow-ups in shuffled order. A reference is
    used only when every other shape lies in a definite direction of it (none diagonal: "to the right"
    would be ambiguous), as the evolution grammar resolves. None when the image has no shape that a
    direction singles out so."""
    objs = ann.objects
    phrase = {o.id: _object_phrase(ann, o.id) for o in objs}
    choices = []
    for b in objs:
        if [phrase[o.id] for o in objs].count(phrase[b.id]) != 1:
            continue
        where = {a.id: direction(a.bbox, b.bbox) for a in objs if a.id != b.id}
        if None in where.values():  # a shape diagonal to the reference: a viewer may well call it "to the right" too
            continue
        for pred in WHERE:
            hits = [a for a in objs if a.id != b.id and where[a.id] == pred]
            if len(hits) == 1:
                choices.append((hits[0], pred, b))
    if not choices:
        return None
    a, pred, b = rng.choice(choices)
    colour, size = a.attributes[0], a.attributes[1]
    w, h = ann.width or 1, ann.height or 1
    turns = [DialogTurn(question=with_instruction(f"Which shape is {WHERE[pred]} the {phrase[b.id]}?", "word"),
                        answer=a.name, format="word", kind="locate")]
    follow = []
    if rng.random() < 0.5:
        follow.append(DialogTurn(question=with_instruction("What colour is it?", "word"), answer=colour, format="word",
                                 kind="colour", refers_to=0))
    else:
        follow.append(DialogTurn(question=with_instruction("What colour is it?", "sentence"), answer=f"It is {colour}.",
                                 format="sentence", kind="colour", keys=[colour], refers_to=0))
    follow.append(DialogTurn(question=with_instruction("Where is it?", "box"), answer=format_box(a.bbox, w, h), format="box",
                             kind="box", refers_to=0))
    sizes = ["small", "large"]
    rng.shuffle(sizes)
    opts = "\n".join(f"{l}. {s}" for l, s in zip(LETTERS, sizes))
    follow.append(DialogTurn(question=with_instruction(f"What size is it?\n{opts}", "letter"), answer=LETTERS[sizes.index(size)],
                             format="letter", kind="size", refers_to=0))
    name = rng.choice(sorted({o.name for o in objs} | {"ball", "box", "pyramid", "star", "ring", "cross"}))
    there = any(o.name == name for o in objs)
    follow.append(DialogTurn(question=with_instruction(f"Is there a {name} in the image?", "word"), answer="yes" if there else "no",
                             format="word", kind="existence"))
    rng.shuffle(follow)
    return Dialog(id=f"dialog-{ann.image_id}", image=ann.image, target=a.id, annotation=ann, turns=turns + follow)


def build_dialogs(anns: list[ImageAnnotation], n: int, seed: int = 0) -> list[Dialog]:
    """Up to `n` dialogs, one per image that has one (`dialog_for`), in the images' order."""
    rng = random.Random(seed)
    out = []
    for ann in anns:
        if len(out) >= n:
            break
        if (d := dialog_for(ann, rng)) is not None:
            out.append(d)
    return out


def build_dialog_benchmark(image_root: str | Path, out: str | Path, n: int = 200, seed: int = 0, size: int = 96,
                           cooccurrence: float = 0.0) -> list[Dialog]:
    """`n` dialogs on scenes of the synthetic world rendered for it (under image_root/dialog/, from seeds
    no pool or benchmark uses), written to `out`. DataError when 4n scenes do not give n dialogs."""
    from ..world.render import build_pool
    if Path(image_root).exists() and not Path(image_root).is_dir():
        raise DataError(f"{image_root}: not a folder (--image-root is where the dialog pictures are rendered)")
    _check_made(Path(image_root), size, cooccurrence)
    first = seed * 10**6 + SEED_OFFSET
    anns = build_pool(Path(image_root), "dialog", range(first, first + 2 * n), size, cooccurrence)
    dialogs = build_dialogs(anns, n, seed)
    if len(dialogs) < n:
        anns = build_pool(Path(image_root), "dialog", range(first + 2 * n, first + 4 * n), size, cooccurrence)
        dialogs += build_dialogs(anns, n - len(dialogs), seed + 1)
    if len(dialogs) < n:
        raise DataError(f"{out}: {4 * n} scenes gave {len(dialogs)} dialogs, fewer than {n}")
    _record_made(Path(image_root), size, cooccurrence, seed)
    write_dialogs(out, dialogs)
    return dialogs


def _check_made(image_root: Path, size: int, cooccurrence: float) -> None:
    """DataError when image_root/dialog/ holds pictures rendered with other settings (its made.json),
    or pictures with no record of what made them: kept pictures would not show the scenes described."""
    import json

    from ..records import differs
    folder, record = image_root / "dialog", image_root / "dialog" / "made.json"
    what = {"size": size, "cooccurrence": cooccurrence}
    if record.exists():
        if bad := differs(record, what):
            old = json.loads(record.read_text())
            said = ", ".join(f"{k} {old.get(k)} (asked: {what[k]})" for k in bad)
            raise DataError(f"{folder}: its pictures were made with {said}: use another --image-root or remove the folder")
    elif folder.is_dir() and any(folder.glob("dialog_*.png")):
        raise DataError(f"{folder}: holds pictures with no record of what made them (made.json): "
                        "use another --image-root or remove the folder")


def _record_made(image_root: Path, size: int, cooccurrence: float, seed: int) -> None:
    """Keeps beside the dialog pictures what made them (size, cooccurrence, the seeds built there)."""
    import json
    record = image_root / "dialog" / "made.json"
    seeds = json.loads(record.read_text()).get("seeds", []) if record.exists() else []
    write_json(record, {"size": size, "cooccurrence": cooccurrence, "seeds": sorted(set(seeds) | {seed})})


def write_dialogs(path: str | Path, dialogs: list[Dialog]) -> Path:
    return write_json(path, {"version": 1, "dialogs": [d.model_dump(mode="json") for d in dialogs]})


def read_dialogs(path: str | Path) -> list[Dialog]:
    """A dialog benchmark file; DataError naming the file, the dialog and the field of a bad one."""
    path = Path(path)
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("dialogs"), list):
        raise DataError(f"{path}: not a dialog benchmark (a JSON object with a list 'dialogs')")
    if not data["dialogs"]:
        raise DataError(f"{path}: no dialogs (an empty 'dialogs' list)")
    out, seen = [], set()
    for n, d in enumerate(data["dialogs"]):
        try:
            dialog = Dialog.model_validate(d)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"])
            raise DataError(f"{path}: dialog {d.get('id', n) if isinstance(d, dict) else n}: {where}: {err['msg']}") from None
        if dialog.id in seen:
            raise DataError(f"{path}: dialog {dialog.id}: id given twice")
        if not dialog.turns:
            raise DataError(f"{path}: dialog {dialog.id}: no turns")
        for k, t in enumerate(dialog.turns):
            where = f"{path}: dialog {dialog.id}: turn {k + 1}"
            if t.format not in FORMATS:
                raise DataError(f"{where}: unknown format {t.format!r}; known: {', '.join(FORMATS)}")
            if t.format == "box" and parse_box(t.answer) is None:
                raise DataError(f"{where}: box answer {t.answer!r} is not a box [x1, y1, x2, y2]")
            if t.format == "letter":
                offered = re.findall(r"^([A-H])\. ", t.question, re.M)
                if t.answer not in (offered or LETTERS):
                    raise DataError(f"{where}: letter answer {t.answer!r} is not among the options "
                                    f"({', '.join(offered) or 'none offered'})")
        seen.add(dialog.id)
        out.append(dialog)
    return out


# ---- scoring ----

def score_turn(turn: DialogTurn, reply: str) -> tuple[bool, bool]:
    """(right, in the asked format) for one reply. Right: `letter` the option letter (in its format:
    one of the letters the question offers); `word` the same
    words as the answer (case, punctuation and articles aside); `box` a box with IoU >= 0.5 against
    the answer's; `sentence` every key word said (or, with no keys, the same words as the answer)."""
    ok = complies(reply, turn.format)
    if turn.format == "letter":
        # a letter the question does not offer is no answer in its format either
        offered = re.findall(r"^([A-H])\. ", turn.question, re.M)
        ok = ok and (not offered or parse_letter(reply) in offered)
        right = parse_letter(reply) == turn.answer
    elif turn.format == "box":
        got, ref = parse_box(reply), parse_box(turn.answer)
        right = got is not None and ref is not None and iou(got, ref) >= 0.5
    elif turn.format == "sentence" and turn.keys:
        words = set(normalise(reply).split())
        right = all(k in words for k in turn.keys)
    else:
        right = normalise(reply) == normalise(turn.answer)
    return right, ok


Grader = Callable[[list[tuple[str, str, str]]], list[float | None]]


def evaluate_dialogs(vlm, dialogs: list[Dialog], image_root: str | Path, out: str | Path | None = None,
                     batch_size: int = 16, max_new_tokens: int = 24, grader: Grader | None = None,
                     done: list[DialogPrediction] | None = None,
                     on_dialogs: Callable[[list[DialogPrediction]], None] | None = None) -> dict:
    """Ask every dialog turn by turn (batches of `batch_size` dialogs at the same turn), each turn with
    the model's own earlier answers before it; score each reply (`score_turn`). With `grader` (an LLM
    judge, `judge.llm_grader`), sentence turns without key words are graded 0-1 by it and counted right
    at >= 0.5; one it gives no usable grade is `ungraded`, left out of the accuracy and counted apart. Returns the figures (`dialog_figures`); with `out`, writes predictions.jsonl and results.json there.

    `done`: predictions of an earlier, killed run (`finished_dialogs`): a dialog with all its turns
    there is kept as it is and not asked again; one with only some is asked again from its first turn
    (its later turns depend on its earlier replies). `on_dialogs(predictions)` is called after each
    batch, with all the turns of the dialogs it finished (before grading), so a caller can keep them."""
    from ..images import load_image
    kept = finished_dialogs(dialogs, done or [])
    preds: list[DialogPrediction] = [p for d in dialogs if d.id in kept for p in kept[d.id]]
    todo = [d for d in dialogs if d.id not in kept]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        images = [load_image(image_root, d.image, where=f"dialog {d.id}") for d in chunk]
        replies: list[list[str]] = [[] for _ in chunk]
        for t in range(max(len(d.turns) for d in chunk)):
            rows = [i for i, d in enumerate(chunk) if t < len(d.turns)]
            items = [(images[i], [(chunk[i].turns[j].question, replies[i][j]) for j in range(t)] + [(chunk[i].turns[t].question, None)])
                     for i in rows]
            for i, r in zip(rows, vlm.generate_chat(items, max_new_tokens=max_new_tokens)):
                replies[i].append(r)
        batch = []
        for d, rs in zip(chunk, replies):
            for t, (turn, r) in enumerate(zip(d.turns, rs)):
                right, ok = score_turn(turn, r)
                batch.append(DialogPrediction(dialog=d.id, turn=t, kind=turn.kind, format=turn.format, question=turn.question,
                                              answer=turn.answer, reply=r, correct=right, complies=ok))
        preds += batch
        if on_dialogs:
            on_dialogs(batch)
    # the figures and the file in the dialogs' order, whichever run asked them
    order = {d.id: k for k, d in enumerate(dialogs)}
    preds.sort(key=lambda p: (order[p.dialog], p.turn))
    if grader:
        turns = {(d.id, t): turn for d in dialogs for t, turn in enumerate(d.turns)}
        open_ = [p for p in preds if p.format == "sentence" and not turns[p.dialog, p.turn].keys]
        for p, g in zip(open_, grader([(p.question, p.answer, p.reply) for p in open_])):
            p.grade, p.correct, p.ungraded = g, g is not None and g >= 0.5, g is None
    figures = dialog_figures(preds)
    if out is not None:
        write_jsonl(Path(out) / "predictions.jsonl", preds)
        write_json(Path(out) / "results.json", figures)
    return figures


def finished_dialogs(dialogs: list[Dialog], done: list[DialogPrediction]) -> dict[str, list[DialogPrediction]]:
    """Dialog id -> its predictions, for the dialogs of `dialogs` that `done` holds every turn of
    (each once, asking the dialog's question); a dialog cut short by a kill is not finished."""
    by_dialog: dict[str, dict[int, DialogPrediction]] = {}
    for p in done:
        by_dialog.setdefault(p.dialog, {})[p.turn] = p
    out = {}
    for d in dialogs:
        got = by_dialog.get(d.id, {})
        if sorted(got) == list(range(len(d.turns))) and all(got[k].question == t.question for k, t in enumerate(d.turns)):
            out[d.id] = [got[k] for k in range(len(d.turns))]
    return out


def _share(xs: list[bool]) -> float:
    return sum(xs) / len(xs) if xs else 0.0


def _accuracy(ps: list[DialogPrediction]) -> float:
    return _share([p.correct for p in ps if not p.ungraded])


def dialog_figures(preds: list[DialogPrediction]) -> dict:
    """Accuracy over all turns, per turn index (1-based) and per format; format compliance overall
    and per format; the share of dialogs right in every turn; and how many of each. Turns the grader
    gave no usable grade (`ungraded`) are left out of the accuracies and counted under "ungraded"."""
    by_turn: dict[int, list[DialogPrediction]] = {}
    by_format: dict[str, list[DialogPrediction]] = {}
    by_dialog: dict[str, list[DialogPrediction]] = {}
    for p in preds:
        by_turn.setdefault(p.turn + 1, []).append(p)
        by_format.setdefault(p.format, []).append(p)
        by_dialog.setdefault(p.dialog, []).append(p)
    return {
        "turns": len(preds), "dialogs": len(by_dialog), "ungraded": sum(p.ungraded for p in preds),
        "accuracy": _accuracy(preds),
        "compliance": _share([p.complies for p in preds]),
        "later_turns_accuracy": _accuracy([p for p in preds if p.turn > 0]),
        "per_turn": {t: {"n": len(ps), "accuracy": _accuracy(ps), "compliance": _share([p.complies for p in ps])}
                     for t, ps in sorted(by_turn.items())},
        "per_format": {f: {"n": len(ps), "accuracy": _accuracy(ps), "compliance": _share([p.complies for p in ps])}
                       for f, ps in sorted(by_format.items())},
        "whole_dialogs": _share([all(p.correct for p in ps) for ps in by_dialog.values() if not any(p.ungraded for p in ps)]),
    }


def open_ended(dialogs: list[Dialog]) -> int:
    """How many turns a grader would grade: sentence answers with no key words."""
    return sum(t.format == "sentence" and not t.keys for d in dialogs for t in d.turns)


def dialog_images(dialogs: list[Dialog]) -> set[str]:
    """The images a dialog benchmark asks about (never trained on)."""
    return {d.image for d in dialogs}
