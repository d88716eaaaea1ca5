"""Predictions made elsewhere, read so they can be scored here: this project's predictions.jsonl,
VLMEvalKit's prediction files (xlsx, tsv, csv or jsonl with `index` and `prediction`), and
lmms-eval's logged samples (jsonl with `doc_id` and `filtered_resps` / `resps`)."""
from __future__ import annotations

import json
from pathlib import Path

from ..errors import DataError
from ..records import Question, read_table, read_text


def _rows(path: Path) -> list[dict]:
    suffix = path.suffix.lower()
    if suffix == ".xlsx":
        from openpyxl import load_workbook
        try:
            sheet = load_workbook(path, read_only=True, data_only=True).active
        except (OSError, ValueError, KeyError) as e:
            raise DataError(f"{path}: cannot read the spreadsheet ({e.__class__.__name__})") from None
        rows = list(sheet.iter_rows(values_only=True))
        if not rows:
            return []
        head = [str(h) if h is not None else "" for h in rows[0]]
        return [dict(zip(head, r)) for r in rows[1:]]
    if suffix in (".tsv", ".csv"):
        return read_table(path, "\t" if suffix == ".tsv" else ",")
    if suffix in (".jsonl", ".json"):
        text = read_text(path)
        try:
            if suffix == ".json":
                data = json.loads(text)
                return data if isinstance(data, list) else data.get("logs", [])
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None
    raise DataError(f"{path}: predictions as .xlsx, .tsv, .csv, .jsonl or .json")


def _text(v) -> str:
    while isinstance(v, list) and v:  # lmms-eval nests its responses: [["B"]]
        v = v[0]
    return "" if v is None or isinstance(v, list) else str(v)


def read_predictions(path: str | Path, questions: list[Question]) -> dict[str, str]:
    """Question id -> the model's raw answer, from a predictions file in any of the three forms."""
    path = Path(path)
    rows = _rows(path)
    if not rows:
        raise DataError(f"{path}: no predictions")
    ids = {q.question_id: q.question_id for q in questions}
    # VLMEvalKit writes indices as numbers: "00017" in the benchmark is 17 in its file
    ids |= {str(int(q)): q for q in list(ids) if q.isdigit() and str(int(q)) not in ids}
    out: dict[str, str] = {}
    for n, r in enumerate(rows):
        if not isinstance(r, dict):
            raise DataError(f"{path}: row {n + 1}: not a record")
        if "question_id" in r and ("raw" in r or "prediction" in r):  # this project's
            qid, answer = str(r["question_id"]), r.get("raw") or r.get("prediction")
        elif "index" in r and "prediction" in r:  # VLMEvalKit's
            qid, answer = str(r["index"]).removesuffix(".0"), r["prediction"]
        elif "doc_id" in r:  # lmms-eval's: the position of the question in the benchmark file
            i = r["doc_id"]
            if not isinstance(i, int) or not 0 <= i < len(questions):
                raise DataError(f"{path}: row {n + 1}: doc_id {i!r} is not a question of the benchmark")
            qid, answer = questions[i].question_id, r.get("filtered_resps", r.get("resps"))
        else:
            raise DataError(f"{path}: row {n + 1}: no question id (question_id, index or doc_id) with an answer")
        if qid not in ids:
            raise DataError(f"{path}: row {n + 1}: question {qid} is not in the benchmark")
        qid = ids[qid]
        if qid in out:
            raise DataError(f"{path}: row {n + 1}: question {qid} is answered twice")
        out[qid] = _text(answer)
    return out
