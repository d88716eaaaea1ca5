"""The starting point the benchmarks share: round 0 of the loop, built once into OUT/base and kept
between runs, with the run's inputs read."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pydantic import ValidationError

from dataengine import stages
from dataengine.config import problem
from dataengine.errors import DataError
from dataengine.loop import Loop
from dataengine.records import ImageAnnotation, Inputs, Question, Sample, read_jsonl


@dataclass
class Base:
    inputs: Inputs
    model: Path  # round 0's model folder
    pool: list[ImageAnnotation]
    original: list[Sample]
    benchmark: list[Question]
    questions: list[Question]  # as evaluated (CircularEval's rotations, when asked)


def base_round(cfg, out: Path, console) -> Base:
    """Round 0 of `cfg` in `out`/base (resumed, not rebuilt, when it is there)."""
    base_dir = out / "base"
    console.rule("base model (round 0)")
    Loop(cfg, base_dir, console).run(rounds=0)
    inputs = stages.resolve_inputs(cfg, base_dir)
    benchmark, questions = stages.read_questions(inputs)
    return Base(inputs, base_dir / "round_0" / "model", read_jsonl(inputs.pool, ImageAnnotation),
                read_jsonl(inputs.original, Sample), benchmark, questions)


def run(main: Callable[[], None]) -> None:
    """Run a benchmark's `main`: bad input (a config, a setting it builds from an option), or an output
    folder holding a world or model built with other settings, ends in one line and a non-zero exit,
    as the CLI says it, not in a traceback."""
    try:
        main()
    except DataError as e:
        raise SystemExit(f"error: {e}")
    except ValidationError as e:
        raise SystemExit(f"error: {problem(e)}")
