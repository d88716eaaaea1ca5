"""Rounds of evolution: figures per round, lineage through export and import, a killed run resumes
without asking the LLM again, and the loop's mix keeps the item count."""
import json

import pytest

from dataengine import stages
from dataengine.errors import DataError
from dataengine.evolve.llm import LLMEvolver
from dataengine.evolve.rounds import evolve
from dataengine.export import export_hf, export_llava, from_llava, import_hf
from dataengine.generate import GroundedGenerator, generate
from dataengine.llm.client import LLMClient, LLMConfig
from dataengine.records import read_jsonl
from dataengine.world.render import VOCABULARY, build_pool
from tests.support.fake_llm import FakeLLM


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("evolve")
    pool = build_pool(root / "images", "pool", range(60))
    items = generate({t: 6 for t in range(1, 10)}, pool, GroundedGenerator(VOCABULARY, source="round-1"), seed=1)
    return root, pool, items


def test_rounds_keep_only_harder_correct_children_and_report_figures(world, tmp_path):
    _, pool, items = world
    kept, stats = evolve(items, pool, tmp_path / "ev", rounds=2, vocab=VOCABULARY)
    assert kept and len(stats) == 2 and stats[0].parents == len(items) and stats[1].parents == stats[0].kept_share * sum(stats[0].made.values())
    ids = {s.id for s in items} | {c.id for c in kept}
    for c in kept:
        assert c.lineage.verdict.kept and c.lineage.parent in ids and c.lineage.round in (1, 2)
    assert set(stats[0].made) == {"perception", "reasoning", "interaction"}
    assert stats[0].mean_complexity > stats[0].parent_complexity and len(stats[0].formats) >= 3
    on_disk = json.loads((tmp_path / "ev" / "stats.json").read_text())
    assert [r["round"] for r in on_disk] == [1, 2] and len(read_jsonl(tmp_path / "ev" / "evolved.jsonl", type(items[0]))) == len(kept)
    with pytest.raises(DataError, match="another operators"):
        evolve(items, pool, tmp_path / "ev", rounds=2, operators=["reasoning"], vocab=VOCABULARY)


def test_lineage_survives_export_and_import(world, tmp_path):
    root, pool, items = world
    kept, _ = evolve(items, pool, tmp_path / "ev", rounds=1, vocab=VOCABULARY)
    back = from_llava(export_llava(kept, tmp_path / "llava.json"))
    assert [s.lineage for s in back] == [s.lineage for s in kept] and back[0].lineage.verdict.judge == "grounded"
    hf = import_hf(export_hf(kept[:5] + items[:2], root / "images", tmp_path / "hf"), tmp_path / "imgs")
    assert [s.lineage for s in hf] == [s.lineage for s in kept[:5]] + [None, None]


def test_the_loop_mix_replaces_a_share_and_keeps_the_count(world, tmp_path):
    _, pool, items = world
    kept, _ = evolve(items, pool, tmp_path / "ev", rounds=2, vocab=VOCABULARY)
    mixed = stages.with_evolved(items, kept, 0.5, seed=0)
    assert len(mixed) == len(items)
    evolved = [s for s in mixed if s.lineage]
    assert len(evolved) == round(0.5 * len(items)) or len(evolved) == len({c.lineage.root for c in kept})
    assert {s.lineage.root for s in evolved} <= {s.id for s in items} - {s.id for s in mixed if not s.lineage}
    assert stages.with_evolved(items, kept, 0.0, seed=0) == items


def evolver_answer(body):
    system, user = body["messages"][0]["content"], body["messages"][-1]["content"]
    if system.startswith("You compare"):
        return json.dumps({"improved": True, "correct": "Evolved question:\nWhich" in user, "score": 7, "reason": "two steps"})
    return json.dumps({"question": "Which statement about the image is true?", "answer": "The ball is red.",
                       "short_answer": "The ball is red.", "correct": "A", "steps": ["find the ball", "read its colour"],
                       "options": ["The ball is red.", "The ball is blue.", "The ball is white.", "The ball is black."]})


def test_llm_evolution_resumes_after_a_kill_without_asking_again(world, tmp_path, monkeypatch):
    _, pool, items = world
    items = items[:6]
    with FakeLLM(answer=evolver_answer) as srv:
        def llm():
            return LLMEvolver(LLMClient(LLMConfig(base_urls=[srv.url]), cache_path=tmp_path / "cache.sqlite"))
        real, calls = LLMEvolver.judge_all, []

        def killed(self, pairs):
            calls.append(1)
            if len(calls) == 2:
                raise KeyboardInterrupt  # the run is killed in round 2, its children written by the LLM, not judged
            return real(self, pairs)
        monkeypatch.setattr(LLMEvolver, "judge_all", killed)
        with pytest.raises(KeyboardInterrupt):
            evolve(items, pool, tmp_path / "ev", rounds=2, vocab=VOCABULARY, llm=llm(), generator="llm", judge="llm")
        assert len(srv.bodies) == 3 * len(items)  # round 1: an evolution and a verdict per item; round 2: evolutions
        assert (tmp_path / "ev" / "round_1" / "stats.json").exists() and not (tmp_path / "ev" / "round_2").exists()
        monkeypatch.setattr(LLMEvolver, "judge_all", real)
        kept, stats = evolve(items, pool, tmp_path / "ev", rounds=2, vocab=VOCABULARY, llm=llm(), generator="llm", judge="llm")
        # round 1 came from its file, round 2's evolutions from the cache: only its verdicts were asked
        assert len(srv.bodies) == 4 * len(items) and len(set(srv.received)) == len(srv.received)
        assert stats[0].kept_share == 1.0 and all(c.lineage.verdict.judge.startswith("llm:") for c in kept)
        assert kept[0].lineage.steps == ["find the ball", "read its colour"] and kept[0].lineage.format == "true statement"


def test_cli_evolve_writes_rounds_and_a_mix_and_refuses_bad_input(world, tmp_path):
    from typer.testing import CliRunner

    from dataengine.cli import app
    from dataengine.records import Sample, write_jsonl
    _, pool, items = world
    write_jsonl(tmp_path / "items.jsonl", items)
    write_jsonl(tmp_path / "pool.jsonl", pool)
    args = ["evolve", str(tmp_path / "items.jsonl"), "--pool", str(tmp_path / "pool.jsonl"), "--out", str(tmp_path / "ev")]
    r = CliRunner().invoke(app, args + ["--rounds", "2", "--mix", str(tmp_path / "mix.jsonl"), "--share", "0.5"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "ev" / "round_2" / "stats.json").exists()
    mixed = read_jsonl(tmp_path / "mix.jsonl", Sample)
    assert len(mixed) == len(items) and any(s.lineage for s in mixed)
    r = CliRunner().invoke(app, args[:-1] + [str(tmp_path / "ev2"), "--operator", "reasonin"])
    assert r.exit_code == 2 and "did you mean 'reasoning'" in r.output
    (tmp_path / "bad.jsonl").write_text('{"id": "x"}\n')
    r = CliRunner().invoke(app, ["evolve", str(tmp_path / "bad.jsonl"), "--pool", str(tmp_path / "pool.jsonl"), "--out", str(tmp_path / "ev3")])
    assert r.exit_code == 2 and "bad.jsonl" in r.output and "line 1" in r.output
