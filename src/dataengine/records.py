"""Plain records that flow between the stages of the loop.

Everything a stage reads or writes is one of these, stored as JSON lines, so stages
compose through files and each can be run alone.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, TextIO, TypeVar

from pydantic import BaseModel, Field, ValidationError

from .errors import DataError

# Option letters: generated items have four (A-D); benchmarks up to eight (VLMEvalKit reads A-H).
LETTERS = tuple("ABCDEFGH")

# The nine image dimensions of SEED-Bench, with the definitions its paper gives.
QTYPES: dict[int, tuple[str, str]] = {
    1: ("Scene Understanding", "Focuses on the global information in the image; questions can be answered through a holistic understanding of the image."),
    2: ("Instance Identity", "Involves the identification of a certain instance in the image, including its existence or category."),
    3: ("Instance Attributes", "Is related to the attributes of an instance, such as color, shape or material."),
    4: ("Instance Location", "Concerns the absolute position of one specified instance in the image."),
    5: ("Instances Counting", "Requires the model to count the number of a specific object in the image."),
    6: ("Spatial Relation", "Asks the model to ground two mentioned objects and recognise their relative spatial relation."),
    7: ("Instance Interaction", "Requires the model to recognise the state relation or interaction between two objects."),
    8: ("Visual Reasoning", "Evaluates whether the model can reason based on the visual information."),
    9: ("Text Understanding", "The model should answer questions about textual elements in the image."),
}


def qtype_name(qtype: int) -> str:
    return QTYPES[qtype][0] if qtype in QTYPES else f"type {qtype}"


def is_seed_type(qtype: int, name: str) -> bool:
    """A SEED-Bench type under its own name, not a benchmark's category (MMBench's are numbered 1, 2, ... too)."""
    return qtype in QTYPES and QTYPES[qtype][0] == name


@dataclass
class Inputs:
    """The files a run reads: a benchmark, the pool and the original training data with their images."""
    benchmark: Path  # SEED-Bench JSON or MMBench TSV
    image_root: Path  # the pool's and the original data's images
    pool: Path  # JSON lines of ImageAnnotation
    original: Path  # JSON lines of Sample
    benchmark_image_root: Path  # the benchmark's images (for MMBench: where they are written)


# ---- image annotations (the shape real pools such as Visual Genome and COCO map into) ----

class ObjectAnn(BaseModel):
    id: int
    name: str
    bbox: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    attributes: list[str] = Field(default_factory=list)


class Relation(BaseModel):
    subject: int
    predicate: str
    object: int


class Region(BaseModel):
    bbox: tuple[float, float, float, float]
    phrase: str


class TextAnn(BaseModel):
    text: str
    bbox: tuple[float, float, float, float]


class ImageAnnotation(BaseModel):
    image_id: str
    image: str  # path relative to the image root
    width: int
    height: int
    setting: str | None = None  # the kind of place, where the source knows it
    captions: list[str] = Field(default_factory=list)
    objects: list[ObjectAnn] = Field(default_factory=list)
    relations: list[Relation] = Field(default_factory=list)
    regions: list[Region] = Field(default_factory=list)
    texts: list[TextAnn] = Field(default_factory=list)
    # Names whose instances on this image may not all be annotated (COCO's crowds, LVIS's
    # not-exhaustive categories): never counted, never said to be absent.
    inexhaustive: list[str] = Field(default_factory=list)
    absent: list[str] = Field(default_factory=list)  # names known not to be on the image (LVIS's negatives)

    def object(self, oid: int) -> ObjectAnn:
        return next(o for o in self.objects if o.id == oid)


# ---- training data in the MLLM-DataEngine released format ----

class Verdict(BaseModel):
    """An evolution judge's word on a child item against its parent (MMEvol's elimination)."""
    judge: str  # "grounded" or "llm:<model>:evolve-v<n>"
    kept: bool
    improved: bool  # more complex than the parent
    correct: bool | None  # the annotation confirms it (None: the judge could not tell)
    score: float | None = None  # MMEvol's 1-10 complexity score (the LLM judge) or the complexity gain
    reason: str = ""


class Lineage(BaseModel):
    """Where an evolved item comes from (`evolve`): its parent, the operator that made it, the
    evolution round, its task format, the steps of its reasoning and the judge's verdict."""
    parent: str  # the parent item's id
    root: str  # the seed item's id, before any evolution
    operator: str  # "perception", "reasoning" or "interaction"
    round: int  # 1 for a child of a seed item
    format: str = "multiple choice"  # the task format (the interaction operator changes it)
    steps: list[str] = Field(default_factory=list)  # one fact a step, in order
    skills: list[str] = Field(default_factory=list)
    complexity: float = 0.0
    verdict: Verdict | None = None


