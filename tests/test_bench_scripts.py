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
