"""The library API is one code path: a round run stage by stage with the CLI, from the same config
and files, writes the same files as the loop's round."""
import pytest
from typer.testing import CliRunner

from dataengine.cli import app
from dataengine.loop import Loop
from tests.support.configs import small_config

pytestmark = pytest.mark.slow


def test_a_round_by_the_cli_equals_the_loops_round(tmp_path):
    cfg = small_config(rounds=1, seed=3)
    run = tmp_path / "run"
    Loop(cfg, run).run()
    w, r1, cli = run / "world", run / "round_1", tmp_path / "cli"
    config = str(run / "config.yaml")
    k = 1  # the loop's seeds for round k: plan and train cfg.seed + k, generation cfg.seed * 100 + k
    bench = ["--benchmark", str(w / "benchmark.json"), "--image-root", str(w / "images")]
    steps = [
        ["plan", "--eval", str(run / "round_0" / "eval"), "--out", str(cli / "plan.json"), "--pool", str(w / "pool.jsonl"),
         "--seed", str(cfg.seed + k)],
        ["generate", "--plan", str(cli / "plan.json"), "--pool", str(w / "pool.jsonl"), "--out", str(cli / "generated.jsonl"),
         "--seen", str(w / "starter.jsonl"), "--seed", str(cfg.seed * 100 + k), "--source", f"round-{k}"],
        ["filter", str(cli / "generated.jsonl"), "--out", str(cli / "filtered.jsonl"), *bench, "--pool", str(w / "pool.jsonl"),
         "--seen", str(w / "starter.jsonl")],
        ["mix", "--original", str(w / "starter.jsonl"), "--incremental", str(cli / "filtered.jsonl"), "--out", str(cli / "mix.jsonl"),
         "--seed", str(cfg.seed + k)],
        ["train", "--model", str(run / "round_0" / "model"), "--data", str(cli / "mix.jsonl"), "--image-root", str(w / "images"),
         "--out", str(cli / "model"), "--seed", str(cfg.seed + k), "--pool", str(w / "pool.jsonl")],
        ["evaluate", "--model", str(cli / "model"), *bench, "--out", str(cli / "eval")],
    ]
    runner = CliRunner()
    for step in steps:
        res = runner.invoke(app, [*step, "--config", config])
        assert res.exit_code == 0, (step[0], res.output)
    same = {"plan.json": "plan.json", "generated.jsonl": "generated.jsonl", "filtered.jsonl": "filtered.jsonl",
            "filtered.rejected.jsonl": "rejected.jsonl", "filtered.report.json": "filter_report.json",
            "model/model.safetensors": "model/model.safetensors", "eval/predictions.jsonl": "eval/predictions.jsonl",
            "eval/results.json": "eval/results.json"}
    for mine, loops in same.items():
        assert (cli / mine).read_bytes() == (r1 / loops).read_bytes(), mine
    assert (r1 / "filtered.jsonl").stat().st_size > 0