class Sample(BaseModel):
    id: str
    image: str
    instruction: str
    answer: str
    short_answer: str
    options: list[str]
    choice_answer: str
    qtype: int
    source: str = ""  # "starter", "round-1", ...
    generator: str = ""
    lineage: Lineage | None = None  # only for items made by evolving another


# ---- evaluation ----

class Question(BaseModel):
    """One multiple-choice benchmark item, whatever file format it came from."""
    question_id: str
    question: str
    options: list[str]
    answer: str  # letter
    qtype: int  # SEED-Bench dimension 1-9, or the number of a benchmark's category (see `category`)
    image: str
    category: str | None = None  # the benchmark's own name of the type (MMBench's category, SEED's table)
    l2_category: str | None = None
    hint: str = ""  # context given with the question (MMBench's hint)
    # CircularEval: the question all rotations of these options share, and which rotation this is
    group: str = ""
    rotation: int = 0
    order: int | None = None  # its place in the benchmark file, skipped questions counted (lmms-eval's doc_id)

    @property
    def text(self) -> str:
        """The question with its hint before it, as the model is asked it."""
        return f"{self.hint}\n{self.question}" if self.hint else self.question


class Prediction(BaseModel):
    question_id: str
    qtype: int
    image: str
    category: str | None = None
    l2_category: str | None = None
    question: str
    options: list[str]
    answer: str
    prediction: str
    correct: bool
    scores: list[float] = Field(default_factory=list)  # per-option loss; lower is better
    raw: str = ""  # generated text, when scored by generation
    extracted: str = ""  # how the letter came out of that text: "letter", "option" (fallback) or "none"
    # "diagnosis" (what ABS plans from) or "report" (held out from planning and generation), when the
    # benchmark is split; "" when it is not
    part: str = ""
    group: str = ""  # CircularEval: the question this rotation belongs to ("": itself)
    rotation: int = 0


class TypeResult(BaseModel):
    qtype: int
    name: str
    total: int
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


class EvalResult(BaseModel):
    benchmark: str
    method: str
    per_type: dict[int, TypeResult]
    total: int
    correct: int
    extraction: dict[str, int] = Field(default_factory=dict)  # letter method: answers by how they were read
    per_l2: dict[str, TypeResult] = Field(default_factory=dict)  # per l2-category (MMBench), where the benchmark has them
    circular: float | None = None  # CircularEval: share of questions right in every rotation
    parts: dict[str, "EvalResult"] = Field(default_factory=dict)  # "diagnosis" and "report", when the benchmark is split

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def accuracies(self) -> dict[int, float]:
        return {t: r.accuracy for t, r in self.per_type.items()}

    def part(self, name: str) -> "EvalResult":
        """The result on one part of a split benchmark ("diagnosis", "report"); the whole when not split."""
        return self.parts.get(name, self)


# ---- text files as users save them, JSON lines with clear errors ----

def open_text(path: str | Path, newline: str | None = None) -> TextIO:
    """Open a user's text file: UTF-8 with or without a byte-order mark (Notepad, Excel's "CSV UTF-8",
    PowerShell), any line ends. Every reader of the project opens text through here."""
    path = Path(path)
    try:
        return path.open(encoding="utf-8-sig", newline=newline)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: a folder, not a file") from None
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror})") from None


def read_text(path: str | Path) -> str:
    """A user's whole text file (see `open_text`); DataError if it is not UTF-8."""
    with open_text(path) as f:
        try:
            return f.read()
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None


def read_json(path: str | Path):
    """A user's JSON file, parsed; DataError naming the file and the line of a syntax error."""
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON (line {e.lineno}: {e.msg})") from None


