"""The toy world grid, end to end through the real command line, shows the study's three findings
for several worlds (margins in src/toyworld/findings.py; the spread measured is in the README)."""

import os
import subprocess
import sys

import pytest

from src import PROJECT_ROOT
from src.toyworld.findings import load, write_findings

# What each world is measured to show (README: the spread over seeds): all three findings, except on
# seed 4, where the small base's local series has the teacher's style in a third of its replies after
# 4K tokens (every reply after 12K), under finding 1's 0.5. Checked both ways: a finding that starts
# to hold there is noticed too.
NOT_HOLDING = {4: {"style_at_once"}}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
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
    assert {f.name for f in found if not f.holds} == NOT_HOLDING.get(seed, set()), text
