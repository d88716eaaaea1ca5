"""The HTML report: one self-contained file, from a run directory written by hand."""
import html
import re

import pytest
from PIL import Image

from dataengine.errors import DataError
from dataengine.llm.prompt import PromptStore, PromptVersion
from dataengine.records import EvalResult, Prediction, Sample, TypeResult, write_json, write_jsonl
from dataengine.report.html import write_html
from dataengine.sample import Plan, TypePlan


def result(correct: dict[int, int], total=10) -> EvalResult:
    per = {t: TypeResult(qtype=t, name={4: "Instance Location", 9: "Text Understanding"}[t], total=total, correct=c)
           for t, c in correct.items()}
    return EvalResult(benchmark="b", method="likelihood", per_type=per, total=total * len(per), correct=sum(correct.values()))


def make_run(root, gains=(2, 6)):
    (root / "world" / "images").mkdir(parents=True)
    Image.new("RGB", (96, 96), (200, 0, 0)).save(root / "world" / "images" / "a.png")
    write_json(root / "round_0" / "eval" / "results.json", result({4: 2, 9: 3}))
    write_json(root / "round_1" / "eval" / "results.json", result({4: 2 + gains[0], 9: 3 + gains[1]}))
    bad = Prediction(question_id="q1", qtype=4, image="b.png", question="Where is the red ball?", options=["top left", "top right"],
                     answer="A", prediction="B", correct=False)
    write_json(root / "round_1" / "plan.json", Plan(strategy="sqrt-error", budget=30, types={
        4: TypePlan(qtype=4, name="Instance Location", count=20, examples=[bad]), 9: TypePlan(qtype=9, name="Text Understanding", count=10)}))
    item = Sample(id="s1", image="a.png", instruction="Where is the <script>red</script> ball?", answer="Top left.",
                  short_answer="top left", options=["top left", "top right", "bottom left", "bottom right"], choice_answer="A", qtype=4)
    write_jsonl(root / "round_1" / "generated.jsonl", [item, item.model_copy(update={"id": "s2"})])
    write_jsonl(root / "round_1" / "filtered.jsonl", [item])
    write_json(root / "round_1" / "filter_report.json", {"kept": 1, "dropped": {"duplicate": 1}, "dropped_by_type": {"4": {"duplicate": 1}}})
    write_json(root / "round_1" / "generate_report.json", {"usage": {"prompt_tokens": 4000, "completion_tokens": 1000, "cost": 0.4}})
    write_json(root / "round_1" / "model" / "train_log.json", {"steps": 3, "losses": [1.0], "seconds": 120.0})
    store = PromptStore(root / "ipo" / "prompts.jsonl")
    store.save(PromptVersion(version=1, rules="- Ask about the image.", correctness=0.2, judged=10))
    store.save(PromptVersion(version=2, parent=1, rules="- Ask about one object.", correctness=0.5, judged=10))
    return root


def test_the_report_holds_the_run_in_one_file(tmp_path):
    run = make_run(tmp_path / "run")
    page = write_html([run], tmp_path / "r.html").read_text()
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched
    assert len(re.findall(r'src="data:image/png;base64,', page)) >= 4  # curves, shares, the round's bars, a thumbnail
    for section in ("Accuracy per type per round", "ABS: items planned per type", "Round 1: generated, kept and dropped",
                    "What a point cost", "Examples per type", "Interactive Prompt Optimization"):
        assert section in page, section
    # the ledger: overall 25% -> 65% (+40 points), 5,000 tokens, cost 0.4, 120 s of training
    row = re.search(r"<tr><td>round 1</td>(.*?)</tr>", page).group(1)
    cells = re.findall(r"<td>(.*?)</td>", row)
    assert cells == ["+40.0", "5,000", "125.0", "0.4000", "0.0", "120", "3.0"]
    assert "&lt;script&gt;red&lt;/script&gt;" in page and "<script>" not in page  # escaped
    assert "Where is the red ball?" in page  # the bad case that steered the item
    assert "+- Ask about one object." in page.replace("\n", "")


def test_runs_compared_and_bad_directories(tmp_path):
    a, b = make_run(tmp_path / "a"), make_run(tmp_path / "b", gains=(0, 1))
    page = write_html([a, b], tmp_path / "r.html").read_text()
    assert "Run report: a, b" in page
    with pytest.raises(DataError, match="nothing: not a run directory"):
        write_html([tmp_path / "nothing"], tmp_path / "x.html")


def evolved_run(root):
    """make_run's run, its round 1 kept items grounded ones over a small pool, evolved for two rounds
    into round_1/evolve as the loop does."""
    from dataengine.evolve.rounds import evolve
    from dataengine.generate import GroundedGenerator, generate
    from dataengine.world.render import VOCABULARY, build_pool
    run = make_run(root)
    pool = build_pool(run / "world" / "images", "pool", range(24))
    items = generate({t: 3 for t in (3, 4, 5, 9)}, pool, GroundedGenerator(VOCABULARY, source="round-1"), seed=1)
    write_jsonl(run / "round_1" / "filtered.jsonl", items)
    kept, stats = evolve(items, pool, run / "round_1" / "evolve", rounds=2, vocab=VOCABULARY)
    return run, items, kept, stats


def test_the_report_has_a_section_on_each_rounds_evolution(tmp_path):
    from typer.testing import CliRunner

    from dataengine.cli import app as cli
    run, items, kept, stats = evolved_run(tmp_path / "run")
    page = write_html([run], tmp_path / "r.html").read_text()
    section = page.split("<h2>Round 1: instruction evolution</h2>")[1].split("<h2>")[0]
    rows = re.findall(r"<tr><td>round (\d)</td>(.*?)</tr>", section)
    assert [r for r, _ in rows] == ["1", "2"]
    cells = re.findall(r"<td>(.*?)</td>", rows[0][1])
    s = stats[0]
    assert cells[0] == str(s.parents) and cells[2] == f"{s.kept_share:.0%}"
    assert cells[3] == f"{s.parent_complexity:.1f} &rarr; {s.mean_complexity:.1f}"
    for op, n in s.made.items():
        assert f"{op} {s.kept.get(op, 0)}/{n}" in cells[1]
    for f, n in s.formats.items():
        assert f"{f} {n}" in cells[4]
    # parent -> child examples: a child's question beside its parent's
    by_id = {x.id: x for x in items + kept}
    examples = re.findall(r"<tr><td>(\w+), round (\d)</td><td>(.*?)</td><td>(.*?)</td><td>(.*?)</td>", section)
    assert len(examples) >= 2 and {r for _, r, *_ in examples} == {"1", "2"}
    for op, r, parent, child, form in examples:
        assert any((c.lineage.operator, str(c.lineage.round), c.lineage.format, c.instruction, by_id[c.lineage.parent].instruction)
                   == (op, r, *map(html.unescape, (form, child, parent))) for c in kept), child
    # and a line in the terminal report
    res = CliRunner().invoke(cli, ["report", str(run)])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("round 1, evolution:"))
    assert f"round 1: {sum(s.kept.values())} of {sum(s.made.values())} children kept" in line and "round 2:" in line
    # a run without evolution has neither
    plain = make_run(tmp_path / "plain")
    assert "instruction evolution" not in write_html([plain], tmp_path / "p.html").read_text()
    assert "evolution" not in CliRunner().invoke(cli, ["report", str(plain)]).output
