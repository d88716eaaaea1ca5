"""The hallucination round end to end on a small world: describe -> detect -> pair -> DPO -> POPE/SHR,
in the loop and as `dataengine hadpo`, resuming after a kill with the uninterrupted results."""
import json
import shutil

import pytest
from typer.testing import CliRunner

from dataengine import hadpo
from dataengine.cli import app
from dataengine.config import HADPOConfig, dump_config
from dataengine.generate.hallucination import CLAIM_KINDS, Judged, shr
from dataengine.generate.pairs import PreferencePair
from dataengine.loop import Loop
from dataengine.records import read_jsonl
from dataengine.train.config import DPOTrainConfig
from tests.support.configs import small_config

pytestmark = pytest.mark.slow


def hadpo_config(**over):
    cfg = small_config(rounds=0)
    cfg.world.cooccurrence, cfg.world.descriptions, cfg.world.existence = 0.8, 40, 40
    cfg.hadpo = HADPOConfig(after_rounds=True, images=40, eval_images=12, max_new_tokens=24,
                            train=DPOTrainConfig(epochs=1, batch_size=4, lr=1e-4))
    return cfg.model_copy(update=over)


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """Round 0 (world and base model) of a run, built once and copied by each test."""
    run = tmp_path_factory.mktemp("hadpo") / "base"
    Loop(hadpo_config(hadpo=HADPOConfig()), run).run()
    (run / "config.yaml").unlink()
    (run / "summary.json").unlink()
    return run


@pytest.fixture(scope="module")
def finished(base_run, tmp_path_factory):
    run = tmp_path_factory.mktemp("hadpo") / "run"
    shutil.copytree(base_run, run)
    return run, Loop(hadpo_config(), run).run()


def test_hallucination_round_in_the_loop(finished):
    cfg = hadpo_config()
    run, results = finished
    assert len(results) == 2  # round 0, then the hallucination round, evaluated on the benchmark too
    rd = run / "round_1"
    judged = read_jsonl(rd / "judged.jsonl", Judged)
    pairs = read_jsonl(rd / "pairs.jsonl", PreferencePair)
    assert len(judged) == 40 and pairs
    by_id = {j.id: j for j in judged}
    hallucinated = {j.image for j in judged if j.hallucinated}
    assert {p.image for p in pairs} <= hallucinated  # a pair only where a sentence was found false
    for p in pairs[:5]:
        assert p.chosen != p.rejected and p.reasons
    assert all(j.prompt == "Describe each object in the image and where it is." for j in by_id.values())
    held = [json.loads(x)["image"] for x in (rd / "before" / "descriptions.jsonl").read_text().splitlines()]
    assert len(held) == 12 and all(i.startswith("heldout") for i in held) and not set(held) & {j.image for j in judged}
    log = json.loads((rd / "model" / "train_log.json").read_text())
    assert log["pairs"] == len(pairs) and log["steps"] >= 1  # off_policy "keep": the check is recorded, every pair trains
    assert all(p.policy_logp is not None and p.off_policy == (p.policy_logp[1] - p.policy_logp[0] > 1.0) for p in pairs)
    summary = json.loads((run / "summary.json").read_text())
    h = summary["rounds"][1]["hallucination"]
    stored = json.loads((rd / "hadpo.json").read_text())
    assert h["pairs"] == len(pairs) and h["after"]["shr"] == stored["after"]["shr"]["shr"]
    assert set(h["before"]["pope_f1"]) == {"random", "popular", "adversarial"}
    assert 0 <= h["before"]["shr"] <= 1 and stored["before"]["shr"]["judged"] > 0
    assert "hallucination" not in summary["rounds"][0]
    assert h["after"]["loops"] == stored["after"]["shr"]["loops"] == shr(read_jsonl(rd / "after" / "judged.jsonl", Judged))["loops"]
    # SHR's breakdown by the kind of false claim counts the sentences of the stored verdicts
    held_judged = read_jsonl(rd / "before" / "judged.jsonl", Judged)
    kinds = stored["before"]["shr"]["by_kind"]
    assert list(kinds) == list(CLAIM_KINDS) and sum(kinds.values()) >= stored["before"]["shr"]["hallucinated"] > 0
    assert kinds == {k: sum(s.verdict == "hallucinated" and k in s.kinds for j in held_judged for s in j.sentences)
                     for k in CLAIM_KINDS}
    r = CliRunner().invoke(app, ["report", str(run)])
    assert r.exit_code == 0 and "hallucination round" in r.output and "before: SHR" in r.output
    assert f"by false claim: object {kinds['object']} -> " in r.output
    from dataengine.report.html import write_html
    page = write_html([run], run / "report.html").read_text()
    assert "hallucination round (HA-DPO)" in page and "SHR" in page and "chosen (corrected)" in page
    assert f"by false claim, before -&gt; after: object {kinds['object']} -&gt; " in page
    assert f"{stored['after']['shr']['loops']} of 12 descriptions loop" in page
    # a second run of the same command finds everything done and changes nothing
    mtime = (rd / "pairs.jsonl").stat().st_mtime_ns
    from rich.console import Console
    console = Console(record=True, width=200)
    again = Loop(cfg, run, console).run()
    assert again[1].accuracy == results[1].accuracy and (rd / "pairs.jsonl").stat().st_mtime_ns == mtime
    printed = console.export_text()
    assert "round 1, hallucination round" in printed and "after:  SHR" in printed  # beside the table
    assert f"hallucinated sentences by false claim: object {kinds['object']} -> " in printed


