"""Export generated data so other stacks train on it, and load it back:

- LLaVA conversation JSON (LLaVA, LLaMA-Factory's sharegpt format), in the direct-answer form and the
  multiple-choice form; each entry also keeps `qtype`, `short_answer` and its provenance, which those loaders ignore,
  so the file loads back into the same samples;
- a Hugging Face `datasets` dataset as Parquet shards with the images embedded.
"""
from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from .benchmarks.answers import LETTER_INSTRUCTION
from .errors import DataError
from .images import resolve
from .records import LETTERS, Lineage, Sample, read_json, write_json
from .registry import Registry

# The LLaVA JSON's forms: question -> sentence, question + options -> letter, or one of each.
FORMS: Registry[str] = Registry("LLaVA export form")
for _form in ("direct", "choice", "both"):
    FORMS.register(_form, _form)


def to_llava(samples: list[Sample], form: str = "both") -> list[dict]:
    """`direct`: question -> answer sentence; `choice`: question + options -> letter; `both`: one of each."""
    FORMS.get(form)
    from .filter import check_format
    out = []
    for s in samples:
        if (problem := check_format(s)):
            raise DataError(f"sample {s.id}: {problem}: not exported")
        if PurePosixPath(s.image).is_absolute() or ".." in PurePosixPath(s.image).parts:
            raise DataError(f"sample {s.id}: image path {s.image!r} leaves the image root: not exported")
        s = s.model_copy(update={"instruction": s.instruction.replace("<image>", "").strip()})
        extra = {"qtype": s.qtype, "short_answer": s.short_answer, "source": s.source, "generator": s.generator}
        if s.lineage:
            extra["lineage"] = s.lineage.model_dump(mode="json")
        if form in ("direct", "both"):
            out.append({"id": f"{s.id}-direct", "image": s.image, "conversations": [
                {"from": "human", "value": f"<image>\n{s.instruction}"}, {"from": "gpt", "value": s.answer}], **extra})
        if form in ("choice", "both"):
            opts = "\n".join(f"{l}. {o}" for l, o in zip(LETTERS, s.options))
            out.append({"id": f"{s.id}-choice", "image": s.image, "conversations": [
                {"from": "human", "value": f"<image>\n{s.instruction}\n{opts}\n{LETTER_INSTRUCTION}"},
                {"from": "gpt", "value": s.choice_answer}], **extra})
    return out


def check_pictures(samples: list[Sample], image_root: str | Path) -> None:
    """Open every picture the samples name, so an export never names one a trainer cannot read;
    DataError naming the file and the sample otherwise."""
    from .images import load_image
    for s in samples:
        load_image(image_root, s.image, where=f"sample {s.id}", max_side=32)


def export_llava(samples: list[Sample], path: str | Path, form: str = "both", image_root: str | Path | None = None) -> Path:
    """LLaVA conversation JSON; with `image_root`, every picture is opened first (`check_pictures`)."""
    if image_root is not None:
        check_pictures(samples, image_root)
    return write_json(path, to_llava(samples, form))


_OPTION = re.compile(r"^([A-D])\. (.*)$")


def from_llava(path: str | Path) -> list[Sample]:
    """Samples back from a LLaVA JSON written by `export_llava` (both forms, or the choice form alone)."""
    path = Path(path)
    entries = read_json(path)
    merged: dict[str, dict] = {}
    for n, e in enumerate(entries):
        try:
            sid, kind = e["id"].rsplit("-", 1)
            human, gpt = e["conversations"][0]["value"], e["conversations"][1]["value"]
        except (KeyError, IndexError, ValueError, TypeError, AttributeError):
            raise DataError(f"{path}: entry {n}: not an exported conversation (id '<sample>-direct|choice', two turns)") from None
        m = merged.setdefault(sid, {"id": sid, "image": e.get("image", ""), "qtype": e.get("qtype", 0),
                                    "short_answer": e.get("short_answer", ""), "answer": "",
                                    "source": e.get("source", ""), "generator": e.get("generator", ""),
                                    "lineage": e.get("lineage")})
        lines = human.removeprefix("<image>\n").split("\n")
        if kind == "direct":
            m["instruction"], m["answer"] = "\n".join(lines), gpt
        elif kind == "choice":
            opts = [(mm.group(1), mm.group(2)) for line in lines if (mm := _OPTION.match(line))]
            if not opts:
                raise DataError(f"{path}: entry {n}: no 'A. ...' options in the question")
            m["instruction"] = "\n".join(line for line in lines if not _OPTION.match(line) and line != LETTER_INSTRUCTION)
            m["options"], m["choice_answer"] = [o for _, o in opts], gpt.strip()
    out = []
    for sid, m in merged.items():
        if "options" not in m:
            raise DataError(f"{path}: sample {sid}: no multiple-choice entry, so its options are unknown")
        m["short_answer"] = m["short_answer"] or m["options"][LETTERS.index(m["choice_answer"])]
        out.append(Sample(answer=m["answer"] or m["short_answer"], **{k: v for k, v in m.items() if k != "answer"}))
    return out


