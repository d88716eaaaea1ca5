"""End-to-end: the real loop on a small embedded world (slow, still run in CI)."""
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataengine.cli import app
from dataengine.config import dump_config
from dataengine.errors import DataError
from dataengine.loop import Loop
from dataengine.records import Sample, read_jsonl
from tests.support.configs import small_config

pytestmark = pytest.mark.slow


def test_loop_runs_resumes_and_keeps_the_benchmark_out(tmp_path):
    cfg = small_config(rounds=2)
    run = tmp_path / "run"
    results = Loop(cfg, run).run()
    assert len(results) == 3 and all(r.total == 36 for r in results)
    for k in (1, 2):
        rd = run / f"round_{k}"
        for f in ("plan.json", "generated.jsonl", "filtered.jsonl", "filter_report.json", "model/model.safetensors",
                  "eval/results.json", "eval/badcases.jsonl"):
            assert (rd / f).exists(), f
        plan = json.loads((rd / "plan.json").read_text())
        assert sum(t["count"] for t in plan["types"].values()) == cfg.sample.budget
    bench_images = {q["data_id"] for q in json.loads((run / "world" / "benchmark.json").read_text())["questions"]}
    trained = [s for k in (1, 2) for s in read_jsonl(run / f"round_{k}" / "filtered.jsonl", Sample)]
    assert trained and not {s.image for s in trained} & bench_images
    summary = json.loads((run / "summary.json").read_text())
    assert [r["round"] for r in summary["rounds"]] == [0, 1, 2]
    # the held-out report part (3 of each type's 4 questions) is the headline; diagnosis and blind beside it
    for row, res in zip(summary["rounds"], results):
        assert row["report"]["accuracy"] == res.part("report").accuracy and res.part("report").total == 27
        assert row["diagnosis"]["accuracy"] == res.part("diagnosis").accuracy
        assert set(row["blind"]["report"]["per_type"]) == {str(t) for t in range(1, 10)}
        assert row["regressions"] == [] or all(r["after"] < r["before"] for r in row["regressions"])
    assert (run / "round_2" / "eval" / "blind" / "predictions.jsonl").exists()

    # A second run finds every stage done and redoes none of them.
    stamps = {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file() and p.name != "summary.json"}
    again = Loop(cfg, run).run()
    assert [r.accuracy for r in again] == [r.accuracy for r in results]
    assert all(p.stat().st_mtime_ns == t for p, t in stamps.items())


def test_killed_round_resumes_from_the_last_finished_stage(tmp_path):
    cfg = small_config(rounds=1)
    run = tmp_path / "run"
    Loop(cfg, run).run()
    rd = run / "round_1"
    # As if killed during training: model and evaluation of round 1 are gone, the data is not.
    gen_before = (rd / "generated.jsonl").stat().st_mtime_ns
    import shutil
    shutil.rmtree(rd / "model")
    shutil.rmtree(rd / "eval")
    Loop(cfg, run).run()
    assert (rd / "eval" / "results.json").exists() and (rd / "generated.jsonl").stat().st_mtime_ns == gen_before


