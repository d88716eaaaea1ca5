"""The `dataengine` command as a whole: every stage is a subcommand, bad input ends in one line and
exit code 2 (never a traceback), and help and config checks do not load torch."""
import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from dataengine.cli import app
from dataengine.records import Sample, read_jsonl

COMMANDS = ["loop", "world", "init-model", "train", "evaluate", "mme-eval", "pope-build", "pope-eval", "plan", "generate",
            "filter", "evolve", "mix", "ipo", "llm-serve", "pool", "export", "import", "report", "review",
            "merge", "dialog-bench", "dialog-eval"]


def test_every_stage_is_a_command_with_help():
    runner = CliRunner()
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0
    for c in COMMANDS:
        assert c in res.output
        assert runner.invoke(app, [c, "--help"]).exit_code == 0, c


def bad_inputs(tmp_path):
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "s.jsonl").write_text('{"id": "1"}\n')
    (tmp_path / "typo.yaml").write_text("sample:\n  budjet: 5\n")
    (tmp_path / "strategy.yaml").write_text("sample:\n  strategy: sqrt-eror\n")
    t = str(tmp_path)
    return [
        (["loop", "--config", f"{t}/typo.yaml", "--run-dir", f"{t}/run"], "typo.yaml: sample.budjet: unknown key (did you mean 'budget'?)"),
        (["loop", "--config", f"{t}/strategy.yaml", "--run-dir", f"{t}/run"], "did you mean 'sqrt-error'?"),
        (["evaluate", "--model", t, "--benchmark", f"{t}/none.json", "--image-root", t, "--out", f"{t}/ev"], "none.json: benchmark file not found"),
        (["evaluate", "--model", t, "--benchmark", f"{t}/none.json", "--image-root", t, "--out", f"{t}/ev", "--method", "leter"],
         "unknown evaluation method 'leter' (did you mean 'letter'?)"),
        (["plan", "--eval", f"{t}/ev", "--out", f"{t}/p.json"], "results.json: no evaluation results here"),
        (["generate", "--plan", f"{t}/p.json", "--pool", f"{t}/empty.jsonl", "--out", f"{t}/g.jsonl"], "p.json: plan file not found"),
        (["filter", f"{t}/empty.jsonl", "--out", f"{t}/f.jsonl", "--benchmark", "b.json", "--image-root", t], "no generated items to filter"),
        (["train", "--model", t, "--data", f"{t}/s.jsonl", "--image-root", t, "--out", f"{t}/m"], "s.jsonl: line 1: image: Field required"),
        (["train", "--model", t, "--data", f"{t}/empty.jsonl", "--image-root", t, "--out", f"{t}/m", "--preset", "llava-1.5-lor"],
         "did you mean 'llava-1.5-lora'?"),
        (["init-model", f"{t}/m", "--corpus-from", f"{t}/empty.jsonl", "--family", "qwen2-vl"], "did you mean 'qwen2_vl'?"),
        (["pope-build", "--pool", f"{t}/empty.jsonl", "--out", f"{t}/p.jsonl", "--split", "adversial"], "did you mean 'adversarial'?"),
        (["export", f"{t}/empty.jsonl", "--out", f"{t}/x.json", "--to", "lava"], "unknown export target 'lava' (did you mean 'llava'?)"),
        (["mix", "--original", f"{t}/none.jsonl", "--out", f"{t}/m.jsonl"], "none.jsonl: file not found"),
        (["ipo", "--pool", f"{t}/empty.jsonl", "--out", f"{t}/ipo", "--review", "humans"], "did you mean 'human'?"),
        (["report", f"{t}/nothing"], "no evaluated rounds here"),
    ]


def test_bad_input_is_one_line_and_exit_code_2(tmp_path):
    runner = CliRunner()
    for args, needle in bad_inputs(tmp_path):
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output, res.exception)
        assert needle in " ".join(res.output.split()), (args, res.output)
        assert "Traceback" not in res.output and res.output.strip().count("\n") == 0, res.output


