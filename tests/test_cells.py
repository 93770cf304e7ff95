"""Grids that never redo work: finished cells are skipped, failed cells are recorded and retried alone."""

import json
import subprocess
import sys

from src import PROJECT_ROOT

GRID = ["experiment=smoke", "tracker.mode=disabled", "benchmark.humaneval.limit=2", "benchmark.nq.limit=3"]


def launch(tmp_path, *overrides, sweep_name="sweep"):
    sweep = tmp_path / sweep_name
    proc = subprocess.run([sys.executable, "-m", "src.main", "-m", *GRID, f"hydra.sweep.dir={sweep}",
                           f"store_dir={tmp_path / 'cells'}", *overrides],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    statuses = {p.parent.name: json.loads(p.read_text()) for p in sorted(sweep.glob("*/status.json"))}
    return proc, statuses


def test_relaunch_skips_finished_cells_and_force_reruns(tmp_path):
    proc, first = launch(tmp_path, "data.amount=0,500")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [s["state"] for s in first.values()] == ["done", "done"]
    results = {name: (tmp_path / "sweep" / name / "results.json").read_text() for name in first}

    proc, second = launch(tmp_path, "data.amount=0,500")
    assert proc.returncode == 0
    assert [s["state"] for s in second.values()] == ["skipped", "skipped"]
    assert "train:" not in proc.stderr + proc.stdout  # nothing was trained again
    assert {name: (tmp_path / "sweep" / name / "results.json").read_text() for name in second} == results

    # a relaunch in a new sweep folder (the default names one per launch) also finds the work
    proc, fresh = launch(tmp_path, "data.amount=0,500", sweep_name="fresh")
    assert [s["state"] for s in fresh.values()] == ["skipped", "skipped"]

    # a new benchmark setting is not done yet: that cell runs again
    proc, third = launch(tmp_path, "data.amount=500", "benchmark.nq.limit=2", sweep_name="other")
    assert [s["state"] for s in third.values()] == ["done"]

    proc, forced = launch(tmp_path, "data.amount=0", "force=true", sweep_name="forced")
    assert [s["state"] for s in forced.values()] == ["done"]


def test_failed_cell_is_recorded_the_others_finish_and_relaunch_retries_it(tmp_path):
    proc, statuses = launch(tmp_path, "data.amount=500,99M")  # the demo set holds ~21K tokens
    assert proc.returncode != 0
    states = {s["state"] for s in statuses.values()}
    assert states == {"done", "failed"}
    failed = next(s for s in statuses.values() if s["state"] == "failed")
    assert "data.amount=99000000 tokens is more than" in failed["error"]
    assert "1 cell(s) did not finish" in proc.stderr + proc.stdout

    proc, again = launch(tmp_path, "data.amount=500,99M")
    assert sorted(s["state"] for s in again.values()) == ["failed", "skipped"]


def test_stages_done_earlier_are_not_redone(tmp_path, caplog):
    """A changed benchmark setting reruns that benchmark only: the saved model is loaded, not retrained,
    and the unchanged benchmark is reused."""
    import logging

    from src.cells import run_cell
    from src.config import RunConfig
    from src.pipeline import train_and_eval
    from tests.conftest import compose_config

    def cell(*overrides):
        raw = compose_config([*GRID, "train.save_checkpoint=true", "data.amount=600", f"store_dir={tmp_path}",
                              "output_dir=unused", *overrides])
        return run_cell(RunConfig.from_dict(raw), raw, tmp_path / "job", train_and_eval)

    first = cell()
    caplog.clear()
    with caplog.at_level(logging.INFO):
        second = cell("benchmark.nq.limit=2")
    log = caplog.text
    assert "training was done earlier" in log and "train:" not in log
    assert "humaneval was scored earlier" in log and "nq was scored earlier" not in log
    assert second["train"] == first["train"] and second["tokens"] == first["tokens"]
    assert second["benchmarks"]["nq"]["n"] == 2 and first["benchmarks"]["nq"]["n"] == 3
    assert second["metrics"]["humaneval/pass@1"] == first["metrics"]["humaneval/pass@1"]