def test_another_config_is_refused_in_the_same_run_dir(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(dump_config(small_config(seed=5)))
    with pytest.raises(DataError, match="made with another config"):
        Loop(small_config(), run).run()


def test_cli_stages_one_by_one(tmp_path, world):
    """world -> init-model -> train -> evaluate -> plan -> generate -> filter -> export, each on the last one's files."""
    r = CliRunner()
    ok = lambda res: (res.exit_code == 0) or pytest.fail(res.output)
    w = world
    ok(r.invoke(app, ["init-model", str(tmp_path / "m0"), "--corpus-from", str(w.original), "--pool", str(w.pool),
                      "--image-root", str(w.image_root), "--vision-steps", "10"]))
    ok(r.invoke(app, ["train", "--model", str(tmp_path / "m0"), "--data", str(w.original), "--image-root", str(w.image_root),
                      "--out", str(tmp_path / "m1"), "--epochs", "1"]))
    ok(r.invoke(app, ["evaluate", "--model", str(tmp_path / "m1"), "--benchmark", str(w.benchmark),
                      "--image-root", str(w.image_root), "--out", str(tmp_path / "ev")]))
    res = r.invoke(app, ["evaluate", "--model", str(tmp_path / "m1"), "--benchmark", str(w.benchmark),
                         "--image-root", str(w.image_root), "--out", str(tmp_path / "ev-letter"), "--method", "letter"])
    ok(res)
    assert "by option text (fallback):" in res.output
    ok(r.invoke(app, ["plan", "--eval", str(tmp_path / "ev"), "--budget", "27", "--out", str(tmp_path / "plan.json")]))
    ok(r.invoke(app, ["generate", "--plan", str(tmp_path / "plan.json"), "--pool", str(w.pool), "--out", str(tmp_path / "gen.jsonl")]))
    ok(r.invoke(app, ["filter", str(tmp_path / "gen.jsonl"), "--out", str(tmp_path / "kept.jsonl"), "--benchmark", str(w.benchmark),
                      "--image-root", str(w.image_root), "--pool", str(w.pool)]))
    ok(r.invoke(app, ["export", str(tmp_path / "kept.jsonl"), "--out", str(tmp_path / "llava.json")]))
    kept = read_jsonl(tmp_path / "kept.jsonl", Sample)
    assert len(kept) == 27
    conv = json.loads((tmp_path / "llava.json").read_text())
    assert len(conv) == 2 * len(kept) and conv[0]["conversations"][0]["value"].startswith("<image>\n")
    assert conv[1]["conversations"][1]["value"] in "ABCD"


def test_cli_bad_input_is_one_line_and_nonzero(tmp_path, world):
    r = CliRunner()
    bench = json.loads(world.benchmark.read_text())
    del bench["questions"][3]["choice_b"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(bench))
    out = tmp_path / "ev"
    res = r.invoke(app, ["evaluate", "--model", str(tmp_path / "none"), "--benchmark", str(bad),
                         "--image-root", str(world.image_root), "--out", str(out)])
    qid = bench["questions"][3]["question_id"]
    assert res.exit_code == 2 and f"question {qid}: missing field 'choice_b'" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not out.exists()
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    res = r.invoke(app, ["filter", str(empty), "--out", str(tmp_path / "k.jsonl"), "--benchmark", str(world.benchmark),
                         "--image-root", str(world.image_root)])
    assert res.exit_code == 2 and "no generated items" in res.output


def test_a_real_kill_mid_run_loses_no_finished_stage(tmp_path):
    """SIGKILL the loop once round 1's data is written; the re-run keeps that data and finishes."""
    import signal
    import subprocess
    import sys
    import time

    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(dump_config(small_config(rounds=1)))
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "dataengine.cli", "loop", "--config", str(cfg_file), "--run-dir", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    marker = run / "round_1" / "filtered.jsonl"
    deadline = time.time() + 300
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert marker.exists() and not (run / "round_1" / "eval" / "results.json").exists()
    kept = marker.read_bytes()
    stamp = (run / "round_0" / "model" / "model.safetensors").stat().st_mtime_ns
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert marker.read_bytes() == kept
    assert (run / "round_0" / "model" / "model.safetensors").stat().st_mtime_ns == stamp
    assert (run / "round_1" / "eval" / "results.json").exists() and not list(run.rglob("*.tmp"))


def test_loop_with_an_llm_server_counts_usage_and_never_writes_the_key(tmp_path, monkeypatch):
    from dataengine.config import IPOConfig
    from tests.support.fake_llm import FakeLLM
    from tests.support.writers import writer

    secret = "sk-loop-secret-93b1"
    monkeypatch.setenv("DE_LOOP_KEY", secret)
    cfg = small_config(rounds=1)
    cfg.generate.generator, cfg.generate.oversample, cfg.generate.max_images = "llm", 1, 20.0
    cfg.ipo = IPOConfig(rounds=1, per_type=2, types=[9])
    cfg.sample.budget = 9
    run = tmp_path / "run"
    with FakeLLM(answer=writer, script=[429, 500]) as srv:
        cfg.llm = cfg.llm.model_copy(update={"base_urls": [srv.url], "api_key_env": "DE_LOOP_KEY", "backoff": 0.01,
                                             "price_input": 1.0, "price_output": 2.0})
        Loop(cfg, run).run()
        calls = len(srv.bodies)
        Loop(cfg, run).run()  # everything done: no call at all
        assert len(srv.bodies) == calls
    versions = read_jsonl(run / "ipo" / "prompts.jsonl", __import__("dataengine.llm.prompt", fromlist=["PromptVersion"]).PromptVersion)
    assert [v.correctness for v in versions] == [0.0, 1.0]  # the scripted LLM is right only after the rewrite
    report = json.loads((run / "round_1" / "generate_report.json").read_text())
    assert report["generator"] == "llm:gemma-3-270m:prompt-v2" and report["usage"]["cost"] > 0
    assert report["outcomes"]["1"]["skip"] >= 1  # the writer only asks about text: other types are skipped
    kept = read_jsonl(run / "round_1" / "filtered.jsonl", Sample)
    assert kept and all(s.qtype == 9 for s in kept)
    for f in run.rglob("*"):
        if f.is_file():
            assert secret.encode() not in f.read_bytes(), f


def test_kills_at_many_moments_end_in_the_uninterrupted_results(tmp_path):
    """SIGKILL the loop again and again at moments spread over its run (inside writes too), then let
    it finish: every artifact is whole and the results are those of an uninterrupted run."""
    import random
    import signal
    import subprocess
    import sys
    import time

    cfg_file = tmp_path / "run.yaml"
    cfg_file.write_text(dump_config(small_config(rounds=1)))

    def cmd(run):
        return [sys.executable, "-m", "dataengine.cli", "loop", "--config", str(cfg_file), "--run-dir", str(run)]
    t0 = time.monotonic()
    subprocess.run(cmd(tmp_path / "whole"), check=True, capture_output=True)
    whole = time.monotonic() - t0
    run, rng = tmp_path / "killed", random.Random(7)
    for _ in range(6):
        proc = subprocess.Popen(cmd(run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.5, whole * 0.6))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    done = subprocess.run(cmd(run), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    a, b = (json.loads((r / "summary.json").read_text()) for r in (tmp_path / "whole", run))
    assert a["rounds"] == b["rounds"]
    for f in ("round_1/generated.jsonl", "round_1/filtered.jsonl", "round_0/eval/predictions.jsonl", "round_1/eval/predictions.jsonl"):
        assert (tmp_path / "whole" / f).read_bytes() == (run / f).read_bytes(), f
    assert not list(run.rglob("*.tmp")) and not list(run.rglob(".saving"))


def test_original_items_on_benchmark_pictures_are_never_trained_on(tmp_path):
    """A training set may hold a benchmark's picture (a copy under another name): round 0 and every
    round leave it out, and the run says so."""
    import shutil

    from dataengine.world.build import build_world
    cfg = small_config(rounds=0)
    run = tmp_path / "run"
    inputs = build_world(cfg, run / "world")
    bench = json.loads(inputs.benchmark.read_text())["questions"][0]
    shutil.copy(inputs.image_root / bench["data_id"], inputs.image_root / "pool" / "copy.png")
    starter = read_jsonl(inputs.original, Sample)
    leak = starter[0].model_copy(update={"id": "on-a-benchmark-picture", "image": "pool/copy.png"})
    inputs.original.write_text("".join(s.model_dump_json() + "\n" for s in starter + [leak]))
    said = []
    loop = Loop(cfg, run)
    loop._log = lambda m: said.append(str(m))
    loop.run()
    assert any("1 original items are on benchmark pictures (e.g. on-a-benchmark-picture)" in m for m in said)
    trained = json.loads((run / "round_0" / "model" / "train_log.json").read_text())
    assert trained["samples"] == len(starter)


def test_the_tiny_models_loop_grounds_attention_in_round_zero_and_each_round(tmp_path, monkeypatch):
    from dataengine.train import sft
    cfg = small_config(rounds=1)  # train.ground_attention unset: on for the tiny model
    trainings = []  # per training: its folder's path and how many batches were grounded
    real_train, real_loss = sft.train, sft.attention_loss

    def train(vlm, samples, image_root, out_dir, *args, **kw):
        trainings.append([str(out_dir), 0])
        return real_train(vlm, samples, image_root, out_dir, *args, **kw)

    def attention_loss(attentions, targets):
        trainings[-1][1] += 1
        return real_loss(attentions, targets)

    monkeypatch.setattr(sft, "train", train)
    monkeypatch.setattr(sft, "attention_loss", attention_loss)
    results = Loop(cfg, tmp_path / "run").run()
    assert len(results) == 2 and all(r.total == 36 for r in results)
    grounded = {Path(where).relative_to(tmp_path / "run").as_posix(): n for where, n in trainings}
    # round 0's starter set and round 1's data name objects: their batches were grounded
    assert grounded["round_0/model"] > 0 and grounded["round_1/model"] > 0, grounded
