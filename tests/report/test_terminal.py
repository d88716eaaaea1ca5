"""The terminal report: accuracy per type per round, ABS's items per type, read from a run directory."""
from rich.console import Console

from dataengine.records import EvalResult, TypeResult, write_json
from dataengine.report.terminal import accuracy_table, counts_table, run_plans, run_results
from dataengine.sample import Plan, TypePlan


def result(correct: dict[int, int], names=None) -> EvalResult:
    per = {t: TypeResult(qtype=t, name=(names or {}).get(t) or f"t{t}", total=10, correct=c) for t, c in correct.items()}
    return EvalResult(benchmark="b", method="likelihood", per_type=per, total=10 * len(per), correct=sum(correct.values()))


def text(renderable) -> str:
    c = Console(record=True, width=200)
    c.print(renderable)
    return c.export_text()


def test_accuracy_table_has_a_column_per_round_and_the_overall_row():
    names = {4: "Instance Location", 9: "Text Understanding"}
    out = text(accuracy_table([result({4: 2, 9: 5}, names), result({4: 7, 9: 5}, names)]))
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in out.splitlines() if line.count("│") == 4}
    assert rows["4. Instance Location"] == ["20.0%", "70.0%"]
    assert rows["9. Text Understanding"] == ["50.0%", "50.0%"]
    assert rows["overall"] == ["35.0%", "60.0%"]


def test_counts_table_names_the_generator_type_of_a_category():
    tp = lambda t, name, n, g=None: TypePlan(qtype=t, name=name, accuracy=0.5, ratio=0.5, count=n, examples=[], generator_type=g)  # noqa: E731
    plans = [Plan(strategy="sqrt-error", budget=30, types={1: tp(1, "ocr", 20, 9), 2: tp(2, "image_emotion", 0)}, unmapped=["image_emotion"]),
             Plan(strategy="sqrt-error", budget=30, types={1: tp(1, "ocr", 30, 9), 2: tp(2, "image_emotion", 0)}, unmapped=["image_emotion"])]
    out = text(counts_table(plans))
    assert "ocr -> 9. Text Understanding" in out and "image_emotion (no generator type)" in out
    line = next(l for l in out.splitlines() if "ocr" in l)
    assert [c.strip() for c in line.split("│")[2:-1]] == ["20", "30"]


def test_a_run_directory_is_read_round_by_round(tmp_path):
    for k, c in enumerate([3, 6, 8]):
        write_json(tmp_path / f"round_{k}" / "eval" / "results.json", result({5: c}))
    write_json(tmp_path / "round_1" / "plan.json", Plan(strategy="uniform", budget=5, types={}))
    write_json(tmp_path / "round_3" / "plan.json", Plan(strategy="uniform", budget=9, types={}))  # after a gap: not this run's
    assert [r.accuracy for r in run_results(tmp_path)] == [0.3, 0.6, 0.8]
    assert [p.budget for p in run_plans(tmp_path)] == [5]
    assert run_results(tmp_path / "nothing") == []


def test_the_loops_table_shows_the_held_out_part_with_diagnosis_blind_and_flags():
    from dataengine.report.terminal import run_table
    whole, report, diag = result({4: 6, 9: 5}), result({4: 4, 9: 3}), result({4: 2, 9: 2})
    for r in (report, diag):
        for x in r.per_type.values():
            x.total = 5
        r.total = 10
    whole.parts = {"report": report, "diagnosis": diag}
    blind = result({4: 3, 9: 2})
    out = text(run_table([whole, whole], [blind, None], flags={1: {9}}))
    flat = " ".join(out.split())
    assert "held-out report part (5-5 questions a type)" in flat and "(regression guard)" in flat
    rows = {line.split("│")[1].strip(): [c.strip() for c in line.split("│")[2:-1]] for line in out.splitlines() if line.count("│") == 4}
    assert rows["t4"] == ["80.0%", "80.0%"] and rows["t9"] == ["60.0%", "60.0% !"]
    assert rows["overall"] == ["70.0%", "70.0%"] and rows["diagnosis part"] == ["40.0%", "40.0%"]
    assert rows["blind (grey image)"] == ["25.0%", "-"]


def test_progress_written_to_a_log_file_says_how_far_it_got():
    import io

    from rich.console import Console

    from dataengine.report.terminal import progress_bar
    buf = io.StringIO()
    with progress_bar(Console(file=buf, force_terminal=False)) as p:
        task = p.add_task("train", total=8)
        for _ in range(8):
            p.advance(task)
        other = p.add_task("evaluate", total=3)
        p.update(other, completed=3)
    lines = [ln for ln in buf.getvalue().splitlines() if ln]  # rich ends with a blank line
    assert [ln.split(" (")[0] for ln in lines] == ["train: 2/8", "train: 4/8", "train: 6/8", "train: 8/8", "evaluate: 3/3"]


def test_each_rounds_evolution_gets_one_line(tmp_path):
    from dataengine.evolve.rounds import RoundStats
    from dataengine.report.terminal import evolution_line, run_evolution
    st = [RoundStats(round=1, parents=8, made={"perception": 4, "reasoning": 4}, kept={"perception": 3, "reasoning": 1},
                     kept_share=0.5, parent_complexity=3.0, mean_complexity=5.25, formats={"multiple choice": 4}, skills={}),
          RoundStats(round=2, parents=4, made={"interaction": 4}, kept={"interaction": 2}, kept_share=0.5,
                     parent_complexity=5.25, mean_complexity=6.0, formats={"fill in the blank": 1, "count a list": 1}, skills={})]
    (tmp_path / "round_1").mkdir()
    write_json(tmp_path / "round_2" / "evolve" / "stats.json", [s.model_dump() for s in st])
    assert list(run_evolution(tmp_path)) == [2]  # round 1 did not evolve its items
    assert evolution_line(2, run_evolution(tmp_path)[2]) == (
        "round 2, evolution: round 1: 4 of 8 children kept (50%), complexity 3.0 -> 5.2, 1 formats; "
        "round 2: 2 of 4 children kept (50%), complexity 5.2 -> 6.0, 2 formats")
