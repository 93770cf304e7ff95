"""Time to the first result of the demo grid: `python -m src.main -m experiment=demo` from launch until
the first cell's results.json exists (the base model's cell: loading, NQ, HumanEval and style), with
the base-score cache cold, against the same launch with it warm (a second grid of the same model
reuses the base model's scores). The converted model is shared; every other cache is fresh. The grid
is stopped once the first result is there."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from src import PROJECT_ROOT

CACHE = Path(os.path.expanduser(os.environ.get("IMITATION_GAP_CACHE", "~/.cache/imitation-gap")))
LIMIT_S = 900


def seconds_to_first_result(root: Path, cache: Path) -> float:
    sweep = root / f"sweep_{time.monotonic_ns()}"
    args = [sys.executable, "-m", "src.main", "-m", "experiment=demo", f"hydra.sweep.dir={sweep}",
            f"store_dir={root / 'cells'}_{sweep.name}", f"cache_dir={cache}", "tracker.mode=disabled"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(args, cwd=PROJECT_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        while not list(sweep.glob("*/results.json")):
            if proc.poll() is not None:
                raise RuntimeError(f"the demo grid ended (exit {proc.returncode}) before its first result")
            if time.perf_counter() - start > LIMIT_S:
                raise RuntimeError(f"no result within {LIMIT_S} s")
            time.sleep(0.2)
        return time.perf_counter() - start
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def run() -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp), Path(tmp) / "cache"
        cache.mkdir()
        (cache / "models").symlink_to(CACHE / "models")  # converted once per machine, not part of this figure
        cold = seconds_to_first_result(root, cache)
        warm = seconds_to_first_result(root, cache)
    return [{"name": "demo grid: time to the first result (the base cell), cold vs warm base-score cache (s)",
             "ours": warm, "baseline": cold, "ratio": cold / warm, "unit": "seconds (lower is better)"}]