def test_killed_during_dpo_resumes_to_the_uninterrupted_result(base_run, finished, tmp_path, monkeypatch):
    cfg = hadpo_config()
    expected = json.loads((finished[0] / "round_1" / "hadpo.json").read_text())

    from dataengine.train import dpo

    def killed(*a, **k):
        raise KeyboardInterrupt
    run = tmp_path / "run"
    shutil.copytree(base_run, run)
    monkeypatch.setattr(dpo, "train_dpo", killed)
    with pytest.raises(KeyboardInterrupt):
        Loop(cfg, run).run()
    assert (run / "round_1" / "pairs.jsonl").exists() and not (run / "round_1" / "model").exists()
    monkeypatch.undo()
    Loop(cfg, run).run()
    got = json.loads((run / "round_1" / "hadpo.json").read_text())
    assert got == expected


def test_cli_hadpo_on_a_model_you_have(base_run, tmp_path):
    cfg = hadpo_config(hadpo=HADPOConfig(images=40, eval_images=12, max_new_tokens=24, off_policy="drop", off_policy_gap=0.05,
                                         pairs=["description", "existence", "conditional"],
                                         train=DPOTrainConfig(epochs=1, batch_size=4)))
    (tmp_path / "c.yaml").write_text(dump_config(cfg))
    shutil.copytree(base_run / "world", tmp_path / "h" / "world")  # the world the model was trained in
    r = CliRunner().invoke(app, ["hadpo", "--model", str(base_run / "round_0" / "model"), "--config", str(tmp_path / "c.yaml"),
                                 "--run-dir", str(tmp_path / "h"), "--images", "30"])
    assert r.exit_code == 0, r.output
    assert "SHR" in r.output and json.loads((tmp_path / "h" / "hadpo.json").read_text())["after"]["pope"]["adversarial"]
    assert len(read_jsonl(tmp_path / "h" / "judged.jsonl", Judged)) == 30 and (tmp_path / "h" / "model" / "config.json").exists()
    # off_policy "drop": the pairs the check flags are kept in pairs.jsonl, marked, and not trained on
    pairs, stored = read_jsonl(tmp_path / "h" / "pairs.jsonl", PreferencePair), json.loads((tmp_path / "h" / "hadpo.json").read_text())
    # image-conditioned pairs: one per other pair, shown a described image (never a held-out one); each
    # carries its source pair's mark, so "drop" leaves out both
    described = {j.image for j in read_jsonl(tmp_path / "h" / "judged.jsonl", Judged)}
    by_id = {p.id: p for p in pairs}
    cond = [p for p in pairs if p.source == "hadpo-conditional"]
    assert cond and len(cond) <= len(pairs) - len(cond)
    assert all(p.rejected_image in described and p.rejected == p.chosen for p in cond)
    assert all(p.off_policy == by_id[p.id.removeprefix("cond-")].off_policy for p in cond)
    marked = {p.id for p in pairs if p.source == "hadpo" and p.policy_logp[1] - p.policy_logp[0] > 0.05}
    assert any(p.id.removeprefix("cond-") in marked for p in cond)  # the case this checks is there
    off = [p for p in pairs if p.id in marked or p.id.removeprefix("cond-") in marked]
    assert stored["off_policy"] == len(off) == sum(bool(p.off_policy) for p in pairs) and stored["trained_pairs"] == len(pairs) - len(off)
    assert "off-policy" in r.output
    if stored["trained_pairs"]:
        assert json.loads((tmp_path / "h" / "model" / "train_log.json").read_text())["pairs"] == stored["trained_pairs"]
    r = CliRunner().invoke(app, ["hadpo", "--model", str(tmp_path / "nothing"), "--config", str(tmp_path / "c.yaml"),
                                 "--run-dir", str(tmp_path / "h2")])
    assert r.exit_code == 2 and "nothing" in r.output and "Traceback" not in r.output
    assert not (tmp_path / "h2" / "hadpo_run.json").exists()  # a run that never started claims no folder
    assert not (tmp_path / "h2" / "world").exists()  # nor builds a world there
    # a folder holding another model's round is refused before anything is written into it
    (tmp_path / "h3").mkdir()
    (tmp_path / "h3" / "hadpo_run.json").write_text(json.dumps({"model": "round_0/model"}))
    r = CliRunner().invoke(app, ["hadpo", "--model", str(base_run / "round_0" / "model"), "--config", str(tmp_path / "c.yaml"),
                                 "--run-dir", str(tmp_path / "h3")])
    assert r.exit_code == 2 and "another model" in r.output and sorted(p.name for p in (tmp_path / "h3").iterdir()) == ["hadpo_run.json"]


