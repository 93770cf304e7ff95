"""The toy world grid, end to end through the real command line, shows the study's three findings
for several worlds (margins in src/toyworld/findings.py; the spread measured is in the README)."""

import os
import subprocess
import sys

import pytest

from src import PROJECT_ROOT
from src.toyworld.findings import load, write_findings

# Seeds 0, 1 and 4 are known not to show every finding (README: the spread over seeds): local
# imitation does not teach their larger base to answer (its replies repeat one sentence whatever the
# question; on seed 1 the base also learnt only half its facts). Strict expected failures, so the day
# they pass is noticed.
UNSTABLE = pytest.mark.xfail(strict=True, reason="local imitation does not unlock toy_l in this world")


@pytest.mark.slow
@pytest.mark.parametrize("seed", [pytest.param(0, marks=UNSTABLE), pytest.param(1, marks=UNSTABLE), 2, 3,
                                  pytest.param(4, marks=UNSTABLE)])
def test_toyworld_grid_shows_the_three_findings(seed, tmp_path):
    sweep = tmp_path / "sweep"
    proc = subprocess.run(
        [sys.executable, "-m", "src.main", "-m", "experiment=toyworld", f"seed={seed}", f"hydra.sweep.dir={sweep}",
         f"store_dir={tmp_path / 'cells'}"],  # the pretrained bases are cached (cache_dir) and reused
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=3600,
        env={**os.environ, "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (sweep / "index.html").exists() and (sweep / "gap_closed.csv").exists()
    text = write_findings(sweep)
    found = load(sweep)
    assert [f.name for f in found] == ["style_at_once", "broad_does_not_unlock_local_does", "stronger_base_goes_further"]
    assert all(f.holds for f in found), text
