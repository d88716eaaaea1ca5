"""Report: tables of accuracy per question type per round, and of items generated per type."""
from __future__ import annotations

from pathlib import Path

from rich.table import Table

from .evaluate import load_results
from .records import QTYPES, is_seed_type


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


def run_results(run_dir: str | Path) -> list:
    run_dir = Path(run_dir)
    out, k = [], 0
    while (run_dir / f"round_{k}" / "eval" / "results.json").exists():
        out.append(load_results(run_dir / f"round_{k}" / "eval"))
        k += 1
    return out
