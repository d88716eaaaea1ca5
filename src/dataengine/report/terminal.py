"""What the terminal shows: accuracy per question type per round, items planned per type, progress bars."""
from __future__ import annotations

import json
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


class LineProgress(Progress):
    """Progress for output that is not a terminal (a log file, a pipe), where a live bar shows
    nothing: a line per task at each quarter done, with the time it has taken."""

    def __init__(self, *columns, **kw):
        super().__init__(*columns, **kw)
        self._quarters: dict = {}

    def _say(self, task_id) -> None:
        task = self._tasks[task_id]
        if not task.total:
            return
        quarter = int(4 * task.completed / task.total)
        if quarter > self._quarters.get(task_id, 0):
            self._quarters[task_id] = quarter
            self.console.print(f"{task.description}: {task.completed:.0f}/{task.total:.0f} "
                               f"({task.elapsed or 0:.0f} s)", highlight=False)

    def update(self, task_id, **kw) -> None:
        super().update(task_id, **kw)
        self._say(task_id)

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._say(task_id)


def progress_bar(console: Console | None = None) -> Progress:
    """A live bar on a terminal; elsewhere, a line per quarter of each task."""
    console = console or Console()
    cls = Progress if console.is_terminal else LineProgress
    return cls(TextColumn("{task.description:>10}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               console=console, transient=True)


def type_label(qtype: int, name: str) -> str:
    # A category's number is only its place in the sorted list of categories: the name says it all.
    return f"{qtype}. {name}" if is_seed_type(qtype, name) else name


def accuracy_table(results: list[EvalResult], title: str = "Accuracy per question type",
                   flags: dict[int, set[int]] | None = None, extra: dict[str, list[EvalResult | None]] | None = None) -> Table:
    """One row per type, one column per round. `flags` (round -> types) marks cells with "!"; `extra`
    adds an overall row per named result list (e.g. the blind evaluation)."""
    flags = flags or {}
    table = Table(title=title, caption="! lost more than its noise in a round it got no items (regression guard)"
                  if any(flags.values()) else None)
    table.add_column("question type")
    for k in range(len(results)):
        table.add_column(f"round {k}", justify="right")
    names = {t: x.name for r in results for t, x in r.per_type.items()}
    for t in sorted(names):
        cells = []
        for k, r in enumerate(results):
            x = r.per_type.get(t)
            cells.append((f"{x.accuracy:.1%}" if x else "-") + (" !" if t in flags.get(k, ()) else ""))
        table.add_row(type_label(t, names[t]), *cells)
    table.add_row("overall", *[f"{r.accuracy:.1%}" for r in results], style="bold")
    for label, rows in (extra or {}).items():
        table.add_row(label, *[f"{r.accuracy:.1%}" if r and r.total else "-" for r in rows], style="dim")
    return table


def run_table(results: list[EvalResult], blind: list[EvalResult | None] | None = None,
              flags: dict[int, set[int]] | None = None, name: str = "") -> Table:
    """The loop's table: the held-out report part per type when the benchmark is split (the headline),
    with the diagnosis part's and the blind evaluation's overall accuracy below."""
    split = any(r.parts for r in results)
    n = results[0].part("report").per_type if results else {}
    per_type = f"{min(x.total for x in n.values())}-{max(x.total for x in n.values())}" if n else "0"
    title = (f"Accuracy per question type, held-out report part ({per_type} questions a type)" if split
             else "Accuracy per question type")
    title = f"{name}: {title}" if name else title
    extra = {"diagnosis part": [r.part("diagnosis") for r in results]} if split else {}
    if blind and any(blind):
        extra["blind (grey image)"] = [b.part("report") if b else None for b in blind]
    return accuracy_table([r.part("report") for r in results], title, flags, extra)


def l2_table(result: EvalResult) -> Table:
    """Accuracy per l2-category (MMBench's coarser grouping), as VLMEvalKit prints it."""
    table = Table(title=f"{result.benchmark}: accuracy per l2-category")
    table.add_column("l2-category")
    table.add_column("questions", justify="right")
    table.add_column("accuracy", justify="right")
    for name, x in result.per_l2.items():
        table.add_row(name, str(x.total), f"{x.accuracy:.1%}")
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


def run_blind(run_dir: str | Path, rounds: int) -> list[EvalResult | None]:
    """Each round's blind evaluation (grey pictures), None where there is none."""
    paths = [Path(run_dir) / f"round_{k}" / "eval" / "blind" / "results.json" for k in range(rounds)]
    return [EvalResult.model_validate_json(p.read_text()) if p.exists() else None for p in paths]


def run_regressions(run_dir: str | Path, results: list[EvalResult]) -> dict[int, list[dict]]:
    """Round k -> the types that got no items in round k yet lost more than their noise (the guard)."""
    from ..evaluate import regressions
    plans = run_plans(run_dir)
    return {k: regressions(results[k - 1], results[k], {t for t, tp in plans[k - 1].types.items() if tp.count == 0})
            for k in range(1, len(results)) if k - 1 < len(plans)}


def run_report(run_dir: str | Path, results: list[EvalResult] | None = None) -> Table:
    """The loop's table for a run directory (its results, blind evaluations and regression flags)."""
    results = run_results(run_dir) if results is None else results
    flags = {k: {r["qtype"] for r in rs} for k, rs in run_regressions(run_dir, results).items()}
    return run_table(results, run_blind(run_dir, len(results)), flags)


def hallucination_lines(run_dir: str | Path) -> list[str]:
    """One entry per hallucination round of a run directory (`round_k/hadpo.json`): its pairs, and
    SHR and POPE F1 per split before and after DPO, and the hallucinated sentences by false claim."""
    from ..hadpo import kinds_change, summary_line
    run_dir, out, k = Path(run_dir), [], 0
    while (rd := run_dir / f"round_{k}").is_dir():
        if (path := rd / "hadpo.json").exists():
            data = json.loads(path.read_text())
            out.append(f"round {k}, hallucination round ({data['pairs']} pairs):\n  before: {summary_line(data['before'])}"
                       f"\n  after:  {summary_line(data['after'])}")
            if change := kinds_change(data["before"]["shr"], data["after"]["shr"]):
                out[-1] += f"\n  hallucinated sentences by false claim: {change}"
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


def run_evolution(run_dir: str | Path) -> dict[int, list]:
    """Loop round k -> the figures of each evolution round of its items (`round_k/evolve/stats.json`,
    a list of `evolve.rounds.RoundStats`), for the rounds that evolved their items."""
    from ..evolve.rounds import RoundStats
    run_dir, out, k = Path(run_dir), {}, 1
    while (rd := run_dir / f"round_{k}").is_dir():
        if (path := rd / "evolve" / "stats.json").exists():
            out[k] = [RoundStats.model_validate(x) for x in json.loads(path.read_text())]
        k += 1
    return out


def evolution_line(k: int, stats: list) -> str:
    """One line on loop round k's evolution: per evolution round, children kept of made, complexity
    parent -> child, formats."""
    parts = [f"round {s.round}: {sum(s.kept.values())} of {sum(s.made.values())} children kept ({s.kept_share:.0%}), "
             f"complexity {s.parent_complexity:.1f} -> {s.mean_complexity:.1f}, {len(s.formats)} formats" for s in stats]
    return f"round {k}, evolution: " + "; ".join(parts)