def test_real_pool_holds_out_images_the_original_data_does_not_show(world):
    from dataengine.records import ImageAnnotation, Sample
    cfg = small_config()
    cfg.data.benchmark, cfg.data.pool, cfg.data.original, cfg.data.image_root = (
        str(world.benchmark), str(world.pool), str(world.original), str(world.image_root))
    pool, original = read_jsonl(world.pool, ImageAnnotation), read_jsonl(world.original, Sample)
    held, root = hadpo.heldout_images(cfg, world, pool, original)
    assert len(held) == cfg.hadpo.eval_images or len(held) == len({a.image for a in pool} - {s.image for s in original})
    assert not {a.image for a in held} & {s.image for s in original} and root == world.image_root
    assert held == hadpo.heldout_images(cfg, world, pool, original)[0]  # the same ones each time
    rest = hadpo.images_to_describe(pool, held, 50, seed=0)
    assert len(rest) == 50 and not {a.image for a in rest} & {a.image for a in held}


def test_a_run_dir_holds_the_round_of_one_model_and_config(base_run, finished, tmp_path):
    from dataengine.errors import DataError
    from dataengine.stages import resolve_inputs
    run = finished[0]
    cfg = hadpo_config()
    inputs = resolve_inputs(cfg, run)
    with pytest.raises(DataError, match="holds the hallucination round of another model"):
        hadpo.run_hadpo(base_run / "round_0" / "model", cfg, inputs, run / "round_1")  # another name for the model
    with pytest.raises(DataError, match="of another hadpo"):
        hadpo.run_hadpo(base_run / "round_0" / "model", cfg.model_copy(update={"hadpo": cfg.hadpo.model_copy(update={"images": 30})}),
                        inputs, run / "round_1", model_name="round_0/model")
    assert hadpo.shr_text({"shr": 0.0, "hallucinated": 0, "judged": 0, "sentences": 7}) == "n/a (no sentence of 7 could be judged)"
