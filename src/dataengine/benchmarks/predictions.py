"""Predictions made elsewhere, read so they can be scored here: this project's predictions.jsonl,
VLMEvalKit's prediction files (xlsx, tsv, csv or jsonl with `index` and `prediction`), and
lmms-eval's logged samples (jsonl with `doc_id` and `filtered_resps` / `resps`)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError
from ..records import Question, read_json, read_table, read_text


def _rows(path: Path) -> tuple[list[dict], str]:
    """The file's records, and how its positions are named in messages ("line", or "row" with the
    header as row 1, as a spreadsheet numbers them)."""
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        from zipfile import BadZipFile

        from openpyxl import load_workbook
        try:
            sheet = load_workbook(path, read_only=True, data_only=True).active
            rows = list(sheet.iter_rows(values_only=True))
        except (OSError, ValueError, KeyError, BadZipFile) as e:
            raise DataError(f"{path}: not a readable .xlsx spreadsheet ({e.__class__.__name__})") from None
        if not rows:
            return [], "row"
        head = [str(h) if h is not None else "" for h in rows[0]]
        return [dict(zip(head, r)) for r in rows[1:]], "row"
    if suffix in (".tsv", ".csv"):
        return read_table(path, "\t" if suffix == ".tsv" else ","), "row"
    if suffix == ".json":
        data = read_json(path)
        data = data.get("logs", data) if isinstance(data, dict) else data
        if not isinstance(data, list):
            raise DataError(f"{path}: expected a list of predictions (or lmms-eval's {{\"logs\": [...]}})")
        return data, "item"
    if suffix == ".jsonl":
        out = []
        for n, line in enumerate(read_text(path).splitlines(), 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}: line {n}: not valid JSON ({e.msg})") from None
        return out, "line"
    raise DataError(f"{path}: predictions as .xlsx, .tsv, .csv, .jsonl or .json")


def _text(v) -> str:
    while isinstance(v, list) and v:  # lmms-eval nests its responses: [["B"]]
        v = v[0]
    return "" if v is None or isinstance(v, list) else str(v)


def read_predictions(path: str | Path, questions: list[Question]) -> dict[str, str]:
    """Question id -> the model's raw answer, from a predictions file in any of the three forms.
    lmms-eval's `doc_id` is the question's place in the benchmark file, questions this project
    skips (video, several images) counted."""
    path = Path(path)
    rows, unit = _rows(path)
    if not rows:
        raise DataError(f"{path}: no predictions")

    def where(n: int) -> str:
        return f"row {n + 2}" if unit == "row" else f"{unit} {n + 1}"
    by_order = {q.order if q.order is not None else k: q.question_id for k, q in enumerate(questions)}
    ids = {q.question_id: q.question_id for q in questions}
    # VLMEvalKit writes indices as numbers: "00017" in the benchmark is 17 in its file
    ids |= {str(int(q)): q for q in list(ids) if q.isascii() and q.isdigit() and str(int(q)) not in ids}
    out: dict[str, str] = {}
    for n, r in enumerate(rows):
        if not isinstance(r, dict):
            raise DataError(f"{path}: {where(n)}: not a record")
        if "question_id" in r and ("raw" in r or "prediction" in r):  # this project's
            qid, answer = str(r["question_id"]), r.get("raw") or r.get("prediction")
        elif "index" in r and "prediction" in r:  # VLMEvalKit's
            qid, answer = str(r["index"]).removesuffix(".0"), r["prediction"]
        elif "doc_id" in r:  # lmms-eval's: the question's place in the benchmark file, skipped ones counted
            i = r["doc_id"]
            if not isinstance(i, int) or isinstance(i, bool) or i not in by_order:
                raise DataError(f"{path}: {where(n)}: doc_id {i!r} is not a question of the benchmark this reads")
            qid, answer = by_order[i], r.get("filtered_resps", r.get("resps"))
        else:
            raise DataError(f"{path}: {where(n)}: no question id (question_id, index or doc_id) with an answer")
        if qid not in ids:
            raise DataError(f"{path}: {where(n)}: question {qid} is not in the benchmark")
        qid = ids[qid]
        if qid in out:
            raise DataError(f"{path}: {where(n)}: question {qid} is answered twice")
        out[qid] = _text(answer)
    return out
