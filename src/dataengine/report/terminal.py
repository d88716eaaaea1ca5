"""What the terminal shows: accuracy per question type per round, items planned per type, progress bars."""
from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from ..records import QTYPES, EvalResult, is_seed_type


def progress_bar(console: Console | None = None) -> Progress:
    return Progress(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def type_label(qtype: int, name: str) -> str:
    # A category's number is only its place in the sorted list of categories: the name says it all.
    return f"{qtype}. {name}" if is_seed_type(qtype, name) else name


def accuracy_table(results: list, title: str = "Accuracy per question type") -> Table:
    table = Table(title=title)
    table.add_column("question type")
    for k in range(len(results)):
        table.add_column(f"round {k}", justify="right")
    names = {t: x.name for r in results for t, x in r.per_type.items()}
    for t in sorted(names):
        cells = []
        for r in results:
            x = r.per_type.get(t)
            cells.append(f"{x.accuracy:.1%}" if x else "-")
        table.add_row(type_label(t, names[t]), *cells)
    table.add_row("overall", *[f"{r.accuracy:.1%}" for r in results], style="bold")
    return table


def counts_table(plans: list) -> Table:
    table = Table(title="Incremental items planned per type (ABS)")
    table.add_column("question type")
    for k in range(len(plans)):
        table.add_column(f"round {k + 1}", justify="right")
    rows = {t: tp for p in plans for t, tp in p.types.items()}
    for t in sorted(rows):
        tp = rows[t]
        label = type_label(t, tp.name)
        if not is_seed_type(t, tp.name):  # say which generator type writes the category's items
            g = tp.generator_type
            label += f" -> {type_label(g, QTYPES[g][0])}" if g in QTYPES else " (no generator type)"
        table.add_row(label, *[str(p.types[t].count) if t in p.types else "-" for p in plans])
    return table


def run_results(run_dir: str | Path) -> list[EvalResult]:
    """The evaluation of each finished round of a run directory, round 0 first."""
    run_dir = Path(run_dir)
    out, k = [], 0
    while (path := run_dir / f"round_{k}" / "eval" / "results.json").exists():
        out.append(EvalResult.model_validate_json(path.read_text()))
        k += 1
    return out


def run_plans(run_dir: str | Path) -> list:
    """The ABS plan of each planned round of a run directory, round 1 first."""
    from ..sample import Plan
    run_dir = Path(run_dir)
    out, k = [], 1
    while (path := run_dir / f"round_{k}" / "plan.json").exists():
        out.append(Plan.model_validate_json(path.read_text()))
        k += 1
    return out
