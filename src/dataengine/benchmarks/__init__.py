"""Benchmarks read as their publishers ship them: SEED-Bench JSON (`seed`), MMBench TSV with
CircularEval (`mmbench`), MME yes/no pairs (`mme`), POPE (`pope`), and how a free-text answer is
read as a letter (`answers`)."""
from __future__ import annotations

from pathlib import Path

from ..errors import DataError
from ..records import Question
from .mmbench import is_mmbench, read_mmbench
from .seed import read_seed


def read_benchmark(path: str | Path, image_dir: str | Path | None = None) -> list[Question]:
    """SEED-Bench JSON or MMBench TSV, by extension; MMBench images go to `image_dir`."""
    path = Path(path)
    if is_mmbench(path):
        if image_dir is None:
            raise DataError(f"{path}: an MMBench file needs a folder for its images")
        return read_mmbench(path, image_dir)
    return read_seed(path)