def read_table(path: str | Path, delimiter: str = "\t") -> list[dict]:
    """The rows of a TSV (or, with ",", CSV) file as dicts by the header; fields may be huge (base64
    images). DataError if the file is not UTF-8 or has no rows."""
    import csv
    import sys
    csv.field_size_limit(sys.maxsize)
    with open_text(path, newline="") as f:
        try:
            rows = list(csv.DictReader(f, delimiter=delimiter))
        except UnicodeDecodeError as e:
            raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None
    if not rows:
        raise DataError(f"{path}: no rows")
    return rows


M = TypeVar("M", bound=BaseModel)


def read_jsonl(path: str | Path, model: type[M], torn_ok: bool = False) -> list[M]:
    """The records of a JSON-lines file; DataError naming the file, line and field of a bad one.
    `torn_ok`: a last line cut short (no newline: the writer was killed mid-line) is dropped, as a
    file appended to as work finishes is read on resume."""
    path = Path(path)
    out = []
    with open_text(path) as f:
        lines = list(_lines(f, path))
    for n, line in lines:
        if not line.strip():
            continue
        try:
            out.append(model.model_validate_json(line))
        except ValidationError as e:
            if torn_ok and n == len(lines) and not line.endswith("\n"):
                break
            err = e.errors()[0]
            where = ".".join(str(x) for x in err["loc"]) or "record"
            raise DataError(f"{path}: line {n}: {where}: {err['msg']}") from None
    return out


def differs(record: str | Path, what: dict, lenient: bool = False) -> list[str]:
    """The keys of `what` whose value differs from the JSON record at `record` (what made a file or
    folder: model, inputs, settings); [] when there is no record. `lenient`: a key the record lacks
    (one an older version did not write) is no difference."""
    record = Path(record)
    if not record.exists():
        return []
    old = json.loads(record.read_text())
    return [k for k in what if (old.get(k, what[k]) if lenient else old.get(k)) != what[k]]


def resume_jsonl(path: str | Path, model: type[M], what: dict, kind: str = "work") -> list[M]:
    """The records a killed run appended to `path`, to resume from (a last line cut short by the
    kill is dropped and the file rewritten without it, so appends start on a line of their own).
    `what` identifies the run (model, inputs, settings) and is kept beside the file (`.meta.json`):
    records of another run are refused in one line naming what differs, never mixed in."""
    path = Path(path)
    meta = path.with_suffix(".meta.json")
    if path.exists() and (diff := differs(meta, what)):
        raise DataError(f"{path}: partial {kind} of another run ({', '.join(diff)} differ): remove it "
                        f"or write into another --out")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(meta, what)
    done = read_jsonl(path, model, torn_ok=True) if path.exists() else []
    if done:
        write_jsonl(path, done)
    return done


def append_jsonl(path: str | Path, records: Iterable[BaseModel]) -> None:
    """Add records to a file that grows as work finishes (see `resume_jsonl`)."""
    with Path(path).open("a", encoding="utf-8") as f:
        for r in records:
            f.write(r.model_dump_json() + "\n")


def finish_partial(path: str | Path) -> None:
    """Remove a partial file and its `.meta.json` once the whole result is written."""
    Path(path).unlink(missing_ok=True)
    Path(path).with_suffix(".meta.json").unlink(missing_ok=True)


def _lines(f: TextIO, path: Path) -> Iterator[tuple[int, str]]:
    try:
        yield from enumerate(f, 1)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start})") from None


def temp_name(path: Path) -> Path:
    """A temporary name beside `path`, private to this process: under torchrun several processes may
    write the same file at once, and a shared temporary name would be renamed away under one of them."""
    return path.with_name(f"{path.name}.{os.getpid()}.tmp")


def write_jsonl(path: str | Path, records: Iterable[BaseModel]) -> Path:
    """Write atomically: a crash leaves either the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    with tmp.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(r.model_dump_json() + "\n")
    os.replace(tmp, path)
    return path


def write_text(path: str | Path, text: str) -> Path:
    """Write atomically (a temporary name, then renamed): a kill leaves the old file or the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_json(path: str | Path, data) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
