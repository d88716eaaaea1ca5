"""The benchmark scripts under bench/ stop on bad input in one line, as the CLI does, not in a traceback."""
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.mark.parametrize("script", ["abs_vs_uniform.py", "learnability.py", "binding.py", "hadpo.py", "dialog.py", "evolve.py"])
def test_bad_config_is_one_line(tmp_path, script):
    bad = tmp_path / "bad.yaml"
    bad.write_text("sample:\n  strategy: sqrt-eror\n")
    r = subprocess.run([sys.executable, str(BENCH / script), "--config", str(bad), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    last = r.stderr.strip().splitlines()
    assert len(last) == 1 and last[0].startswith("error: ") and "bad.yaml" in last[0] and "sqrt-error" in last[0], r.stderr
    assert not (tmp_path / "out").exists()  # nothing was started


@pytest.mark.parametrize("args, says", [
    (["abs_vs_uniform.py", "--strategies", "sqrt-eror"], "did you mean 'sqrt-error'"),  # before any model is built
    (["hadpo.py", "--arms", "dop"], "invalid choice: 'dop'"),
    (["hadpo.py", "--seeds", "0"], "--seeds: at least 1"),
    (["option_scoring.py", "--family", "llavaa"], "family: unknown tiny model family 'llavaa'"),
    (["binding.py", "--text-items", "5"], "--text-items: at least"),
    (["learnability.py", "--ground-attention", "-1"], "--ground-attention: 0 or more"),
])
def test_bad_options_are_one_line(tmp_path, args, says):
    out = [] if args[0] == "option_scoring.py" else ["--out", str(tmp_path / "out")]
    r = subprocess.run([sys.executable, str(BENCH / args[0]), *args[1:], *out], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "Traceback" not in r.stderr
    assert says in r.stderr.strip().splitlines()[-1], r.stderr


def test_binding_needs_a_learnability_model_and_says_where(tmp_path):
    r = subprocess.run([sys.executable, str(BENCH / "binding.py"), "--out", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert "no model of bench/learnability.py" in r.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "out").exists()  # checked before a world is built


def test_the_grey_control_makes_pairs_training_accepts(tmp_path, monkeypatch):
    """bench/hadpo.py's blank arm: every picture grey, an image-conditioned pair's two of them
    separate files of the same pixels, so `check_pairs` (run before DPO) takes them."""
    from PIL import Image

    from dataengine.generate.pairs import PreferencePair, check_pairs
    monkeypatch.syspath_prepend(str(BENCH))
    from hadpo import grey_pairs
    plain = PreferencePair(id="p", image="a.png", prompt="Describe.", chosen="a ball.", rejected="a star.")
    cond = plain.model_copy(update={"id": "cond-p", "rejected": plain.chosen, "rejected_image": "b.png"})
    grey = grey_pairs([plain, cond], tmp_path / "grey", 32)
    check_pairs(grey, tmp_path / "grey")
    assert grey[0].image == grey[1].image and grey[0].rejected_image is None
    assert grey[1].rejected_image != grey[1].image
    pictures = {Image.open(tmp_path / "grey" / f).tobytes() for f in (grey[1].image, grey[1].rejected_image)}
    assert len(pictures) == 1 and Image.open(tmp_path / "grey" / "grey.png").size == (32, 32)


def test_the_kinds_table_reads_measurements_with_and_without_kinds(monkeypatch):
    """bench/hadpo.py resumes arms from their recorded measurements: one recorded before SHR had
    kinds gives blank cells, not a KeyError after every arm has trained."""
    from rich.console import Console
    monkeypatch.syspath_prepend(str(BENCH))
    from hadpo import kinds_table
    kinds = {"object": 11, "attribute": 45, "count": 0, "position": 87, "text": 55}
    rows = {"base": {"shr": {"shr": 0.37, "by_kind": kinds, "loops": 3}}, "old": {"shr": {"shr": 0.25}}}
    console = Console(record=True, width=120)
    console.print(kinds_table(rows))
    lines = console.export_text().splitlines()
    assert [x.split() for x in lines if "base" in x] == [["│", "base", "│", "11", "│", "45", "│", "0", "│", "87", "│", "55", "│", "3", "│"]]
    assert [x.split() for x in lines if "old" in x] == [["│", "old", "│", "│", "│", "│", "│", "│", "│"]]


def test_the_spread_line_gives_the_mean_and_range_over_seeds(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    from hadpo import spread_line

    def m(shr, f1):
        return {"shr": {"shr": shr}, "pope": {"adversarial": {"f1": f1}}}
    line = spread_line([m(0.25, 0.70), m(0.20, 0.60), m(0.30, 0.80)], m(0.40, 0.55))
    assert line == ("dpo over 3 training seeds: SHR 25.0% (20.0%-30.0%), x0.62 of the base's; "
                    "adversarial POPE F1 70.0% (60.0%-80.0%), +15.0 points on the base's")
    assert "n/a of the base's" in spread_line([m(0.1, 0.5)], m(0.0, 0.5))
