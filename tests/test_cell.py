"""Grids that never redo work: finished cells are skipped, failed cells are recorded and retried alone,
and a cell is run by one process at a time (its lease), even across two launches of one grid."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from src import PROJECT_ROOT
from src.stages import PAUSE_AT, RESUME_FILE
from tests.conftest import CACHE

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

    from src.main import run_cell
    from tests.conftest import compose_config

    def cell(*overrides):
        raw = compose_config([*GRID, "train.save_checkpoint=true", "data.amount=600", f"store_dir={tmp_path}",
                              "output_dir=unused", *overrides])
        return run_cell(raw, tmp_path / "job").to_dict()

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


def start(tmp_path, name, *overrides, env=None):
    """A grid launch in the background: three smoke cells over one shared store and cache."""
    cache = tmp_path / "cache"
    if not cache.exists():  # the converted tokenizer is shared; the base-score cache is this test's own
        cache.mkdir()
        (cache / "models").symlink_to(Path(os.path.expanduser(CACHE)) / "models")
    command = [sys.executable, "-m", "src.main", "-m", *GRID, "data.amount=0,1K,4K", f"hydra.sweep.dir={tmp_path / name}",
               f"store_dir={tmp_path / 'cells'}", f"cache_dir={cache}", *overrides]
    return subprocess.Popen(command, cwd=PROJECT_ROOT, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def wait_for(proc, text: str, lines: list[str]) -> None:
    for line in proc.stdout:
        lines.append(line)
        if text in line:
            return
    raise AssertionError(f"never saw {text!r}:\n" + "".join(lines[-30:]))


def states(tmp_path, name) -> dict[str, str]:
    """run_id -> the state this launch recorded for it."""
    found = [json.loads(p.read_text()) for p in (tmp_path / name).glob("*/status.json")]
    return {s["run_id"]: s["state"] for s in found}


def test_two_launches_of_one_grid_train_and_score_each_cell_once(tmp_path):
    """A relaunch while the grid still runs: the second waits on the cell the first holds, then skips
    what the first finished; every trained cell is trained once and every benchmark scored once."""
    resume = tmp_path / "resume"
    first = start(tmp_path, "first", env={PAUSE_AT: "eval:nq:start", RESUME_FILE: str(resume)})
    first_lines, second_lines = [], []
    wait_for(first, "paused at stage eval:nq:start", first_lines)  # holding the lease of its first cell
    second = start(tmp_path, "second")
    wait_for(second, "is being run by pid", second_lines)  # the second launch waits for that cell
    resume.touch()
    first_lines += first.stdout.readlines()
    second_lines += second.stdout.readlines()
    assert first.wait(timeout=600) == 0 and second.wait(timeout=600) == 0, "".join(second_lines[-30:])
    log = "".join(first_lines + second_lines)
    assert len(re.findall(r"\btrain: \d+ rows", log)) == 2  # 1K and 4K, once each
    assert len(re.findall(r"\bnq: \{", log)) == len(re.findall(r"\bhumaneval: \{", log)) == 3  # each cell scored once
    one, two = states(tmp_path, "first"), states(tmp_path, "second")
    assert one.keys() == two.keys() and len(one) == 3
    assert all(sorted([one[rid], two[rid]]) == ["done", "skipped"] for rid in one)
    assert "ended without releasing" not in log


def test_a_lease_left_by_a_killed_launch_is_taken_over(tmp_path):
    first = start(tmp_path, "first", env={PAUSE_AT: "eval:nq:start"})
    lines: list[str] = []
    wait_for(first, "paused at stage eval:nq:start", lines)
    first.kill()  # SIGKILL while it holds the lease of its first cell
    assert first.wait(timeout=60) == -signal.SIGKILL
    second = start(tmp_path, "second")
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out[-3000:]
    assert "taking over the lease of pid" in out and "which ended without releasing it" in out
    assert set(states(tmp_path, "second").values()) == {"done"}
    assert len(re.findall(r"\btrain: \d+ rows", out)) == 2