def test_help_and_config_checks_do_not_load_torch(tmp_path):
    (tmp_path / "c.yaml").write_text("rounds: 2\nmodel:\n  tiny:\n    family: qwen2_vl\n")
    code = ("import sys\nfrom dataengine.cli import app\nfrom dataengine.config import load_config\n"
            f"load_config({str(tmp_path / 'c.yaml')!r})\n"
            "try:\n    app(['plan', '--help'])\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "False False"


def test_world_then_mix(tmp_path):
    """Two stages that need no model, run as a user would."""
    (tmp_path / "c.yaml").write_text(json.dumps({"world": {"pool_size": 60, "benchmark_per_type": 2, "image_size": 64,
                                                           "starter": {str(t): 4 for t in range(1, 10)}}}))
    runner = CliRunner()
    res = runner.invoke(app, ["world", str(tmp_path / "w"), "--config", str(tmp_path / "c.yaml"), "--hard", "2"])
    assert res.exit_code == 0, res.output
    assert len((tmp_path / "w" / "starter.jsonl").read_text().splitlines()) == 36
    assert len(json.loads((tmp_path / "w" / "hard.json").read_text())["questions"]) == 12  # 2 of each of 6 categories
    res = runner.invoke(app, ["world", str(tmp_path / "w"), "--config", str(tmp_path / "c.yaml"), "--hard", "3"])
    assert len(json.loads((tmp_path / "w" / "hard.json").read_text())["questions"]) == 18  # made again, not the stale one
    assert runner.invoke(app, ["world", str(tmp_path / "w"), "--hard", "-1"]).exit_code == 2
    res = runner.invoke(app, ["mix", "--original", str(tmp_path / "w" / "starter.jsonl"), "--out", str(tmp_path / "m.jsonl"),
                              "--fraction", "0.5", "--seed", "4"])
    assert res.exit_code == 0, res.output
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    assert len(lines) == 18 and set(lines) <= set((tmp_path / "w" / "starter.jsonl").read_text().splitlines())


@pytest.mark.parametrize("fraction", ["1.5"])
def test_config_values_are_checked_when_given_as_flags(tmp_path, fraction):
    res = CliRunner().invoke(app, ["mix", "--original", "x.jsonl", "--out", str(tmp_path / "m.jsonl"), "--fraction", fraction])
    assert res.exit_code == 2 and "train.original_fraction" in res.output


def test_a_finished_model_is_never_overwritten(tmp_path, world, tiny_vlm):
    tiny_vlm.save(tmp_path / "m")
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    r = CliRunner().invoke(app, ["init-model", str(tmp_path / "m"), "--corpus-from", str(world.original)])
    assert r.exit_code == 2 and "already holds a model" in r.output
    r = CliRunner().invoke(app, ["train", "--model", str(tmp_path / "m"), "--data", str(world.original),
                                 "--image-root", str(world.image_root), "--out", str(tmp_path / "m")])
    assert r.exit_code == 2 and "already holds a trained model" in " ".join(r.output.split())
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before


def test_train_grounds_attention_with_the_pool_as_the_loop_does(tmp_path, world, tiny_vlm, monkeypatch):
    from dataengine.train import sft
    grounded = []
    real_loss = sft.attention_loss
    monkeypatch.setattr(sft, "attention_loss", lambda a, t: grounded.append(1) or real_loss(a, t))
    tiny_vlm.save(tmp_path / "m")
    args = ["train", "--model", str(tmp_path / "m"), "--data", str(world.original), "--image-root", str(world.image_root),
            "--epochs", "1"]
    r = CliRunner().invoke(app, args + ["--out", str(tmp_path / "plain")])
    assert r.exit_code == 0, r.output
    assert grounded == []  # without the annotations, nothing to ground on
    assert "no --pool: trained without attention grounding" in " ".join(r.output.split())
    r = CliRunner().invoke(app, args + ["--out", str(tmp_path / "grounded"), "--pool", str(world.pool)])
    assert r.exit_code == 0, r.output
    assert grounded and "--pool" not in r.output
    # a family without LLaVA's layout trains as before, and says the pool went unused
    from dataengine.models.tiny import build_tiny
    from dataengine.world.build import corpus
    from tests.support.configs import TINY
    build_tiny(corpus(read_jsonl(world.original, Sample)), TINY.model_copy(update={"family": "qwen2_vl"})).save(tmp_path / "q")
    grounded.clear()
    r = CliRunner().invoke(app, args[:2] + [str(tmp_path / "q")] + args[3:] + ["--out", str(tmp_path / "qm"), "--pool", str(world.pool)])
    assert r.exit_code == 0, r.output
    assert grounded == [] and "--pool not used" in " ".join(r.output.split())


def test_main_leaves_the_process_group_it_joined(monkeypatch, tmp_path):
    """Under torchrun a gloo group left to interpreter teardown can abort the process after its work."""
    import torch.distributed as dist

    from dataengine import cli

    def command():
        dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
        raise SystemExit(0)  # as typer ends every command
    monkeypatch.setattr(cli, "app", command)
    try:
        with pytest.raises(SystemExit):
            cli.main()
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