# ---- Hugging Face datasets ----

def export_hf(samples: list[Sample], image_root: str | Path, out_dir: str | Path, shard_size: int = 1000) -> Path:
    """Parquet shards (`data-00000.parquet`, ...) with each image's bytes embedded; `datasets.load_dataset
    ("parquet", data_dir=out_dir)` or `import_hf` loads them."""
    import datasets
    check_pictures(samples, image_root)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    features = datasets.Features({
        "id": datasets.Value("string"), "image": datasets.Image(), "image_path": datasets.Value("string"),
        "instruction": datasets.Value("string"), "answer": datasets.Value("string"),
        "short_answer": datasets.Value("string"), "options": datasets.Sequence(datasets.Value("string")),
        "choice_answer": datasets.Value("string"), "qtype": datasets.Value("int32"),
        "source": datasets.Value("string"), "generator": datasets.Value("string"),
        "lineage": datasets.Value("string")})  # an evolved item's `Lineage` as JSON, "" for others
    for i in range(0, max(len(samples), 1), shard_size):
        rows = []
        for s in samples[i:i + shard_size]:
            path = resolve(image_root, s.image, where=f"sample {s.id}")
            if not path.exists():
                raise DataError(f"{path}: sample {s.id}: image not found")
            rows.append(s.model_dump() | {"image": {"path": s.image, "bytes": path.read_bytes()}, "image_path": s.image,
                                          "lineage": s.lineage.model_dump_json() if s.lineage else ""})
        ds = datasets.Dataset.from_list(rows, features=features)
        ds.to_parquet(str(out_dir / f"data-{i // shard_size:05d}.parquet"))
    return out_dir


def parquet_rows(data_dir: str | Path, image_root: str | Path, what: str = "row"):
    """The rows of a folder of Parquet shards with embedded images (`image` bytes, `image_path`),
    each image written to its path under `image_root` unless already there. DataError for a folder
    with no shards, or an image path that leaves the root (naming the row's `id`)."""
    import datasets
    files = sorted(str(p) for p in Path(data_dir).glob("*.parquet"))
    if not files:
        raise DataError(f"{data_dir}: no Parquet shards here")
    import pyarrow.parquet as pq
    for f in files:  # a truncated or foreign file would otherwise surface as a traceback from deep in pyarrow
        try:
            pq.read_metadata(f)
        except Exception as e:  # pyarrow raises several kinds (ArrowInvalid, OSError) for a bad file
            raise DataError(f"{f}: not a readable Parquet shard ({str(e).splitlines()[0]})") from None
    ds = datasets.load_dataset("parquet", data_files=files, split="train")
    for name, feature in ds.features.items():  # every picture column as its bytes, as written
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(name, datasets.Image(decode=False))
    for row in ds:
        path = resolve(image_root, row["image_path"], where=f"{what} {row['id']}")
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(row["image"]["bytes"])
        yield row


def import_hf(data_dir: str | Path, image_root: str | Path) -> list[Sample]:
    """Samples back from `export_hf` shards; each image is written to its path under `image_root`."""
    def field(row: dict, k: str):
        if k == "image":
            return row["image_path"]
        if k == "lineage":  # shards written before evolution existed have no such column
            return Lineage.model_validate_json(row["lineage"]) if row.get("lineage") else None
        return row[k]
    out = []
    for row in parquet_rows(data_dir, image_root, "sample"):
        if "turns" in row and "instruction" not in row:
            raise DataError(f"{data_dir}: holds conversations (`merge --hf`), not samples: add --conversations")
        try:
            out.append(Sample(**{k: field(row, k) for k in Sample.model_fields}))
        except KeyError as e:
            raise DataError(f"{data_dir}: not an exported sample dataset (no column {e.args[0]!r})") from None
    return out


# Where `dataengine export --to` writes: f(samples, out, form, image_root)
TARGETS: Registry = Registry("export target")
TARGETS.register("llava", lambda samples, out, form, image_root: export_llava(samples, out, form, image_root))
TARGETS.register("hf", lambda samples, out, form, image_root: export_hf(samples, image_root, out))
